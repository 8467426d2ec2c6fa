// harness.mjs: start the real MailKit stack (mailkit-stack start) on a free
// loopback port with a fresh state dir, and helpers to drive it.
// Node 20 built-ins only.
import { execFile, spawn } from 'node:child_process';
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import { accessSync, constants as fsc, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SRCDIR = process.env.MAILKIT_SRCDIR || path.resolve(here, '../..');
export const BUILDDIR = process.env.MAILKIT_BUILDDIR || SRCDIR;

const PORT_FIRST = 18400;	// our range: 18400-18499
const PORT_LAST = 18499;
const STACK_TIMEOUT_MS = 90_000;	// mailkit-stack start/stop, each
const FETCH_TIMEOUT_MS = 30_000;	// one HTTP request
const PROGRAMS = ['checkout', 'credits', 'send', 'webhook', 'sandbox'];
// Every program mailkit-stack may run, for its pid files (emails and generate
// run when built, generate only for NeuralAPI).
const RUN_PROGRAMS = [...PROGRAMS, 'emails', 'generate'];

// Settings the stack exports in sandbox mode (mailkit-stack.in).
const SANDBOX_SETTINGS = {
	DODO_PAYMENTS_API_KEY: 'sandbox_dodo_key',
	RESEND_API_KEY: 're_sandbox_key',
	CREDIT_ENTITLEMENT_ID: 'cde_sandbox_email',
	PLAN_PRODUCT_ID: 'pdt_sandbox_plan',
	TOPUP_PRODUCT_ID: 'pdt_sandbox_topup',
};
// ... and for a NeuralAPI stack (MAILKIT_PRODUCT=neuralapi).
// (its catalogue: what tests of a NeuralAPI stack name)
export const NEURALAPI_SANDBOX_CATALOG = {
	CREDIT_ENTITLEMENT_ID: 'cde_sandbox_tokens',
	STARTER_PLAN_PRODUCT_ID: 'pdt_sandbox_starter',
	PRO_PLAN_PRODUCT_ID: 'pdt_sandbox_pro',
	TOPUP_PRODUCT_ID: 'pdt_sandbox_token_topup',
};
const NEURALAPI_SANDBOX_SETTINGS = {
	DODO_PAYMENTS_API_KEY: 'sandbox_dodo_key',
	RESEND_API_KEY: 're_sandbox_key',
	...NEURALAPI_SANDBOX_CATALOG,
	OPENAI_API_KEY: 'sk-sandbox',
};

// The suites subscribe many buyers from 127.0.0.1 within a minute: the
// per-address limit of the unauthenticated checkout routes and the cap on
// open checkouts per email are raised (security.test.mjs tests the defaults' kind).
const TEST_LIMITS = {
	CHECKOUT_RATE_LIMIT_PER_MINUTE: '100000',
	CLAIMS_PER_EMAIL: '1000',
};

// ------------------------------------------------------------- prerequisites

function findExecutable(name, extraDirs = ['/usr/sbin', '/sbin', '/usr/local/sbin']) {
	const dirs = (process.env.PATH || '').split(':').concat(extraDirs);
	for (const d of dirs) {
		if (!d)
			continue;
		const p = path.join(d, name);
		try {
			accessSync(p, fsc.X_OK);
			return p;
		} catch { /* next */ }
	}
	return null;
}

// A reason the stack cannot run with `server` here, or null.
export function missingPrerequisite(server = 'lighttpd') {
	const stack = path.join(BUILDDIR, 'mailkit-stack');
	if (!existsSync(stack))
		return `${stack} not built (run make)`;
	for (const p of PROGRAMS) {
		if (!existsSync(path.join(BUILDDIR, `${p}.fcgi`)))
			return `${p}.fcgi not built in ${BUILDDIR}`;
	}
	if (!findExecutable('spawn-fcgi'))
		return 'spawn-fcgi not installed';
	if (server === 'lighttpd' && !findExecutable('lighttpd'))
		return 'lighttpd not installed';
	if (server === 'apache' && !findExecutable('apache2') && !findExecutable('httpd'))
		return 'apache2 not installed';
	return null;
}

// A whole test file cannot run: TAP "skip all", or a failure when every
// test is required (CI).  Call before defining any test.
export function skipFile(reason) {
	if (process.env.MAILKIT_REQUIRE_ALL_TESTS === '1') {
		process.stdout.write(`Bail out! ${reason} (MAILKIT_REQUIRE_ALL_TESTS=1)\n`);
		process.exit(1);
	}
	process.stdout.write(`1..0 # SKIP ${reason}\n`);
	process.exit(0);
}

// The official SDKs a test file drives, by npm package name, from
// tests/node_modules (npm ci --prefix tests); without them the file cannot run
// (skipFile).  dodoSdk(module) is the DodoPayments client class of the
// dodopayments package, however it is exported.
export function testPackages(...names) {
	const requireTests = createRequire(path.join(SRCDIR, 'tests', 'package.json'));
	try {
		return names.map((n) => requireTests(n));
	} catch (e) {
		skipFile(`node_modules missing (npm ci --prefix tests): ${e.message.split('\n')[0]}`);
	}
}
export const dodoSdk = (m) => m.default ?? m.DodoPayments ?? m;

// ------------------------------------------------------------- processes

function run(file, args, opts) {
	return new Promise((resolve) => {
		execFile(file, args, { timeout: STACK_TIMEOUT_MS, killSignal: 'SIGKILL', ...opts },
		    (error, stdout, stderr) => resolve({ error, stdout, stderr,
			code: error ? (error.code ?? 1) : 0 }));
	});
}

function portFree(port) {
	return new Promise((resolve) => {
		const srv = net.createServer();
		srv.once('error', () => resolve(false));
		srv.listen({ port, host: '127.0.0.1', exclusive: true }, () => srv.close(() => resolve(true)));
	});
}

// Ports this process took, and where test processes say so to each other:
// a stack that restarts leaves its port free for a moment, and another test
// file (make -j2) must not take it meanwhile.  A claim is a file named after
// the port holding the claimer's pid; a dead claimer's claim is taken over.
const PORT_CLAIMS = path.join(os.tmpdir(), 'mailkit-test-ports');
const claimedPorts = new Set();

function claimPort(port) {
	const file = path.join(PORT_CLAIMS, String(port));
	mkdirSync(PORT_CLAIMS, { recursive: true, mode: 0o700 });
	for (let tries = 0; tries < 2; tries++) {
		try {
			writeFileSync(file, String(process.pid), { flag: 'wx' });
			claimedPorts.add(port);
			return true;
		} catch (e) {
			if (e.code !== 'EEXIST')
				throw e;
		}
		const owner = Number(readFileSync(file, 'utf8'));
		try {
			if (owner > 0) {
				process.kill(owner, 0);
				return false;		// alive: its port
			}
		} catch { /* gone: take it over */ }
		rmSync(file, { force: true });
	}
	return false;
}

// Give a claimed port back (its stack has stopped for good).
export function releasePort(port) {
	if (claimedPorts.delete(port))
		rmSync(path.join(PORT_CLAIMS, String(port)), { force: true });
}

process.on('exit', () => {
	for (const port of claimedPorts)
		rmSync(path.join(PORT_CLAIMS, String(port)), { force: true });
});

// A port in our range that nothing listens on right now and no other test
// process holds (random start so parallel test files rarely meet); it stays
// this process's until releasePort() or its exit.
export async function freePort() {
	const span = PORT_LAST - PORT_FIRST + 1;
	const start = Math.floor(Math.random() * span);
	for (let i = 0; i < span; i++) {
		const port = PORT_FIRST + (start + i) % span;
		if (!claimedPorts.has(port) && await portFree(port) && claimPort(port))
			return port;
	}
	throw new Error(`no free port in ${PORT_FIRST}-${PORT_LAST}`);
}

// Environment for the stack: ours, minus anything that could point it at
// real services or another configuration, plus the test's settings.
function stackEnv(extra) {
	const env = {};
	for (const [k, v] of Object.entries(process.env)) {
		if (/^(DODO_|RESEND_|SENDGRID_|POSTMARK_|SMTP_|SANDBOX_|OPENAI_|MAILKIT_(?!REQUIRE_ALL_TESTS$))/.test(k) ||
		    /_PLAN_/.test(k) || k === 'PLANS')
			continue;
		if (['PORT', 'BASE_URL', 'MAIL_FROM', 'MAIL_PROVIDER', 'CREDIT_ENTITLEMENT_ID',
		    'PLAN_PRODUCT_ID', 'TOPUP_PRODUCT_ID', 'MAX_BODY_BYTES'].includes(k) ||
		    k.startsWith('UPSTREAM_'))
			continue;
		env[k] = v;
	}
	for (const [k, v] of Object.entries(extra))
		env[k] = String(v);
	return env;
}

/*
 * Start mailkit-stack in the background with a fresh state dir and a free
 * port.  Returns { baseUrl, sandboxUrl, stateDir, settings, stop, logs }.
 * `env` is added to the programs' environment (e.g. MAX_BODY_BYTES).
 * stop() stops exactly that stack and removes the state dir (kept when
 * MAILKIT_KEEP_STATE=1 or when asked with stop({ keep: true })).
 */
export async function startStack({ server = 'lighttpd', env = {} } = {}) {
	const stackBin = path.join(BUILDDIR, 'mailkit-stack');
	const stateDir = await mkdtemp(path.join(os.tmpdir(), `mailkit-${server}-`));
	// An explicit, empty env file: a developer's ./.env or
	// /etc/mailkit/mailkit.env must never leak real keys into tests.
	const envFile = path.join(stateDir, 'test.env');
	await writeFile(envFile, '# integration tests: sandbox mode, settings from the environment\n',
	    { mode: 0o600 });

	let lastFailure = '';
	for (let attempt = 0; attempt < 3; attempt++) {
		const port = await freePort();
		const baseUrl = `http://127.0.0.1:${port}`;
		const childEnv = stackEnv({ BASE_URL: baseUrl, ...checkerEnv(stateDir), ...TEST_LIMITS,
		    ...env });
		const common = ['--server', server, '--port', String(port), '--state', stateDir];
		const r = await run(stackBin, ['start', ...common, '--env-file', envFile],
		    { cwd: stateDir, env: childEnv });
		if (r.code !== 0) {
			releasePort(port);
			lastFailure = `mailkit-stack start (${server}, port ${port}) failed ` +
			    `with ${r.code}:\n${r.stdout}${r.stderr}`;
			await run(stackBin, ['stop', '--state', stateDir], { cwd: stateDir, env: childEnv });
			// Lost a race for the port: try another one.
			if (/port \d+ is in use|[Aa]ddress already in use|could not bind|can't bind/.test(r.stderr + lastFailure))
				continue;
			lastFailure += await logTail(stateDir);
			break;
		}
		let webhookKey = '';
		try {
			webhookKey = (await readFile(path.join(stateDir, 'sandbox-webhook-key'), 'utf8')).trim();
		} catch { /* real-keys mode: none */ }
		let stopped = false;
		const stack = {
			server,
			port,
			baseUrl,
			sandboxUrl: `${baseUrl}/sandbox`,
			stateDir,
			settings: {
				...(env.MAILKIT_PRODUCT === 'neuralapi' ? NEURALAPI_SANDBOX_SETTINGS :
				    SANDBOX_SETTINGS),
				PORT: String(port),
				BASE_URL: baseUrl,
				DODO_PAYMENTS_BASE_URL: `${baseUrl}/sandbox/dodo`,
				RESEND_BASE_URL: `${baseUrl}/sandbox/resend`,
				DODO_WEBHOOK_KEY: webhookKey,
				MAILKIT_DB: path.join(stateDir, 'mailkit.db'),
				SANDBOX_DB: path.join(stateDir, 'sandbox.db'),
				...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
			},
			logs: () => logTail(stateDir),
			// Stop and start again on the same port and state (crash tests).
			async restart() {
				const s = await run(stackBin, ['stop', '--state', stateDir],
				    { cwd: os.tmpdir(), env: childEnv });
				if (s.code !== 0)
					throw new Error(`mailkit-stack stop failed: ${s.stdout}${s.stderr}`);
				const r = await run(stackBin, ['start', ...common, '--env-file', envFile],
				    { cwd: stateDir, env: childEnv });
				if (r.code !== 0)
					throw new Error(`mailkit-stack restart failed: ${r.stdout}${r.stderr}` +
					    await logTail(stateDir));
				stopped = false;
				return stack;
			},
			// Stop one program of the stack for good (its supervisor first,
			// so nothing restarts it), e.g. so that a test's own copy of it
			// is the only one working the shared state.
			async stopProgram(name) {
				const dir = path.join(stateDir, 'run');
				const programs = await pidsIn(path.join(dir, `${name}.pid`));
				await stopPids(await pidsIn(path.join(dir, `${name}.supervisor.pid`)));
				await stopPids([...programs, ...await pidsIn(path.join(dir, `${name}.pid`))]);
			},
			async stop({ keep = false } = {}) {
				if (stopped)
					return;
				stopped = true;
				const pids = await recordedPids(stateDir);
				const s = await run(stackBin, ['stop', '--state', stateDir],
				    { cwd: os.tmpdir(), env: childEnv });
				if (s.code !== 0)
					throw new Error(`mailkit-stack stop failed: ${s.stdout}${s.stderr}`);
				const alive = pids.filter(isAlive);
				if (alive.length > 0)
					throw new Error(`still running after mailkit-stack stop: ${alive.join(' ')}`);
				releasePort(port);
				const reports = await checkerReports(stateDir);
				if (reports) {
					throw new Error('memory checker reports (state kept in ' +
					    `${stateDir}):${reports}`);
				}
				if (!keep && process.env.MAILKIT_KEEP_STATE !== '1')
					await rm(stateDir, { recursive: true, force: true });
			},
		};
		return stack;
	}
	if (process.env.MAILKIT_KEEP_STATE !== '1')
		await rm(stateDir, { recursive: true, force: true });
	throw new Error(lastFailure || 'mailkit-stack start failed');
}

/*
 * The `it` of a test file that runs against one stack: it(name, fn) is a
 * test named "<server>: name" with a time limit, whose failure message says
 * where the state of getStack() is and ends with the tail of its logs.
 */
export function stackTest(server, getStack, timeoutMs) {
	return (name, fn) => test(`${server}: ${name}`, { timeout: timeoutMs }, async (t) => {
		try {
			await fn(t);
		} catch (e) {
			const stack = getStack();
			if (stack)
				e.message += `\n(state ${stack.stateDir})${await stack.logs()}`;
			throw e;
		}
	});
}

// Restart a stack from startStack() in place; resolves to the same stack.
export const restartStack = (stack) => stack.restart();

// ------------------------------------------------------------- memory checkers

/*
 * The programs of a sanitizer build (configure --enable-sanitizers) write
 * their reports into STATE/log/{asan,ubsan}.PID; with MAILKIT_TEST_VALGRIND=1
 * every FastCGI program runs under valgrind memcheck, logging to
 * STATE/log/valgrind.PID.log.  stop() fails on any report.  Options already
 * in ASAN_OPTIONS/UBSAN_OPTIONS are kept (make check sets them).
 */
function checkerEnv(stateDir) {
	const log = path.join(stateDir, 'log');
	const withPath = (opts, file) => [opts, `log_path=${path.join(log, file)}`]
	    .filter(Boolean).join(':');
	const env = {
		ASAN_OPTIONS: withPath(process.env.ASAN_OPTIONS, 'asan'),
		UBSAN_OPTIONS: withPath(process.env.UBSAN_OPTIONS, 'ubsan'),
	};
	if (process.env.MAILKIT_TEST_VALGRIND === '1') {
		env.MAILKIT_WRAPPER = ['valgrind', '--error-exitcode=99', '--leak-check=full',
		    '--show-leak-kinds=definite,indirect', '--errors-for-leak-kinds=definite,indirect',
		    '--track-origins=yes', '--num-callers=30',
		    `--log-file=${path.join(log, 'valgrind.%p.log')}`].join(' ');
	}
	return env;
}

// Every report in STATE/log, as text for an error message ('' if none).
async function checkerReports(stateDir) {
	const log = path.join(stateDir, 'log');
	let files = [];
	try {
		files = await readdir(log);
	} catch { return ''; }
	let out = '';
	for (const f of files.sort()) {
		const text = await readFile(path.join(log, f), 'utf8').catch(() => '');
		if (/^(asan|ubsan)\./.test(f)) {
			out += `\n--- ${f}\n${text.slice(0, 4000)}`;
		} else if (/^valgrind\.\d+\.log$/.test(f)) {
			// the log of a program that exited cleanly ends with the summaries
			const errors = /ERROR SUMMARY: (\d+) errors/.exec(text);
			const lost = [...text.matchAll(/(definitely|indirectly) lost: ([\d,]+) bytes/g)]
			    .filter((m) => m[2] !== '0');
			if (!errors || errors[1] !== '0' || lost.length > 0)
				out += `\n--- ${f}${errors ? '' : ' (no ERROR SUMMARY: killed?)'}\n` +
				    text.slice(-6000);
		}
	}
	return out;
}

// The pids in a pid file of mailkit-stack ([] when there is none).
async function pidsIn(file) {
	try {
		return (await readFile(file, 'utf8')).split(/\s+/).filter((w) => /^\d+$/.test(w))
		    .map(Number);
	} catch {
		return [];
	}
}

// Every pid mailkit-stack recorded in STATE/run (programs and web server).
async function recordedPids(stateDir) {
	const pids = [];
	for (const f of [...RUN_PROGRAMS, ...RUN_PROGRAMS.map((p) => `${p}.supervisor`), 'server'])
		pids.push(...await pidsIn(path.join(stateDir, 'run', `${f}.pid`)));
	return pids;
}

// SIGTERM these pids and wait for them to go (bounded); SIGKILL what is left.
async function stopPids(pids) {
	for (const signal of ['SIGTERM', 'SIGKILL']) {
		for (const p of pids.filter(isAlive)) {
			try { process.kill(p, signal); } catch { /* gone meanwhile */ }
		}
		for (let i = 0; i < 50 && pids.some(isAlive); i++)
			await new Promise((r) => setTimeout(r, 100));
		if (!pids.some(isAlive))
			return;
	}
	throw new Error(`pids ${pids.filter(isAlive).join(' ')} outlived SIGKILL`);
}

function isAlive(pid) {
	try {
		process.kill(pid, 0);
		return true;
	} catch (e) {
		return e.code === 'EPERM';
	}
}

// The last lines of every log in the state dir, for failure messages.
export async function logTail(stateDir, lines = 15) {
	let out = '';
	for (const f of ['mailkit.log', 'sandbox.log', 'lighttpd-error.log', 'apache-error.log',
	    'spawn-fcgi.log', 'server.out']) {
		try {
			const text = await readFile(path.join(stateDir, 'log', f), 'utf8');
			const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
			if (tail)
				out += `\n--- ${f}\n${tail}`;
		} catch { /* absent */ }
	}
	return out;
}

// ------------------------------------------------------------- HTTP

/*
 * One request to the stack.  `json` is sent as application/json; `body`
 * (string/Buffer/URLSearchParams) as is; `key` as Authorization: Bearer.  Resolves to { status, headers,
 * text, json } where json is the parsed body or undefined.
 */
export async function request(stack, method, urlPath, { json, body, headers = {},
    redirect = 'manual', timeout = FETCH_TIMEOUT_MS, key } = {}) {
	const url = urlPath.startsWith('http') ? urlPath : stack.baseUrl + urlPath;
	const h = { ...headers };
	if (key)
		h.Authorization = `Bearer ${key}`;
	if (json !== undefined) {
		body = JSON.stringify(json);
		if (!Object.keys(h).some((k) => k.toLowerCase() === 'content-type'))
			h['Content-Type'] = 'application/json';
	}
	const res = await fetch(url, { method, headers: h, body, redirect,
	    signal: AbortSignal.timeout(timeout) });
	const text = await res.text();
	let parsed;
	try {
		parsed = JSON.parse(text);
	} catch { parsed = undefined; }
	return { status: res.status, headers: res.headers, text, json: parsed };
}

export const getJson = (stack, p, opts) => request(stack, 'GET', p, opts);
export const postJson = (stack, p, json, opts = {}) => request(stack, 'POST', p, { ...opts, json });

// Make an absolute URL the sandbox produced (http://localhost:PORT/...)
// point at the address the stack listens on.
export function onStack(stack, url) {
	const u = new URL(url, stack.baseUrl);
	const b = new URL(stack.baseUrl);
	if (u.hostname === 'localhost' || u.hostname === '127.0.0.1') {
		u.hostname = b.hostname;
		u.port = b.port;
	}
	return u.toString();
}

// ------------------------------------------------------------- webhooks

// Standard Webhooks v1 signature header for (id, timestamp, raw body).
export function signWebhook(secret, id, timestamp, body) {
	const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
	const mac = createHmac('sha256', key).update(`${id}.${timestamp}.${body}`).digest('base64');
	return `v1,${mac}`;
}

// Headers for a signed delivery of `body` (string) with the stack's key.
export function webhookHeaders(stack, body, { id = `msg_${randomUUID()}`,
    timestamp = Math.floor(Date.now() / 1000), secret } = {}) {
	const key = secret ?? stack.settings.DODO_WEBHOOK_KEY;
	return {
		'Content-Type': 'application/json',
		'webhook-id': id,
		'webhook-timestamp': String(timestamp),
		'webhook-signature': signWebhook(key, id, String(timestamp), body),
	};
}

// A random whsec_ secret (for "wrong key" tests).
export const randomSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

// ------------------------------------------------------------- sandbox

// The next `count` calls of `target` fail with `mode` ("500", "429", "422",
// "stall", "drop", "late" or "accept500"; src/sandbox/README.md).
export async function sandboxFault(stack, { target, mode, count = 1, stall_ms, late_ms }) {
	const body = { target, mode, count };
	if (stall_ms !== undefined)
		body.stall_ms = stall_ms;
	if (late_ms !== undefined)
		body.late_ms = late_ms;
	const r = await postJson(stack, '/sandbox/admin/faults', body);
	if (r.status < 200 || r.status > 299)
		throw new Error(`sandbox fault ${JSON.stringify(body)}: ${r.status} ${r.text}`);
	return r.json;
}

// A ledger entry straight at the sandbox's Dodo API, as another writer
// (or a late request) would make it; resolves to the fetch Response.
export function dodoLedgerEntry(stack, customerId, entry) {
	return fetch(`${stack.settings.DODO_PAYMENTS_BASE_URL}/credit-entitlements/` +
	    `${stack.settings.CREDIT_ENTITLEMENT_ID}/balances/${customerId}/ledger-entries`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json',
		    Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}` },
		body: JSON.stringify(entry) });
}

// The newest 100 entries of a customer's ledger, straight from the sandbox.
export async function dodoLedger(stack, customerId) {
	const r = await fetch(`${stack.settings.DODO_PAYMENTS_BASE_URL}/credit-entitlements/` +
	    `${stack.settings.CREDIT_ENTITLEMENT_ID}/balances/${customerId}/ledger?page_size=100`, {
		headers: { Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}` } });
	return (await r.json()).items;
}

export async function clearSandboxFaults(stack) {
	const r = await request(stack, 'DELETE', '/sandbox/admin/faults');
	if (r.status < 200 || r.status > 299)
		throw new Error(`sandbox clear faults: ${r.status} ${r.text}`);
}

// A list from the sandbox admin API, whatever its envelope.
export function listOf(j) {
	if (Array.isArray(j))
		return j;
	for (const k of ['items', 'emails', 'webhooks', 'deliveries', 'data'])
		if (j && Array.isArray(j[k]))
			return j[k];
	return [];
}

export async function sandboxEmails(stack) {
	const r = await getJson(stack, '/sandbox/admin/emails');
	if (r.status !== 200)
		throw new Error(`GET /sandbox/admin/emails: ${r.status} ${r.text}`);
	return listOf(r.json);
}

/*
 * The html and text of the newest email to `to` whose subject contains
 * `subject`, as sent, straight from the sandbox's database: the outbox
 * page and GET /sandbox/admin/emails mask the API keys MailKit mails.
 */
export async function mailedText(stack, to, subject) {
	const q = (v) => `'${String(v).replace(/'/g, "''")}'`;
	const r = await run('sqlite3', ['-readonly', path.join(stack.stateDir, 'sandbox.db'),
	    `SELECT coalesce(html, '') || char(10) || coalesce(text, '') FROM emails WHERE `
	    + `instr(lower(to_json), lower(${q(to)})) > 0 AND instr(subject, ${q(subject)}) > 0 `
	    + 'ORDER BY seq DESC LIMIT 1'], { cwd: stack.stateDir });
	if (r.code !== 0)
		throw new Error(`sqlite3 ${stack.stateDir}/sandbox.db: ${r.stderr}`);
	return r.stdout;
}

// sqlite3 on one of a stack's databases (waiting up to 10 s for its lock):
// the rows as arrays of strings.
export function sqliteRows(db, sql) {
	return new Promise((resolve, reject) => {
		const p = spawn('sqlite3', ['-cmd', '.timeout 10000', '-separator', '\t', db, sql]);
		let out = '', err = '';
		p.stdout.on('data', (d) => { out += d; });
		p.stderr.on('data', (d) => { err += d; });
		p.on('close', (code) => code === 0 ?
		    resolve(out.split('\n').filter(Boolean).map((l) => l.split('\t'))) :
		    reject(new Error(err)));
	});
}

// Upstream timeouts for fault tests: 1.5 s per attempt, one retry.
export const QUICK_UPSTREAM = { UPSTREAM_TIMEOUT_MS: 1500, UPSTREAM_CONNECT_TIMEOUT_MS: 1000,
    UPSTREAM_MAX_RETRIES: 1 };

// The journal key of a keyed request (billing_key_base): SHA-256 of customer,
// NUL, Idempotency-Key.  For a send it is the ledger's mailkit_ref ("mk-send-"
// + it is the provider idempotency key and SMTP's Message-ID left part); for
// a generate request "mk-gen-" + it is the usage event id.
export const journalKey = (customerId, key) => createHash('sha256')
    .update(Buffer.concat([Buffer.from(customerId), Buffer.from([0]), Buffer.from(key)]))
    .digest('hex');

// A new subscribed customer {id, key} with the plan's credits.
export async function keyedCustomer(stack, label) {
	const id = await subscribeCustomer(stack, {
	    email: `${label}-${randomUUID().slice(0, 8)}@example.com`, name: `${label} test` });
	return { id, key: lastApiKey[id] };
}

// A customer's ({id, key}) credit balance, from GET /credits/me.
export async function balance(stack, customer) {
	const r = await getJson(stack, '/credits/me', { key: customer.key });
	if (r.status !== 200)
		throw new Error(`GET /credits/me: ${r.status} ${r.text}`);
	return Number(r.json.balance);
}

// Set a customer's balance to `want` with a sandbox adjustment.
export async function setBalance(stack, customer, want) {
	const have = await balance(stack, customer);
	if (have === want)
		return;
	const r = await request(stack, 'POST', `/sandbox/customers/${customer.id}/adjust`,
	    { json: { entry_type: have > want ? 'debit' : 'credit',
		amount: String(Math.abs(have - want)) } });
	if (r.status !== 303 && r.status !== 200)
		throw new Error(`adjust: ${r.status} ${r.text}`);
}

/*
 * Poll GET /emails/{id} as customer ({key}) until its status is `want`
 * (bounded); resolves to the email, or fails the test with the last answer.
 */
export async function emailStatus(stack, customer, id, want, timeoutMs = 20_000) {
	const until = Date.now() + timeoutMs;
	let r;
	for (;;) {
		r = await getJson(stack, `/emails/${id}`, { key: customer.key });
		if (r.status === 200 && r.json.status === want)
			return r.json;
		if (Date.now() > until)
			throw new Error(`email ${id} not ${want} within ${timeoutMs} ms: ${r.status} ${r.text}`);
		await new Promise((resolve) => setTimeout(resolve, 200));
	}
}

export async function sandboxStats(stack) {
	const r = await getJson(stack, '/sandbox/admin/stats');
	if (r.status !== 200)
		throw new Error(`GET /sandbox/admin/stats: ${r.status} ${r.text}`);
	return r.json;
}

// Form fields of the first <form> in an HTML page (name -> value).
function formFields(html) {
	const form = /<form\b[^>]*>([\s\S]*?)<\/form>/i.exec(html);
	const fields = new URLSearchParams();
	if (!form)
		return fields;
	for (const m of form[1].matchAll(/<input\b[^>]*>/gi)) {
		const name = /\bname\s*=\s*"([^"]*)"/i.exec(m[0]);
		const value = /\bvalue\s*=\s*"([^"]*)"/i.exec(m[0]);
		if (name)
			fields.append(decodeEntities(name[1]), value ? decodeEntities(value[1]) : '');
	}
	return fields;
}

function decodeEntities(s) {
	return s.replace(/&quot;/g, '"').replace(/&#39;|&#x27;/g, "'").replace(/&lt;/g, '<')
	    .replace(/&gt;/g, '>').replace(/&amp;/g, '&');
}

/*
 * Pay on a sandbox hosted checkout the way a browser would: load the page,
 * submit its form (test card and its token prefilled), and resolve to the
 * URL the 303 sends the buyer back to (not followed).
 */
export async function payCheckout(stack, checkoutUrl) {
	const pageUrl = onStack(stack, checkoutUrl);
	const page = await request(stack, 'GET', pageUrl);
	if (page.status !== 200)
		throw new Error(`GET ${pageUrl}: ${page.status} ${page.text.slice(0, 300)}`);
	const post = await request(stack, 'POST', pageUrl, { body: formFields(page.text) });
	const location = post.headers.get('location');
	if (post.status !== 303 || !location)
		throw new Error(`POST ${pageUrl}: ${post.status} (location ${location}) ${post.text.slice(0, 300)}`);
	return new URL(location, pageUrl);
}

/*
 * Complete a sandbox hosted checkout the way a browser would: load the
 * page, submit its form (test card prefilled), follow the 303 back to
 * MailKit's return_url, and ask GET /checkout/return about it (presenting
 * claimToken, the one from POST /checkout/subscribe, when given).  Returns
 * the /checkout/return JSON ({customer_id, email, status, api_key,
 * api_key_delivery}) plus return_query, the query the checkout sent back.
 */
export async function completeCheckout(stack, checkoutUrl, { claimToken } = {}) {
	const back = await payCheckout(stack, checkoutUrl);
	if (claimToken)
		back.searchParams.set('claim_token', claimToken);
	const ret = await getJson(stack, `/checkout/return${back.search}`);
	if (ret.status !== 200 || !ret.json?.customer_id)
		throw new Error(`GET /checkout/return${back.search}: ${ret.status} ${ret.text}`);
	back.searchParams.delete('claim_token');
	return { ...ret.json, return_query: back.search };
}

/*
 * Subscribe a new customer through the whole flow, as the page does: keep
 * the claim token from POST /checkout/subscribe and present it on the
 * return, which answers the account's API key once.  Returns
 * { customer_id, api_key, email }.  plan names the plan (none: the default
 * plan).  With topup, also buys one top-up pack (with the key).
 */
export async function subscribeWithKey(stack, { email, name, plan, topup = false } = {}) {
	email ??= `it-${randomUUID().slice(0, 8)}@example.org`;
	name ??= 'Integration Test';
	const sub = await postJson(stack, '/checkout/subscribe',
	    plan === undefined ? { email, name } : { plan, email, name });
	if (sub.status !== 200 || !sub.json?.checkout_url)
		throw new Error(`POST /checkout/subscribe: ${sub.status} ${sub.text}`);
	const done = await completeCheckout(stack, sub.json.checkout_url,
	    { claimToken: sub.json.claim_token });
	if (typeof done.api_key !== 'string' || !done.api_key.startsWith('mk_'))
		throw new Error(`GET /checkout/return gave no API key: ${JSON.stringify(done)}`);
	const customer = { customer_id: done.customer_id, api_key: done.api_key, email };
	if (topup) {
		const t = await postJson(stack, '/checkout/topup', {}, { key: customer.api_key });
		if (t.status !== 200 || !t.json?.checkout_url)
			throw new Error(`POST /checkout/topup: ${t.status} ${t.text}`);
		await completeCheckout(stack, t.json.checkout_url);
	}
	return customer;
}

// The same; returns only the customer_id (the key is in lastApiKey[id]).
export const lastApiKey = {};
export async function subscribeCustomer(stack, opts = {}) {
	const c = await subscribeWithKey(stack, opts);
	lastApiKey[c.customer_id] = c.api_key;
	return c.customer_id;
}

// Run mailkit-admin with the stack's settings; resolves { code, stdout, stderr }.
export function admin(stack, args) {
	const env = stackEnv({ ...stack.settings,
	    MAILKIT_ENV_FILE: path.join(stack.stateDir, 'test.env'), MAILKIT_LOG_FILE: '' });
	return run(path.join(BUILDDIR, 'mailkit-admin'), args, { cwd: stack.stateDir, env });
}

/*
 * One FastCGI request straight to a program's socket (STATE/run/NAME.sock),
 * bypassing the web server: params, then stdin as given.  With
 * endStdin false the body is left unfinished, as a client trickling it.
 * Resolves when the program ends the request (or after timeoutMs) to
 * { status, stdout, ended, ms }.
 */
export function fcgiRequest(socketPath, params, { stdin = '', endStdin = true,
    timeoutMs = 10_000 } = {}) {
	const record = (type, content = Buffer.alloc(0)) => {
		const pad = (8 - content.length % 8) % 8;
		const h = Buffer.from([1, type, 0, 1, content.length >> 8, content.length & 255, pad, 0]);
		return Buffer.concat([h, content, Buffer.alloc(pad)]);
	};
	const nv = (k, v) => {
		const len = (n) => n < 128 ? Buffer.from([n]) :
		    Buffer.from([(n >>> 24) | 0x80, (n >>> 16) & 255, (n >>> 8) & 255, n & 255]);
		return Buffer.concat([len(Buffer.byteLength(k)), len(Buffer.byteLength(v)),
		    Buffer.from(k), Buffer.from(v)]);
	};
	return new Promise((resolve, reject) => {
		const t0 = Date.now();
		const sock = net.createConnection(socketPath);
		let buf = Buffer.alloc(0), stdout = '', ended = false;
		const finish = () => {
			clearTimeout(timer);
			sock.destroy();
			const m = /^Status: (\d+)/m.exec(stdout);
			resolve({ status: m ? Number(m[1]) : 0, stdout, ended, ms: Date.now() - t0 });
		};
		const timer = setTimeout(finish, timeoutMs);
		sock.on('error', (e) => { clearTimeout(timer); reject(e); });
		sock.on('data', (d) => {
			buf = Buffer.concat([buf, d]);
			while (buf.length >= 8) {
				const len = buf.readUInt16BE(4), pad = buf[6];
				if (buf.length < 8 + len + pad)
					break;
				const type = buf[1], content = buf.subarray(8, 8 + len);
				buf = buf.subarray(8 + len + pad);
				if (type === 6)		// FCGI_STDOUT
					stdout += content.toString('utf8');
				else if (type === 3) {	// FCGI_END_REQUEST
					ended = true;
					finish();
				}
			}
		});
		sock.on('connect', () => {
			// FCGI_BEGIN_REQUEST, responder role, no keep-conn
			sock.write(record(1, Buffer.from([0, 1, 0, 0, 0, 0, 0, 0])));
			sock.write(record(4, Buffer.concat(Object.entries(params).map(([k, v]) => nv(k, String(v))))));
			sock.write(record(4));
			const body = Buffer.from(stdin);
			for (let i = 0; i < body.length; i += 8192)
				sock.write(record(5, body.subarray(i, i + 8192)));
			if (endStdin)
				sock.write(record(5));
		});
	});
}

// GET /credits/{id} until `want(balance)` holds (credits may land a moment
// after the redirect); returns the last JSON.  `key` defaults to the one
// subscribeCustomer obtained for the customer.
export async function waitForBalance(stack, customerId, want, { timeoutMs = 5000,
    key = lastApiKey[customerId] } = {}) {
	const until = Date.now() + timeoutMs;
	let last;
	for (;;) {
		last = await getJson(stack, `/credits/${encodeURIComponent(customerId)}`, { key });
		if (last.status === 200 && want(last.json?.balance))
			return last.json;
		if (Date.now() > until)
			return last.json ?? { status: last.status, text: last.text };
		await new Promise((r) => setTimeout(r, 100));
	}
}

// ------------------------------------------------------------- the journal

/*
 * Hold the journal's write lock from another process (the sqlite3 CLI,
 * BEGIN IMMEDIATE kept open on its stdin) until release() commits.
 */
export async function holdDatabaseLock(stack) {
	const p = spawn('sqlite3', [stack.settings.MAILKIT_DB], { stdio: ['pipe', 'pipe', 'pipe'] });
	let out = '';
	p.stdout.on('data', (d) => { out += d; });
	p.stdin.write('BEGIN IMMEDIATE;\nSELECT \'locked\';\n');
	const until = Date.now() + 5000;
	while (!out.includes('locked') && Date.now() < until)
		await new Promise((r) => setTimeout(r, 20));
	if (!out.includes('locked'))
		throw new Error('could not take the database lock');
	return {
		release: () => new Promise((resolve) => {
			p.on('close', resolve);
			p.stdin.end('COMMIT;\n');
		}),
	};
}
