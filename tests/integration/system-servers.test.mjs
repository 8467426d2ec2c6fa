// system-servers.test.mjs: the snippets for the web servers an
// administrator already runs (conf/apache/mailkit.conf,
// conf/lighttpd/50-mailkit.conf), installed into this machine's real
// Apache and lighttpd the Debian way (a2enconf, lighty-enable-mod), with
// MailKit mounted under /mailkit/ and at the root, every route driven
// through them.
//
// The system servers listen on a free loopback test port only (ports.conf
// and lighttpd's port are rewritten for the test; never port 80), run only
// during the test, and /etc/apache2 and /etc/lighttpd are restored from a
// copy afterwards, failure or not.  Needs root; skipped when either server
// is already running here (it is not ours to stop).
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { BUILDDIR, SRCDIR, freePort, missingPrerequisite, skipFile, stackTest, startStack }
    from './harness.mjs';
import { defineMountedRoutes } from './mounted.mjs';

// each server with MailKit under a path, then at the site's root (the default)
const PREFIXES = ['/mailkit', ''];
const START_MS = 120_000;
const SERVERS = {
	apache: { etc: '/etc/apache2', pidFile: '/run/apache2/apache2.pid',
	    snippet: 'conf/apache/mailkit.conf' },
	lighttpd: { etc: '/etc/lighttpd', pidFile: '/run/lighttpd.pid',
	    snippet: 'conf/lighttpd/50-mailkit.conf' },
};

function run(file, args, opts = {}) {
	return new Promise((resolve) => {
		execFile(file, args, { timeout: 60_000, killSignal: 'SIGKILL', ...opts },
		    (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0,
			stdout, stderr }));
	});
}

function alive(pid) {
	try {
		process.kill(pid, 0);
		return true;
	} catch (e) {
		return e.code === 'EPERM';
	}
}

function runningPid(pidFile) {
	try {
		const pid = Number(readFileSync(pidFile, 'utf8').trim());
		return pid > 0 && alive(pid) ? pid : 0;
	} catch { return 0; }
}

function listening(port) {
	return new Promise((resolve) => {
		const s = net.connect({ port, host: '127.0.0.1' });
		s.once('connect', () => { s.destroy(); resolve(true); });
		s.once('error', () => resolve(false));
	});
}

async function until(what, cond, ms = 20_000) {
	const end = Date.now() + ms;
	while (!(await cond())) {
		if (Date.now() > end)
			throw new Error(`timed out waiting for ${what}`);
		await new Promise((r) => setTimeout(r, 100));
	}
}

/*
 * Rewrite the lines an administrator edits at the top of a snippet: the
 * prefix, and the paths of this test's stack (its sockets, the source
 * tree's page and error documents).
 */
function adapt(text, server, stack, prefix) {
	const www = path.join(publicDir, 'www');
	const errors = path.join(publicDir, 'errors');
	const rundir = path.join(stack.stateDir, 'run');
	if (server === 'apache') {
		return text
		    .replace(/^Define MAILKIT_PREFIX .*$/m, `Define MAILKIT_PREFIX "${prefix}/"`)
		    .replace(/^Define MAILKIT_RUN_DIR .*$/m, `Define MAILKIT_RUN_DIR "${rundir}"`)
		    .replace(/^Define MAILKIT_WWW .*$/m, `Define MAILKIT_WWW "${www}"`)
		    .replace(/^Define MAILKIT_ERRORS .*$/m, `Define MAILKIT_ERRORS "${errors}"`);
	}
	return text
	    .replace(/^var\.mailkit_prefix .*$/m, `var.mailkit_prefix = "${prefix}"`)
	    .replace(/^var\.mailkit_rundir .*$/m, `var.mailkit_rundir = "${rundir}"`)
	    .replace(/^var\.mailkit_www .*$/m, `var.mailkit_www = "${www}"`)
	    .replace(/^var\.mailkit_errors .*$/m, `var.mailkit_errors = "${errors}/"`);
}

// Install, enable and start one system server on `port`; ctl.stop() stops
// it, set as soon as there is something to stop.
async function startSystemServer(ctl, server, stack, port, prefix) {
	const s = SERVERS[server];
	const snippet = adapt(await readFile(path.join(BUILDDIR, s.snippet), 'utf8'), server, stack,
	    prefix);
	if (server === 'apache') {
		await writeFile('/etc/apache2/conf-available/mailkit.conf', snippet);
		let r = await run('a2enconf', ['-q', 'mailkit']);
		assert.equal(r.code, 0, `a2enconf: ${r.stdout}${r.stderr}`);
		await writeFile('/etc/apache2/ports.conf',
		    `# mailkit system-servers test: loopback only\nListen 127.0.0.1:${port}\n`);
		r = await run('apache2ctl', ['configtest']);
		assert.equal(r.code, 0, `apache2ctl configtest: ${r.stderr}`);
		ctl.stop = async () => {
			const pid = runningPid(s.pidFile);
			await run('apache2ctl', ['stop']);
			if (pid)
				await until('apache2 to stop', () => !alive(pid));
		};
		r = await run('apache2ctl', ['start']);
		assert.equal(r.code, 0, `apache2ctl start: ${r.stdout}${r.stderr}`);
		await until('apache2 on its port', () => listening(port));
		return;
	}
	await writeFile('/etc/lighttpd/conf-available/50-mailkit.conf', snippet);
	const r = await run('lighty-enable-mod', ['mailkit']);
	assert.equal(r.code, 0, `lighty-enable-mod: ${r.stdout}${r.stderr}`);
	assert.ok(existsSync('/etc/lighttpd/conf-enabled/50-mailkit.conf'), r.stdout + r.stderr);
	const conf = (await readFile('/etc/lighttpd/lighttpd.conf', 'utf8'))
	    .replace(/^server\.port\s*=.*$/m,
		`server.port = ${port}\nserver.bind = "127.0.0.1"  # mailkit test: loopback only`)
	    .replace(/^include_shell "\/usr\/share\/lighttpd\/use-ipv6\.pl.*$/m, '');
	assert.match(conf, new RegExp(`server\\.port = ${port}`));
	await writeFile('/etc/lighttpd/lighttpd.conf', conf);
	const t = await run('lighttpd', ['-tt', '-f', '/etc/lighttpd/lighttpd.conf']);
	assert.equal(t.code, 0, `lighttpd -tt: ${t.stdout}${t.stderr}`);
	const child = spawn('lighttpd', ['-D', '-f', '/etc/lighttpd/lighttpd.conf'],
	    { stdio: ['ignore', 'inherit', 'inherit'] });
	const gone = new Promise((res) => child.once('exit', res));
	ctl.stop = async () => {
		if (child.exitCode === null && child.signalCode === null)
			child.kill('SIGTERM');
		await gone;
	};
	await until('lighttpd on its port', () => listening(port));
}

const missing = missingPrerequisite('apache') || missingPrerequisite('lighttpd');
if (missing)
	skipFile(missing);
if (process.getuid() !== 0)
	skipFile('installing into the system web servers needs root');
for (const [name, s] of Object.entries(SERVERS)) {
	if (!existsSync(s.etc))
		skipFile(`${s.etc} missing: the Debian ${name} package is not installed`);
	if (runningPid(s.pidFile))
		skipFile(`the system ${name} is running here; not stopping it for a test`);
	if (!existsSync(path.join(BUILDDIR, s.snippet)))
		skipFile(`${s.snippet} not built (run make)`);
}

// The same files, byte for byte, with the same modes and links.
async function assertSameTree(a, b) {
	const r = await run('diff', ['-r', '--no-dereference', a, b]);
	assert.equal(r.code, 0, `differs after the test:\n${r.stdout}${r.stderr}`);
}

let stack;
let publicDir;		// a copy of the page and error documents that www-data can read
const cleanups = [];	// what a group left to undo, newest last

// Both servers run as www-data, which may not read the source tree (a clone
// in a private directory): what they serve is copied to a readable place,
// as `make install` puts it under /usr/share.
async function readableCopy() {
	const dir = await mkdtemp(path.join(os.tmpdir(), 'mailkit-public-'));
	await cp(path.join(SRCDIR, 'www'), path.join(dir, 'www'), { recursive: true });
	await cp(path.join(SRCDIR, 'conf', 'errors'), path.join(dir, 'errors'), { recursive: true });
	const r = await run('chmod', ['-R', 'u=rwX,go=rX', dir]);
	assert.equal(r.code, 0, `chmod: ${r.stderr}`);
	return dir;
}

before(async () => {
	publicDir = await readableCopy();
	// the sockets are group www-data for Apache's sake; both servers run as it
	stack = await startStack({ server: 'apache' });
}, { timeout: START_MS });

after(async () => {
	try {
		while (cleanups.length > 0)
			await cleanups.pop()();
	} finally {
		if (publicDir)
			await rm(publicDir, { recursive: true, force: true });
		if (stack)
			await stack.stop();
	}
}, { timeout: START_MS });

// Top-level tests, in order (automake's TAP driver reports each): install
// and start, every route, then stop and restore, which also runs from
// after() if a test never got there.
for (const server of Object.keys(SERVERS)) for (const prefix of PREFIXES) {
	const etc = SERVERS[server].etc;
	let backup, base;
	const front = () => ({ baseUrl: base });
	const it = stackTest(`system ${server} under ${prefix}/`, () => stack, START_MS);

	it('installed with the Debian tools and started on a loopback test port', async () => {
		backup = await mkdtemp(path.join(os.tmpdir(), `mailkit-etc-${server}-`));
		await cp(etc, path.join(backup, 'etc'), { recursive: true, verbatimSymlinks: true });
		const ctl = { stop: null };
		const restore = async () => {
			try {
				if (ctl.stop)
					await ctl.stop();
			} finally {
				await rm(etc, { recursive: true, force: true });
				await cp(path.join(backup, 'etc'), etc, { recursive: true,
				    verbatimSymlinks: true });
			}
		};
		cleanups.push(restore);
		const port = await freePort();
		base = `http://127.0.0.1:${port}${prefix}`;
		await startSystemServer(ctl, server, stack, port, prefix);
		const enabled = server === 'apache' ? '/etc/apache2/conf-enabled/mailkit.conf'
		    : '/etc/lighttpd/conf-enabled/50-mailkit.conf';
		assert.ok(existsSync(enabled), enabled);
	});

	defineMountedRoutes(it, front, () => stack, {
		stopProgram: async (prog) => {
			const sock = path.join(stack.stateDir, 'run', `${prog}.sock`);
			await rename(sock, `${sock}.away`);
			return () => rename(`${sock}.away`, sock);
		},
	});

	it(`stopped, and ${etc} restored as it was`, async () => {
		const restore = cleanups.pop();
		assert.ok(restore, 'installed');
		await restore();
		assert.equal(runningPid(SERVERS[server].pidFile), 0, `the system ${server} is stopped`);
		await assertSameTree(path.join(backup, 'etc'), etc);
		await rm(backup, { recursive: true, force: true });
	});
}
