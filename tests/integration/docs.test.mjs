// docs.test.mjs: the manual pages (man/*.in, built with the configured
// paths) render without warnings, and mailkit.env(5) documents every
// setting of the README's settings table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';

import { BUILDDIR, SRCDIR, skipFile } from './harness.mjs';

const PAGES = ['man/mailkit-stack.8', 'man/mailkit-admin.8', 'man/mailkit.env.5'];

for (const p of PAGES)
	if (!existsSync(path.join(BUILDDIR, p)))
		skipFile(`${p} not built (run make)`);

test('mailkit.env(5) names every setting of the README settings table', async () => {
	const readme = await readFile(path.join(SRCDIR, 'README.md'), 'utf8');
	const table = readme.slice(readme.indexOf('| name | default | meaning |'));
	const names = [];
	for (const line of table.split('\n').slice(2)) {
		if (!line.startsWith('|'))
			break;
		for (const m of line.split(' | ')[0].matchAll(/`([A-Z_]+)`/g))
			names.push(m[1]);
	}
	assert.ok(names.length > 25, `README table found (${names.length} names)`);
	const page = await readFile(path.join(BUILDDIR, 'man/mailkit.env.5'), 'utf8');
	for (const n of names)
		assert.match(page, new RegExp(`\\\\fB${n}\\\\fR`), `${n} in mailkit.env(5)`);
});

test('every manual page renders without a warning, with the paths substituted', async (t) => {
	if (!existsSync('/usr/bin/man')) {
		t.skip('man not installed');
		return;
	}
	for (const p of PAGES) {
		const file = path.join(BUILDDIR, p);
		assert.doesNotMatch(await readFile(file, 'utf8'), /@[a-z_]+@/i, `${p}: substituted`);
		const r = await new Promise((resolve) => execFile('man', ['--warnings', '-l', file],
		    { env: { ...process.env, MANWIDTH: '80' }, timeout: 30_000 },
		    (error, stdout, stderr) => resolve({ error, stdout, stderr })));
		assert.equal(r.error, null, `${p}: ${r.stderr}`);
		assert.equal(r.stderr, '', `${p}: warnings`);
		assert.match(r.stdout, /NAME/);
	}
});
