// systemd.test.mjs: the systemd units (systemd/*.socket, *.service,
// *.timer) pass `systemd-analyze verify` and hold what the README promises;
// and the programs take a socket from systemd's socket activation
// (LISTEN_FDS, fd 3): each one started by `systemd-socket-activate` on the
// socket the stack's web server connects to, every route driven through it.
// No systemd as PID 1 is needed (nor used: containers have none).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { BUILDDIR, missingPrerequisite, skipFile, stackTest, startStack } from './harness.mjs';
import { defineMountedRoutes } from './mounted.mjs';

// MailKit's programs (socket-activated below behind a MailKit stack), and
// NeuralAPI's generate (its units checked like theirs)
const PROGRAMS = ['checkout', 'credits', 'send', 'emails', 'webhook'];
const UNIT_PROGRAMS = [...PROGRAMS, 'generate'];
const UNITS = [...UNIT_PROGRAMS.flatMap((p) => [`mailkit-${p}.socket`, `mailkit-${p}.service`]),
	'mailkit-reconcile.service', 'mailkit-reconcile.timer'];
const START_MS = 120_000;
const TEST_MS = 30_000;

function which(name) {
	for (const d of (process.env.PATH || '').split(':').concat(['/usr/bin', '/bin']))
		if (d && existsSync(path.join(d, name)))
			return path.join(d, name);
	return null;
}

const missing = missingPrerequisite('lighttpd');
if (missing)
	skipFile(missing);
for (const tool of ['systemd-analyze', 'systemd-socket-activate'])
	if (!which(tool))
		skipFile(`${tool} not installed (Debian package systemd)`);
for (const u of UNITS)
	if (!existsSync(path.join(BUILDDIR, 'systemd', u)))
		skipFile(`systemd/${u} not built (run make)`);

const unitText = (u) => readFile(path.join(BUILDDIR, 'systemd', u), 'utf8');

test('systemd-analyze verify passes every unit without a warning', async () => {
	const dir = await mkdtemp(path.join(os.tmpdir(), 'mailkit-units-'));
	try {
		// the installed programs' paths, pointed at the build (verify
		// checks that ExecStart= is executable)
		for (const u of UNITS) {
			const text = (await unitText(u)).replace(/^ExecStart=\S*\/([^/\s]+)/m,
			    (_, prog) => `ExecStart=${path.join(BUILDDIR, prog)}`);
			await writeFile(path.join(dir, u), text);
		}
		const r = await new Promise((resolve) => execFile('systemd-analyze',
		    ['verify', '--man=no', ...UNITS.map((u) => path.join(dir, u))],
		    { timeout: 60_000 }, (error, stdout, stderr) =>
			resolve({ code: error ? (error.code ?? 1) : 0, out: stdout + stderr })));
		assert.equal(r.code, 0, r.out);
		assert.equal(r.out.trim(), '', 'no warnings');
	} finally {
		await rm(dir, { recursive: true, force: true });
	}
});

test('each service: socket-activated, restarted on failure, settings file, state dir, own user, hardened', async () => {
	const rundir = /^Define MAILKIT_RUN_DIR "([^"]+)"/m.exec(
	    await readFile(path.join(BUILDDIR, 'conf/apache/mailkit.conf'), 'utf8'))[1];
	for (const p of UNIT_PROGRAMS) {
		const sock = await unitText(`mailkit-${p}.socket`);
		assert.match(sock, new RegExp(`^ListenStream=${rundir}/${p}\\.sock$`, 'm'),
		    'the socket the web server snippets connect to');
		assert.match(sock, /^SocketMode=0660$/m);
		const svc = await unitText(`mailkit-${p}.service`);
		for (const line of ['Restart=on-failure', 'EnvironmentFile=', 'StateDirectory=mailkit',
		    'User=mailkit', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes',
		    'PrivateTmp=yes', `Requires=mailkit-${p}.socket`, `ExecStart=`])
			assert.ok(svc.split('\n').some((l) => l.startsWith(line)), `${p}: ${line}`);
		assert.match(svc, new RegExp(`^ExecStart=\\S+/${p}\\.fcgi$`, 'm'));
	}
	const timer = await unitText('mailkit-reconcile.timer');
	assert.match(timer, /^OnUnitActiveSec=/m);
	assert.match(await unitText('mailkit-reconcile.service'),
	    /^ExecStart=\S+\/mailkit-admin reconcile$/m);
});

{
	let stack;
	const activated = [];	// { child, sock }

	before(async () => {
		stack = await startStack({ server: 'lighttpd' });
		const env = { ...stack.settings, MAILKIT_ENV_FILE: path.join(stack.stateDir, 'test.env'),
		    MAILKIT_LOG_FILE: path.join(stack.stateDir, 'log', 'activated.log'),
		    CHECKOUT_RATE_LIMIT_PER_MINUTE: '100000', CLAIMS_PER_EMAIL: '1000' };
		for (const p of PROGRAMS) {
			// the stack's program keeps its socket under another name, out
			// of the web server's reach; systemd-socket-activate takes the path
			const sock = path.join(stack.stateDir, 'run', `${p}.sock`);
			await rename(sock, `${sock}.away`);
			const args = ['-l', sock];
			for (const [k, v] of Object.entries(env))
				args.push(`--setenv=${k}=${v}`);
			args.push(path.join(BUILDDIR, `${p}.fcgi`));
			const child = spawn('systemd-socket-activate', args,
			    { stdio: ['ignore', 'ignore', 'inherit'] });
			activated.push({ child, sock });
			const end = Date.now() + 10_000;
			while (!existsSync(sock) && Date.now() < end)
				await new Promise((r) => setTimeout(r, 50));
			assert.ok(existsSync(sock), `systemd-socket-activate listens on ${sock}`);
		}
	}, { timeout: START_MS });

	after(async () => {
		for (const { child, sock } of activated) {
			if (child.exitCode === null && child.signalCode === null) {
				const gone = new Promise((r) => child.once('exit', r));
				child.kill('SIGTERM');
				await gone;
			}
			await rm(sock, { force: true });
			await rename(`${sock}.away`, sock).catch(() => {});
		}
		if (stack)
			await stack.stop();
	}, { timeout: START_MS });

	const it = stackTest('socket-activated programs behind lighttpd', () => stack, TEST_MS);
	defineMountedRoutes(it, () => ({ baseUrl: stack.baseUrl }), () => stack);

	it('every program was started by systemd-socket-activate and took its socket', async () => {
		const log = await readFile(path.join(stack.stateDir, 'log', 'activated.log'), 'utf8');
		for (const { child } of activated) {
			assert.equal(child.exitCode, null, 'still serving');
			assert.match(log, new RegExp(`\\[${child.pid}\\] info: \\w+\\.fcgi ready`));
		}
	});
}
