// run.test.mjs: `mailkit-stack run` (what `make run` does) shows the
// programs' log on the terminal as it grows, not only in its file.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { BUILDDIR, freePort, missingPrerequisite, randomSecret, skipFile, webhookHeaders }
    from './harness.mjs';

const missing = missingPrerequisite('lighttpd');
if (missing)
	skipFile(missing);

test('mailkit-stack run shows the log on the terminal', { timeout: 120_000 }, async () => {
	const dir = await mkdtemp(path.join(os.tmpdir(), 'mailkit-run-'));
	const envFile = path.join(dir, 'test.env');
	await writeFile(envFile, '# run test: sandbox\n', { mode: 0o600 });
	const port = await freePort();
	const child = spawn(path.join(BUILDDIR, 'mailkit-stack'), ['run', '--port', String(port),
	    '--state', path.join(dir, 'state'), '--env-file', envFile],
	    { cwd: dir, env: { PATH: process.env.PATH, HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
	let out = '';
	child.stdout.on('data', (d) => { out += d; });
	child.stderr.on('data', (d) => { out += d; });
	const exited = new Promise((r) => child.once('exit', r));
	const until = async (re, what) => {
		const end = Date.now() + 60_000;
		while (!re.test(out)) {
			assert.ok(Date.now() < end && child.exitCode === null, `${what}; output:\n${out}`);
			await new Promise((r) => setTimeout(r, 100));
		}
	};
	try {
		await until(/MailKit is running/, 'the stack started');
		await until(/send\.fcgi\[\d+\] info: send\.fcgi ready/, 'start-up lines shown');
		// a forged webhook: the program's warning appears on the terminal
		const body = '{"type":"credit.added","data":{}}';
		const res = await fetch(`http://127.0.0.1:${port}/webhooks/dodo`, { method: 'POST',
		    body, headers: webhookHeaders({ settings: {} }, body, { secret: randomSecret() }) });
		assert.equal(res.status, 401);
		await until(/webhook\.fcgi\[\d+\] warn: rejected delivery/, 'a request\'s log line shown');
	} finally {
		child.kill('SIGTERM');
		await exited;
		await rm(dir, { recursive: true, force: true });
	}
});
