// routes.mjs: every MailKit route, black-box, through one web server in
// front of the real programs and the sandbox.  lighttpd.test.mjs and
// apache.test.mjs call defineRouteTests() with their server.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
	clearSandboxFaults, completeCheckout, getJson, missingPrerequisite, postJson, randomSecret,
	listOf, request, sandboxEmails, sandboxFault, skipFile, startStack,
	subscribeCustomer, waitForBalance, webhookHeaders,
} from './harness.mjs';

const NO_CREDITS = 'No email credits remaining. Buy a top-up pack or upgrade your plan.';
const MAX_BODY = 4096;		// MAX_BODY_BYTES for this stack: 413 above it
const TIMEOUT_MS = 1000;	// UPSTREAM_TIMEOUT_MS: a stalled upstream gives 504 quickly
const STALL_MS = 4000;		// sandbox stall, well above TIMEOUT_MS
const TEST_MS = 30_000;		// per test
const START_MS = 120_000;	// starting / stopping the stack

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
const sendBody = (customerId, extra = {}) => ({
	customer_id: customerId,
	to: 'delivered@resend.dev',
	subject: `MailKit integration ${uniq()}`,
	html: '<strong>It works!</strong>',
	...extra,
});

export function defineRouteTests(server) {
	const missing = missingPrerequisite(server);
	if (missing)
		skipFile(`${server}: ${missing}`);

	// Top-level tests (not a describe block) so that automake's TAP driver
	// reports every route as its own PASS/FAIL line; they run in order.
	{
		let stack;
		let customer;		// subscribed in the flow tests, drained at the end

		before(async () => {
			stack = await startStack({ server, env: {
				MAX_BODY_BYTES: String(MAX_BODY),
				UPSTREAM_TIMEOUT_MS: String(TIMEOUT_MS),
				UPSTREAM_MAX_RETRIES: '1',
			} });
		}, { timeout: START_MS });

		after(async () => {
			if (stack)
				await stack.stop();
		}, { timeout: START_MS });

		// Say where to look when something fails.
		const withLogs = (fn) => async (t) => {
			try {
				await fn(t);
			} catch (e) {
				if (stack)
					e.message += `\n(state ${stack.stateDir})${await stack.logs()}`;
				throw e;
			}
		};
		const it = (name, fn) => test(`${server}: ${name}`, { timeout: TEST_MS }, withLogs(fn));

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
			const page = await request(stack, 'GET', new URL(r.json.checkout_url).pathname);
			assert.equal(page.status, 200, `checkout page ${r.json.checkout_url}`);
			assert.match(page.headers.get('content-type') || '', /^text\/html/);
			assert.match(page.text, /id="pay"/);
		});

		it('subscribe → checkout → /checkout/return gives the customer', async () => {
			const email = `flow-${uniq()}@example.org`;
			const sub = await postJson(stack, '/checkout/subscribe', { email, name: 'Flow Test' });
			assertJsonOk(sub, 'subscribe');
			const done = await completeCheckout(stack, sub.json.checkout_url);
			assert.match(done.customer_id, /^cus_/);
			assert.equal(done.email, email);
			assert.equal(typeof done.status, 'string');
			customer = done.customer_id;
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
			const j = await waitForBalance(stack, customer, (b) => b === '5000');
			assert.equal(j.balance, '5000', JSON.stringify(j));
			const r = await getJson(stack, `/credits/${customer}`);
			assertJsonOk(r, 'credits');
			for (const k of ['balance', 'overage', 'allowance', 'low_balance_threshold'])
				assert.ok(k in r.json, `credits reply lacks ${k}: ${r.text}`);
		});

		it('GET /credits/{id}/ledger lists entries', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const r = await getJson(stack, `/credits/${customer}/ledger`);
			assertJsonOk(r, 'ledger');
			assert.ok(Array.isArray(r.json.items), r.text);
		});

		it('POST /checkout/topup adds a pack (5000 + 5000)', async () => {
			const other = await subscribeCustomer(stack, {});
			await waitForBalance(stack, other, (b) => b === '5000');
			const t = await postJson(stack, '/checkout/topup', { customer_id: other });
			assertJsonOk(t, 'topup');
			assert.equal(typeof t.json.checkout_url, 'string');
			assert.equal(typeof t.json.session_id, 'string');
			const done = await completeCheckout(stack, t.json.checkout_url);
			assert.equal(done.customer_id, other);
			const j = await waitForBalance(stack, other, (b) => b === '10000');
			assert.equal(j.balance, '10000', JSON.stringify(j));
		});

		// ------------------------------------------------------------ send
		it('POST /send sends, debits exactly 1, and reaches the sandbox outbox', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const before = await getJson(stack, `/credits/${customer}`);
			assertJsonOk(before, 'credits before');
			const body = sendBody(customer);
			const r = await postJson(stack, '/send', body);
			assertJsonOk(r, 'send');
			assert.equal(typeof r.json.id, 'string');
			assert.ok(r.json.id.length > 0);
			const afterSend = await getJson(stack, `/credits/${customer}`);
			assert.equal(Number(afterSend.json.balance), Number(before.json.balance) - 1,
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
			const r = await request(stack, 'POST', '/send', { body: '{"customer_id": "cus_x", "to": ',
			    headers: { 'Content-Type': 'application/json' } });
			assertJsonError(r, 400, 'malformed /send');
			const c = await request(stack, 'POST', '/checkout/subscribe', { body: 'not json',
			    headers: { 'Content-Type': 'application/json' } });
			assertJsonError(c, 400, 'malformed /checkout/subscribe');
		});

		it('missing field → 400', async () => {
			const body = sendBody(customer ?? 'cus_x');
			delete body.to;
			assertJsonError(await postJson(stack, '/send', body), 400, 'send without to');
			assertJsonError(await postJson(stack, '/checkout/subscribe', { name: 'No Email' }),
			    400, 'subscribe without email');
			assertJsonError(await postJson(stack, '/checkout/topup', {}), 400, 'topup without id');
		});

		it('bad recipient → 400', async () => {
			for (const to of ['not-an-address', 'a@b@c.org', 'x@example.org\r\nBcc: y@example.org', ''])
				assertJsonError(await postJson(stack, '/send', sendBody(customer ?? 'cus_x', { to })),
				    400, `to=${JSON.stringify(to)}`);
		});

		it('CR/LF in the subject → 400', async () => {
			for (const subject of ['Hi\r\nBcc: victim@example.org', 'line\nbreak', 'cr\ronly'])
				assertJsonError(await postJson(stack, '/send', sendBody(customer ?? 'cus_x', { subject })),
				    400, `subject=${JSON.stringify(subject)}`);
		});

		it('unknown customer → 404', async () => {
			assertJsonError(await getJson(stack, '/credits/cus_doesnotexist0000'), 404, 'credits');
			const body = sendBody('cus_doesnotexist0000');
			assertJsonError(await postJson(stack, '/send', body), 404, 'send');
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
			const big = sendBody(customer ?? 'cus_x', { html: 'x'.repeat(MAX_BODY + 100) });
			assertJsonError(await postJson(stack, '/send', big), 413, 'send');
			const bigHook = JSON.stringify({ pad: 'y'.repeat(MAX_BODY + 100) });
			assertJsonError(await request(stack, 'POST', '/webhooks/dodo',
			    { body: bigHook, headers: webhookHeaders(stack, bigHook) }), 413, 'webhook');
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
			const big = JSON.stringify(sendBody(customer ?? 'cus_x', { html: 'x'.repeat(MAX_BODY + 100) }));
			assertJsonError(await post('/send', big), 413, 'chunked oversize send');
		});

		it('GET /sandbox/ and the outbox page are served in sandbox mode', async () => {
			for (const p of ['/sandbox/', '/sandbox/outbox']) {
				const r = await request(stack, 'GET', p);
				assert.equal(r.status, 200, `${p}: ${r.status}`);
				assert.match(r.headers.get('content-type') || '', /^text\/html/, p);
			}
		});

		it('wrong content type → 415', async () => {
			const body = JSON.stringify(sendBody(customer ?? 'cus_x'));
			assertJsonError(await request(stack, 'POST', '/send',
			    { body, headers: { 'Content-Type': 'text/plain' } }), 415, 'text/plain');
			assertJsonError(await request(stack, 'POST', '/checkout/subscribe',
			    { body: 'email=a%40b.org&name=x',
			      headers: { 'Content-Type': 'application/x-www-form-urlencoded' } }), 415, 'form');
		});

		it('ids with / or ? do not change the upstream path', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const before = await getJson(stack, `/credits/${customer}`);
			const subjects = [];
			for (const id of [`${customer}/../${customer}`, `../../customers/${customer}`,
			    `${customer}?x=1`, `${customer}#frag`, `${customer}%2F..`]) {
				const body = sendBody(id);
				subjects.push(body.subject);
				const s = await postJson(stack, '/send', body);
				assert.ok([400, 404].includes(s.status), `send ${id}: ${s.status} ${s.text}`);
				assertJsonError(s, s.status, `send ${id}`);
				const t = await postJson(stack, '/checkout/topup', { customer_id: id });
				assert.ok([400, 404].includes(t.status), `topup ${id}: ${t.status} ${t.text}`);
				assertJsonError(t, t.status, `topup ${id}`);
			}
			const enc = await getJson(stack, `/credits/${encodeURIComponent(`${customer}/x`)}`);
			assert.ok([400, 404].includes(enc.status), `credits %2F: ${enc.status} ${enc.text}`);
			assertJsonError(enc, enc.status, 'credits %2F');
			const afterAll = await getJson(stack, `/credits/${customer}`);
			assert.equal(afterAll.json.balance, before.json.balance, 'balance untouched');
			await assertNotSent(stack, subjects);
		});

		// ------------------------------------------------------------ upstream failures
		it('upstream failing (500 beyond the retries) → 502', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			await sandboxFault(stack, { target: 'balance_read', mode: '500', count: 5 });
			try {
				assertJsonError(await getJson(stack, `/credits/${customer}`), 502, 'credits');
			} finally {
				await clearSandboxFaults(stack);
			}
			assertJsonOk(await getJson(stack, `/credits/${customer}`), 'credits after the fault');
		});

		it('upstream stalling → 504', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			await sandboxFault(stack, { target: 'balance_read', mode: 'stall', count: 2,
			    stall_ms: STALL_MS });
			try {
				const t0 = Date.now();
				const r = await getJson(stack, `/credits/${customer}`);
				assertJsonError(r, 504, 'credits');
				assert.ok(Date.now() - t0 < 3 * STALL_MS, 'answered before the stalls ended');
			} finally {
				await clearSandboxFaults(stack);
			}
		});

		// ------------------------------------------------------------ hard stop
		it('402 with the tutorial message when the balance is 0', async () => {
			assert.ok(customer, 'needs the subscribe flow');
			const cur = await getJson(stack, `/credits/${customer}`);
			assertJsonOk(cur, 'credits');
			const amount = String(cur.json.balance);
			const adj = await request(stack, 'POST', `/sandbox/customers/${customer}/adjust`,
			    { body: new URLSearchParams({ entry_type: 'debit', amount }) });
			assert.ok([200, 303].includes(adj.status), `adjust: ${adj.status} ${adj.text.slice(0, 200)}`);
			const zero = await waitForBalance(stack, customer, (b) => Number(b) === 0);
			assert.equal(Number(zero.balance), 0, JSON.stringify(zero));
			const body = sendBody(customer);
			const r = await postJson(stack, '/send', body);
			assertJsonError(r, 402, 'send at zero');
			assert.deepEqual(r.json, { error: NO_CREDITS });
			const still = await getJson(stack, `/credits/${customer}`);
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
