// security.test.mjs: one test per finding of the security review, through
// both web servers: the sandbox open to anyone (1), claim tokens redeemable
// for another buyer's purchase (2), unmetered unauthenticated routes (3, run
// last: it spends the minute's allowance), strict request JSON and
// Idempotency-Key (4).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
	BUILDDIR, fcgiRequest, freePort, getJson, mailedText, missingPrerequisite, payCheckout,
	postJson, request, sandboxEmails, sandboxStats, stackTest, startStack, subscribeWithKey,
} from './harness.mjs';

const TEST_MS = 60_000;
const START_MS = 120_000;
const uniq = () => randomUUID().slice(0, 8);
const CHECKOUT_LIMIT = 20;	// CHECKOUT_RATE_LIMIT_PER_MINUTE for these stacks
const CLAIMS_CAP = 3;		// CLAIMS_PER_EMAIL

function assertRefused(res, status, pattern, what) {
	const ctx = `${what}: got ${res.status} ${res.text.slice(0, 200)}`;
	assert.equal(res.status, status, ctx);
	assert.equal(typeof res.json?.error, 'string', ctx);
	if (pattern)
		assert.match(res.json.error, pattern, ctx);
}

function defineSecurityTests(server) {
	if (missingPrerequisite(server))
		return;
	let stack, customer;
	const claimTokens = [];

	before(async () => {
		stack = await startStack({ server, env: {
			CHECKOUT_RATE_LIMIT_PER_MINUTE: String(CHECKOUT_LIMIT),
			CLAIMS_PER_EMAIL: String(CLAIMS_CAP),
		} });
		customer = await subscribeWithKey(stack);
	}, { timeout: START_MS });
	after(async () => {
		if (stack)
			await stack.stop();
	}, { timeout: START_MS });
	const it = stackTest(server, () => stack, TEST_MS);

	// ------------------------------------------------ 1: the sandbox
	it('finding 1: the sandbox answers loopback only, refuses cross-site changes, '
	    + 'and masks the keys in its outbox', async () => {
		const sock = path.join(stack.stateDir, 'run', 'sandbox.sock');
		const at = (addr, uri = '/sandbox/admin/stats') => fcgiRequest(sock, {
		    REQUEST_METHOD: 'GET', REQUEST_URI: uri, HTTP_HOST: `127.0.0.1:${stack.port}`,
		    ...(addr === undefined ? {} : { REMOTE_ADDR: addr }) });
		for (const addr of ['203.0.113.7', '10.0.0.1', '::ffff:192.0.2.1', '127.evil', '', undefined])
			assert.equal((await at(addr)).status, 403, `REMOTE_ADDR ${addr}`);
		for (const addr of ['127.0.0.1', '::1', '::ffff:127.0.0.1'])
			assert.equal((await at(addr)).status, 200, `REMOTE_ADDR ${addr}`);

		// cross-site: a text/plain POST from a foreign page, the finding's request
		const customers = (await sandboxStats(stack)).customers;
		const evil = { Origin: 'http://evil.example', 'Content-Type': 'text/plain' };
		let r = await request(stack, 'POST', '/sandbox/admin/reset', { headers: evil, body: 'x' });
		assert.equal(r.status, 403, `reset from a foreign Origin: ${r.status} ${r.text}`);
		r = await request(stack, 'POST', '/sandbox/admin/reset', { headers: { ...evil,
		    'Content-Type': 'application/json' }, body: '{}' });
		assert.equal(r.status, 403, 'JSON reset from a foreign Origin');
		r = await request(stack, 'POST', '/sandbox/admin/reset', { headers: {
		    'Content-Type': 'text/plain' }, body: 'x' });
		assert.equal(r.status, 415, 'a text/plain reset without Origin');
		r = await request(stack, 'POST', `/sandbox/customers/${customer.customer_id}/adjust`, {
		    body: new URLSearchParams({ entry_type: 'credit', amount: '1' }) });
		assert.equal(r.status, 403, `a form without its token: ${r.status}`);
		r = await request(stack, 'POST', `/sandbox/customers/${customer.customer_id}/adjust`, {
		    headers: { Origin: 'null' }, json: { entry_type: 'credit', amount: '1' } });
		assert.equal(r.status, 403, 'Origin: null');
		assert.equal((await sandboxStats(stack)).customers, customers, 'nothing was reset');
		// the dashboard's own form carries its token and works, same-origin
		const dash = await request(stack, 'GET', '/sandbox/');
		const form = new RegExp(`action="/sandbox/customers/${customer.customer_id}/adjust">`
		    + '<input type="hidden" name="csrf" value="([0-9a-f]{64})">').exec(dash.text);
		assert.ok(form, 'the dashboard form has a token');
		r = await request(stack, 'POST', `/sandbox/customers/${customer.customer_id}/adjust`, {
		    headers: { Origin: stack.baseUrl }, body: new URLSearchParams({ csrf: form[1],
		    entry_type: 'credit', amount: '1' }) });
		assert.equal(r.status, 303, `the dashboard's form: ${r.status} ${r.text.slice(0, 200)}`);
		r = await request(stack, 'POST', '/sandbox/customers/cus_other/adjust', {
		    body: new URLSearchParams({ csrf: form[1], entry_type: 'credit', amount: '1' }) });
		assert.equal(r.status, 403, 'a token is good for its own page only');

		// the key MailKit mailed is masked in the outbox page and the admin JSON
		const emails = JSON.stringify(await sandboxEmails(stack));
		const outbox = (await request(stack, 'GET', '/sandbox/outbox')).text;
		const masked = `${customer.api_key.slice(0, 7)}\u2026`;
		for (const [what, text] of [['admin/emails', emails], ['outbox', outbox]]) {
			assert.ok(!text.includes(customer.api_key), `${what} shows the whole key`);
			assert.ok(!text.includes(customer.api_key.slice(3, 20)), `${what} shows most of the key`);
			assert.ok(text.includes(masked), `${what} shows ${masked}`);
		}
	});

	// ------------------------------------------------ 2: claims
	it('finding 2: a claim token redeems only the purchase of its own checkout session',
	    async () => {
		const email = `victim-${uniq()}@example.org`;
		const victim = await postJson(stack, '/checkout/subscribe', { email, name: 'Victim' });
		const attacker = await postJson(stack, '/checkout/subscribe', { email, name: 'Victim' });
		assert.equal(victim.status, 200, victim.text);
		assert.equal(attacker.status, 200, attacker.text);
		assert.ok(attacker.json.claim_token, 'the attacker holds a claim for the email');
		claimTokens.push(victim.json.claim_token, attacker.json.claim_token);
		const back = await payCheckout(stack, victim.json.checkout_url);
		const sub = back.searchParams.get('subscription_id');
		assert.ok(sub, `a subscription: ${back}`);
		// the attacker presents first, as query and as header, for both ids
		const pays = await getJson(stack, `/sandbox/admin/webhooks?type=payment.succeeded`);
		const pay = pays.json.items.map((w) => w.payload?.data).find((d) =>
		    d?.subscription_id === sub)?.payment_id;
		assert.ok(pay, `the payment of ${sub}`);
		for (const q of [`subscription_id=${sub}`, `payment_id=${pay}`]) {
			const stolen = await getJson(stack, `/checkout/return?${q}&claim_token=`
			    + attacker.json.claim_token);
			assert.equal(stolen.status, 200, stolen.text);
			assert.equal(stolen.json.api_key, null, `no key for another session's token (${q})`);
			const hdr = await getJson(stack, `/checkout/return?${q}`,
			    { headers: { Authorization: `Bearer ${attacker.json.claim_token}` } });
			assert.equal(hdr.json.api_key, null, `not as a header either (${q})`);
		}
		// the key went to the buyer's address instead
		let mailed = '';
		for (let i = 0; i < 50 && !mailed; i++) {
			mailed = /mk_[A-Za-z0-9_-]{43}/.exec(await mailedText(stack, email, 'API key'))?.[0];
			if (!mailed)
				await new Promise((r) => setTimeout(r, 100));
		}
		assert.ok(mailed, 'the key was mailed to the buyer');
		const own = await getJson(stack, `/checkout/return?subscription_id=${sub}&claim_token=`
		    + victim.json.claim_token);
		assert.equal(own.status, 200, own.text);
		assert.notEqual(own.json.api_key, mailed, 'no second copy of the key over HTTP');
	});

	// ------------------------------------------------ 4: lax input
	it('finding 4: invalid UTF-8, duplicate keys, unknown fields and blank '
	    + 'Idempotency-Keys are refused before any upstream call', async () => {
		const before4 = await sandboxStats(stack);
		const post = (body, headers = {}) => request(stack, 'POST', '/send', { key: customer.api_key,
		    body, headers: { 'Content-Type': 'application/json', ...headers } });
		const good = { to: 'delivered@resend.dev', subject: `strict ${uniq()}`, html: '<p>x</p>' };

		const bad = Buffer.concat([Buffer.from('{"to":"delivered@resend.dev","subject":"a'),
		    Buffer.from([0xff, 0xfe]), Buffer.from('","html":"<p>x</p>"}')]);
		assertRefused(await post(bad), 400, /UTF-8/, 'subject with \\xff\\xfe');
		const overlong = Buffer.concat([Buffer.from('{"to":"delivered@resend.dev","subject":"a'),
		    Buffer.from([0xc0, 0xaf]), Buffer.from('","html":"<p>x</p>"}')]);
		assertRefused(await post(overlong), 400, /UTF-8/, 'overlong UTF-8');
		assertRefused(await post('{"to":"delivered@resend.dev","subject":"a","subject":"b",'
		    + '"html":"<p>x</p>"}'), 400, /repeats/, 'duplicate key');
		assertRefused(await post('{"to":"delivered@resend.dev","subject":"a","html":"<p>x</p>",'
		    + '"headers":{"X":"1","X":"2"}}'), 400, /repeats|unknown/, 'nested duplicate');
		for (const f of ['sender', 'from', 'attachments']) {
			assertRefused(await post(JSON.stringify({ ...good, [f]: 'a@example.org' })), 400,
			    new RegExp(`^unknown field: ${f}$`), `unknown field ${f}`);
		}
		assertRefused(await request(stack, 'POST', '/checkout/subscribe', {
		    json: { email: `u-${uniq()}@example.org`, tier: 'gold' } }), 400,
		    /^unknown field: tier$/, 'unknown field on subscribe');
		// lighttpd drops a header with a blank value before FastCGI: through it
		// the request arrives with no key at all, which the program cannot tell
		if (server === 'apache') {
			assertRefused(await post(JSON.stringify(good), { 'Idempotency-Key': ' ' }), 400,
			    /Idempotency-Key/, 'blank Idempotency-Key');
		}
		// padded keys cannot cross a web server (it trims): straight to the socket
		const sock = path.join(stack.stateDir, 'run', 'send.sock');
		for (const k of [' k1', 'k1 ', '\tk1', '']) {
			const r = await fcgiRequest(sock, { REQUEST_METHOD: 'POST', REQUEST_URI: '/send',
			    CONTENT_TYPE: 'application/json', HTTP_AUTHORIZATION: `Bearer ${customer.api_key}`,
			    HTTP_IDEMPOTENCY_KEY: k, REMOTE_ADDR: '127.0.0.1',
			    CONTENT_LENGTH: Buffer.byteLength(JSON.stringify(good)) }, { stdin: JSON.stringify(good) });
			assert.equal(r.status, 400, `Idempotency-Key ${JSON.stringify(k)}: ${r.stdout}`);
		}
		const after4 = await sandboxStats(stack);
		assert.deepEqual(after4, before4, 'no upstream call for a refused request');
		// the strictness leaves well-formed requests alone
		const ok = await post(JSON.stringify({ ...good, subject: 'caf\u00e9 \u{1F600}' }),
		    { 'Idempotency-Key': `ok-${uniq()}` });
		assert.equal(ok.status, 200, ok.text);
	});

	// ------------------------------------------------ logs
	it('no configured secret and no issued key or claim token appears in any log', async () => {
		// more traffic that handles keys: a send, a rotation, a mailed key
		const send = await postJson(stack, '/send', { to: 'delivered@resend.dev',
		    subject: `logs ${uniq()}`, text: 'x' }, { key: customer.api_key });
		assert.equal(send.status, 200, send.text);
		const sql = "SELECT coalesce(html, '') || coalesce(text, '') FROM emails";
		const mailed = await new Promise((resolve, reject) => execFile('sqlite3', ['-readonly',
		    path.join(stack.stateDir, 'sandbox.db'), sql], (e, out) => e ? reject(e) : resolve(out)));
		const keys = new Set([customer.api_key, ...claimTokens,
		    ...(mailed.match(/mk_[A-Za-z0-9_-]{43}/g) || [])]);
		assert.ok(keys.size >= 2, 'keys were issued and mailed');
		const secrets = ['DODO_PAYMENTS_API_KEY', 'RESEND_API_KEY', 'DODO_WEBHOOK_KEY']
		    .map((k) => stack.settings[k]).filter(Boolean);
		secrets.push(...secrets.filter((v) => v.startsWith('whsec_')).map((v) => v.slice(6)));
		const files = [];
		const walk = async (dir) => {
			for (const e of await readdir(dir, { withFileTypes: true })) {
				const p = path.join(dir, e.name);
				if (e.isDirectory())
					await walk(p);
				else if (e.isFile())
					files.push(p);
			}
		};
		await walk(path.join(stack.stateDir, 'log'));
		assert.ok(files.length >= 3, `log files: ${files.join(' ')}`);
		for (const f of files) {
			const text = await readFile(f, 'utf8');
			for (const v of [...secrets, ...keys])
				assert.ok(!text.includes(v), `${path.basename(f)} contains ${v.slice(0, 8)}…`);
			assert.doesNotMatch(text, /mkc?_[A-Za-z0-9_-]{43}/, `${path.basename(f)} holds a key`);
		}
	});

	// ------------------------------------------------ 3: unmetered routes
	it('finding 3: open checkouts per email are capped, and the unauthenticated checkout '
	    + 'routes are rate-limited per address with 429 + Retry-After', async () => {
		const email = `flood-${uniq()}@example.org`;
		const before3 = (await sandboxStats(stack)).checkouts;
		const codes = [];
		for (let i = 0; i < CLAIMS_CAP + 2; i++)
			codes.push((await postJson(stack, '/checkout/subscribe', { email })).status);
		assert.deepEqual(codes, [...Array(CLAIMS_CAP).fill(200), 429, 429],
		    'at most CLAIMS_PER_EMAIL open checkouts for one email');
		const capped = await postJson(stack, '/checkout/subscribe', { email: email.toUpperCase() });
		assert.equal(capped.status, 429, 'the email compares without case');
		assert.ok(Number(capped.headers.get('retry-after')) >= 1, 'Retry-After');
		assert.equal((await sandboxStats(stack)).checkouts - before3, CLAIMS_CAP,
		    'no Dodo session for a refused subscribe');

		// per address: distinct emails, until the minute's allowance is spent
		// (at most two fixed windows if one ends meanwhile)
		for (const [what, call] of [
			['subscribe', () => postJson(stack, '/checkout/subscribe', { email: `r-${uniq()}@example.org` })],
			['return', () => getJson(stack, '/checkout/return?subscription_id=sub_nosuch')],
		]) {
			let limited;
			for (let i = 0; i < 2 * CHECKOUT_LIMIT + 2 && !limited; i++) {
				const r = await call();
				if (r.status === 429)
					limited = r;
				else
					assert.ok([200, 404].includes(r.status), `${what}: ${r.status} ${r.text}`);
			}
			assert.ok(limited, `${what}: no 429 within ${2 * CHECKOUT_LIMIT + 2} calls`);
			assert.match(limited.json.error, /rate limit of \d+ requests per minute per address/);
			const retry = Number(limited.headers.get('retry-after'));
			assert.ok(retry >= 1 && retry <= 60, `${what}: Retry-After ${retry}`);
		}
	});
}

// mailkit-stack refuses to put the sandbox on a non-loopback address.
test('finding 1: mailkit-stack start --bind 0.0.0.0 refuses in sandbox mode', { timeout: START_MS },
    async () => {
	if (missingPrerequisite('lighttpd'))
		return;
	const state = await mkdtemp(path.join(os.tmpdir(), 'mailkit-bind-'));
	const envFile = path.join(state, 'test.env');
	await writeFile(envFile, '# sandbox mode\n', { mode: 0o600 });
	const env = { ...process.env };
	for (const k of Object.keys(env))
		if (/^(DODO_|RESEND_|MAILKIT_)/.test(k))
			delete env[k];
	const port = await freePort();
	const stackCmd = (args) => new Promise((resolve) => execFile(path.join(BUILDDIR,
	    'mailkit-stack'), args, { env, cwd: state, timeout: 60_000 },
	    (error, stdout, stderr) => resolve({ code: error ? error.code ?? 1 : 0, stdout, stderr })));
	const r = await stackCmd(['start', '--bind', '0.0.0.0', '--port', String(port),
	    '--state', state, '--env-file', envFile]);
	let pids = '';
	try {
		pids = await readFile(path.join(state, 'run', 'sandbox.pid'), 'utf8');
	} catch { /* nothing started */ }
	if (r.code === 0)	// the bug: stop what it started before failing
		await stackCmd(['stop', '--state', state]);
	await rm(state, { recursive: true, force: true });
	assert.notEqual(r.code, 0, `started: ${r.stdout}${r.stderr}`);
	assert.match(r.stderr, /refusing --bind 0\.0\.0\.0 in sandbox mode/);
	assert.match(r.stderr, /this machine only/);
	assert.equal(pids, '', 'no sandbox was started');
});

defineSecurityTests('lighttpd');
defineSecurityTests('apache');
