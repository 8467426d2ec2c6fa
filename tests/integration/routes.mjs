// routes.mjs: every MailKit route, black-box, through one web server in
// front of the real programs and the sandbox.  lighttpd.test.mjs and
// apache.test.mjs call defineRouteTests() with their server.
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import path from 'node:path';
import {
	admin, clearSandboxFaults, completeCheckout, fcgiRequest, getJson, mailedText, missingPrerequisite,
	postJson, randomSecret, listOf, request, sandboxEmails, sandboxFault, sandboxStats, skipFile,
	stackTest, startStack, subscribeWithKey, waitForBalance, webhookHeaders,
} from './harness.mjs';

const NO_CREDITS = 'No email credits remaining. Buy a top-up pack to keep sending.';
const MAX_BODY = 4096;		// MAX_BODY_BYTES for this stack: 413 above it
// Under valgrind (MAILKIT_TEST_VALGRIND=1, tests/hardening.sh) every program,
// the sandbox included, runs many times slower: longer upstream timeouts.
const SLOW = process.env.MAILKIT_TEST_VALGRIND === '1';
const TIMEOUT_MS = SLOW ? 3000 : 1000;	// UPSTREAM_TIMEOUT_MS: a stalled upstream gives 504 quickly
const STALL_MS = SLOW ? 8000 : 4000;	// sandbox stall, well above TIMEOUT_MS
const TEST_MS = 30_000;		// per test
const START_MS = 120_000;	// starting / stopping the stack
const RATE_LIMIT = 120;		// RATE_LIMIT_PER_MINUTE for this stack (per key)
const KEY_SUBJECT = /Your MailKit API key/;

// An error reply: the status, JSON content type, {"error": "<text>"}.
function assertJsonError(res, status, what) {
	const ctx = `${what}: got ${res.status} ${res.headers.get('content-type')} ${res.text.slice(0, 200)}`;
	assert.equal(res.status, status, ctx);
	assert.match(res.headers.get('content-type') || '', /^application\/json\b/, ctx);
	assert.equal(typeof res.json?.error, 'string', ctx);
	assert.ok(res.json.error.length > 0, ctx);
}

function assertJsonOk(res, what) {
	const ctx = `${what}: got ${res.status} ${res.text.slice(0, 300)}`;
	assert.equal(res.status, 200, ctx);
	assert.match(res.headers.get('content-type') || '', /^application\/json\b/, ctx);
	assert.ok(res.json && typeof res.json === 'object', ctx);
}

const uniq = () => randomUUID().slice(0, 8);
// A /send body; with an API key the customer comes from the key, so
// customer_id is only added when asked for.
const sendBody = (customerId, extra = {}) => ({
	...(customerId ? { customer_id: customerId } : {}),
	to: 'delivered@resend.dev',
	subject: `MailKit integration ${uniq()}`,
	html: '<strong>It works!</strong>',
	...extra,
});
// A well-formed key nobody was ever given.
const strangerKey = () => `mk_${randomBytes(32).toString('base64url')}`;

export function defineRouteTests(server) {
	const missing = missingPrerequisite(server);
	if (missing)
		skipFile(`${server}: ${missing}`);

	// Top-level tests (not a describe block) so that automake's TAP driver
	// reports every route as its own PASS/FAIL line; they run in order.
	{
		let stack;
		let customer;		// subscribed in the flow tests, drained at the end
		let key;		// customer's API key
		let other;		// a second customer { customer_id, api_key }

		before(async () => {
			stack = await startStack({ server, env: {
				MAX_BODY_BYTES: String(MAX_BODY),
				UPSTREAM_TIMEOUT_MS: String(TIMEOUT_MS),
				UPSTREAM_MAX_RETRIES: '1',
				RATE_LIMIT_PER_MINUTE: String(RATE_LIMIT),
			} });
		}, { timeout: START_MS });

		after(async () => {
			if (stack)
				await stack.stop();
		}, { timeout: START_MS });

		// Say where to look when something fails.
		const it = stackTest(server, () => stack, TEST_MS);

		// ------------------------------------------------------------ page
		it('GET / serves the page', async () => {
			const r = await request(stack, 'GET', '/');
			assert.equal(r.status, 200);
			assert.match(r.headers.get('content-type') || '', /^text\/html/);
		});

		// ------------------------------------------------------------ checkout
		it('POST /checkout/subscribe returns a sandbox checkout', async () => {
			const r = await postJson(stack, '/checkout/subscribe',
			    { email: `sub-${uniq()}@example.org`, name: 'Ada Lovelace' });
			assertJsonOk(r, 'subscribe');
			assert.equal(typeof r.json.checkout_url, 'string');
			assert.equal(typeof r.json.session_id, 'string');
			assert.ok(r.json.session_id.length > 0);
			assert.match(r.json.claim_token, /^mkc_[A-Za-z0-9_-]{43}$/, 'a one-time claim token');
			const page = await request(stack, 'GET', new URL(r.json.checkout_url).pathname);
			assert.equal(page.status, 200, `checkout page ${r.json.checkout_url}`);
			assert.match(page.headers.get('content-type') || '', /^text\/html/);
			assert.match(page.text, /id="pay"/);
		});

		it('subscribe → checkout → /checkout/return gives the customer and, once, its API key', async () => {
			const email = `flow-${uniq()}@example.org`;
			const sub = await postJson(stack, '/checkout/subscribe', { email, name: 'Flow Test' });
			assertJsonOk(sub, 'subscribe');
			const done = await completeCheckout(stack, sub.json.checkout_url,
			    { claimToken: sub.json.claim_token });
			assert.match(done.customer_id, /^cus_/);
			assert.equal(done.email, email);
			assert.equal(done.status, 'active');
			assert.match(done.api_key, /^mk_[A-Za-z0-9_-]{43}$/, JSON.stringify(done));
			assert.equal(done.api_key_delivery, 'returned');
			customer = done.customer_id;
			key = done.api_key;
			// the claim is spent: the same return again shows no key
			const again = await getJson(stack,
			    `/checkout/return${done.return_query}&claim_token=${sub.json.claim_token}`);
			assertJsonOk(again, 'second return');
			assert.equal(again.json.api_key, null);
			assert.equal(again.json.api_key_delivery, 'existing');
			// and the key was mailed to the customer as well
			// (the outbox masks it: mk_ and four characters)
			const mail = await eventuallyEmail(stack, email, KEY_SUBJECT);
			assert.ok(JSON.stringify(mail).includes(`${key.slice(0, 7)}\u2026`),
			    'the email carries the key, masked in the outbox');
			assert.ok(!JSON.stringify(mail).includes(key), 'the outbox shows no whole key');
			assert.ok((await mailedText(stack, email, 'API key')).includes(key),
			    'the email carries the key');
			// a second plan for the same buyer is refused before any checkout
			const twice = await postJson(stack, '/checkout/subscribe',
			    { email: email.toUpperCase(), name: 'Flow Test' });
			assert.equal(twice.status, 409, twice.text);
			assert.match(twice.headers.get('content-type'), /^application\/json/);
			assert.match(twice.json.error, /already has an active MailKit plan/);
			assert.equal(twice.json.checkout_url, undefined);
		});

		it('without a claim the key arrives by email only, and works', async () => {
			const email = `mailed-${uniq()}@example.org`;
			const sub = await postJson(stack, '/checkout/subscribe', { email, name: 'Mail Only' });
			assertJsonOk(sub, 'subscribe');
			const done = await completeCheckout(stack, sub.json.checkout_url);
			assert.equal(done.api_key, null, JSON.stringify(done));
			assert.equal(done.api_key_delivery, 'emailed');
			const mail = await eventuallyEmail(stack, email, KEY_SUBJECT);
			assert.ok(!/mk_[A-Za-z0-9_-]{43}/.test(JSON.stringify(mail)), 'the outbox masks keys');
			const mailed = /mk_[A-Za-z0-9_-]{43}/.exec(await mailedText(stack, email, 'API key'))?.[0];
			assert.ok(mailed, 'a key in the email');
			const r = await getJson(stack, '/credits/me', { key: mailed });
			assertJsonOk(r, 'credits with the mailed key');
			assert.equal(r.json.customer_id, done.customer_id);
			// the claim cannot fetch a second key afterwards
			const late = await getJson(stack, `/checkout/return${done.return_query}`, {
			    headers: { Authorization: `Bearer ${sub.json.claim_token}` } });
			assertJsonOk(late, 'late claim');
			assert.equal(late.json.api_key, null, 'no second key');
			assert.equal(late.json.api_key_delivery, 'existing');
			const keys = await admin(stack, ['keys', 'list', done.customer_id]);
			assert.equal(keys.code, 0, keys.stderr);
			assert.equal(keys.stdout.trim().split('\n').length, 2, `one key: ${keys.stdout}`);
			assert.ok(!keys.stdout.includes(mailed), 'keys list never shows a whole key');
		});

		it('the sandbox\'s own webhook deliveries are accepted by /webhooks/dodo', async () => {
			// The stack gives the sandbox and webhook.fcgi the same signing key.
			assert.ok(customer, 'needs the subscribe flow');
			const until = Date.now() + 10_000;
			let items = [];
			for (;;) {
				items = listOf((await getJson(stack, '/sandbox/admin/webhooks')).json)
				    .filter((d) => JSON.stringify(d).includes(customer));
				const settled = items.length > 0 && items.every((d) => d.status !== 'pending');
				if (settled || Date.now() > until)
					break;
				await new Promise((r) => setTimeout(r, 200));
			}
			assert.ok(items.length > 0, 'the sandbox delivered at least one event for the customer');
			for (const d of items)
				assert.equal(d.last_status, 200, `delivery ${d.id} (${d.type}): ${JSON.stringify(d).slice(0, 300)}`);
		});

		it('GET /credits/{id} shows the plan balance "5000"', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const j = await waitForBalance(stack, customer, (b) => b === '5000', { key });
			assert.equal(j.balance, '5000', JSON.stringify(j));
			const r = await getJson(stack, `/credits/${customer}`, { key });
			assertJsonOk(r, 'credits');
			for (const k of ['balance', 'overage', 'allowance', 'low_balance_threshold'])
				assert.ok(k in r.json, `credits reply lacks ${k}: ${r.text}`);
			for (const p of ['/credits', '/credits/me']) {
				const me = await getJson(stack, p, { key });
				assertJsonOk(me, p);
				assert.equal(me.json.customer_id, customer, p);
				assert.equal(me.json.balance, '5000', p);
			}
		});

		it('GET /credits/{id}/ledger lists entries', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			for (const p of [`/credits/${customer}/ledger`, '/credits/me/ledger']) {
				const r = await getJson(stack, p, { key });
				assertJsonOk(r, p);
				assert.ok(Array.isArray(r.json.items), r.text);
			}
		});

		it('POST /checkout/topup adds a pack (5000 + 5000)', async () => {
			other = await subscribeWithKey(stack, {});
			const id = other.customer_id;
			await waitForBalance(stack, id, (b) => b === '5000', { key: other.api_key });
			const t = await postJson(stack, '/checkout/topup', {}, { key: other.api_key });
			assertJsonOk(t, 'topup');
			assert.equal(typeof t.json.checkout_url, 'string');
			assert.equal(typeof t.json.session_id, 'string');
			assert.equal(t.json.claim_token, undefined, 'no claim for a top-up');
			const done = await completeCheckout(stack, t.json.checkout_url);
			assert.equal(done.customer_id, id);
			assert.equal(done.api_key, null, 'a top-up issues no new key');
			const j = await waitForBalance(stack, id, (b) => b === '10000', { key: other.api_key });
			assert.equal(j.balance, '10000', JSON.stringify(j));
		});

		// ------------------------------------------------------------ send
		it('POST /send sends, debits exactly 1, and reaches the sandbox outbox', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const before = await getJson(stack, `/credits/${customer}`, { key });
			assertJsonOk(before, 'credits before');
			const body = sendBody();
			const r = await postJson(stack, '/send', body, { key });
			assertJsonOk(r, 'send');
			assert.equal(typeof r.json.id, 'string');
			assert.ok(r.json.id.length > 0);
			// naming the key's own customer is fine too
			assertJsonOk(await postJson(stack, '/send', sendBody(customer), { key }), 'send with own id');
			const afterSend = await getJson(stack, `/credits/${customer}`, { key });
			assert.equal(Number(afterSend.json.balance), Number(before.json.balance) - 2,
			    `${before.json.balance} -> ${afterSend.json.balance}`);
			const emails = await sandboxEmails(stack);
			const mine = emails.filter((e) => JSON.stringify(e).includes(body.subject));
			assert.equal(mine.length, 1, `exactly one outbox entry for ${body.subject}`);
			assert.ok(JSON.stringify(mine[0]).includes('delivered@resend.dev'));
		});

		// ------------------------------------------------------------ webhook
		const lowBalanceEvent = () => JSON.stringify({
			business_id: 'bus_sandbox',
			type: 'credit.balance_low',
			timestamp: new Date().toISOString(),
			data: {
				payload_type: 'CreditBalanceLow',
				customer_id: customer ?? 'cus_unknown',
				subscription_id: 'sub_test',
				credit_entitlement_id: stack.settings.CREDIT_ENTITLEMENT_ID,
				credit_entitlement_name: 'Email Credits',
				available_balance: '999',
				subscription_credits_amount: '5000',
				threshold_amount: '1000',
				threshold_percent: 20,
			},
		});

		it('POST /webhooks/dodo with a valid signature → 200 {"received":true}', async () => {
			assert.ok(stack.settings.DODO_WEBHOOK_KEY.startsWith('whsec_'));
			const body = lowBalanceEvent();
			const r = await request(stack, 'POST', '/webhooks/dodo',
			    { body, headers: webhookHeaders(stack, body) });
			assertJsonOk(r, 'webhook');
			assert.deepEqual(r.json, { received: true });
		});

		it('POST /webhooks/dodo replayed with the same webhook-id → 200 again', async () => {
			const body = lowBalanceEvent();
			const headers = webhookHeaders(stack, body);
			for (let i = 0; i < 2; i++) {
				const r = await request(stack, 'POST', '/webhooks/dodo', { body, headers });
				assertJsonOk(r, `delivery ${i + 1}`);
				assert.deepEqual(r.json, { received: true });
			}
		});

		it('POST /webhooks/dodo with a bad signature → 401 invalid signature', async () => {
			const body = lowBalanceEvent();
			const wrongKey = await request(stack, 'POST', '/webhooks/dodo',
			    { body, headers: webhookHeaders(stack, body, { secret: randomSecret() }) });
			assertJsonError(wrongKey, 401, 'wrong key');
			assert.deepEqual(wrongKey.json, { error: 'invalid signature' });
			const headers = webhookHeaders(stack, body);
			const tampered = await request(stack, 'POST', '/webhooks/dodo',
			    { body: body.replace('999', '998'), headers });
			assertJsonError(tampered, 401, 'tampered body');
			assert.deepEqual(tampered.json, { error: 'invalid signature' });
			const old = await request(stack, 'POST', '/webhooks/dodo', { body,
			    headers: webhookHeaders(stack, body, { timestamp: Math.floor(Date.now() / 1000) - 3600 }) });
			assertJsonError(old, 401, 'stale timestamp');
		});

		// ------------------------------------------------------------ client errors
		it('malformed JSON → 400', async () => {
			const r = await request(stack, 'POST', '/send', { body: '{"to": ', key,
			    headers: { 'Content-Type': 'application/json' } });
			assertJsonError(r, 400, 'malformed /send');
			const c = await request(stack, 'POST', '/checkout/subscribe', { body: 'not json',
			    headers: { 'Content-Type': 'application/json' } });
			assertJsonError(c, 400, 'malformed /checkout/subscribe');
			const deep = '['.repeat(40) + ']'.repeat(40);
			assertJsonError(await request(stack, 'POST', '/checkout/subscribe', { body:
			    `{"email": "a@example.org", "x": ${deep}}`,
			    headers: { 'Content-Type': 'application/json' } }), 400, 'nested too deep');
		});

		it('missing field → 400', async () => {
			const body = sendBody();
			delete body.to;
			assertJsonError(await postJson(stack, '/send', body, { key }), 400, 'send without to');
			assertJsonError(await postJson(stack, '/checkout/subscribe', { name: 'No Email' }),
			    400, 'subscribe without email');
		});

		it('bad recipient → 400; at most 50 recipients', async () => {
			for (const to of ['not-an-address', 'a@b@c.org', 'x@example.org\r\nBcc: y@example.org', '',
			    `${'l'.repeat(65)}@example.org`, `a@${'d'.repeat(250)}.org`, ['ok@example.org', 'bad'],
			    Array.from({ length: 51 }, (_, i) => `r${i}@example.org`)])
				assertJsonError(await postJson(stack, '/send', sendBody(null, { to }), { key }),
				    400, `to=${JSON.stringify(to).slice(0, 80)}`);
		});

		it('header injection (CR, LF, NUL in the subject) → 400 and nothing sent', async () => {
			const before = (await sandboxStats(stack)).calls;
			const subjects = [];
			for (const bad of ['Hi\r\nBcc: victim@example.org', 'line\nbreak', 'cr\ronly', 'nul\u0000byte']) {
				const subject = `${uniq()} ${bad}`;
				subjects.push(subject.slice(0, 8));
				assertJsonError(await postJson(stack, '/send', sendBody(null, { subject }), { key }),
				    400, `subject=${JSON.stringify(subject)}`);
			}
			const name = await postJson(stack, '/checkout/subscribe',
			    { email: `inj-${uniq()}@example.org`, name: 'Eve\r\nBcc: victim@example.org' });
			assertJsonError(name, 400, 'CR/LF in the subscriber name');
			const after = (await sandboxStats(stack)).calls;
			for (const c of ['email_send', 'ledger_debit', 'checkout'])
				assert.equal(after[c], before[c], `no upstream ${c} call`);
			await assertNotSent(stack, subjects);
		});

		it('subject over 998 bytes → 400', async () => {
			assertJsonError(await postJson(stack, '/send', sendBody(null, { subject: 's'.repeat(999) }),
			    { key }), 400, 'long subject');
		});

		// ------------------------------------------------------------ API keys
		it('no key, a wrong key, a claim token as key → 401 with WWW-Authenticate, no upstream call', async () => {
			assert.ok(customer && key, 'needs the subscribe flow');
			const before = (await sandboxStats(stack)).calls;
			const tries = [
				['GET', `/credits/${customer}`], ['GET', '/credits/me'], ['GET', '/credits'],
				['GET', `/credits/${customer}/ledger`], ['POST', '/send', sendBody(customer)],
				['POST', '/checkout/topup', { customer_id: customer }],
			];
			const subjects = [];
			for (const [method, p, json] of tries) {
				if (json?.subject)
					subjects.push(json.subject);
				for (const auth of [undefined, `Bearer ${strangerKey()}`, `Bearer ${key}x`,
				    `Basic ${Buffer.from(`${customer}:x`).toString('base64')}`, 'Bearer',
				    `Bearer mkc_${randomBytes(32).toString('base64url')}`]) {
					const r = await request(stack, method, p, { json,
					    headers: auth ? { Authorization: auth } : {} });
					assertJsonError(r, 401, `${method} ${p} with ${auth ?? 'no Authorization'}`);
					assert.match(r.headers.get('www-authenticate') || '', /^Bearer\b/,
					    `${method} ${p}: WWW-Authenticate`);
				}
			}
			const after = (await sandboxStats(stack)).calls;
			for (const c of ['balance_read', 'email_send', 'ledger_debit', 'checkout', 'customer'])
				assert.equal(after[c], before[c], `no upstream ${c} call`);
			await assertNotSent(stack, subjects);
		});

		it("another customer's id with my key → 403, nothing read or sent", async () => {
			assert.ok(other, 'needs the top-up test');
			const before = (await sandboxStats(stack)).calls;
			assertJsonError(await getJson(stack, `/credits/${other.customer_id}`, { key }), 403, 'credits');
			assertJsonError(await getJson(stack, `/credits/${other.customer_id}/ledger`, { key }), 403, 'ledger');
			const body = sendBody(other.customer_id);
			assertJsonError(await postJson(stack, '/send', body, { key }), 403, 'send');
			assertJsonError(await postJson(stack, '/checkout/topup', { customer_id: other.customer_id },
			    { key }), 403, 'topup');
			const after = (await sandboxStats(stack)).calls;
			for (const c of ['balance_read', 'email_send', 'ledger_debit', 'checkout'])
				assert.equal(after[c], before[c], `no upstream ${c} call`);
			await assertNotSent(stack, [body.subject]);
		});

		it('rotated key: old → 401, new works; revoked → 401', async () => {
			const c = await subscribeWithKey(stack, {});
			assertJsonOk(await getJson(stack, '/credits/me', { key: c.api_key }), 'first key');
			const issue = await admin(stack, ['keys', 'issue', c.customer_id]);
			assert.equal(issue.code, 1, 'issue refuses a second active key');
			const rot = await admin(stack, ['keys', 'rotate', c.customer_id]);
			assert.equal(rot.code, 0, rot.stderr);
			const fresh = rot.stdout.trim();
			assert.match(fresh, /^mk_[A-Za-z0-9_-]{43}$/);
			assertJsonError(await getJson(stack, '/credits/me', { key: c.api_key }), 401, 'old key');
			const ok = await getJson(stack, '/credits/me', { key: fresh });
			assertJsonOk(ok, 'new key');
			assert.equal(ok.json.customer_id, c.customer_id);
			const body = sendBody();
			assertJsonOk(await postJson(stack, '/send', body, { key: fresh }), 'send with the new key');
			const rev = await admin(stack, ['keys', 'revoke', c.customer_id]);
			assert.equal(rev.code, 0, rev.stderr);
			const revoked = await getJson(stack, '/credits/me', { key: fresh });
			assertJsonError(revoked, 401, 'revoked key');
			assert.match(revoked.headers.get('www-authenticate') || '', /invalid_token/);
			const list = await admin(stack, ['keys', 'list', c.customer_id]);
			assert.equal(list.code, 0, list.stderr);
			assert.equal((list.stdout.match(/revoked/g) || []).length, 2, list.stdout);
			assert.ok(!list.stdout.includes(fresh) && !list.stdout.includes(c.api_key),
			    'keys list never shows a whole key');
		});

		it(`more than RATE_LIMIT_PER_MINUTE (${RATE_LIMIT}) requests with one key → 429 with Retry-After`, async () => {
			const c = await subscribeWithKey(stack, {});
			// invalid bodies: counted (the key is checked first), no upstream call
			const hit = () => postJson(stack, '/send', { to: 'bad' }, { key: c.api_key });
			let r;
			for (let i = 0; i < 2 * RATE_LIMIT + 2; i++) {
				r = await hit();
				if (r.status === 429)
					break;
				assert.equal(r.status, 400, r.text);
			}
			assertJsonError(r, 429, 'over the limit');
			const retry = Number(r.headers.get('retry-after'));
			assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${retry}`);
			// other keys are not affected
			assertJsonOk(await getJson(stack, '/credits/me', { key }), 'another key');
		});

		it('unknown customer → 403 with a key (the key names the customer)', async () => {
			assertJsonError(await getJson(stack, '/credits/cus_doesnotexist0000', { key }), 403, 'credits');
			const body = sendBody('cus_doesnotexist0000');
			assertJsonError(await postJson(stack, '/send', body, { key }), 403, 'send');
			await assertNotSent(stack, [body.subject]);
		});

		it('wrong method → 405 with Allow', async () => {
			for (const [method, p, allow] of [['GET', '/send', 'POST'],
			    ['GET', '/checkout/subscribe', 'POST'], ['PUT', '/checkout/topup', 'POST'],
			    ['DELETE', '/credits/cus_x', 'GET'], ['GET', '/webhooks/dodo', 'POST']]) {
				const r = await request(stack, method, p);
				assertJsonError(r, 405, `${method} ${p}`);
				assert.match(r.headers.get('allow') || '', new RegExp(`\\b${allow}\\b`),
				    `${method} ${p} Allow: ${r.headers.get('allow')}`);
			}
		});

		it('unknown paths: JSON 404 under a program, plain 404 elsewhere', async () => {
			assertJsonError(await request(stack, 'POST', '/checkout/nope', { json: {} }), 404,
			    '/checkout/nope');
			assertJsonError(await getJson(stack, '/credits/a/b/c'), 404, '/credits/a/b/c');
			assert.equal((await request(stack, 'POST', '/sendfoo', { json: {} })).status, 404,
			    '/sendfoo is not /send');
		});

		it(`body over MAX_BODY_BYTES (${MAX_BODY}) → 413`, async () => {
			const big = sendBody(null, { html: 'x'.repeat(MAX_BODY + 100) });
			assertJsonError(await postJson(stack, '/send', big, { key }), 413, 'send');
			assertJsonError(await postJson(stack, '/send', big), 413, 'send without a key');
			const bigHook = JSON.stringify({ pad: 'y'.repeat(MAX_BODY + 100) });
			assertJsonError(await request(stack, 'POST', '/webhooks/dodo',
			    { body: bigHook, headers: webhookHeaders(stack, bigHook) }), 413, 'webhook');
		});

		// The web servers buffer or limit bodies themselves (lighttpd reads the
		// whole body before it talks to the program), so the program's own
		// "413 before a byte is read" is proved on its FastCGI socket: a huge
		// Content-Length, a few bytes, and a body that never ends.
		it('413 from the program before it reads the body (FastCGI socket, body never finished)', async () => {
			const params = { REQUEST_METHOD: 'POST', REQUEST_URI: '/send', SCRIPT_NAME: '/send',
			    CONTENT_TYPE: 'application/json', CONTENT_LENGTH: String(64 * 1024 * 1024),
			    HTTP_AUTHORIZATION: `Bearer ${key}`, REMOTE_ADDR: '127.0.0.1' };
			for (const prog of ['send', 'checkout', 'webhook']) {
				const r = await fcgiRequest(path.join(stack.stateDir, 'run', `${prog}.sock`),
				    { ...params, REQUEST_URI: prog === 'webhook' ? '/webhooks/dodo' :
					prog === 'checkout' ? '/checkout/subscribe' : '/send' },
				    { stdin: '{"to": "a@example.org", "html": "', endStdin: false, timeoutMs: 5000 });
				assert.ok(r.ended, `${prog}: the program ended the request by itself (${r.ms} ms)`);
				assert.equal(r.status, 413, `${prog}: ${r.stdout.slice(0, 300)}`);
				assert.match(r.stdout, /"error":/);
				assert.ok(r.ms < 3000, `${prog}: answered in ${r.ms} ms`);
			}
			// the same socket serves a normal request right after
			const ok = await fcgiRequest(path.join(stack.stateDir, 'run', 'credits.sock'), {
			    REQUEST_METHOD: 'GET', REQUEST_URI: '/credits/me', HTTP_AUTHORIZATION: `Bearer ${key}` });
			assert.equal(ok.status, 200, ok.stdout.slice(0, 300));
		});

		it('chunked request bodies (no Content-Length) are read and limited', async () => {
			const chunked = (text) => {
				const bytes = new TextEncoder().encode(text);
				return new ReadableStream({ start(ctl) {
					for (let i = 0; i < bytes.length; i += 1000)
						ctl.enqueue(bytes.slice(i, i + 1000));
					ctl.close();
				} });
			};
			const post = async (p, text) => {
				const res = await fetch(stack.baseUrl + p, { method: 'POST', body: chunked(text),
				    duplex: 'half', headers: { 'Content-Type': 'application/json' },
				    signal: AbortSignal.timeout(TEST_MS) });
				const t = await res.text();
				let j;
				try { j = JSON.parse(t); } catch { j = undefined; }
				return { status: res.status, headers: res.headers, text: t, json: j };
			};
			const ok = await post('/checkout/subscribe',
			    JSON.stringify({ email: `chunked-${uniq()}@example.org`, name: 'Chunked' }));
			assertJsonOk(ok, 'chunked subscribe');
			assert.equal(typeof ok.json.checkout_url, 'string');
			const big = JSON.stringify(sendBody(null, { html: 'x'.repeat(MAX_BODY + 100) }));
			assertJsonError(await post('/send', big), 413, 'chunked oversize send');
		});

		it('GET /sandbox/ and the outbox page are served in sandbox mode', async () => {
			for (const p of ['/sandbox/', '/sandbox/outbox']) {
				const r = await request(stack, 'GET', p);
				assert.equal(r.status, 200, `${p}: ${r.status}`);
				assert.match(r.headers.get('content-type') || '', /^text\/html/, p);
			}
		});

		it('wrong or missing content type → 415', async () => {
			const body = JSON.stringify(sendBody());
			assertJsonError(await request(stack, 'POST', '/send',
			    { body, key, headers: { 'Content-Type': 'text/plain' } }), 415, 'text/plain');
			assertJsonError(await request(stack, 'POST', '/checkout/subscribe',
			    { body: 'email=a%40b.org&name=x',
			      headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 415, 'form');
			// a Uint8Array body: fetch adds no Content-Type at all
			for (const p of ['/send', '/checkout/subscribe', '/checkout/topup']) {
				const r = await request(stack, 'POST', p, { key,
				    body: new TextEncoder().encode(JSON.stringify({ email: 'a@example.org' })) });
				assertJsonError(r, 415, `${p} without Content-Type`);
			}
			assertJsonOk(await request(stack, 'POST', '/checkout/subscribe', {
			    body: JSON.stringify({ email: `ct-${uniq()}@example.org` }),
			    headers: { 'Content-Type': 'Application/JSON; charset=utf-8' } }), 'JSON with parameters');
		});

		it('ids with / or ? do not change the upstream path', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const before = await getJson(stack, `/credits/${customer}`, { key });
			const subjects = [];
			for (const id of [`${customer}/../${customer}`, `../../customers/${customer}`,
			    `${customer}?x=1`, `${customer}#frag`, `${customer}%2F..`]) {
				const body = sendBody(id);
				subjects.push(body.subject);
				const s = await postJson(stack, '/send', body, { key });
				assert.ok([400, 403, 404].includes(s.status), `send ${id}: ${s.status} ${s.text}`);
				assertJsonError(s, s.status, `send ${id}`);
				const t = await postJson(stack, '/checkout/topup', { customer_id: id }, { key });
				assert.ok([400, 403, 404].includes(t.status), `topup ${id}: ${t.status} ${t.text}`);
				assertJsonError(t, t.status, `topup ${id}`);
			}
			const enc = await getJson(stack, `/credits/${encodeURIComponent(`${customer}/x`)}`, { key });
			assert.ok([400, 403, 404].includes(enc.status), `credits %2F: ${enc.status} ${enc.text}`);
			assertJsonError(enc, enc.status, 'credits %2F');
			const afterAll = await getJson(stack, `/credits/${customer}`, { key });
			assert.equal(afterAll.json.balance, before.json.balance, 'balance untouched');
			await assertNotSent(stack, subjects);
		});

		// ------------------------------------------------------------ upstream failures
		it('upstream failing (500 beyond the retries) → 502', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			await sandboxFault(stack, { target: 'balance_read', mode: '500', count: 5 });
			try {
				assertJsonError(await getJson(stack, `/credits/${customer}`, { key }), 502, 'credits');
			} finally {
				await clearSandboxFaults(stack);
			}
			assertJsonOk(await getJson(stack, `/credits/${customer}`, { key }), 'credits after the fault');
		});

		it('upstream stalling → 504', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			await sandboxFault(stack, { target: 'balance_read', mode: 'stall', count: 2,
			    stall_ms: STALL_MS });
			try {
				const t0 = Date.now();
				const r = await getJson(stack, `/credits/${customer}`, { key });
				assertJsonError(r, 504, 'credits');
				assert.ok(Date.now() - t0 < 3 * STALL_MS, 'answered before the stalls ended');
			} finally {
				await clearSandboxFaults(stack);
			}
		});

		// ------------------------------------------------------------ hard stop
		it('402 with the tutorial message when the balance is 0', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const cur = await getJson(stack, `/credits/${customer}`, { key });
			assertJsonOk(cur, 'credits');
			const amount = String(cur.json.balance);
			const adj = await request(stack, 'POST', `/sandbox/customers/${customer}/adjust`,
			    { json: { entry_type: 'debit', amount } });
			assert.ok([200, 303].includes(adj.status), `adjust: ${adj.status} ${adj.text.slice(0, 200)}`);
			const zero = await waitForBalance(stack, customer, (b) => Number(b) === 0, { key });
			assert.equal(Number(zero.balance), 0, JSON.stringify(zero));
			const body = sendBody();
			const r = await postJson(stack, '/send', body, { key });
			assertJsonError(r, 402, 'send at zero');
			assert.deepEqual(r.json, { error: NO_CREDITS });
			const still = await getJson(stack, `/credits/${customer}`, { key });
			assert.equal(Number(still.json.balance), 0, 'no overdraft');
			await assertNotSent(stack, [body.subject]);
		});
	}
}

// None of these (unique) subjects reached the sandbox outbox.  Compared by
// subject, not by count: webhook.fcgi may send low-balance notices meanwhile.
async function assertNotSent(stack, subjects) {
	const outbox = JSON.stringify(await sandboxEmails(stack));
	for (const subject of subjects)
		assert.ok(!outbox.includes(subject), `an email with subject ${subject} was sent`);
}

// The newest outbox email to `to` whose subject matches `subject` (polled:
// webhook.fcgi sends some a moment later).
async function eventuallyEmail(stack, to, subject, timeoutMs = 10_000) {
	const until = Date.now() + timeoutMs;
	for (;;) {
		const found = (await sandboxEmails(stack)).find((e) =>
		    JSON.stringify(e.to).includes(to) && subject.test(String(e.subject)));
		if (found)
			return found;
		if (Date.now() > until)
			assert.fail(`no email "${subject}" to ${to} in the outbox`);
		await new Promise((r) => setTimeout(r, 100));
	}
}
