// sandbox-meter.test.mjs: the sandbox as NeuralAPI's offline Dodo (issue 14),
// driven through the official dodopayments SDK: the catalogue from the
// settings' plans, overage on the ledger, usage events with Dodo's limits,
// meters and the meter worker, its webhooks (verified with standardwebhooks),
// and cycle renewals through the test clock.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';

import { NEURALAPI_SANDBOX_CATALOG, dodoSdk, getJson, missingPrerequisite, payCheckout, postJson,
    request, sandboxFault, skipFile, startStack, testPackages } from './harness.mjs';

const WAIT_MS = 10_000;		// for webhook deliveries to arrive
const POLL_MS = 100;
const DAY_MS = 24 * 3600 * 1000;

const [dodoPackage, { Webhook }] = testPackages('dodopayments', 'standardwebhooks');
const DodoPayments = dodoSdk(dodoPackage);
{
	const why = missingPrerequisite('lighttpd');
	if (why)
		skipFile(why);
}

// A NeuralAPI stack with the sandbox's catalogue (the ids below are the
// harness's, the stack's own defaults).
const NEURAL = {
	...NEURALAPI_SANDBOX_CATALOG,
	MAILKIT_PRODUCT: 'neuralapi',
	// the worker must not run during the tests: they run passes themselves
	SANDBOX_METER_INTERVAL_MS: 3_600_000,
	// half a plan grant's remainder rolls over, once
	SANDBOX_ROLLOVER_PERCENT: 50,
};

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------- webhook receiver

const received = [];	// { headers, body, json } exactly as delivered
let hookServer;

function startReceiver() {
	return new Promise((resolve, reject) => {
		const server = http.createServer((req, res) => {
			const chunks = [];
			req.on('data', (c) => chunks.push(c));
			req.on('end', () => {
				const body = Buffer.concat(chunks).toString('utf8');
				received.push({ headers: req.headers, body, json: JSON.parse(body) });
				res.writeHead(200, { 'Content-Type': 'application/json' });
				res.end('{"received":true}');
			});
		});
		server.once('error', reject);
		// port 0: the kernel's choice, outside the harness's stack ports
		server.listen(0, '127.0.0.1', () => resolve(server));
	});
}

// Verified deliveries of `type` for `customer`, once at least `min` arrived
// (or the wait ran out).
async function hooks(type, customer, { min = 1 } = {}) {
	const wh = new Webhook(stack.settings.DODO_WEBHOOK_KEY);
	const deadline = Date.now() + WAIT_MS;
	for (;;) {
		const found = received.filter((d) => d.json.type === type &&
		    d.json.data?.customer_id === customer);
		if (found.length >= min || Date.now() > deadline) {
			for (const d of found)
				wh.verify(d.body, d.headers);	// throws on a bad signature
			return found.map((d) => d.json.data);
		}
		await sleep(POLL_MS);
	}
}

// ------------------------------------------------------------- the stack

let stack, dodo;

before(async () => {
	hookServer = await startReceiver();
	const url = `http://127.0.0.1:${hookServer.address().port}/webhooks/dodo`;
	stack = await startStack({ env: { ...NEURAL, SANDBOX_WEBHOOK_URL: url } });
	dodo = new DodoPayments({ bearerToken: stack.settings.DODO_PAYMENTS_API_KEY,
	    baseURL: stack.settings.DODO_PAYMENTS_BASE_URL, maxRetries: 0, timeout: 30_000 });
});

after(async () => {
	await stack?.stop();
	hookServer?.close();
});

const cent = () => stack.settings.CREDIT_ENTITLEMENT_ID;
let buyers = 0;

// Buy product for a new customer (or `customer`) on the hosted checkout.
// Resolves to { customer, subscription, payment, page } (page: the checkout's HTML).
async function buy(product, { customer } = {}) {
	const session = await dodo.checkoutSessions.create({
		product_cart: [{ product_id: product, quantity: 1 }],
		customer: customer ? { customer_id: customer } :
		    { email: `meter-${Date.now()}-${++buyers}@example.org`, name: 'Meter Test' },
		return_url: `${stack.baseUrl}/?from=meter`,
	});
	const page = await request(stack, 'GET', session.checkout_url);
	assert.equal(page.status, 200);
	const back = await payCheckout(stack, session.checkout_url);
	const status = await dodo.checkoutSessions.retrieve(session.session_id);
	const pay = await dodo.payments.retrieve(status.payment_id);
	return { customer: pay.customer.customer_id, subscription: back.searchParams.get('subscription_id'),
	    payment: status.payment_id, page: page.text };
}

const balanceOf = (customer) => dodo.creditEntitlements.balances.retrieve(customer,
    { credit_entitlement_id: cent() });
const debit = (customer, amount, extra = {}) =>
    dodo.creditEntitlements.balances.createLedgerEntry(customer,
	{ credit_entitlement_id: cent(), entry_type: 'debit', amount: String(amount), ...extra });

// The Dodo error code of a rejected SDK call.
async function refusal(promise) {
	try {
		await promise;
	} catch (e) {
		return { status: e.status, code: e.error?.code };
	}
	return { status: 'resolved' };
}

// ------------------------------------------------------------- catalogue

test('catalogue: the settings\' plans and the top-up, priced and credited in tokens', async () => {
	const starter = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	assert.match(starter.page, /id="product">NeuralAPI Starter</);
	assert.match(starter.page, /\$29\.00 \/ month/);
	assert.match(starter.page, /10,000,000 tokens every month; blocked at zero/);
	assert.match(starter.subscription, /^sub_/);
	const sub = await dodo.subscriptions.retrieve(starter.subscription);
	assert.equal(sub.product_id, NEURAL.STARTER_PLAN_PRODUCT_ID);
	assert.equal(sub.recurring_pre_tax_amount, 2900);
	assert.equal(sub.credit_entitlement_cart[0].credits_amount, '10000000');
	assert.equal((await balanceOf(starter.customer)).balance, '10000000');

	const pro = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	assert.match(pro.page, /id="product">NeuralAPI Pro</);
	assert.match(pro.page, /\$99\.00 \/ month/);
	assert.match(pro.page, /40,000,000 tokens every month; overage up to 10,000,000/);
	assert.equal((await balanceOf(pro.customer)).balance, '40000000');

	const topup = await buy(NEURAL.TOPUP_PRODUCT_ID, { customer: starter.customer });
	assert.match(topup.page, /id="product">Token Top-Up</);
	assert.match(topup.page, /\$19\.00</);
	assert.match(topup.page, /5,000,000 tokens, one time, valid 365 days/);
	const payment = await dodo.payments.retrieve(topup.payment);
	assert.equal(payment.total_amount, 1900);
	assert.equal((await balanceOf(starter.customer)).balance, '15000000');

	const grants = (await dodo.creditEntitlements.balances.listGrants(starter.customer,
	    { credit_entitlement_id: cent() })).items;
	const days = (g) => Math.round((Date.parse(g.expires_at) - Date.parse(g.created_at)) / DAY_MS);
	assert.deepEqual(grants.map((g) => [g.source_type, g.initial_amount, days(g)]),
	    [['subscription', '10000000', 30], ['one_time', '5000000', 365]]);

	const ents = await dodo.customers.listCreditEntitlements(starter.customer);
	assert.equal(ents.items[0].unit, 'tokens');
	assert.equal(ents.items[0].overage, '0');

	// the products as Dodo answers them (what the page reads prices from)
	const product = async (id) => {
		const p = await dodo.products.retrieve(id);
		const ce = p.credit_entitlements[0];
		return [p.name, p.is_recurring, p.price.price, ce.credit_entitlement_id,
		    ce.credits_amount, ce.overage_limit ?? null, ce.expires_after_days];
	};
	assert.deepEqual(await product(NEURAL.PRO_PLAN_PRODUCT_ID),
	    ['NeuralAPI Pro', true, 9900, cent(), '40000000', '10000000', 30]);
	assert.deepEqual(await product(NEURAL.STARTER_PLAN_PRODUCT_ID),
	    ['NeuralAPI Starter', true, 2900, cent(), '10000000', null, 30]);
	assert.deepEqual(await product(NEURAL.TOPUP_PRODUCT_ID),
	    ['Token Top-Up', false, 1900, cent(), '5000000', null, 365]);
	await assert.rejects(dodo.products.retrieve('pdt_nope'), (e) => e.status === 404);

	const dash = await getJson(stack, '/sandbox/');
	assert.match(dash.text, /NeuralAPI Starter<\/td><td><code>pdt_sandbox_starter<\/code><\/td><td>\$29\.00 \/ month<\/td><td class="credits">10,000,000 tokens every month<\/td><td>blocked at zero/);
	assert.match(dash.text, /NeuralAPI Pro<\/td>.*up to 10,000,000 tokens/);
	assert.match(dash.text, /Token Top-Up<\/td>.*5,000,000 tokens, valid 365 days/);
});

// ------------------------------------------------------------- overage

test('ledger: Starter and top-up only stop at zero; Pro runs into overage up to its limit', async () => {
	const starter = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	assert.deepEqual(await refusal(debit(starter.customer, 10_000_001)),
	    { status: 400, code: 'INSUFFICIENT_BALANCE' });
	assert.equal((await balanceOf(starter.customer)).balance, '10000000', 'nothing applied');

	const pro = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	const e = await debit(pro.customer, 40_000_005, { idempotency_key: 'pro-1' });
	assert.deepEqual([e.balance_before, e.balance_after, e.overage_before, e.overage_after],
	    ['40000000', '0', '0', '5']);
	let bal = await balanceOf(pro.customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '5']);
	assert.deepEqual(await refusal(debit(pro.customer, 9_999_996)),
	    { status: 400, code: 'OVERAGE_LIMIT_EXCEEDED' });
	bal = await balanceOf(pro.customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '5'], 'nothing applied');
	const last = await debit(pro.customer, 9_999_995);
	assert.deepEqual([last.overage_before, last.overage_after], ['5', '10000000']);
	assert.deepEqual(await refusal(debit(pro.customer, 1)),
	    { status: 400, code: 'OVERAGE_LIMIT_EXCEEDED' });
	bal = await balanceOf(pro.customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '10000000']);

	// a top-up alone is no plan: no overage
	const only = await buy(NEURAL.TOPUP_PRODUCT_ID);
	assert.deepEqual(await refusal(debit(only.customer, 5_000_001)),
	    { status: 400, code: 'INSUFFICIENT_BALANCE' });

	const dash = await getJson(stack, '/sandbox/');
	const row = new RegExp(`data-customer="${pro.customer}">.*?</tr>`).exec(dash.text)?.[0];
	assert.match(row, /class="balance">0 tokens<\/td><td class="overage">10,000,000 of 10,000,000<\/td><td class="plan">NeuralAPI Pro</);
});

// ------------------------------------------------------------- usage events

const EVENT = 'api.tokens_used';
let evSeq = 0;
const eventId = (tag) => `evt-${tag}-${Date.now()}-${++evSeq}`;
const usage = (customer, tokens, extra = {}) => ({ event_id: eventId('u'), customer_id: customer,
    event_name: EVENT, metadata: { tokens }, ...extra });

test('events: ingest with Dodo\'s limits, replays ignored, lookups and lists', async () => {
	const customer = (await buy(NEURAL.STARTER_PLAN_PRODUCT_ID)).customer;
	const first = [usage(customer, 10), usage(customer, '20', { timestamp:
	    new Date(Date.now() - 30 * 60_000).toISOString() }), usage(customer, 30)];
	assert.deepEqual(await dodo.usageEvents.ingest({ events: first }), { ingested_count: 3 });
	assert.deepEqual(await dodo.usageEvents.ingest({ events: first }), { ingested_count: 0 },
	    'a replay is ignored');
	const more = usage(customer, 40);
	assert.deepEqual(await dodo.usageEvents.ingest({ events: [first[0], more] }),
	    { ingested_count: 1 }, 'only the new one counts');

	const got = await dodo.usageEvents.retrieve(first[1].event_id);
	assert.deepEqual({ ...got, timestamp: Date.parse(got.timestamp) }, {
		event_id: first[1].event_id, customer_id: customer, event_name: EVENT,
		timestamp: Date.parse(first[1].timestamp), metadata: { tokens: '20' },
		business_id: got.business_id,
	});
	await assert.rejects(dodo.usageEvents.retrieve('evt-never-ingested'),
	    (e) => e instanceof DodoPayments.NotFoundError && e.error?.code === 'NOT_FOUND');

	const page = await dodo.usageEvents.list({ customer_id: customer, page_size: 10 });
	assert.deepEqual(new Set(page.items.map((e) => e.event_id)),
	    new Set([...first, more].map((e) => e.event_id)));
	const none = await dodo.usageEvents.list({ customer_id: customer, event_name: 'other' });
	assert.equal(none.items.length, 0);
	const byMeter = await dodo.usageEvents.list({ customer_id: customer,
	    meter_id: 'mtr_sandbox_usage' });
	assert.equal(byMeter.items.length, 4);

	// refused whole, before anything is stored
	const refused = async (events, code = 400) => {
		const r = await refusal(dodo.usageEvents.ingest({ events }));
		assert.equal(r.status, code, JSON.stringify(events).slice(0, 200));
		for (const e of events.slice(0, 3))
			assert.equal((await request(stack, 'GET', `/sandbox/dodo/events/${e.event_id}`,
			    { key: 'k' })).status, 404, 'nothing of a refused request is stored');
	};
	await refused(Array.from({ length: 1001 }, () => usage(customer, 1)));
	const dup = usage(customer, 1);
	await refused([usage(customer, 1), dup, { ...dup, metadata: { tokens: 2 } }]);
	await refused([usage(customer, 1), usage(customer, 1,
	    { timestamp: new Date(Date.now() - 61 * 60_000).toISOString() })]);
	await refused([usage(customer, 1, { timestamp: new Date(Date.now() + 6 * 60_000)
	    .toISOString() })]);
	await refused([usage(customer, 1, { metadata: { tokens: { n: 1 } } })]);
	await refused([usage(customer, 1, { metadata: { ['k'.repeat(101)]: 1 } })]);
	await refused([{ event_id: eventId('x'), customer_id: customer }], 422);
	// 1000 is the limit, not past it
	const thousand = Array.from({ length: 1000 }, () => usage(customer, 0));
	assert.deepEqual(await dodo.usageEvents.ingest({ events: thousand }),
	    { ingested_count: 1000 });
});

test('events: fault target events_ingest: 500, accept500 (applied, answer lost) and late', async () => {
	const customer = (await buy(NEURAL.STARTER_PLAN_PRODUCT_ID)).customer;
	const landed = async (e) => (await request(stack, 'GET', `/sandbox/dodo/events/${e.event_id}`,
	    { key: 'k' })).status === 200;

	await sandboxFault(stack, { target: 'events_ingest', mode: '500' });
	const a = usage(customer, 5);
	assert.equal((await refusal(dodo.usageEvents.ingest({ events: [a] }))).status, 500);
	assert.equal(await landed(a), false, 'a 500 stored nothing');

	await sandboxFault(stack, { target: 'events_ingest', mode: 'accept500' });
	assert.equal((await refusal(dodo.usageEvents.ingest({ events: [a] }))).status, 500);
	assert.equal(await landed(a), true, 'accept500 stored it');
	assert.deepEqual(await dodo.usageEvents.ingest({ events: [a] }), { ingested_count: 0 },
	    'the retry is a replay');

	const b = usage(customer, 6);
	await sandboxFault(stack, { target: 'events_ingest', mode: 'late', stall_ms: 100,
	    late_ms: 600 });
	const r = await postJson(stack, '/sandbox/dodo/events/ingest', { events: [b] },
	    { key: 'k' });
	assert.notEqual(r.status, 200, 'the late request has no answer');
	assert.equal(await landed(b), false, 'not yet');
	const deadline = Date.now() + WAIT_MS;
	while (!await landed(b) && Date.now() < deadline)
		await sleep(POLL_MS);
	assert.equal(await landed(b), true, 'the late effect landed');
});

// ------------------------------------------------------------- meters

test('meters: the built-in meter and meters made through the SDK', async () => {
	const all = await dodo.meters.list();
	const builtin = all.items.find((m) => m.id === 'mtr_sandbox_usage');
	assert.deepEqual([builtin.event_name, builtin.aggregation, builtin.measurement_unit],
	    [EVENT, { type: 'sum', key: 'tokens' }, 'tokens']);
	const made = await dodo.meters.create({ name: 'Requests', event_name: 'api.request',
	    measurement_unit: 'requests', aggregation: { type: 'count' } });
	assert.match(made.id, /^mtr_/);
	assert.deepEqual(await dodo.meters.retrieve(made.id), made);
	assert.ok((await dodo.meters.list()).items.some((m) => m.id === made.id));
	await assert.rejects(dodo.meters.create({ name: 'x', event_name: 'y',
	    measurement_unit: 'z', aggregation: { type: 'sum' } }),
	(e) => e.status === 422, 'sum needs a key');
	await assert.rejects(dodo.meters.retrieve('mtr_nope'), (e) => e.status === 404);
});

// ------------------------------------------------------------- the meter

const meterRun = async () => {
	const r = await postJson(stack, '/sandbox/admin/meter/run', {});
	assert.equal(r.status, 200, r.text);
	return r.json;
};
const ledgerOf = async (customer) => (await dodo.creditEntitlements.balances.listLedger(customer,
    { credit_entitlement_id: cent(), page_size: 100 })).items.reverse();
const meterEntries = async (customer) => (await ledgerOf(customer))
    .filter((e) => e.reference_type === 'meter')
    .map((e) => [e.transaction_type, e.amount, e.balance_after, e.overage_after]);
const metered = (hook) => hook.filter((d) => d.reference_type === 'meter' &&
    d.reference_id === 'mtr_sandbox_usage');
// Deliveries of type for customer once they stopped coming (counts that must be exact).
async function settledHooks(type, customer, min) {
	await hooks(type, customer, { min });
	await sleep(400);
	return hooks(type, customer, { min: 0 });
}
const result = (customers, events, deducted, overage, unbilled) =>
    ({ customers, events, deducted, overage, unbilled, renewed: 0 });

test('meter: FIFO over grants, one entry per run, credit.deducted and balance_low once', async () => {
	await meterRun();	// what earlier tests ingested
	const { customer } = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	await buy(NEURAL.TOPUP_PRODUCT_ID, { customer });
	await dodo.usageEvents.ingest({ events: [usage(customer, 6_000_000),
	    usage(customer, '4000005')] });
	assert.equal((await balanceOf(customer)).balance, '15000000', 'the meter lags');
	assert.deepEqual(await meterRun(), result(1, 2, 10_000_005, 0, 0));
	const grants = (await dodo.creditEntitlements.balances.listGrants(customer,
	    { credit_entitlement_id: cent() })).items;
	assert.deepEqual(grants.map((g) => [g.source_type, g.remaining_amount]),
	    [['subscription', '0'], ['one_time', '4999995']], 'the oldest grant first');
	assert.deepEqual(await meterEntries(customer),
	    [['credit_deducted', '10000005', '4999995', '0']]);
	const entry = (await ledgerOf(customer)).at(-1);
	assert.match(entry.description, /api\.tokens_used/);
	assert.equal(entry.reference_id, 'mtr_sandbox_usage');
	assert.deepEqual(await meterRun(), result(0, 0, 0, 0, 0), 'nothing twice');

	await dodo.usageEvents.ingest({ events: [usage(customer, 3_000_000)] });
	assert.deepEqual(await meterRun(), result(1, 1, 3_000_000, 0, 0));
	await dodo.usageEvents.ingest({ events: [usage(customer, 1)] });
	assert.deepEqual(await meterRun(), result(1, 1, 1, 0, 0));
	assert.equal((await balanceOf(customer)).balance, '1999994');
	const deducted = metered(await settledHooks('credit.deducted', customer, 3));
	assert.deepEqual(deducted.map((d) => d.amount), ['10000005', '3000000', '1']);
	const low = await settledHooks('credit.balance_low', customer, 1);
	assert.equal(low.length, 1, 'balance_low once, on the crossing');
	assert.equal(low[0].available_balance, '1999995');
	assert.equal(low[0].subscription_credits_amount, '10000000');
	assert.equal((await settledHooks('credit.overage_charged', customer, 0)).length, 0);
});

test('meter: Starter stops at zero, the rest unbilled', async () => {
	await meterRun();
	const { customer } = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	await dodo.usageEvents.ingest({ events: [usage(customer, 9_999_000), usage(customer, 1_500)] });
	assert.deepEqual(await meterRun(), result(1, 2, 10_000_000, 0, 500));
	let bal = await balanceOf(customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '0']);
	await dodo.usageEvents.ingest({ events: [usage(customer, 7)] });
	assert.deepEqual(await meterRun(), result(1, 1, 0, 0, 7));
	bal = await balanceOf(customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '0']);
	assert.deepEqual(await meterEntries(customer), [['credit_deducted', '10000000', '0', '0']]);
	assert.equal((await settledHooks('credit.overage_charged', customer, 0)).length, 0);
	assert.equal(metered(await settledHooks('credit.deducted', customer, 1)).length, 1);
});

test('meter: Pro runs into overage up to its limit; webhooks once each', async () => {
	await meterRun();
	const { customer } = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	await dodo.usageEvents.ingest({ events: [usage(customer, 40_000_000),
	    usage(customer, 9_999_000)] });
	assert.deepEqual(await meterRun(), result(1, 2, 40_000_000, 9_999_000, 0));
	let bal = await balanceOf(customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '9999000']);
	await dodo.usageEvents.ingest({ events: [usage(customer, 2_000)] });
	assert.deepEqual(await meterRun(), result(1, 1, 0, 1_000, 1_000));
	bal = await balanceOf(customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '10000000']);
	assert.deepEqual(await meterEntries(customer), [
		['credit_deducted', '40000000', '0', '0'],
		['overage_charged', '9999000', '0', '9999000'],
		['overage_charged', '1000', '0', '10000000'],
	]);
	const charged = metered(await settledHooks('credit.overage_charged', customer, 2));
	assert.deepEqual(charged.map((d) => [d.amount, d.overage_before, d.overage_after]),
	    [['9999000', '0', '9999000'], ['1000', '9999000', '10000000']]);
	assert.equal(metered(await settledHooks('credit.deducted', customer, 1)).length, 1);
	assert.equal((await settledHooks('credit.balance_low', customer, 1)).length, 1);
	// the ledger API is held to the same limit
	assert.deepEqual(await refusal(debit(customer, 1)),
	    { status: 400, code: 'OVERAGE_LIMIT_EXCEEDED' });
});

test('meter: concurrent ingests, replays and passes bill every token exactly once', async () => {
	await meterRun();
	const { customer } = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	const batches = Array.from({ length: 20 }, () =>
	    Array.from({ length: 50 }, () => usage(customer, 50_000)));
	const totals = result(0, 0, 0, 0, 0);
	const add = (r) => { for (const k of Object.keys(totals)) totals[k] += r[k]; };
	// each batch twice at once (a client's retry racing its original), passes between
	const ingests = batches.flatMap((events) => [dodo.usageEvents.ingest({ events }),
	    dodo.usageEvents.ingest({ events })]);
	const passes = Array.from({ length: 8 }, async (_, i) => {
		await sleep(i * 15);
		add(await meterRun());
	});
	const counts = await Promise.all(ingests);
	await Promise.all(passes);
	add(await meterRun());
	assert.equal(counts.reduce((n, c) => n + c.ingested_count, 0), 1000, 'each event once');
	assert.equal(totals.events, 1000);
	assert.deepEqual([totals.deducted, totals.overage, totals.unbilled],
	    [40_000_000, 10_000_000, 0]);
	const bal = await balanceOf(customer);
	assert.deepEqual([bal.balance, bal.overage], ['0', '10000000']);
	const entries = await meterEntries(customer);
	assert.equal(entries.reduce((n, e) => n + Number(e[1]), 0), 50_000_000);
	assert.ok(entries.length <= 9 * 2, `${entries.length} entries: at most two per pass`);
});

test('meter: the worker runs every SANDBOX_METER_INTERVAL_MS by itself', async () => {
	const quick = await startStack({ env: { ...NEURAL, SANDBOX_METER_INTERVAL_MS: 300 } });
	try {
		const client = new DodoPayments({ bearerToken: 'k', maxRetries: 0,
		    baseURL: quick.settings.DODO_PAYMENTS_BASE_URL });
		const session = await client.checkoutSessions.create({
			product_cart: [{ product_id: NEURAL.STARTER_PLAN_PRODUCT_ID, quantity: 1 }],
			customer: { email: 'worker@example.org', name: 'Worker' },
			return_url: `${quick.baseUrl}/`,
		});
		await payCheckout(quick, session.checkout_url);
		const customer = (await client.customers.list({ email: 'worker@example.org' }))
		    .items[0].customer_id;
		await client.usageEvents.ingest({ events: [usage(customer, 1234)] });
		const deadline = Date.now() + WAIT_MS;
		let bal;
		do {
			await sleep(POLL_MS);
			bal = (await client.creditEntitlements.balances.retrieve(customer,
			    { credit_entitlement_id: cent() })).balance;
		} while (bal !== '9998766' && Date.now() < deadline);
		assert.equal(bal, '9998766');
	} finally {
		await quick.stop();
	}
});

// ------------------------------------------------------------- the test clock

const advance = async (days) => {
	const r = await postJson(stack, '/sandbox/admin/clock', { advance_days: days });
	assert.equal(r.status, 200, r.text);
	return r.json;
};

test('test clock: a cycle end expires or rolls over the plan grant, resets overage, grants anew', async () => {
	await meterRun();
	const pro = (await buy(NEURAL.PRO_PLAN_PRODUCT_ID)).customer;
	const starter = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const s = starter.customer;
	await buy(NEURAL.TOPUP_PRODUCT_ID, { customer: s });
	await dodo.usageEvents.ingest({ events: [usage(pro, 40_000_500), usage(s, 4_000_000)] });
	assert.deepEqual(await meterRun(), result(2, 2, 44_000_000, 500, 0));
	const before = (await getJson(stack, '/sandbox/admin/clock')).json;
	assert.equal(before.offset_ms, 0);

	// refused before anything moves
	assert.equal((await postJson(stack, '/sandbox/admin/clock', { advance_days: -1 })).status, 400);

	const moved = await advance(30);
	assert.equal(moved.offset_ms, 30 * DAY_MS);
	assert.ok(moved.renewed >= 2, `renewed ${moved.renewed}`);
	assert.ok(Math.abs(Date.parse(moved.now) - Date.now() - 30 * DAY_MS) < 60_000);

	// Pro: overage reset, a new grant
	const reset = await settledHooks('credit.overage_reset', pro, 1);
	assert.deepEqual(reset.map((d) => [d.amount, d.overage_before, d.overage_after]),
	    [['500', '500', '0']]);
	let bal = await balanceOf(pro);
	assert.deepEqual([bal.balance, bal.overage], ['40000000', '0']);
	const added = await settledHooks('credit.added', pro, 2);
	assert.deepEqual(added.map((d) => [d.amount, d.reference_type]),
	    [['40000000', 'subscription'], ['40000000', 'subscription']]);

	// Starter: half of the 6,000,000 left rolls over, half is forfeited; the top-up stays
	assert.deepEqual((await settledHooks('credit.rolled_over', s, 1)).map((d) => d.amount),
	    ['3000000']);
	assert.deepEqual((await settledHooks('credit.rollover_forfeited', s, 1))
	    .map((d) => d.amount), ['3000000']);
	assert.equal((await balanceOf(s)).balance, String(3_000_000 + 10_000_000 + 5_000_000));
	let grants = (await dodo.creditEntitlements.balances.listGrants(s,
	    { credit_entitlement_id: cent(), status: 'active' })).items;
	const rolled = grants.find((g) => g.is_rolled_over);
	assert.deepEqual([rolled.remaining_amount, rolled.rollover_count, rolled.source_type],
	    ['3000000', 1, 'rollover']);
	assert.match(rolled.parent_grant_id, /^cgr_/);

	// the next cycle: a grant rolled once expires; the unused new one rolls half
	await advance(30);
	const expired = await settledHooks('credit.expired', s, 1);
	assert.deepEqual(expired.map((d) => [d.amount, d.grant_id]), [['3000000', rolled.id]]);
	assert.deepEqual((await settledHooks('credit.rolled_over', s, 2)).map((d) => d.amount),
	    ['3000000', '5000000']);
	assert.equal((await balanceOf(s)).balance, String(5_000_000 + 10_000_000 + 5_000_000));
	grants = (await dodo.creditEntitlements.balances.listGrants(s,
	    { credit_entitlement_id: cent(), status: 'active' })).items;
	assert.deepEqual(grants.map((g) => [g.source_type, g.remaining_amount]).sort(),
	    [['one_time', '5000000'], ['rollover', '5000000'], ['subscription', '10000000']]);

	const sub = await dodo.subscriptions.retrieve(starter.subscription);
	assert.equal(Date.parse(sub.next_billing_date) - Date.parse(sub.created_at), 90 * DAY_MS);
	assert.equal((await getJson(stack, '/sandbox/admin/clock')).json.offset_ms, 60 * DAY_MS);
	assert.equal((await settledHooks('credit.overage_reset', pro, 1)).length, 1,
	    'no overage, no second reset');
	const dash = await getJson(stack, '/sandbox/');
	assert.match(dash.text, /test clock 60 days ahead/);
});
