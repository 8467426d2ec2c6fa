// setup.test.mjs: `mailkit-admin setup` makes the Dodo catalog through the
// sandbox's API (entitlement, plan and top-up products, webhook endpoint),
// finds it again on a second run, writes its settings into the env file,
// and a stack restarted with those settings runs subscribe -> webhook ->
// send, the webhooks signed with the endpoint's own secret.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';

import {
	admin, getJson, missingPrerequisite, postJson, request, sandboxFault, skipFile,
	startStack, subscribeWithKey, waitForBalance,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd');
if (why)
	skipFile(why);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const LINES = /^CREDIT_ENTITLEMENT_ID=(cde_\w+)\nPLAN_PRODUCT_ID=(pdt_\w+)\nTOPUP_PRODUCT_ID=(pdt_\w+)\nDODO_WEBHOOK_KEY=(whsec_[A-Za-z0-9+/=]+)\n$/;

let stack;
before(async () => { stack = await startStack(); });
after(async () => { await stack?.stop(); });

// What the sandbox holds, through its Dodo API.
async function catalog() {
	const dodo = (p) => request(stack, 'GET', `/sandbox/dodo${p}`,
	    { headers: { Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}` } });
	const [e, p, w] = await Promise.all([dodo('/credit-entitlements?page_size=100'),
	    dodo('/products?page_size=100'), dodo('/webhooks?limit=100')]);
	return { entitlements: e.json.items, products: p.json.items, webhooks: w.json.data };
}

let first;	// the settings lines of the first run

test('setup creates the catalog with the tutorial\'s values and prints the settings', async () => {
	const r = await admin(stack, ['setup']);
	assert.equal(r.code, 0, r.stderr);
	const m = LINES.exec(r.stdout);
	assert.ok(m, `settings lines: ${r.stdout}`);
	first = { text: r.stdout, entitlement: m[1], plan: m[2], topup: m[3], secret: m[4] };
	assert.equal((r.stderr.match(/ created /g) ?? []).length, 4, r.stderr);
	assert.ok(!r.stderr.includes(stack.settings.DODO_PAYMENTS_API_KEY), 'the API key is never shown');

	const c = await catalog();
	assert.equal(c.entitlements.length, 1);
	const ent = c.entitlements[0];
	assert.deepEqual([ent.id, ent.name, ent.unit, ent.precision, ent.expires_after_days],
	    [first.entitlement, 'Email Credits', 'email', 0, 30]);
	assert.equal(c.products.length, 2);
	for (const [id, kind, cents, recurring] of [[first.plan, 'plan', 1900, true],
	    [first.topup, 'topup', 900, false]]) {
		const p = await getJson(stack, `/sandbox/dodo/products/${id}`,
		    { key: stack.settings.DODO_PAYMENTS_API_KEY });
		assert.equal(p.status, 200);
		assert.equal(p.json.metadata.mailkit_setup, kind);
		assert.equal(p.json.is_recurring, recurring);
		assert.equal(p.json.price.price, cents);
		assert.equal(p.json.price.currency, 'USD');
		if (recurring)
			assert.equal(p.json.price.payment_frequency_interval, 'Month');
		assert.deepEqual(p.json.credit_entitlements.map((a) => [a.credit_entitlement_id,
		    a.credits_amount, a.low_balance_threshold_percent, a.expires_after_days]),
		    [[first.entitlement, '5000', 20, 30]]);
	}
	assert.equal(c.webhooks.length, 1);
	assert.equal(c.webhooks[0].url, `${stack.baseUrl}/webhooks/dodo`);
	assert.deepEqual([...c.webhooks[0].filter_types].sort(), ['credit.added',
	    'credit.balance_low', 'credit.deducted', 'credit.expired', 'credit.overage_charged',
	    'credit.overage_reset', 'credit.rolled_over', 'credit.rollover_forfeited',
	    'payment.succeeded', 'subscription.active', 'subscription.cancelled',
	    'subscription.expired', 'subscription.failed', 'subscription.on_hold',
	    'subscription.plan_changed', 'subscription.renewed']);
});

test('a second run creates nothing and prints the same settings', async () => {
	assert.ok(first, 'needs the first run');
	const r = await admin(stack, ['setup']);
	assert.equal(r.code, 0, r.stderr);
	assert.equal(r.stdout, first.text);
	assert.equal((r.stderr.match(/ found /g) ?? []).length, 4, r.stderr);
	assert.doesNotMatch(r.stderr, /created/);
	const c = await catalog();
	assert.deepEqual([c.entitlements.length, c.products.length, c.webhooks.length], [1, 2, 1]);
});

test('flags override the tutorial\'s values; bad flags fail before any call', async () => {
	const bad = await admin(stack, ['setup', '--precision', '7']);
	assert.equal(bad.code, 2);
	assert.match(bad.stderr, /--precision must be 0\.\.3/);
	const junk = await admin(stack, ['setup', '--expiry-days', '30x']);
	assert.equal(junk.code, 2);
	assert.match(junk.stderr, /--expiry-days needs a whole number/);
	const c = await catalog();
	assert.equal(c.entitlements.length, 1, 'nothing made by a refused run');
});

test('a failing Dodo API: a clear message, exit 1, no settings, no key', async () => {
	await sandboxFault(stack, { target: 'catalog', mode: '500', count: 3 });
	const r = await admin(stack, ['setup']);
	assert.equal(r.code, 1);
	assert.equal(r.stdout, '');
	assert.match(r.stderr, /setup against .* failed: payments service unavailable/);
	assert.ok(!r.stderr.includes(stack.settings.DODO_PAYMENTS_API_KEY));
});

test('--write puts the settings into the env file (0600, other lines kept)', async () => {
	assert.ok(first, 'needs the first run');
	const envFile = path.join(stack.stateDir, 'test.env');
	await writeFile(envFile, '# kept comment\nMAIL_FROM=Kept <kept@example.org>\n' +
	    'export CREDIT_ENTITLEMENT_ID=cde_old\nDODO_PAYMENTS_WEBHOOK_KEY=whsec_b2xk\n',
	    { mode: 0o644 });
	const r = await admin(stack, ['setup', '--write']);
	assert.equal(r.code, 0, r.stderr);
	assert.equal(r.stdout, '', 'written, not printed');
	assert.match(r.stderr, /wrote .* into .*test\.env/);
	const text = await readFile(envFile, 'utf8');
	assert.equal(text, '# kept comment\nMAIL_FROM=Kept <kept@example.org>\n' +
	    `CREDIT_ENTITLEMENT_ID=${first.entitlement}\nPLAN_PRODUCT_ID=${first.plan}\n` +
	    `TOPUP_PRODUCT_ID=${first.topup}\nDODO_WEBHOOK_KEY=${first.secret}\n`);
	assert.equal((await stat(envFile)).mode & 0o777, 0o600);
});

test('a stack on those settings: subscribe, webhooks signed with the endpoint\'s secret, send', async () => {
	assert.ok(first, 'needs the first run');
	await stack.restart();
	const c = await subscribeWithKey(stack, { email: 'setup-flow@example.org', name: 'Setup Flow' });
	const bal = await waitForBalance(stack, c.customer_id, (b) => Number(b) === 5000,
	    { key: c.api_key });
	assert.equal(bal.balance, '5000', JSON.stringify(bal));
	const send = await postJson(stack, '/send', { to: 'someone@example.org', subject: 'hi',
	    text: 'hello' }, { key: c.api_key });
	assert.equal(send.status, 200, send.text);
	const after1 = await waitForBalance(stack, c.customer_id, (b) => Number(b) === 4999,
	    { key: c.api_key });
	assert.equal(after1.balance, '4999');

	// the deliveries went to the endpoint made by setup, and MailKit took them
	const webhookId = (await catalog()).webhooks[0].id;
	let hooks = [];
	for (let i = 0; i < 50; i++) {
		hooks = (await getJson(stack, '/sandbox/admin/webhooks')).json.items;
		if (hooks.length > 0 && hooks.every((h) => h.status === 'succeeded'))
			break;
		await sleep(100);
	}
	assert.ok(hooks.some((h) => h.type === 'subscription.active'), JSON.stringify(hooks));
	for (const h of hooks) {
		assert.equal(h.endpoint_id, webhookId, 'no second delivery to SANDBOX_WEBHOOK_URL');
		assert.equal(h.status, 'succeeded', `${h.type}: ${h.last_status} ${h.last_error}`);
	}
});
