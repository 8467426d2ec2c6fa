// sdk.test.mjs: the sandbox is wire-compatible with the official SDKs
// (npm dodopayments, resend) and its webhooks verify with standardwebhooks.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';

import { dodoSdk, getJson, missingPrerequisite, request, sandboxFault, sandboxStats, skipFile,
    startStack, testPackages } from './harness.mjs';

const HOOK_PORT_FIRST = 18300;	// our range for the test's webhook receiver: 18300-18399
const HOOK_PORT_LAST = 18399;
const WAIT_MS = 10_000;		// for webhook deliveries to arrive
const POLL_MS = 100;

// The SDKs live in tests/node_modules (npm ci --prefix tests).
const [dodoPackage, { Resend }, { Webhook }] = testPackages('dodopayments', 'resend', 'standardwebhooks');
const DodoPayments = dodoSdk(dodoPackage);
{
	const why = missingPrerequisite('lighttpd');
	if (why)
		skipFile(why);
}

// ------------------------------------------------------------- webhook receiver

const received = [];	// { headers, body } exactly as delivered
let hookServer, hookUrl;

function portFree(port) {
	return new Promise((resolve) => {
		const s = net.createServer();
		s.once('error', () => resolve(false));
		s.listen({ port, host: '127.0.0.1', exclusive: true }, () => s.close(() => resolve(true)));
	});
}

async function startReceiver() {
	const span = HOOK_PORT_LAST - HOOK_PORT_FIRST + 1;
	const start = Math.floor(Math.random() * span);
	for (let i = 0; i < span; i++) {
		const port = HOOK_PORT_FIRST + (start + i) % span;
		if (!await portFree(port))
			continue;
		const server = http.createServer((req, res) => {
			const chunks = [];
			req.on('data', (c) => chunks.push(c));
			req.on('end', () => {
				received.push({ url: req.url, headers: req.headers,
				    body: Buffer.concat(chunks).toString('utf8') });
				res.writeHead(200, { 'Content-Type': 'application/json' });
				res.end('{"received":true}');
			});
		});
		const ok = await new Promise((resolve) => {
			server.once('error', () => resolve(false));
			server.listen(port, '127.0.0.1', () => resolve(true));
		});
		if (ok)
			return { server, url: `http://127.0.0.1:${port}/webhooks/dodo` };
	}
	throw new Error(`no free port in ${HOOK_PORT_FIRST}-${HOOK_PORT_LAST}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Deliveries of `type` (captured by our receiver, or, when the stack routes
// them to MailKit instead, the sandbox's record of the exact bytes it sent).
async function deliveries(type, { min = 1 } = {}) {
	const deadline = Date.now() + WAIT_MS;
	for (;;) {
		let found = received.filter((d) => JSON.parse(d.body).type === type);
		if (found.length === 0) {
			const r = await request(stack, 'GET', `/sandbox/admin/webhooks?type=${type}`);
			found = (r.json?.items ?? []).filter((w) => w.webhook_signature).map((w) => ({
				headers: { 'webhook-id': w.id, 'webhook-timestamp': w.webhook_timestamp,
				    'webhook-signature': w.webhook_signature },
				body: w.body,
			}));
		}
		if (found.length >= min || Date.now() > deadline)
			return found;
		await sleep(POLL_MS);
	}
}

// ------------------------------------------------------------- the stack

let stack, dodo, resend, customerId, subscriptionId;
const email = `sdk-${Date.now()}@example.org`;

before(async () => {
	const r = await startReceiver();
	hookServer = r.server;
	hookUrl = r.url;
	stack = await startStack({ env: { SANDBOX_WEBHOOK_URL: r.url } });
	dodo = new DodoPayments({ bearerToken: stack.settings.DODO_PAYMENTS_API_KEY,
	    baseURL: stack.settings.DODO_PAYMENTS_BASE_URL, maxRetries: 0, timeout: 30_000 });
	resend = new Resend(stack.settings.RESEND_API_KEY,
	    { baseUrl: stack.settings.RESEND_BASE_URL });
});

after(async () => {
	await stack?.stop();
	hookServer?.close();
});

const cent = () => stack.settings.CREDIT_ENTITLEMENT_ID;

// ------------------------------------------------------------- Dodo Payments

test('dodopayments: checkoutSessions.create and the hosted checkout form', async () => {
	const returnUrl = `${stack.baseUrl}/?from=sdk`;
	const session = await dodo.checkoutSessions.create({
		product_cart: [{ product_id: stack.settings.PLAN_PRODUCT_ID, quantity: 1 }],
		customer: { email, name: 'SDK <Tester>' },
		return_url: returnUrl,
		metadata: { source: 'sdk-test' },
	});
	assert.match(session.session_id, /^cks_/);
	assert.equal(session.checkout_url, `${stack.sandboxUrl}/checkout/${session.session_id}`);

	const page = await request(stack, 'GET', session.checkout_url);
	assert.equal(page.status, 200);
	assert.match(page.headers.get('content-type'), /^text\/html/);
	assert.match(page.text, /id="pay"/);
	assert.match(page.text, /4242 4242 4242 4242/);
	assert.match(page.text, /\$19\.00 \/ month/);
	assert.match(page.text, /id="product">MailKit Standard</);
	assert.match(page.text, /5,000 emails every month; blocked at zero/);
	assert.match(page.text, /SDK &lt;Tester&gt;/, 'reflected values are HTML-escaped');

	// the page's form carries its own token (a cross-site form has none)
	const csrf = /name="csrf" value="([0-9a-f]{64})"/.exec(page.text)?.[1];
	assert.ok(csrf, 'the checkout form has a token');
	const bare = 'card=4242+4242+4242+4242&exp=12+%2F+34&cvc=123';
	const forged = await request(stack, 'POST', session.checkout_url, { body: bare,
	    headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
	assert.equal(forged.status, 403, 'a form without the page token');
	const form = `csrf=${csrf}&${bare}`;
	const pay = await request(stack, 'POST', session.checkout_url, { body: form,
	    headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
	assert.equal(pay.status, 303);
	const loc = new URL(pay.headers.get('location'));
	assert.equal(loc.searchParams.get('from'), 'sdk', 'the existing query string is kept');
	assert.equal(loc.searchParams.get('status'), 'active');
	assert.equal(loc.searchParams.get('email'), email);
	subscriptionId = loc.searchParams.get('subscription_id');
	assert.match(subscriptionId, /^sub_/);

	const again = await request(stack, 'POST', session.checkout_url, { body: form,
	    headers: { 'Content-Type': 'application/x-www-form-urlencoded' } });
	assert.equal(again.status, 410, 'a consumed session cannot be paid twice');

	const status = await dodo.checkoutSessions.retrieve(session.session_id);
	assert.equal(status.payment_status, 'succeeded');

	const sub = await dodo.subscriptions.retrieve(subscriptionId);
	assert.equal(sub.status, 'active');
	assert.equal(sub.product_id, stack.settings.PLAN_PRODUCT_ID);
	customerId = sub.customer.customer_id;
	assert.match(customerId, /^cus_/);

	const cust = await dodo.customers.retrieve(customerId);
	assert.equal(cust.email, email);
	const list = await dodo.customers.list({ email });
	assert.deepEqual(list.items.map((c) => c.customer_id), [customerId]);
});

test('dodopayments: unknown product and missing key are Dodo errors', async () => {
	await assert.rejects(dodo.checkoutSessions.create({
		product_cart: [{ product_id: 'pdt_nope', quantity: 1 }], customer: { email },
	}), (e) => e instanceof DodoPayments.NotFoundError && e.status === 404);
	const anon = await request(stack, 'POST', '/sandbox/dodo/checkouts', { json: {} });
	assert.equal(anon.status, 401);
	assert.equal(anon.json.code, 'UNAUTHORIZED');
});

test('dodopayments: balances, ledger entries, 400 insufficient and 409 reused key', async () => {
	assert.ok(customerId, 'needs the checkout test');
	const bal = await dodo.creditEntitlements.balances.retrieve(customerId,
	    { credit_entitlement_id: cent() });
	assert.equal(bal.balance, '5000');
	assert.equal(bal.customer_id, customerId);

	const key = `send/${Date.now()}`;
	const entry = await dodo.creditEntitlements.balances.createLedgerEntry(customerId, {
		credit_entitlement_id: cent(), entry_type: 'debit', amount: '1',
		idempotency_key: key, reason: 'sdk test',
	});
	assert.equal(entry.balance_before, '5000');
	assert.equal(entry.balance_after, '4999');
	assert.equal(entry.is_credit, false);

	await assert.rejects(dodo.creditEntitlements.balances.createLedgerEntry(customerId, {
		credit_entitlement_id: cent(), entry_type: 'debit', amount: '1', idempotency_key: key,
	}), (e) => e instanceof DodoPayments.ConflictError && e.status === 409);

	await assert.rejects(dodo.creditEntitlements.balances.createLedgerEntry(customerId, {
		credit_entitlement_id: cent(), entry_type: 'debit', amount: '1000000',
	}), (e) => e instanceof DodoPayments.BadRequestError && e.status === 400);

	// 4999 -> 999 crosses the 20 % threshold (1000): credit.balance_low
	await dodo.creditEntitlements.balances.createLedgerEntry(customerId, {
		credit_entitlement_id: cent(), entry_type: 'debit', amount: '4000',
	});
	const after = await dodo.creditEntitlements.balances.retrieve(customerId,
	    { credit_entitlement_id: cent() });
	assert.equal(after.balance, '999');

	const ledger = await dodo.creditEntitlements.balances.listLedger(customerId,
	    { credit_entitlement_id: cent(), page_size: 10 });
	assert.deepEqual(ledger.items.map((e) => e.balance_after), ['999', '4999', '5000'],
	    'newest first');
	const grants = await dodo.creditEntitlements.balances.listGrants(customerId,
	    { credit_entitlement_id: cent() });
	assert.equal(grants.items.length, 1);
	assert.equal(grants.items[0].source_type, 'subscription');
	assert.equal(grants.items[0].remaining_amount, '999');
});

// ------------------------------------------------------------- Resend

test('resend: emails.send with idempotencyKey', async () => {
	const msg = { from: 'MailKit <notifications@mailkit.test>', to: 'delivered@resend.dev',
	    subject: 'SDK test', html: '<p>Hello</p>' };
	const key = `sdk/${Date.now()}`;
	const first = await resend.emails.send(msg, { idempotencyKey: key });
	assert.equal(first.error, null, JSON.stringify(first.error));
	assert.match(first.data.id, /^[0-9a-f-]{36}$/);

	const again = await resend.emails.send(msg, { idempotencyKey: key });
	assert.equal(again.data?.id, first.data.id, 'same key and body: same email');

	const changed = await resend.emails.send({ ...msg, subject: 'other' }, { idempotencyKey: key });
	assert.equal(changed.data, null);
	assert.equal(changed.error.name, 'invalid_idempotent_request');

	const bad = await resend.emails.send({ ...msg, to: 'not-an-address' });
	assert.equal(bad.error?.name, 'validation_error');

	const got = await resend.emails.get(first.data.id);
	assert.equal(got.data?.subject, 'SDK test');
	assert.equal(got.data?.last_event, 'delivered');

	const noUa = await request(stack, 'POST', '/sandbox/resend/emails', { json: msg,
	    headers: { Authorization: `Bearer ${stack.settings.RESEND_API_KEY}`, 'User-Agent': '' } });
	assert.equal(noUa.status, 403, 'Resend refuses requests without a User-Agent');
});

// ------------------------------------------------------------- webhooks

test('webhooks: every event verifies with standardwebhooks', async (t) => {
	assert.ok(customerId, 'needs the checkout test');
	const wh = new Webhook(stack.settings.DODO_WEBHOOK_KEY);
	for (const type of ['payment.succeeded', 'subscription.active', 'credit.added',
	    'credit.deducted', 'credit.balance_low']) {
		const found = await deliveries(type);
		assert.ok(found.length > 0, `a ${type} delivery`);
		for (const d of found) {
			const env = wh.verify(d.body, d.headers);
			assert.equal(env.type, type);
			assert.match(d.headers['webhook-id'], /^msg_/);
		}
	}
	const [low] = await deliveries('credit.balance_low');
	const data = JSON.parse(low.body).data;
	assert.equal(data.payload_type, 'CreditBalanceLow');
	assert.equal(data.customer_id, customerId);
	assert.equal(data.subscription_id, subscriptionId);
	assert.equal(data.available_balance, '999');
	assert.equal(data.threshold_amount, '1000');
	assert.equal(data.threshold_percent, 20);

	const [added] = await deliveries('credit.added');
	const entry = JSON.parse(added.body).data;
	assert.equal(entry.payload_type, 'CreditLedgerEntry');
	assert.equal(entry.amount, '5000');
	assert.equal(entry.metadata.source, 'sdk-test', 'checkout metadata reappears on the grant');

	assert.throws(() => wh.verify(added.body.replace('5000', '9000'), added.headers),
	    'a tampered body does not verify');
	t.diagnostic(received.length > 0 ? `${received.length} deliveries captured on the wire` :
	    'verified from the sandbox\'s delivery records (the stack sent them to MailKit)');
});

// ------------------------------------------------------------- faults that apply anyway

const LATENCY_MS = 150;		// SANDBOX_LATENCY_MS of the latency test's stack
const CONCURRENT_CALLS = 20;

// A raw ledger entry POST (the SDK would retry or hide the reply).
function ledgerPost(body, { timeout } = {}) {
	return request(stack, 'POST',
	    `/sandbox/dodo/credit-entitlements/${cent()}/balances/${customerId}/ledger-entries`,
	    { json: body, key: stack.settings.DODO_PAYMENTS_API_KEY, timeout });
}

// The customer's ledger entries with this reason.
async function entriesWithReason(reason) {
	const ledger = await dodo.creditEntitlements.balances.listLedger(customerId,
	    { credit_entitlement_id: cent(), page_size: 100 });
	return ledger.items.filter((e) => e.reason === reason);
}

// Resolves to 'no reply' when the request is still unanswered after timeout ms.
async function noReplyWithin(promise) {
	try {
		const r = await promise;
		return `answered ${r.status}`;
	} catch (e) {
		if (e.name === 'TimeoutError' || e.name === 'AbortError')
			return 'no reply';
		throw e;
	}
}

test('sandbox faults: accept500 on ledger_debit applies the entry, then answers 500', async () => {
	assert.ok(customerId, 'needs the checkout test');
	await sandboxFault(stack, { target: 'ledger_debit', mode: 'accept500' });
	const key = `accept500/${Date.now()}`;
	const body = { entry_type: 'debit', amount: '1', idempotency_key: key, reason: key };

	const first = await ledgerPost(body);
	assert.equal(first.status, 500);
	assert.equal(first.json.code, 'INTERNAL_SERVER_ERROR');
	assert.equal((await entriesWithReason(key)).length, 1, 'the entry was applied');

	const retry = await ledgerPost(body);
	assert.equal(retry.status, 409);
	assert.equal(retry.json.code, 'IDEMPOTENCY_KEY_ALREADY_USED');
	assert.equal((await entriesWithReason(key)).length, 1);
});

test('sandbox faults: accept500 on email_send stores the email, then answers 500', async () => {
	await sandboxFault(stack, { target: 'email_send', mode: 'accept500' });
	const key = `accept500-mail/${Date.now()}`;
	const msg = { from: 'MailKit <notifications@mailkit.test>', to: 'delivered@resend.dev',
	    subject: key, text: 'accepted, then a 500' };
	const send = () => request(stack, 'POST', '/sandbox/resend/emails', { json: msg,
	    key: stack.settings.RESEND_API_KEY,
	    headers: { 'User-Agent': 'mailkit-tests', 'Idempotency-Key': key } });
	const outbox = async () => (await getJson(stack,
	    `/sandbox/admin/emails?subject=${encodeURIComponent(key)}`)).json.items;

	const first = await send();
	assert.equal(first.status, 500);
	assert.equal(first.json.name, 'internal_server_error');
	const stored = await outbox();
	assert.equal(stored.length, 1, 'the email was stored');
	assert.equal(stored[0].idempotency_key, key);

	const retry = await send();
	assert.equal(retry.status, 200);
	assert.equal(retry.json.id, stored[0].id, 'the retry gets the stored email\'s id');
	assert.equal((await outbox()).length, 1, 'and sends nothing more');
});

test('sandbox faults: late on ledger_debit lands after the client gave up', async () => {
	assert.ok(customerId, 'needs the checkout test');
	const refused = await request(stack, 'POST', '/sandbox/admin/faults',
	    { json: { target: 'checkout', mode: 'late' } });
	assert.equal(refused.status, 400, 'late needs an effect to apply');
	assert.match(refused.json.error, /ledger_debit, ledger_credit, email_send and events_ingest/);

	// the client's timeout (1 s) is shorter than the stall (1.5 s); the entry lands at 2.5 s
	const armed = await sandboxFault(stack, { target: 'ledger_debit', mode: 'late',
	    stall_ms: 1500, late_ms: 2500 });
	assert.equal(armed.late_ms, 2500);
	const pending = (await getJson(stack, '/sandbox/admin/faults')).json.items;
	assert.deepEqual(pending.map((f) => [f.target, f.mode, f.late_ms]),
	    [['ledger_debit', 'late', 2500]]);
	const statsBefore = await sandboxStats(stack);
	const key = `late/${Date.now()}`;
	const body = { entry_type: 'debit', amount: '1', idempotency_key: key, reason: key,
	    metadata: { send: key } };
	const t0 = Date.now();
	assert.equal(await noReplyWithin(ledgerPost(body, { timeout: 1000 })), 'no reply');
	assert.ok(Date.now() - t0 < 2500);
	assert.equal((await entriesWithReason(key)).length, 0, 'not applied yet');
	await sleep(t0 + 3000 - Date.now());
	const landed = await entriesWithReason(key);
	assert.equal(landed.length, 1, 'applied late');
	assert.equal(landed[0].metadata.send, key, 'with the request\'s metadata');
	const statsAfter = await sandboxStats(stack);
	assert.equal(statsAfter.calls.ledger_debit, statsBefore.calls.ledger_debit + 1);
	assert.equal(statsAfter.late_applied, statsBefore.late_applied + 1);

	// the client's retry with the same key comes first: the late one is skipped
	await sandboxFault(stack, { target: 'ledger_debit', mode: 'late', stall_ms: 1500,
	    late_ms: 2500 });
	const key2 = `late-retried/${Date.now()}`;
	const body2 = { ...body, idempotency_key: key2, reason: key2 };
	const t1 = Date.now();
	assert.equal(await noReplyWithin(ledgerPost(body2, { timeout: 500 })), 'no reply');
	const retry = await ledgerPost(body2);
	assert.equal(retry.status, 201, 'the retry applies while the original is in flight');
	assert.ok(Date.now() - t1 < 2500);
	await sleep(t1 + 3000 - Date.now());
	assert.equal((await entriesWithReason(key2)).length, 1, 'one entry only');
	assert.equal((await sandboxStats(stack)).late_applied, statsAfter.late_applied,
	    'the late one was skipped');
});

test('sandbox: SANDBOX_LATENCY_MS delays API calls, concurrently', async (t) => {
	const slow = await startStack({ env: { SANDBOX_LATENCY_MS: LATENCY_MS,
	    SANDBOX_WEBHOOK_URL: '' } });
	try {
		const call = () => request(slow, 'GET', '/sandbox/dodo/customers?email=nobody%40example.org',
		    { key: slow.settings.DODO_PAYMENTS_API_KEY });
		let t0 = Date.now();
		const one = await call();
		const single = Date.now() - t0;
		assert.equal(one.status, 200);
		assert.ok(single >= LATENCY_MS, `one call took ${single} ms`);

		t0 = Date.now();
		const admin = await getJson(slow, '/sandbox/admin/stats');
		assert.equal(admin.status, 200);
		assert.ok(Date.now() - t0 < LATENCY_MS, 'admin routes are not delayed');

		t0 = Date.now();
		const all = await Promise.all(Array.from({ length: CONCURRENT_CALLS }, call));
		const elapsed = Date.now() - t0;
		assert.ok(all.every((r) => r.status === 200));
		// serialised they would take 20 x 150 ms; 8 threads would need 3 rounds (450 ms)
		assert.ok(elapsed < 3 * LATENCY_MS, `${CONCURRENT_CALLS} concurrent calls took ${elapsed} ms`);
		t.diagnostic(`one call ${single} ms, ${CONCURRENT_CALLS} concurrent calls ${elapsed} ms`);
	} finally {
		await slow.stop();
	}
});

// ------------------------------------------------------------- the catalog (mailkit-admin setup)

test('dodopayments: credit entitlements, products with credits, webhook endpoints and secrets', async () => {
	assert.ok(customerId, 'needs the checkout test');
	const ent = await dodo.creditEntitlements.create({ name: 'SDK Credits', unit: 'email',
	    precision: 0, overage_enabled: false, rollover_enabled: false, expires_after_days: 30 });
	assert.match(ent.id, /^cde_/);
	assert.deepEqual([ent.name, ent.unit, ent.precision, ent.expires_after_days,
	    ent.overage_enabled], ['SDK Credits', 'email', 0, 30, false]);
	const ents = [];
	for await (const e of dodo.creditEntitlements.list())
		ents.push(e.id);
	assert.ok(ents.includes(ent.id));
	assert.equal((await dodo.creditEntitlements.retrieve(ent.id)).name, 'SDK Credits');

	const body = {
		name: 'SDK Plan', tax_category: 'saas', metadata: { mailkit_setup: 'sdk' },
		price: { type: 'recurring_price', currency: 'USD', price: 1900, discount: 0,
		    purchasing_power_parity: false, payment_frequency_count: 1,
		    payment_frequency_interval: 'Month', subscription_period_count: 10,
		    subscription_period_interval: 'Year' },
		credit_entitlements: [{ credit_entitlement_id: ent.id, credits_amount: '5000',
		    low_balance_threshold_percent: 20, expires_after_days: 30 }],
	};
	const product = await dodo.products.create(body);
	assert.match(product.product_id, /^pdt_/);
	assert.equal(product.is_recurring, true);
	const [att] = product.credit_entitlements;
	assert.deepEqual([att.credit_entitlement_id, att.credit_entitlement_name, att.credits_amount,
	    att.low_balance_threshold_percent], [ent.id, 'SDK Credits', '5000', 20]);
	assert.deepEqual((await dodo.products.retrieve(product.product_id)).credit_entitlements,
	    product.credit_entitlements);
	const listed = [];
	for await (const p of dodo.products.list())
		listed.push(p);
	const row = listed.find((p) => p.product_id === product.product_id);
	assert.deepEqual([row?.metadata.mailkit_setup, row?.price, row?.is_recurring], ['sdk', 1900, true]);

	// a create repeated with its Idempotency-Key answers the first object
	const auth = { Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}`,
	    'Idempotency-Key': `sdk-${Date.now()}` };
	const once = await request(stack, 'POST', '/sandbox/dodo/products', { json: body, headers: auth });
	const twice = await request(stack, 'POST', '/sandbox/dodo/products', { json: body, headers: auth });
	assert.equal(once.status, 200);
	assert.equal(twice.json.product_id, once.json.product_id);

	await assert.rejects(dodo.products.create({ ...body, credit_entitlements: [{
	    credit_entitlement_id: 'cde_nope', credits_amount: '1' }] }),
	    (e) => e instanceof DodoPayments.NotFoundError);
	await assert.rejects(dodo.products.create({ name: 'x', tax_category: 'saas' }),
	    (e) => e instanceof DodoPayments.UnprocessableEntityError);

	// an endpoint made through the API gets its types, signed with its own secret
	const url = `${hookUrl}?endpoint=sdk`;
	const hook = await dodo.webhooks.create({ url, filter_types: ['credit.added'],
	    description: 'sdk test', metadata: { who: 'sdk' } });
	assert.match(hook.id, /^whk_/);
	assert.deepEqual([hook.url, hook.filter_types, hook.metadata.who], [url, ['credit.added'], 'sdk']);
	assert.equal((await dodo.webhooks.retrieve(hook.id)).url, url);
	const hooks = [];
	for await (const w of dodo.webhooks.list())
		hooks.push(w.id);
	assert.ok(hooks.includes(hook.id));
	const { secret } = await dodo.webhooks.retrieveSecret(hook.id);
	assert.match(secret, /^whsec_/);
	assert.notEqual(secret, stack.settings.DODO_WEBHOOK_KEY);

	for (const entry_type of ['credit', 'debit'])
		await dodo.creditEntitlements.balances.createLedgerEntry(customerId, {
			credit_entitlement_id: cent(), entry_type, amount: '3',
			idempotency_key: `sdk-endpoint-${entry_type}-${Date.now()}`,
		});
	const deadline = Date.now() + WAIT_MS;
	let mine = [];
	while (Date.now() < deadline) {
		mine = received.filter((d) => d.url === '/webhooks/dodo?endpoint=sdk');
		if (mine.length >= 1 && received.some((d) => d.url === '/webhooks/dodo' &&
		    JSON.parse(d.body).type === 'credit.deducted' &&
		    JSON.parse(d.body).data.amount === '3'))
			break;
		await sleep(POLL_MS);
	}
	assert.equal(mine.length, 1, 'only the filtered type: credit.added, not credit.deducted');
	const event = new Webhook(secret).verify(mine[0].body, mine[0].headers);
	assert.equal(event.type, 'credit.added');
	assert.equal(event.data.amount, '3');
	assert.throws(() => new Webhook(stack.settings.DODO_WEBHOOK_KEY).verify(mine[0].body,
	    mine[0].headers), 'not signed with the stack\'s key');
});
