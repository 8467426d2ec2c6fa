// neuralapi.test.mjs: NeuralAPI's product surface (MAILKIT_PRODUCT=neuralapi)
// through the real stack: the plans on sale (GET /plans), a subscription
// per plan (POST /checkout/subscribe {plan}), the unknown plan refused
// before any upstream call, one plan per buyer across the tiers, the
// balance with the plan's allowance and overage (GET /credits), the
// 5,000,000-token top-up, the programs and page of a NeuralAPI stack; and
// MailKit's own stack still selling its one plan "standard".
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import path from 'node:path';
import {
	admin, getJson, missingPrerequisite, postJson, request, sandboxStats, skipFile,
	startStack, subscribeWithKey, waitForBalance, completeCheckout,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd');
if (why)
	skipFile(why);

const TIMEOUT_MS = 120_000;
const STARTER = 10_000_000;
const PRO = 40_000_000;
const PRO_OVERAGE = 10_000_000;
const PACK = 5_000_000;

describe('NeuralAPI stack (lighttpd)', { timeout: TIMEOUT_MS * 4 }, () => {
	let stack;
	before(async () => {
		stack = await startStack({ server: 'lighttpd', env: { MAILKIT_PRODUCT: 'neuralapi' } });
	});
	after(async () => { await stack?.stop(); });

	it('serves NeuralAPI\'s page at / and runs its programs', { timeout: TIMEOUT_MS }, async () => {
		const page = await request(stack, 'GET', '/');
		assert.equal(page.status, 200);
		assert.match(page.text, /<h1>NeuralAPI<\/h1>/);
		for (const p of ['checkout', 'credits', 'webhook', 'generate', 'sandbox'])
			assert.ok(existsSync(path.join(stack.stateDir, 'run', `${p}.sock`)), `${p} runs`);
		for (const p of ['send', 'emails'])
			assert.ok(!existsSync(path.join(stack.stateDir, 'run', `${p}.sock`)),
			    `${p} (MailKit's) does not run`);
		// its routes answer JSON: without a key, 401
		const r = await postJson(stack, '/api/generate', { prompt: 'hi' });
		assert.equal(r.status, 401, r.text);
		assert.match(r.headers.get('content-type') ?? '', /json/, r.text);
	});

	it('GET /plans lists Starter and Pro and the 5,000,000-token top-up', { timeout: TIMEOUT_MS },
	    async () => {
		const r = await getJson(stack, '/plans');
		assert.equal(r.status, 200, r.text);
		assert.equal(r.json.product, 'neuralapi');
		assert.deepEqual(r.json.plans.map((p) => [p.name, p.credits, p.overage_limit]),
		    [['starter', STARTER, 0], ['pro', PRO, PRO_OVERAGE]]);
		assert.equal(r.json.topup.credits, PACK);
		for (const p of [...r.json.plans, r.json.topup])
			if ('price' in p)
				assert.ok(Number.isInteger(p.price) && /^[A-Z]{3}$/.test(p.currency), r.text);
	});

	it('an unknown plan is a 400 before any upstream call', { timeout: TIMEOUT_MS }, async () => {
		const before = (await sandboxStats(stack)).calls;
		const r = await postJson(stack, '/checkout/subscribe',
		    { plan: 'gold', email: 'nobody@example.org', name: 'N' });
		assert.equal(r.status, 400, r.text);
		assert.equal(r.json.error, 'Unknown plan: gold');
		const now = (await sandboxStats(stack)).calls;
		assert.deepEqual(now, before, 'no call reached the payments service');
	});

	let starter, pro;
	it('Starter: 10,000,000 tokens, blocked at zero', { timeout: TIMEOUT_MS }, async () => {
		starter = await subscribeWithKey(stack, { plan: 'starter' });
		const j = await waitForBalance(stack, starter.customer_id, (b) => b === String(STARTER),
		    { key: starter.api_key });
		assert.equal(j.balance, String(STARTER), JSON.stringify(j));
		assert.equal(j.plan, 'starter');
		assert.equal(j.allowance, STARTER);
		assert.ok(!('overage_limit' in j), 'no overage for Starter');
		assert.equal(j.low_balance_threshold, STARTER * 20 / 100);
	});

	it('Pro: 40,000,000 tokens and 10,000,000 of overage', { timeout: TIMEOUT_MS }, async () => {
		pro = await subscribeWithKey(stack, { plan: 'pro' });
		const j = await waitForBalance(stack, pro.customer_id, (b) => b === String(PRO),
		    { key: pro.api_key });
		assert.equal(j.balance, String(PRO), JSON.stringify(j));
		assert.equal(j.plan, 'pro');
		assert.equal(j.allowance, PRO);
		assert.equal(j.overage_limit, PRO_OVERAGE);
		assert.equal(Number(j.overage), 0);
		assert.equal(j.low_balance_threshold, PRO * 20 / 100);
	});

	it('one plan per buyer, whichever tier', { timeout: TIMEOUT_MS }, async () => {
		for (const plan of ['starter', 'pro']) {
			const r = await postJson(stack, '/checkout/subscribe',
			    { plan, email: starter.email, name: 'Again' });
			assert.equal(r.status, 409, `${plan}: ${r.text}`);
			assert.match(r.json.error, /already has an active NeuralAPI plan/);
		}
	});

	it('a top-up adds 5,000,000 tokens', { timeout: TIMEOUT_MS }, async () => {
		const t = await postJson(stack, '/checkout/topup', {}, { key: starter.api_key });
		assert.equal(t.status, 200, t.text);
		await completeCheckout(stack, t.json.checkout_url);
		const j = await waitForBalance(stack, starter.customer_id,
		    (b) => b === String(STARTER + PACK), { key: starter.api_key });
		assert.equal(j.balance, String(STARTER + PACK), JSON.stringify(j));
		assert.equal(j.allowance, STARTER, 'the allowance is the plan\'s, top-ups aside');
	});

	// mailkit-admin setup, NeuralAPI's catalogue through the sandbox's Dodo API
	// (which takes Dodo's usage_based_price: a fixed fee and the meter).
	it('mailkit-admin setup: "API Tokens", the meter, usage-based Starter and Pro, the 365-day top-up',
	    { timeout: TIMEOUT_MS }, async () => {
		const dodo = async (p) => (await request(stack, 'GET', `/sandbox/dodo${p}`,
		    { headers: { Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}` } })).json;
		const r = await admin(stack, ['setup']);
		assert.ok(!r.stderr.includes(stack.settings.DODO_PAYMENTS_API_KEY), 'no API key shown');
		const ents = (await dodo('/credit-entitlements?page_size=100')).items;
		const ent = ents.find((e) => e.name === 'API Tokens');
		assert.deepEqual([ent?.unit, ent?.precision, ent?.expires_after_days], ['token', 0, 30]);
		const meters = (await dodo('/meters?page_size=100')).items;
		const meter = meters.find((m) => m.event_name === 'api.tokens_used');
		assert.deepEqual([meter?.aggregation?.type, meter?.aggregation?.key], ['sum', 'tokens']);
		assert.equal(r.code, 0, r.stderr);
		assert.match(r.stderr, new RegExp(`credit entitlement\\s+created ${ent.id}`), r.stderr);
		assert.match(r.stderr, new RegExp(`meter\\s+(found|created)\\s+${meter.id}`), r.stderr);
		const m = /^CREDIT_ENTITLEMENT_ID=(\S+)\nSTARTER_PLAN_PRODUCT_ID=(\S+)\nPRO_PLAN_PRODUCT_ID=(\S+)\nTOPUP_PRODUCT_ID=(\S+)\nDODO_WEBHOOK_KEY=whsec_\S+\n$/
		    .exec(r.stdout);
		assert.ok(m, r.stdout);
		for (const [id, credits, overage] of [[m[2], '10000000', 0], [m[3], '40000000', 1]]) {
			const p = await dodo(`/products/${id}`);
			assert.equal(p.price.type, 'usage_based_price');
			assert.deepEqual(p.price.meters.map((x) => [x.meter_id, x.credit_entitlement_id,
			    x.meter_units_per_credit]), [[meter.id, m[1], '1']]);
			const a = p.credit_entitlements[0];
			assert.deepEqual([a.credit_entitlement_id, a.credits_amount, a.overage_enabled],
			    [m[1], credits, overage === 1]);
		}
		const t = await dodo(`/products/${m[4]}`);
		assert.deepEqual([t.price.price, t.credit_entitlements[0].credits_amount,
		    t.credit_entitlements[0].expires_after_days], [1900, '5000000', 365]);
	});
});

describe('MailKit stack: its one plan, unchanged', { timeout: TIMEOUT_MS * 2 }, () => {
	let stack;
	before(async () => { stack = await startStack({ server: 'lighttpd' }); });
	after(async () => { await stack?.stop(); });

	it('GET /plans: "standard", 5,000 emails; plan by name or by default', { timeout: TIMEOUT_MS },
	    async () => {
		const r = await getJson(stack, '/plans');
		assert.equal(r.status, 200, r.text);
		assert.equal(r.json.product, 'mailkit');
		assert.deepEqual(r.json.plans.map((p) => [p.name, p.credits, p.overage_limit]),
		    [['standard', 5000, 0]]);
		assert.equal(r.json.topup.credits, 5000);
		const bad = await postJson(stack, '/checkout/subscribe',
		    { plan: 'pro', email: 'x@example.org' });
		assert.equal(bad.status, 400, bad.text);
		assert.equal(bad.json.error, 'Unknown plan: pro');
		const c = await subscribeWithKey(stack, { plan: 'standard' });
		const j = await waitForBalance(stack, c.customer_id, (b) => b === '5000',
		    { key: c.api_key });
		assert.equal(j.plan, 'standard');
		assert.equal(j.allowance, 5000);
		assert.equal(j.low_balance_threshold, 1000);
	});
});
