// sandbox-meter.test.mjs: the sandbox as NeuralAPI's offline Dodo (issue 14),
// driven through the official dodopayments SDK: the catalogue from the
// settings' plans, overage on the ledger, usage events with Dodo's limits,
// meters and the meter worker, its webhooks (verified with standardwebhooks),
// and cycle renewals through the test clock.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createRequire } from 'node:module';
import path from 'node:path';

import { SRCDIR, getJson, missingPrerequisite, payCheckout, postJson, request, sandboxFault,
    skipFile, startStack } from './harness.mjs';

const WAIT_MS = 10_000;		// for webhook deliveries to arrive
const POLL_MS = 100;
const DAY_MS = 24 * 3600 * 1000;

const requireTests = createRequire(path.join(SRCDIR, 'tests', 'package.json'));
let DodoPayments, Webhook;
try {
	const dodo = requireTests('dodopayments');
	DodoPayments = dodo.default ?? dodo.DodoPayments ?? dodo;
	({ Webhook } = requireTests('standardwebhooks'));
} catch {
	skipFile('node_modules missing');
}
{
	const why = missingPrerequisite('lighttpd');
	if (why)
		skipFile(why);
}

// NeuralAPI's sandbox defaults, passed explicitly (the stack of this
// branch exports MailKit's).
const NEURAL = {
	MAILKIT_PRODUCT: 'neuralapi',
	CREDIT_ENTITLEMENT_ID: 'cde_sandbox_tokens',
	STARTER_PLAN_PRODUCT_ID: 'pdt_sandbox_starter',
	PRO_PLAN_PRODUCT_ID: 'pdt_sandbox_pro',
	TOPUP_PRODUCT_ID: 'pdt_sandbox_token_topup',
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
