// system-servers.test.mjs: the snippets for the web servers an
// administrator already runs (conf/apache/mailkit.conf,
// conf/lighttpd/50-mailkit.conf), installed into this machine's real
// Apache and lighttpd the Debian way (a2enconf, lighty-enable-mod), with
// MailKit mounted under /mailkit/, every route driven through them.
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

const PREFIX = '/mailkit';
const START_MS = 120_000;
const TEST_MS = 30_000;
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
function adapt(text, server, stack) {
	const www = path.join(SRCDIR, 'www');
	const errors = path.join(SRCDIR, 'conf', 'errors');
	const rundir = path.join(stack.stateDir, 'run');
	if (server === 'apache') {
		return text
		    .replace(/^Define MAILKIT_PREFIX .*$/m, `Define MAILKIT_PREFIX "${PREFIX}"`)
		    .replace(/^Define MAILKIT_RUN_DIR .*$/m, `Define MAILKIT_RUN_DIR "${rundir}"`)
		    .replace(/^Define MAILKIT_WWW .*$/m, `Define MAILKIT_WWW "${www}"`)
		    .replace(/^Define MAILKIT_ERRORS .*$/m, `Define MAILKIT_ERRORS "${errors}"`);
	}
	return text
	    .replace(/^var\.mailkit_prefix .*$/m, `var.mailkit_prefix = "${PREFIX}"`)
	    .replace(/^var\.mailkit_rundir .*$/m, `var.mailkit_rundir = "${rundir}"`)
	    .replace(/^var\.mailkit_www .*$/m, `var.mailkit_www = "${www}"`)
	    .replace(/^var\.mailkit_errors .*$/m, `var.mailkit_errors = "${errors}/"`);
}

// Install, enable and start one system server on `port`; returns stop().
async function startSystemServer(server, stack, port) {
	const s = SERVERS[server];
	const snippet = adapt(await readFile(path.join(BUILDDIR, s.snippet), 'utf8'), server, stack);
	if (server === 'apache') {
		await writeFile('/etc/apache2/conf-available/mailkit.conf', snippet);
		let r = await run('a2enconf', ['-q', 'mailkit']);
		assert.equal(r.code, 0, `a2enconf: ${r.stdout}${r.stderr}`);
		await writeFile('/etc/apache2/ports.conf',
		    `# mailkit system-servers test: loopback only\nListen 127.0.0.1:${port}\n`);
		r = await run('apache2ctl', ['configtest']);
		assert.equal(r.code, 0, `apache2ctl configtest: ${r.stderr}`);
		r = await run('apache2ctl', ['start']);
		assert.equal(r.code, 0, `apache2ctl start: ${r.stdout}${r.stderr}`);
		await until('apache2 on its port', () => listening(port));
		return async () => {
			const pid = runningPid(s.pidFile);
			await run('apache2ctl', ['stop']);
			if (pid)
				await until('apache2 to stop', () => !alive(pid));
		};
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
	await until('lighttpd on its port', () => listening(port));
	return async () => {
		if (child.exitCode === null && child.signalCode === null) {
			const gone = new Promise((res) => child.once('exit', res));
			child.kill('SIGTERM');
			await gone;
		}
	};
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

for (const server of Object.keys(SERVERS)) {
	const etc = SERVERS[server].etc;
	let stack, backup, stop, base;
	const front = () => ({ baseUrl: base });

	before(async () => {
		// the sockets are group www-data for Apache's sake; both servers run as it
		stack = await startStack({ server: 'apache' });
		backup = await mkdtemp(path.join(os.tmpdir(), `mailkit-etc-${server}-`));
		await cp(etc, path.join(backup, 'etc'), { recursive: true, verbatimSymlinks: true });
		const port = await freePort();
		base = `http://127.0.0.1:${port}${PREFIX}`;
		stop = await startSystemServer(server, stack, port);
	}, { timeout: START_MS });

	after(async () => {
		try {
			if (stop)
				await stop();
		} finally {
			if (backup) {
				await rm(etc, { recursive: true, force: true });
				await cp(path.join(backup, 'etc'), etc, { recursive: true,
				    verbatimSymlinks: true });
				await rm(backup, { recursive: true, force: true });
			}
			if (stack)
				await stack.stop();
		}
	}, { timeout: START_MS });

	const it = stackTest(`system ${server} under ${PREFIX}/`, () => stack, TEST_MS);
	defineMountedRoutes(it, front, () => stack, {
		stopProgram: async (prog) => {
			const sock = path.join(stack.stateDir, 'run', `${prog}.sock`);
			await rename(sock, `${sock}.away`);
			return () => rename(`${sock}.away`, sock);
		},
	});
	it('the system configuration is the installed snippet, enabled', async () => {
		const enabled = server === 'apache' ? '/etc/apache2/conf-enabled/mailkit.conf'
		    : '/etc/lighttpd/conf-enabled/50-mailkit.conf';
		assert.ok(existsSync(enabled), enabled);
	});
}
