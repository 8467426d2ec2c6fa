// generate-usage.test.mjs: NeuralAPI's usage billing through a sandbox stack selling
// Starter and Pro: the hard stop at zero, Pro into overage up to its limit, and usage
// events ingested exactly once under ingest faults, kill -9 of generate.fcgi, and an
// event too old to ingest (the ledger-debit fallback under the same key).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';

import { NEURALAPI_SANDBOX_CATALOG, QUICK_UPSTREAM, admin, clearSandboxFaults, dodoLedger, dodoLedgerEntry, mailedText,
    payCheckout, request, sandboxEmails, sandboxFault, skipFile, startStack, webhookHeaders }
    from './harness.mjs';
import { holdOf, missingGenerate, sleep, startGenerate } from './generate-harness.mjs';

{
	const why = missingGenerate();
	if (why)
		skipFile(why);
}

// NeuralAPI's sandbox settings, with small plans so a test reaches zero quickly.
const NEURAL = {
	...NEURALAPI_SANDBOX_CATALOG,
	MAILKIT_PRODUCT: 'neuralapi',
	STARTER_PLAN_CREDITS: 1000,
	PRO_PLAN_CREDITS: 1000,
	PRO_PLAN_OVERAGE_LIMIT: 300,
	SANDBOX_METER_INTERVAL_MS: 3_600_000,	// the tests run the meter themselves
	...QUICK_UPSTREAM,
};
const WAIT_MS = 20_000;

let stack, gen;
before(async () => {
	stack = await startStack({ env: NEURAL });
	// This file's generate.fcgi, killed and restarted by the tests, is the only
	// one: the stack's own would work the same usage outbox behind their backs.
	await stack.stopProgram('generate');
	gen = startGenerate(stack, { MAILKIT_AUTH: 'customer_id' });
	await gen.ready();
});
after(async () => {
	await gen?.kill();
	await stack?.stop();
});

const dodo = (method, p, json) => request(stack, method,
    `${stack.settings.DODO_PAYMENTS_BASE_URL}${p}`, { json, key: stack.settings.DODO_PAYMENTS_API_KEY });

// A new customer subscribed to `product` on the sandbox's hosted checkout.
let buyers = 0;
async function buy(product) {
	const s = await dodo('POST', '/checkouts', { product_cart: [{ product_id: product, quantity: 1 }],
	    customer: { email: `gen-${Date.now()}-${++buyers}@example.org`, name: 'Usage Test' },
	    return_url: `${stack.baseUrl}/` });
	assert.equal(s.status, 200, s.text);
	const back = await payCheckout(stack, s.json.checkout_url);
	const sub = await dodo('GET', `/subscriptions/${back.searchParams.get('subscription_id')}`);
	assert.equal(sub.status, 200, sub.text);
	return sub.json.customer.customer_id;
}

const balancePath = (c) => `/credit-entitlements/${NEURAL.CREDIT_ENTITLEMENT_ID}/balances/${c}`;
const balanceOf = async (c) => (await dodo('GET', balancePath(c))).json;
async function debitTo(c, want) {
	const have = Number((await balanceOf(c)).balance);
	const r = await dodoLedgerEntry(stack, c, { entry_type: 'debit', amount: String(have - want),
	    idempotency_key: `to-${want}-${Date.now()}` });
	assert.equal(r.status, 201);
}

const generate = (customer, prompt, maxTokens, headers) => gen.call('POST', '/api/generate',
    { json: { prompt, max_tokens: maxTokens, customer_id: customer }, headers });
const billing = async (customer, id) =>
    (await gen.call('GET', `/api/generate/${id}?customer_id=${customer}`)).json;
const eventOf = async (eventId) => dodo('GET', `/events/${eventId}`);
async function eventsOf(customer) {
	const r = await dodo('GET', `/events?customer_id=${customer}&page_size=100`);
	assert.equal(r.status, 200, r.text);
	return r.json.items;
}

// Poll until fn() is truthy (bounded); returns its value.
async function until(what, fn, ms = WAIT_MS) {
	const deadline = Date.now() + ms;
	for (;;) {
		const v = await fn();
		if (v)
			return v;
		if (Date.now() > deadline)
			throw new Error(`not within ${ms} ms: ${what}`);
		await sleep(200);
	}
}

// Generate until refused; returns the answers admitted and the refusal.
async function drain(customer, prompt, maxTokens) {
	const ok = [];
	for (let i = 0; i < 100; i++) {
		const r = await generate(customer, prompt, maxTokens);
		if (r.status !== 200)
			return { ok, refusal: r };
		ok.push(r.json);
	}
	throw new Error('never refused');
}

test('Starter stops at zero: every token used was covered by the balance', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	await debitTo(c, 200);
	const { ok, refusal } = await drain(c, 'starter prompt', 40);
	assert.equal(refusal.status, 402, refusal.text);
	const used = ok.reduce((n, r) => n + r.tokens_used, 0);
	assert.ok(ok.length >= 2, `admitted ${ok.length}`);
	assert.ok(used <= 200, `used ${used} past the balance of 200`);
	assert.ok(200 - used < holdOf('starter prompt', 40), 'stopped only when out of room');
});

test('Pro runs into overage up to its limit, then 402', async () => {
	const c = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	await debitTo(c, 50);
	const { ok, refusal } = await drain(c, 'pro prompt', 40);
	assert.equal(refusal.status, 402, refusal.text);
	const used = ok.reduce((n, r) => n + r.tokens_used, 0);
	assert.ok(used > 50, `used ${used}: Pro went past zero`);
	assert.ok(used <= 50 + NEURAL.PRO_PLAN_OVERAGE_LIMIT, `used ${used} past the overage limit`);
	assert.ok(50 + NEURAL.PRO_PLAN_OVERAGE_LIMIT - used < holdOf('pro prompt', 40));
});

test('ingest faults (500, accept500, late): each event ingested exactly once', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const answers = [];
	for (const fault of [{ mode: '500', count: 2 }, { mode: 'accept500', count: 1 },
	    { mode: 'late', count: 1, stall_ms: 2500, late_ms: 500 }]) {
		await sandboxFault(stack, { target: 'events_ingest', ...fault });
		const t0 = Date.now();
		const r = await generate(c, `fault ${fault.mode}`, 20);
		assert.equal(r.status, 200, r.text);
		const b = await until(`${fault.mode}: ingested`, async () => {
			const g = await billing(c, r.json.id);
			return g.billing.ingested ? g : null;
		});
		assert.equal(b.billing.billed_by, 'event');
		answers.push({ ...r.json, t0 });
	}
	await clearSandboxFaults(stack);
	const evs = await eventsOf(c);
	assert.equal(evs.length, answers.length, JSON.stringify(evs));
	for (const a of answers) {
		const e = evs.filter((x) => x.event_id === a.billing.event_id);
		assert.equal(e.length, 1, `${a.billing.event_id} once`);
		assert.equal(Number(e[0].metadata.tokens), a.tokens_used);
		assert.equal(e[0].event_name, 'api.tokens_used');
		const at = Date.parse(e[0].timestamp);
		assert.ok(at >= a.t0 - 1000 && at <= a.t0 + 10_000, 'the original timestamp');
	}
});

test('kill -9 of generate.fcgi between settle and ingest: still ingested, once', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	await sandboxFault(stack, { target: 'events_ingest', mode: '500', count: 1000 });
	const key = `kill-${Date.now()}`;
	const r = await generate(c, 'killed before ingest', 20, { 'Idempotency-Key': key });
	assert.equal(r.status, 200, r.text);
	await sleep(300);
	assert.equal((await eventOf(r.json.billing.event_id)).status, 404, 'not ingested yet');
	const { sig } = await gen.kill('SIGKILL');
	assert.equal(sig, 'SIGKILL');
	await clearSandboxFaults(stack);
	gen = startGenerate(stack, { MAILKIT_AUTH: 'customer_id' });
	await gen.ready();
	await until('ingested after the restart', async () =>
	    (await eventOf(r.json.billing.event_id)).status === 200);
	const again = await generate(c, 'killed before ingest', 20, { 'Idempotency-Key': key });
	assert.equal(again.json.id, r.json.id, 'the answer is replayed after the restart');
	assert.equal(again.json.text, r.json.text);
	await sleep(1500);	// any second ingest would have gone out by now
	const evs = (await eventsOf(c)).filter((e) => e.event_id === r.json.billing.event_id);
	assert.equal(evs.length, 1);
	assert.equal(Number(evs[0].metadata.tokens), r.json.tokens_used);
});

test('generate.fcgi gone (socket activation starts it only with a request): reconcile ingests its outbox',
    async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	await sandboxFault(stack, { target: 'events_ingest', mode: '500', count: 1000 });
	const r = await generate(c, 'left in the outbox', 20, { 'Idempotency-Key': `gone-${Date.now()}` });
	assert.equal(r.status, 200, r.text);
	await sleep(300);
	assert.equal((await eventOf(r.json.billing.event_id)).status, 404, 'not ingested yet');
	await gen.kill('SIGKILL');
	await clearSandboxFaults(stack);
	try {
		// each run's try is due at once, not after the failed tries' backoff;
		// a try whose answer is lost on a loaded machine is repeated by the
		// next run with the same event id
		let ev;
		for (let run = 0; run < 3; run++) {
			execFileSync('sqlite3', [stack.settings.MAILKIT_DB, 'UPDATE usage SET ' +
			    `next_attempt_at = 0 WHERE key LIKE '${r.json.id.slice(4)}%'`]);
			const rec = await admin(stack, ['reconcile', '--min-age', '0']);
			assert.equal(rec.code, 0, rec.stdout + rec.stderr);
			assert.match(rec.stdout, /^usage outbox: [1-9]\d* rows? handled/m, rec.stdout);
			if ((ev = await eventOf(r.json.billing.event_id)).status === 200)
				break;
		}
		assert.equal(ev.status, 200, 'ingested by reconcile');
		assert.equal(Number(ev.json.metadata.tokens), r.json.tokens_used);
		assert.equal((await eventsOf(c)).filter((e) => e.event_id === r.json.billing.event_id)
		    .length, 1, 'once');
	} finally {
		gen = startGenerate(stack, { MAILKIT_AUTH: 'customer_id' });
		await gen.ready();
	}
});

// Age a row as if generate.fcgi had been down for two hours (the sandbox's ingest
// window is on the real clock), with its ingest due now.
function age(id) {
	execFileSync('sqlite3', [stack.settings.MAILKIT_DB,
	    `UPDATE usage SET settled_ms = settled_ms - 7200000, next_attempt_at = 0 ` +
	    `WHERE key LIKE '${id.slice(4)}%'`]);
}

test('an event too old to ingest: a ledger debit under its key, or nothing if it landed', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const restart = async () => {
		gen = startGenerate(stack, { MAILKIT_AUTH: 'customer_id' });
		await gen.ready();
	};
	// an event never ingested, then generate.fcgi down for two hours
	await sandboxFault(stack, { target: 'events_ingest', mode: '500', count: 1000 });
	const lost = await generate(c, 'never ingested', 20);
	assert.equal(lost.status, 200, lost.text);
	await gen.kill('SIGKILL');
	age(lost.json.id);
	const before = Number((await balanceOf(c)).balance);
	// an event that lands, its answer lost every time
	await sandboxFault(stack, { target: 'events_ingest', mode: 'accept500', count: 1000 });
	await restart();
	const b1 = await until('billed by the ledger', async () => {
		const g = await billing(c, lost.json.id);
		return g.billing.billed_by === 'ledger' ? g : null;
	});
	assert.equal(b1.status, 'debited');
	assert.equal((await eventOf(lost.json.billing.event_id)).status, 404, 'never ingested');
	assert.equal(Number((await balanceOf(c)).balance), before - lost.json.tokens_used);
	const landed = await generate(c, 'ingested, answer lost', 20);
	assert.equal(landed.status, 200, landed.text);
	await until('landed', async () => (await eventOf(landed.json.billing.event_id)).status === 200);
	assert.equal((await billing(c, landed.json.id)).billing.ingested, false, 'no answer seen');
	await gen.kill('SIGKILL');
	await clearSandboxFaults(stack);
	age(landed.json.id);
	await restart();
	const b2 = await until('found ingested', async () => {
		const g = await billing(c, landed.json.id);
		return g.billing.ingested ? g : null;
	});
	assert.equal(b2.billing.billed_by, 'event');
	const debits = (await dodoLedger(stack, c)).filter((e) => !e.is_credit &&
	    e.reference_type !== 'meter' && Number(e.amount) < 100);
	assert.deepEqual(debits.map((e) => Number(e.amount)), [lost.json.tokens_used],
	    'one ledger debit, for the lost event only');
});

// A signed ledger webhook as Dodo's meter sends it.
async function meterHook(type, customer, entryId, amount, extra = {}) {
	const body = JSON.stringify({ business_id: 'bus_sandbox', type,
	    timestamp: new Date().toISOString(), data: { payload_type: 'CreditLedgerEntry',
		id: entryId, customer_id: customer, credit_entitlement_id: NEURAL.CREDIT_ENTITLEMENT_ID,
		amount: String(amount), is_credit: false, reference_type: 'meter',
		reference_id: 'mtr_sandbox_usage', transaction_type: type === 'credit.deducted' ?
		    'credit_deducted' : 'overage_charged', ...extra } });
	const r = await request(stack, 'POST', '/webhooks/dodo',
	    { body, headers: webhookHeaders(stack, body) });
	assert.equal(r.status, 200, r.text);
}

test('meter deductions (webhooks) clear usage oldest first, once per entry, capped', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const a = (await generate(c, 'first', 10)).json;
	const b = (await generate(c, 'second', 10)).json;
	const cleared = async (x) => (await billing(c, x.id)).billing.cleared;
	await meterHook('credit.deducted', c, `le_${Date.now()}_1`, a.tokens_used + 2);
	assert.equal(await cleared(a), a.tokens_used, 'the oldest first');
	assert.equal(await cleared(b), 2);
	const entry = `le_${Date.now()}_2`;
	await meterHook('credit.overage_charged', c, entry, 1);
	await meterHook('credit.overage_charged', c, entry, 1);
	assert.equal(await cleared(b), 3, 'one entry clears once');
	// a deduction not made by the meter clears nothing
	await meterHook('credit.deducted', c, `le_${Date.now()}_3`, 5, { reference_type: 'subscription' });
	assert.equal(await cleared(b), 3);
	// more than the usage: only what exists
	await meterHook('credit.deducted', c, `le_${Date.now()}_4`, 10_000);
	assert.equal(await cleared(b), b.tokens_used);
});

// Wait until every answer's event is ingested, then run the sandbox's meter once.
async function meter(customer, answers) {
	await until('all ingested', async () => {
		for (const a of answers)
			if (!(await billing(customer, a.id)).billing.ingested)
				return false;
		return true;
	});
	const r = await request(stack, 'POST', '/sandbox/admin/meter/run', { json: {} });
	assert.equal(r.status, 200, r.text);
	return r.json;
}

// Until the meter's webhooks have cleared every answer's usage.
const allCleared = (customer, answers) => until('usage cleared', async () => {
	for (const a of answers)
		if ((await billing(customer, a.id)).billing.cleared !== a.tokens_used)
			return false;
	return true;
});

test('50 concurrent Starter requests at the edge of zero, then the meter: billed == used', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const start = 600, prompt = 'race to zero';
	const hold = holdOf(prompt, 40);
	await debitTo(c, start);
	// every model call takes 300 ms: the requests overlap, holding at once
	await sandboxFault(stack, { target: 'openai', mode: 'stall', count: 50, stall_ms: 300 });
	const rs = await Promise.all(Array.from({ length: 50 }, () => generate(c, prompt, 40)));
	await clearSandboxFaults(stack);
	assert.deepEqual(rs.filter((r) => r.status !== 200 && r.status !== 402).map((r) => r.text), []);
	const ok = rs.filter((r) => r.status === 200).map((r) => r.json);
	const used = ok.reduce((n, a) => n + a.tokens_used, 0);
	assert.ok(ok.length >= Math.floor(start / hold), `admitted ${ok.length}`);
	assert.ok(used <= start, `used ${used} past the balance ${start}`);
	const run = await meter(c, ok);
	assert.equal(run.unbilled, 0, JSON.stringify(run));
	const bal = await balanceOf(c);
	assert.equal(Number(bal.balance), start - used, 'tokens billed == tokens used');
	assert.equal(Number(bal.overage), 0);
	await allCleared(c, ok);
	// nothing left held or unsettled: what is left admits exactly what it covers
	const next = await generate(c, prompt, 40);
	assert.equal(next.status, start - used >= hold ? 200 : 402, next.text);
});

test('Pro into overage, then the meter: overage within the limit, billed == used', async () => {
	const c = await buy(NEURAL.PRO_PLAN_PRODUCT_ID);
	await debitTo(c, 50);
	await sandboxFault(stack, { target: 'openai', mode: 'stall', count: 30, stall_ms: 300 });
	const rs = await Promise.all(Array.from({ length: 30 }, () => generate(c, 'pro race', 40)));
	await clearSandboxFaults(stack);
	const ok = rs.filter((r) => r.status === 200).map((r) => r.json);
	assert.ok(rs.every((r) => r.status === 200 || r.status === 402));
	const used = ok.reduce((n, a) => n + a.tokens_used, 0);
	assert.ok(used > 50 && used <= 50 + NEURAL.PRO_PLAN_OVERAGE_LIMIT, `used ${used}`);
	const run = await meter(c, ok);
	assert.equal(run.unbilled, 0, JSON.stringify(run));
	const bal = await balanceOf(c);
	assert.equal(Number(bal.balance), 0);
	assert.equal(Number(bal.overage), used - 50, 'tokens billed == tokens used');
	assert.ok(Number(bal.overage) <= NEURAL.PRO_PLAN_OVERAGE_LIMIT);
	await allCleared(c, ok);
	assert.equal((await generate(c, 'pro race', 40)).status,
	    50 + NEURAL.PRO_PLAN_OVERAGE_LIMIT - used >= holdOf('pro race', 40) ? 200 : 402);
});

test('the meter\'s webhooks lost: the ledger poll clears the usage', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const ok = [];
	for (const p of ['poll one', 'poll two'])
		ok.push((await generate(c, p, 20)).json);
	await sandboxFault(stack, { target: 'webhook', mode: '500', count: 1000 });
	try {
		const run = await meter(c, ok);
		assert.equal(run.unbilled, 0);
		assert.equal((await billing(c, ok[0].id)).billing.cleared, 0, 'no webhook arrived');
		// the first poll is 30 s after ingestion (USAGE_POLL_SEC), then every 30 s
		await until('cleared by the ledger poll', async () => {
			for (const a of ok)
				if ((await billing(c, a.id)).billing.cleared !== a.tokens_used)
					return false;
			return true;
		}, 75_000);
	} finally {
		await clearSandboxFaults(stack);
	}
});

test('kill -9 while the model is asked: the client has no answer, its hold stops counting', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const prompt = 'asked, then killed';
	await debitTo(c, holdOf(prompt, 30));
	await sandboxFault(stack, { target: 'openai', mode: 'stall', count: 1, stall_ms: 5000 });
	const pending = generate(c, prompt, 30).catch((e) => ({ status: 0, text: String(e) }));
	await sleep(500);
	await gen.kill('SIGKILL');
	assert.notEqual((await pending).status, 200, 'no answer from a killed process');
	await clearSandboxFaults(stack);
	gen = startGenerate(stack, { MAILKIT_AUTH: 'customer_id' });
	await gen.ready();
	// the whole balance admits the same request again: the dead hold is not counted
	const r = await generate(c, prompt, 30);
	assert.equal(r.status, 200, r.text);
});

test('credit.balance_low in NeuralAPI: one notice per crossing, in tokens', async () => {
	const c = await buy(NEURAL.STARTER_PLAN_PRODUCT_ID);
	const email = (await dodo('GET', `/customers/${c}`)).json.email;
	const low = (available) => JSON.stringify({ business_id: 'bus_sandbox',
	    type: 'credit.balance_low', timestamp: new Date().toISOString(),
	    data: { payload_type: 'CreditBalanceLow', customer_id: c,
		credit_entitlement_id: NEURAL.CREDIT_ENTITLEMENT_ID, credit_entitlement_name: 'API Tokens',
		available_balance: String(available), subscription_credits_amount: '1000',
		threshold_amount: '200', threshold_percent: 20 } });
	for (const available of [150, 120]) {
		const body = low(available);
		const r = await request(stack, 'POST', '/webhooks/dodo',
		    { body, headers: webhookHeaders(stack, body) });
		assert.equal(r.status, 200, r.text);
	}
	const mails = await until('the notice', async () => {
		const m = (await sandboxEmails(stack)).filter((e) =>
		    JSON.stringify(e.to).includes(email) && /running low/.test(e.subject));
		return m.length > 0 ? m : null;
	});
	await sleep(500);
	assert.equal((await sandboxEmails(stack)).filter((e) => JSON.stringify(e.to).includes(email) &&
	    /running low/.test(e.subject)).length, 1, 'one notice per crossing');
	assert.equal(mails[0].subject, 'Your NeuralAPI tokens are running low');
	const text = await mailedText(stack, email, 'running low');
	assert.match(text, /you have 150 tokens left/);
	assert.match(text, /5,000,000 more tokens/);
	assert.doesNotMatch(text, /emails/);
});
