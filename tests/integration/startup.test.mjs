// startup.test.mjs: what the programs refuse or warn about when they start
// (MAILKIT_CHECK_ONLY=1: settings checked, nothing served), and that
// upstream TLS is verified against the system's or UPSTREAM_CA_FILE's CAs.
// No web server involved; every program runs from the build directory.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { BUILDDIR, fcgiRequest, skipFile } from './harness.mjs';

const PROGRAMS = ['checkout', 'credits', 'send', 'webhook'];
const PORT_FIRST = 18700;	// the TLS test's fake Dodo: 18700-18799
const PORT_LAST = 18799;
const RUN_MS = 20_000;

for (const p of PROGRAMS)
	if (!existsSync(path.join(BUILDDIR, `${p}.fcgi`)))
		skipFile(`${p}.fcgi not built`);
if (!existsSync(path.join(BUILDDIR, 'mailkit-admin')))
	skipFile('mailkit-admin not built');

let dir, envFile;
before(async () => {
	dir = await mkdtemp(path.join(os.tmpdir(), 'mailkit-startup-'));
	envFile = path.join(dir, 'mailkit.env');
	await writeFile(envFile, '# startup tests\n', { mode: 0o600 });
});
after(async () => { if (dir) await rm(dir, { recursive: true, force: true }); });

// A complete configuration pointing nowhere real; `extra` overrides it
// (a value of undefined removes the setting).
function settings(extra = {}) {
	const env = {
		PATH: process.env.PATH,
		MAILKIT_ENV_FILE: envFile,
		MAILKIT_DB: path.join(dir, 'mailkit.db'),
		MAILKIT_LOG_FILE: '',
		DODO_PAYMENTS_API_KEY: 'test_dodo_key',
		DODO_WEBHOOK_KEY: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
		CREDIT_ENTITLEMENT_ID: 'cde_test',
		PLAN_PRODUCT_ID: 'pdt_plan',
		TOPUP_PRODUCT_ID: 'pdt_topup',
		RESEND_API_KEY: 're_test',
		...extra,
	};
	for (const [k, v] of Object.entries(env))
		if (v === undefined)
			delete env[k];
	return env;
}

function run(file, args, env) {
	return new Promise((resolve) => {
		execFile(file, args, { env, timeout: RUN_MS, killSignal: 'SIGKILL' },
		    (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0,
			stdout, stderr }));
	});
}

// Check one program's settings the way mailkit-stack does.
const check = (prog, extra) => run(path.join(BUILDDIR, `${prog}.fcgi`), [],
    { ...settings(extra), MAILKIT_CHECK_ONLY: '1' });

test('every program starts with a complete configuration, without warnings', async () => {
	for (const p of PROGRAMS) {
		const r = await check(p);
		assert.equal(r.code, 0, `${p}: ${r.stderr}`);
		assert.doesNotMatch(r.stderr, /warn/, `${p}: ${r.stderr}`);
	}
});

test('webhook.fcgi refuses to start without a signing secret', async () => {
	for (const extra of [{ DODO_WEBHOOK_KEY: undefined }, { DODO_WEBHOOK_KEY: '' },
	    { DODO_WEBHOOK_KEY: 'whsec_' }]) {
		const r = await check('webhook', extra);
		assert.notEqual(r.code, 0, `started with ${JSON.stringify(extra)}`);
		assert.match(r.stderr, /DODO_WEBHOOK_KEY/, r.stderr);
	}
});

test('a plain-http upstream is refused unless it is loopback or explicitly allowed', async () => {
	for (const [name, url] of [['DODO_PAYMENTS_BASE_URL', 'http://dodo.example.com'],
	    ['DODO_PAYMENTS_BASE_URL', 'http://10.1.2.3:8080/sandbox/dodo'],
	    ['RESEND_BASE_URL', 'http://api.resend.com'],
	    ['RESEND_BASE_URL', 'http://127.0.0.1.evil.example/x'],
	    ['RESEND_BASE_URL', 'http://localhost@evil.example/x']]) {
		for (const p of PROGRAMS) {
			const r = await check(p, { [name]: url });
			assert.notEqual(r.code, 0, `${p} started with ${name}=${url}`);
			assert.match(r.stderr, new RegExp(`${name} uses plain http`), `${p}: ${r.stderr}`);
		}
		const ok = await check('send', { [name]: url, ALLOW_INSECURE_UPSTREAM: '1' });
		assert.equal(ok.code, 0, ok.stderr);
		assert.match(ok.stderr, /ALLOW_INSECURE_UPSTREAM=1/, 'the override is logged');
	}
	for (const url of ['http://127.0.0.1:8080/sandbox/dodo', 'http://localhost:8080',
	    'http://[::1]:8080', 'http://127.1.2.3', 'https://dodo.example.com']) {
		const r = await check('send', { DODO_PAYMENTS_BASE_URL: url, RESEND_BASE_URL: url });
		assert.equal(r.code, 0, `${url}: ${r.stderr}`);
	}
});

test('a settings file readable by others is warned about at start', async () => {
	await chmod(envFile, 0o644);
	try {
		for (const p of PROGRAMS) {
			const r = await check(p);
			assert.equal(r.code, 0, r.stderr);
			assert.match(r.stderr, /warn: settings file .* readable or writable by group or others \(mode 0644\)/,
			    `${p}: ${r.stderr}`);
		}
		const a = await run(path.join(BUILDDIR, 'mailkit-admin'), ['keys', 'list'], settings());
		assert.match(a.stderr, /readable or writable by group or others/, a.stderr);
	} finally {
		await chmod(envFile, 0o600);
	}
	const quiet = await check('send');
	assert.doesNotMatch(quiet.stderr, /readable/, quiet.stderr);
});

test('MAILKIT_AUTH=customer_id is said loudly by every program; other values are refused', async () => {
	for (const p of PROGRAMS) {
		const r = await check(p, { MAILKIT_AUTH: 'customer_id' });
		assert.equal(r.code, 0, r.stderr);
		assert.match(r.stderr, /warn: MAILKIT_AUTH=customer_id/, `${p}: ${r.stderr}`);
	}
	for (const v of ['none', 'API_KEY', '']) {
		const r = await check('send', { MAILKIT_AUTH: v });
		assert.notEqual(r.code, 0, `MAILKIT_AUTH=${v} accepted`);
		assert.match(r.stderr, /MAILKIT_AUTH/, r.stderr);
	}
	for (const v of ['-1', 'x', '10000001']) {
		const r = await check('send', { RATE_LIMIT_PER_MINUTE: v });
		assert.notEqual(r.code, 0, `RATE_LIMIT_PER_MINUTE=${v} accepted`);
	}
	assert.equal((await check('send', { RATE_LIMIT_PER_MINUTE: '0' })).code, 0, 'limit off');
});

test('an unreadable UPSTREAM_CA_FILE is refused at start', async () => {
	const r = await check('send', { UPSTREAM_CA_FILE: path.join(dir, 'missing.pem') });
	assert.notEqual(r.code, 0);
	assert.match(r.stderr, /UPSTREAM_CA_FILE/, r.stderr);
});

// ------------------------------------------------------------- TLS

function freePort() {
	const tryPort = (port) => new Promise((resolve) => {
		const s = net.createServer();
		s.once('error', () => resolve(false));
		s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
	});
	return (async () => {
		const span = PORT_LAST - PORT_FIRST + 1, start = Math.floor(Math.random() * span);
		for (let i = 0; i < span; i++)
			if (await tryPort(PORT_FIRST + (start + i) % span))
				return PORT_FIRST + (start + i) % span;
		throw new Error('no free port');
	})();
}

test('upstream TLS is verified: a self-signed Dodo fails, the same with UPSTREAM_CA_FILE works', async () => {
	const key = path.join(dir, 'tls.key'), cert = path.join(dir, 'tls.pem');
	const gen = await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
	    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
	    '-keyout', key, '-out', cert], { PATH: process.env.PATH });
	assert.equal(gen.code, 0, `openssl: ${gen.stderr}`);
	const { readFile } = await import('node:fs/promises');
	let calls = 0;
	const server = https.createServer({ key: await readFile(key), cert: await readFile(cert) },
	    (req, res) => {
		calls++;
		res.writeHead(200, { 'Content-Type': 'application/json' });
		res.end(JSON.stringify({ customer_id: 'cus_tls', email: 'tls@example.org', name: 'TLS' }));
	});
	const port = await freePort();
	await new Promise((r) => server.listen(port, '127.0.0.1', r));
	try {
		const base = { DODO_PAYMENTS_BASE_URL: `https://127.0.0.1:${port}`,
		    UPSTREAM_MAX_RETRIES: '0', UPSTREAM_TIMEOUT_MS: '5000' };
		const admin = path.join(BUILDDIR, 'mailkit-admin');
		const refused = await run(admin, ['keys', 'issue', 'cus_tls'], settings(base));
		assert.notEqual(refused.code, 0, 'issued a key over an unverified connection');
		assert.equal(refused.stdout, '', 'no key printed');
		assert.equal(calls, 0, 'the request never reached the unverified server');
		const trusted = await run(admin, ['keys', 'issue', 'cus_tls'],
		    settings({ ...base, UPSTREAM_CA_FILE: cert }));
		assert.equal(trusted.code, 0, trusted.stderr);
		assert.match(trusted.stdout.trim(), /^mk_[A-Za-z0-9_-]{43}$/);
		assert.equal(calls, 1);
	} finally {
		server.close();
	}
});

// ------------------------------------------------------------- send.fcgi alone

// send.fcgi on its own socket (MAILKIT_SOCKET), no web server: content limits
// below MAX_BODY_BYTES, checked before any upstream (which points nowhere).
test('send.fcgi: html or text over 512 KiB → 400, header injection → 400, no upstream needed', async () => {
	const sock = path.join(dir, 'send.sock');
	const child = spawn(path.join(BUILDDIR, 'send.fcgi'), [], { stdio: ['ignore', 'ignore', 'pipe'],
	    env: settings({ MAILKIT_SOCKET: sock, MAX_BODY_BYTES: String(2 * 1024 * 1024),
		MAILKIT_AUTH: 'customer_id', DODO_PAYMENTS_BASE_URL: 'http://127.0.0.1:9',
		RESEND_BASE_URL: 'http://127.0.0.1:9', UPSTREAM_MAX_RETRIES: '0' }) });
	let stderr = '';
	child.stderr.on('data', (d) => { stderr += d; });
	try {
		const until = Date.now() + 10_000;
		while (!existsSync(sock) || !/ready/.test(stderr)) {
			assert.ok(Date.now() < until, `send.fcgi did not start: ${stderr}`);
			await new Promise((r) => setTimeout(r, 50));
		}
		const post = (body) => fcgiRequest(sock, { REQUEST_METHOD: 'POST', REQUEST_URI: '/send',
		    CONTENT_TYPE: 'application/json', CONTENT_LENGTH: Buffer.byteLength(body) },
		    { stdin: body });
		const base = { customer_id: 'cus_alone', to: 'a@example.org', subject: 'hi' };
		for (const field of ['html', 'text']) {
			const r = await post(JSON.stringify({ ...base, [field]: 'x'.repeat(512 * 1024 + 1) }));
			assert.equal(r.status, 400, r.stdout.slice(0, 300));
			assert.match(r.stdout, new RegExp(`${field} is longer than 524288 bytes`));
		}
		for (const subject of ['a\r\nBcc: b@example.org', 'a\nb', 'a\u0000b']) {
			const r = await post(JSON.stringify({ ...base, subject, html: 'x' }));
			assert.equal(r.status, 400, r.stdout.slice(0, 300));
		}
		const noType = await fcgiRequest(sock, { REQUEST_METHOD: 'POST', REQUEST_URI: '/send',
		    CONTENT_LENGTH: '2' }, { stdin: '{}' });
		assert.equal(noType.status, 415, 'no Content-Type');
		// within the limits the request goes on to the (unreachable) payments API
		const ok = await post(JSON.stringify({ ...base, html: 'x'.repeat(512 * 1024) }));
		assert.ok([502, 504].includes(ok.status), ok.stdout.slice(0, 300));
	} finally {
		child.kill('SIGTERM');
		await new Promise((r) => child.once('exit', r));
	}
});

test('each program names every missing and malformed setting in one message', async () => {
	const r = await check('send', { DODO_PAYMENTS_API_KEY: undefined,
	    CREDIT_ENTITLEMENT_ID: undefined, RESEND_API_KEY: undefined, MAX_BODY_BYTES: 'big' });
	assert.notEqual(r.code, 0);
	for (const name of ['DODO_PAYMENTS_API_KEY', 'CREDIT_ENTITLEMENT_ID', 'RESEND_API_KEY',
	    'MAX_BODY_BYTES'])
		assert.match(r.stderr, new RegExp(name), r.stderr);
	assert.equal(r.stderr.trim().split('\n').length, 1, `one message: ${r.stderr}`);
});

test('an installed mailkit-stack without keys runs no sandbox by itself: it names every missing setting', async () => {
	// a copy outside the build tree is the installed script
	const inst = await mkdtemp(path.join(os.tmpdir(), 'mailkit-installed-'));
	try {
		await writeFile(path.join(inst, 'mailkit-stack'),
		    await readFile(path.join(BUILDDIR, 'mailkit-stack')), { mode: 0o755 });
		const env = { PATH: process.env.PATH };
		const stack = (args, extra = {}) => run(path.join(inst, 'mailkit-stack'),
		    ['start', '--env-file', envFile, '--state', path.join(inst, 'state'), ...args],
		    { ...env, ...extra });
		const r = await stack([], { RESEND_API_KEY: 're_set' });
		assert.equal(r.code, 1, r.stdout + r.stderr);
		assert.match(r.stderr, /DODO_PAYMENTS_API_KEY, DODO_WEBHOOK_KEY, CREDIT_ENTITLEMENT_ID, PLAN_PRODUCT_ID, TOPUP_PRODUCT_ID not set/);
		assert.match(r.stderr, /--sandbox/);
		assert.doesNotMatch(r.stderr, /RESEND_API_KEY/, 'a set one is not named');
		// asked for, the sandbox gets past the settings (and stops only for
		// want of installed programs here)
		const s = await stack(['--sandbox']);
		assert.doesNotMatch(s.stderr, /not set/, s.stderr);
	} finally {
		await rm(inst, { recursive: true, force: true });
	}
});
