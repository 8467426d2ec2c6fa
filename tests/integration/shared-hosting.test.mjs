// shared-hosting.test.mjs: MailKit the shared-hosting way — no root, no
// daemons, no environment variables: the programs, the page and
// conf/shared-hosting.htaccess copied into a web directory under a prefix
// (/mailkit/) of a private Apache with the real mod_fcgid and AllowOverride,
// the settings in ~/mailkit.env, found by the programs themselves.  Every
// route is driven through it against a stack's sandbox; a killed program
// is started again by the next request; cron's `mailkit-admin reconcile`
// needs nothing but the account's home.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { BUILDDIR, SRCDIR, freePort, getJson, missingPrerequisite, skipFile, stackTest,
    startStack } from './harness.mjs';
import { defineMountedRoutes } from './mounted.mjs';

const PREFIX = '/mailkit';
const PROGRAMS = ['checkout', 'credits', 'send', 'emails', 'webhook'];
const MODULES = process.env.APACHE_MODULES_DIR || '/usr/lib/apache2/modules';
const START_MS = 120_000;
const TEST_MS = 30_000;

const missing = missingPrerequisite('apache');
if (missing)
	skipFile(missing);
if (!existsSync(path.join(MODULES, 'mod_fcgid.so')))
	skipFile('mod_fcgid not installed (Debian package libapache2-mod-fcgid)');
if (!existsSync(path.join(BUILDDIR, 'mailkit-admin')))
	skipFile('mailkit-admin not built');

function run(file, args, opts = {}) {
	return new Promise((resolve) => {
		execFile(file, args, { timeout: 60_000, killSignal: 'SIGKILL', ...opts },
		    (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0,
			stdout, stderr }));
	});
}

function listening(port) {
	return new Promise((resolve) => {
		const s = net.connect({ port, host: '127.0.0.1' });
		s.once('connect', () => { s.destroy(); resolve(true); });
		s.once('error', () => resolve(false));
	});
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Pids of the processes running a program from `dir` (mod_fcgid's children).
function programPids(dir, name) {
	const pids = [];
	for (const p of readdirSync('/proc')) {
		if (!/^\d+$/.test(p))
			continue;
		try {
			const exe = readlinkSync(`/proc/${p}/exe`);
			if (exe.startsWith(dir + path.sep) && (!name || path.basename(exe) === name))
				pids.push(Number(p));
		} catch { /* gone, or not ours to read */ }
	}
	return pids;
}

// The private Apache: mod_fcgid, mod_rewrite, AllowOverride for the web dir.
function httpdConf(dir, port, root) {
	const asRoot = process.getuid() === 0;
	return `ServerRoot "${dir}"
DefaultRuntimeDir "${dir}/run"
PidFile "${dir}/run/httpd.pid"
ErrorLog "${dir}/log/error.log"
LogLevel warn
LoadModule mpm_event_module "${MODULES}/mod_mpm_event.so"
LoadModule authz_core_module "${MODULES}/mod_authz_core.so"
LoadModule mime_module "${MODULES}/mod_mime.so"
LoadModule dir_module "${MODULES}/mod_dir.so"
LoadModule env_module "${MODULES}/mod_env.so"
LoadModule rewrite_module "${MODULES}/mod_rewrite.so"
LoadModule fcgid_module "${MODULES}/mod_fcgid.so"
<IfModule !unixd_module>
    LoadModule unixd_module "${MODULES}/mod_unixd.so"
</IfModule>
Listen 127.0.0.1:${port}
ServerName localhost
${asRoot ? 'User www-data\nGroup www-data' : ''}
TypesConfig /etc/mime.types
DocumentRoot "${root}"
FcgidIPCDir "${dir}/run/fcgid"
FcgidProcessTableFile "${dir}/run/fcgid_shm"
# the account's home, as suexec gives it on a shared host
FcgidInitialEnv HOME "${dir}/home"
FcgidMaxRequestLen 1048576
<Directory />
    Require all denied
    AllowOverride None
</Directory>
<Directory "${root}">
    Require all granted
    AllowOverride All
</Directory>
`;
}

let stack, dir, home, web, httpd, port;
const front = () => ({ baseUrl: `http://127.0.0.1:${port}${PREFIX}` });

before(async () => {
	stack = await startStack({ server: 'lighttpd' });
	dir = await mkdtemp(path.join(os.tmpdir(), 'mailkit-hosting-'));
	home = path.join(dir, 'home');
	web = path.join(home, 'public_html', 'mailkit');
	for (const d of ['run/fcgid', 'log', 'home/public_html/mailkit'])
		await mkdir(path.join(dir, d), { recursive: true });
	port = await freePort();
	// the upload: page, programs, .htaccess with its prefix line set
	for (const f of ['index.html', 'account.js', 'page.css'])
		await copyFile(path.join(SRCDIR, 'www', f), path.join(web, f));
	for (const p of PROGRAMS)
		await copyFile(path.join(BUILDDIR, `${p}.fcgi`), path.join(web, `${p}.fcgi`));
	const htaccess = (await readFile(path.join(SRCDIR, 'conf', 'shared-hosting.htaccess'), 'utf8'))
	    .replace(/^SetEnv MAILKIT_PREFIX .*$/m, `SetEnv MAILKIT_PREFIX "${PREFIX}"`);
	await writeFile(path.join(web, '.htaccess'), htaccess);
	// the settings, in the home directory, outside the web directory
	const s = stack.settings;
	const settings = {
		DODO_PAYMENTS_API_KEY: s.DODO_PAYMENTS_API_KEY,
		DODO_PAYMENTS_BASE_URL: s.DODO_PAYMENTS_BASE_URL,
		DODO_WEBHOOK_KEY: s.DODO_WEBHOOK_KEY,
		CREDIT_ENTITLEMENT_ID: s.CREDIT_ENTITLEMENT_ID,
		PLAN_PRODUCT_ID: s.PLAN_PRODUCT_ID,
		TOPUP_PRODUCT_ID: s.TOPUP_PRODUCT_ID,
		RESEND_API_KEY: s.RESEND_API_KEY,
		RESEND_BASE_URL: s.RESEND_BASE_URL,
		BASE_URL: front().baseUrl,
		MAILKIT_DB: path.join(home, 'mailkit.db'),
		MAILKIT_LOG_FILE: path.join(home, 'mailkit.log'),
		CHECKOUT_RATE_LIMIT_PER_MINUTE: '100000',
		CLAIMS_PER_EMAIL: '1000',
	};
	await writeFile(path.join(home, 'mailkit.env'), Object.entries(settings)
	    .map(([k, v]) => `${k}=${v}\n`).join(''), { mode: 0o600 });
	// a settings file inside the web directory (named so the programs do not
	// read it): never served
	await writeFile(path.join(web, 'old.env'), '# not for browsers\n', { mode: 0o644 });
	await chmod(dir, 0o755);
	if (process.getuid() === 0)
		await run('chown', ['-R', 'www-data:www-data', home, path.join(dir, 'run', 'fcgid')]);
	await writeFile(path.join(dir, 'httpd.conf'), httpdConf(dir, port, path.join(home, 'public_html')));
	httpd = spawn(process.env.APACHE2 || 'apache2', ['-f', path.join(dir, 'httpd.conf'),
	    '-D', 'FOREGROUND'], { stdio: ['ignore', 'inherit', 'inherit'] });
	const end = Date.now() + 20_000;
	while (!(await listening(port))) {
		if (Date.now() > end || httpd.exitCode !== null)
			throw new Error(`apache2 did not start: ${await readFile(path.join(dir, 'log', 'error.log'), 'utf8').catch(() => '')}`);
		await sleep(100);
	}
}, { timeout: START_MS });

after(async () => {
	if (httpd && httpd.exitCode === null && httpd.signalCode === null) {
		const gone = new Promise((r) => httpd.once('exit', r));
		httpd.kill('SIGTERM');
		await gone;
	}
	// mod_fcgid ends its programs with Apache; any left are ours to end
	if (dir) {
		for (const pid of programPids(web)) {
			try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
		}
		if (process.env.MAILKIT_KEEP_STATE !== '1')
			await rm(dir, { recursive: true, force: true });
	}
	if (stack)
		await stack.stop();
}, { timeout: START_MS });

const it = stackTest('shared hosting (mod_fcgid) under /mailkit/', () => stack, TEST_MS);
defineMountedRoutes(it, front, () => stack);

it('the page and the script it loads are served', async () => {
	const page = await getJson(front(), '/');
	assert.equal(page.status, 200);
	assert.match(page.text, /<script src="account\.js"><\/script>/);
	const js = await getJson(front(), '/account.js');
	assert.equal(js.status, 200);
	assert.match(js.headers.get('content-type') ?? '', /javascript/);
	assert.match(js.text, /window\.MailKitAccount = function/);
	const css = await getJson(front(), '/page.css');
	assert.equal(css.status, 200);
	assert.match(css.headers.get('content-type') ?? '', /text\/css/);
});

it('the settings file beside the programs and the programs themselves are not served', async () => {
	for (const p of ['/old.env', '/send.fcgi', '/.htaccess']) {
		const r = await getJson(front(), p);
		assert.ok([403, 404].includes(r.status), `${p}: ${r.status}`);
		assert.doesNotMatch(r.text, /not for browsers|ELF/);
	}
});

it('a killed program costs one restart: the next requests are served', async () => {
	const before = programPids(web, 'credits.fcgi');
	assert.ok(before.length > 0, 'mod_fcgid started credits.fcgi');
	for (const pid of before)
		process.kill(pid, 'SIGKILL');
	let r;
	for (let i = 0; i < 50; i++) {
		r = await getJson(front(), '/credits/me', { key: 'mk_' + 'x'.repeat(43) });
		if (r.status === 401)
			break;
		await sleep(100);
	}
	assert.equal(r.status, 401, `${r.status} ${r.text.slice(0, 200)}`);
	const after = programPids(web, 'credits.fcgi');
	assert.ok(after.length > 0 && after.every((p) => !before.includes(p)), 'a new process');
});

it('cron: mailkit-admin reconcile finds ~/mailkit.env with no environment but HOME', async () => {
	const r = await run(path.join(BUILDDIR, 'mailkit-admin'), ['reconcile'],
	    { env: { HOME: home, PATH: '/usr/bin:/bin' } });
	assert.equal(r.code, 0, r.stdout + r.stderr);
	// the customer subscribed above, from ~/mailkit.env's MAILKIT_DB
	assert.match(r.stdout, /reconcile: 1 customer, 1 email sent, 1 credit debited .*no drift/);
});
