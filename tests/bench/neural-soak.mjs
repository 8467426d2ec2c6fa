// neural-soak.mjs: NeuralAPI's billing soak.  Thousands of POST /api/generate
// from concurrent careful clients (an API key, an Idempotency-Key on every
// request, one retry with it after a 5xx) against a real NeuralAPI stack,
// while the sandbox injects random faults into the model (OpenAI), usage
// ingestion (POST /events/ingest), balance reads and the ledger, and its
// meter deducts every SANDBOX_METER_INTERVAL_MS.  Half the customers are on
// Starter (blocked at zero), half on Pro (overage up to PRO_PLAN_OVERAGE_LIMIT);
// each starts with a small balance so that many requests meet the edge.
//
// When the load stops and the faults are cleared, it waits for every usage
// event to land and the meter to deduct it, then judges each answer against
// what Dodo (the sandbox) finally holds under that request's usage event:
//
//   200 {tokens_used: T} -> exactly one usage event of T tokens (or, for an
//                           event too old to ingest, a ledger debit of T)
//   4xx, 5xx             -> no usage event and no debit
//
// and prints: tokens used (the 200s) vs tokens billed (events + fallback
// debits) vs tokens the meter deducted; the lowest balance any Starter
// customer reached (never below zero, nothing the meter could not deduct);
// the highest overage of any Pro customer against its limit.
//
// A benchmark, not a test: it prints the figures and exits 1 when any answer
// was untrue, tokens used != tokens billed, a Starter balance went below zero
// or went unbilled, or a Pro overage passed its limit.
//
//   node tests/bench/neural-soak.mjs [--requests 2000] [--clients 24]
//       [--customers 6] [--fault-rate 0.2] [--seconds 900] [--settle 90]
//       [--server lighttpd|apache]
//
// Run from the build directory after `make`; it starts and stops its own
// stack on a loopback port.  Every loop is bounded by --requests and --seconds.
import { randomUUID } from 'node:crypto';

import {
	getJson, journalKey, postJson, request, sandboxFault, setBalance, startStack,
	subscribeWithKey,
	sqliteRows as sqlite,
} from '../integration/harness.mjs';
import { pick, sleep, soakOptions } from './soak-lib.mjs';

const {
	opt, count: REQUESTS, clients: CLIENTS, customers: CUSTOMERS, faultRate: FAULT_RATE,
	deadline: DEADLINE, settleMs: SETTLE_MS,
} = soakOptions('requests', 2000, 90);
const OVERAGE_LIMIT = 1500;		// Pro's overage limit in this soak, tokens
const FAULTS = {
	openai: ['500', '429', '422', 'stall', 'drop'],
	events_ingest: ['500', '429', 'stall', 'drop', 'late', 'accept500'],
	balance_read: ['500', '429', 'stall', 'drop'],
	ledger_debit: ['500', '429', 'stall', 'drop', 'late', 'accept500'],
};
const TARGETS = Object.keys(FAULTS);

// a request's usage event is "mk-gen-<journal key>", its fallback ledger debit
// "mk-gen-<journal key>-debit"
const eventOf = (customer, key) => `mk-gen-${journalKey(customer, key)}`;
const words = 'the quick brown fox jumps over a lazy dog while tokens are counted'.split(' ');
const prompt = () => Array.from({ length: 2 + Math.floor(Math.random() * 30) }, () =>
    pick(words)).join(' ');


// What the sandbox holds: usage events and fallback debits by request, the meter's part.
async function billed(stack) {
	const db = stack.settings.SANDBOX_DB;
	const events = new Map(), debits = new Map();
	for (const [id, tokens] of await sqlite(db, "SELECT event_id," +
	    " json_extract(metadata, '$.tokens') FROM events WHERE event_id LIKE 'mk-gen-%'"))
		events.set(id, Number(tokens));
	for (const [key, amount] of await sqlite(db, "SELECT idempotency_key, amount FROM ledger" +
	    " WHERE idempotency_key LIKE 'mk-gen-%-debit' AND is_credit = 0"))
		debits.set(key.slice(0, -'-debit'.length), Number(amount));
	const [[unprocessed]] = await sqlite(db, 'SELECT count(*) FROM events WHERE processed = 0');
	const [[meter, overage]] = await sqlite(db, 'SELECT coalesce(sum(amount), 0),' +
	    " coalesce(sum(CASE WHEN transaction_type = 'overage_charged' THEN amount END), 0)" +
	    " FROM ledger WHERE reference_type = 'meter'");
	// per customer: tokens in events, tokens the meter deducted
	const per = new Map();
	for (const [cus, tokens, deducted] of await sqlite(db, 'SELECT customer_id,' +
	    " (SELECT coalesce(sum(json_extract(metadata, '$.tokens')), 0) FROM events e" +
	    '   WHERE e.customer_id = b.customer_id),' +
	    ' (SELECT coalesce(sum(amount), 0) FROM ledger l WHERE l.customer_id = b.customer_id' +
	    "   AND reference_type = 'meter') FROM balances b"))
		per.set(cus, { tokens: Number(tokens), deducted: Number(deducted) });
	const sum = (m) => [...m.values()].reduce((a, b) => a + b, 0);
	const eventTokens = sum(events);
	return { events: events.size, eventTokens, fallbackTokens: sum(debits), byEvent: events,
	    byDebit: debits, per, unprocessed: Number(unprocessed), meterTokens: Number(meter),
	    overageTokens: Number(overage),
	    // what the meter processed and never deducted (Starter past zero, Pro past its limit)
	    unbilled: Number(unprocessed) === 0 ? eventTokens - Number(meter) : NaN };
}

// Each answer against what was billed under its request: 'true', 'untrue' or 'unknown'.
function judgeAll(results, b) {
	return results.map((r) => {
		const ev = b.byEvent.get(r.event), debit = b.byDebit.get(r.event);
		if (typeof r.status !== 'number')
			return 'unknown';	// no answer at all: nothing was promised
		if (r.status === 200)	// billed once, by event or by debit, exactly its tokens
			return (ev !== undefined) !== (debit !== undefined) &&
			    (ev ?? debit) === r.tokens ? 'true' : 'untrue';
		return ev === undefined && debit === undefined ? 'true' : 'untrue';
	});
}

const stack = await startStack({ server: opt.server, env: {
    MAILKIT_PRODUCT: 'neuralapi', SANDBOX_METER_INTERVAL_MS: 500,
    PRO_PLAN_OVERAGE_LIMIT: OVERAGE_LIMIT, UPSTREAM_TIMEOUT_MS: 2000,
    UPSTREAM_MAX_RETRIES: 1, RATE_LIMIT_PER_MINUTE: 0 } });
const started = Date.now();
try {
	const tag = `nsoak-${randomUUID().slice(0, 8)}`;
	const customers = [];
	for (let i = 0; i < CUSTOMERS; i++) {
		const plan = i % 2 === 0 ? 'starter' : 'pro';
		const c = await subscribeWithKey(stack, { email: `nsoak${i}-${tag}@example.com`,
		    name: `Soak ${i}`, plan });
		customers.push({ id: c.customer_id, key: c.api_key, plan });
	}
	// a balance that runs out half-way: ~40 tokens a request (prompt + reply)
	const perCustomer = Math.ceil(REQUESTS * 40 / CUSTOMERS * 0.5);
	for (const c of customers)
		await setBalance(stack, c, perCustomer);

	const results = [], statuses = {};
	let issued = 0, faults = 0, lowest = Infinity;
	async function client() {
		while (issued < REQUESTS && Date.now() < DEADLINE) {
			issued++;
			if (Math.random() < FAULT_RATE) {
				faults++;
				const target = pick(TARGETS), mode = pick(FAULTS[target]);
				await sandboxFault(stack, { target, mode,
				    count: 1 + Math.floor(Math.random() * 3), stall_ms: 2500,
				    late_ms: mode === 'late' ? 4000 : undefined });
			}
			const c = pick(customers), key = randomUUID();
			const body = { prompt: prompt(), max_tokens: 8 + Math.floor(Math.random() * 40) };
			const opts = { key: c.key, headers: { 'Idempotency-Key': key }, timeout: 60_000 };
			let r;
			try {
				r = await postJson(stack, '/api/generate', body, opts);
				if (r.status >= 500)
					r = await postJson(stack, '/api/generate', body, opts);
			} catch {
				r = { status: 'network' };
			}
			statuses[r.status] = (statuses[r.status] || 0) + 1;
			results.push({ c, status: r.status, id: r.json?.id, event: eventOf(c.id, key),
			    tokens: r.status === 200 ? r.json.tokens_used : 0 });
		}
	}
	// the lowest Starter balance, sampled from the sandbox while the load runs
	let sampling = true;
	const sampler = (async () => {
		while (sampling) {
			for (const c of customers.filter((x) => x.plan === 'starter')) {
				const [[b] = []] = await sqlite(stack.settings.SANDBOX_DB,
				    `SELECT coalesce(sum(remaining), 0) FROM grants WHERE customer_id = '${c.id}' AND expired = 0`)
				    .catch(() => [[]]);
				if (b !== undefined)
					lowest = Math.min(lowest, Number(b));
			}
			await sleep(200);
		}
	})();
	await Promise.all(Array.from({ length: CLIENTS }, client));
	sampling = false;
	await sampler;
	const loadSecs = (Date.now() - started) / 1000;
	await request(stack, 'DELETE', '/sandbox/admin/faults');
	const faultsStopped = Date.now();

	// Wait until every answered request's usage is billed and deducted.
	const used = results.reduce((a, r) => a + r.tokens, 0);
	let billing, settledAfter = null;
	for (;;) {
		await request(stack, 'POST', '/sandbox/admin/meter/run', { json: {} });
		billing = await billed(stack);
		if (billing.eventTokens + billing.fallbackTokens === used &&
		    billing.unprocessed === 0) {
			settledAfter = (Date.now() - faultsStopped) / 1000;
			break;
		}
		if (Date.now() - faultsStopped > SETTLE_MS)
			break;
		await sleep(1000);
	}
	const verdicts = judgeAll(results, billing);
	const count = (v) => verdicts.filter((x) => x === v).length;
	const credits = await Promise.all(customers.map((c) =>
	    getJson(stack, '/credits/me', { key: c.key })));
	const overages = customers.map((c, i) => ({ c, overage: Number(credits[i].json?.overage ?? 0),
	    balance: Number(credits[i].json?.balance ?? 0) }));
	const maxOverage = Math.max(...overages.filter((o) => o.c.plan === 'pro')
	    .map((o) => o.overage));
	const starterNegative = overages.filter((o) => o.c.plan === 'starter' && o.balance < 0);
	const unbilledOf = (plan) => customers.filter((c) => c.plan === plan).reduce((a, c) => {
		const p = billing.per.get(c.id) ?? { tokens: 0, deducted: 0 };
		return a + p.tokens - p.deducted;
	}, 0);

	console.log(`neural soak: ${issued} requests from ${CLIENTS} clients (${CUSTOMERS} ` +
	    `customers: ${Math.ceil(CUSTOMERS / 2)} Starter, ${Math.floor(CUSTOMERS / 2)} Pro, ` +
	    `API keys) through ${opt.server} in ${loadSecs.toFixed(1)} s; ${faults} faults armed ` +
	    `(rate ${FAULT_RATE}, 1-3 calls each; ${TARGETS.join(', ')})`);
	console.log(`answers: ${JSON.stringify(statuses)}`);
	console.log(`truth: ${count('true')} true, ${count('untrue')} untrue, ` +
	    `${count('unknown')} unanswered`);
	console.log(`tokens used ${used}, billed ${billing.eventTokens + billing.fallbackTokens} ` +
	    `(${billing.eventTokens} in ${billing.events} usage events, ${billing.fallbackTokens} ` +
	    `by ledger debit), deducted by the meter ${billing.meterTokens} ` +
	    `(${billing.overageTokens} as overage), never deducted (unbilled) ${billing.unbilled}; ` +
	    (settledAfter === null ? 'NOT all billed within the wait' :
	    `all billed ${settledAfter.toFixed(1)} s after the faults stopped`));
	console.log(`never deducted: Starter ${unbilledOf('starter')} tokens, Pro ` +
	    `${unbilledOf('pro')} tokens`);
	console.log(`Starter: lowest balance seen ${lowest === Infinity ? 'n/a' : lowest}, ` +
	    `final ${overages.filter((o) => o.c.plan === 'starter').map((o) => o.balance).join(', ')}`);
	console.log(`Pro: highest overage ${maxOverage} of limit ${OVERAGE_LIMIT}; final balances ` +
	    `${overages.filter((o) => o.c.plan === 'pro').map((o) => `${o.balance}/${o.overage}`)
	    .join(', ')} (balance/overage)`);
	for (const [i, r] of results.entries())
		if (verdicts[i] === 'untrue')
			console.log(`  untrue: answered ${r.status} (${r.tokens} tokens), id ${r.id}`);
	process.exitCode = count('untrue') === 0 && settledAfter !== null &&
	    billing.unbilled === 0 && unbilledOf('starter') === 0 && unbilledOf('pro') === 0 &&
	    starterNegative.length === 0 && lowest >= 0 &&
	    maxOverage <= OVERAGE_LIMIT ? 0 : 1;
} finally {
	await stack.stop({ keep: process.env.MAILKIT_KEEP_STATE === '1' });
}
