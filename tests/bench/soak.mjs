// soak.mjs: thousands of sends from concurrent careful clients (an API key,
// an Idempotency-Key on every send, one retry with it after a 5xx) against
// the real stack while the sandbox injects random upstream faults of every
// kind; then, per email, the client's final answer is judged against what
// finally happened under that email's mailkit_ref (N = its recipients):
//
//   200 -> 1 email, N net debit      202 -> the same, or failed: 0 and 0
//   4xx -> 0 emails, 0 net debit     5xx -> 0 emails, 0 net debit
//
// A --multi fraction of the requests are POST /send to several recipients
// (cc, bcc: N credits), a --batch fraction POST /emails/batch of 2 to 5 such
// messages, judged message by message (the batch's own 4xx/5xx answer for
// all of them, else each message's status in it).
//
// A benchmark, not a test: it prints the figures and exits 1 when any answer
// was untrue, when emails delivered (counting recipients) and net debits
// differ, or when a 202 was not delivered within --settle seconds after the
// faults stopped.
//
//   node tests/bench/soak.mjs [--sends 3000] [--clients 24] [--customers 6]
//                             [--fault-rate 0.2] [--seconds 900] [--settle 60]
//                             [--multi 0.2] [--batch 0.1]
//                             [--server lighttpd|apache]
//
// Run from the build directory after `make`; it starts and stops its own
// stack on a loopback port.  Every loop is bounded by --sends and --seconds.
import { randomUUID } from 'node:crypto';
import { statSync } from 'node:fs';

import {
	admin, getJson, journalKey, lastApiKey, postJson, request, sandboxFault, setBalance,
	startStack, subscribeCustomer,
	sqliteRows as sqlite,
} from '../integration/harness.mjs';
import { pick, sleep, soakOptions } from './soak-lib.mjs';

const {
	opt, count: SENDS, clients: CLIENTS, customers: CUSTOMERS, faultRate: FAULT_RATE,
	deadline: DEADLINE, settleMs: SETTLE_MS,
} = soakOptions('sends', 3000, 60, {
	multi: { type: 'string', default: '0.2' },
	batch: { type: 'string', default: '0.1' },
});
const MULTI = Number(opt.multi), BATCH = Number(opt.batch);
const TARGETS = ['ledger_debit', 'email_send', 'ledger_credit'];
const MODES = ['500', '429', '422', 'stall', 'drop', 'late', 'accept500'];

const refOf = journalKey;
// the ref of message i of a batch: the batch's ref and its index (billing.c)
const batchRefOf = (base, i) => refOf(base, `batch ${i}`);
// a message to 1 recipient, or (multi) to 2-4 with cc and bcc
const message = (subject, multi) => {
	const m = { to: 'delivered@resend.dev', subject, html: '<p>soak</p>' };
	if (multi) {
		const extra = 1 + Math.floor(Math.random() * 3);
		m.cc = Array.from({ length: extra - (extra > 1 ? 1 : 0) }, (_, i) => `cc${i}@example.com`);
		if (extra > 1)
			m.bcc = ['bcc@example.com'];
	}
	return m;
};
const recipients = (m) => 1 + (m.cc?.length ?? 0) + (m.bcc?.length ?? 0);


// What finally happened under every ref: emails delivered, net credits debited.
async function finalState(stack) {
	const db = stack.settings.SANDBOX_DB;
	const emails = new Map(), net = new Map();
	for (const [key, n] of await sqlite(db, "SELECT idempotency_key, count(*) FROM emails" +
	    " WHERE idempotency_key LIKE 'mk-send-%' GROUP BY 1"))
		emails.set(key.slice('mk-send-'.length), Number(n));
	for (const [ref, n] of await sqlite(db, "SELECT json_extract(metadata, '$.mailkit_ref')," +
	    " sum(CASE WHEN is_credit THEN -amount ELSE amount END) FROM ledger" +
	    " WHERE json_extract(metadata, '$.mailkit_ref') IS NOT NULL GROUP BY 1"))
		net.set(ref, Number(n));
	return { emails, net };
}

// One request's verdict: 'true', 'untrue', or 'pending' (a 202 not yet settled).
function judge(r, state) {
	const e = state.emails.get(r.ref) ?? 0, n = state.net.get(r.ref) ?? 0;
	if (r.status === 200)
		return e === 1 && n === r.credits ? 'true' : 'untrue';
	if (r.status === 202) {
		if (e === 1 && n === r.credits)
			return 'true';
		if (e === 0 && n === 0)
			return r.failed ? 'true' : 'pending';
		return 'untrue';
	}
	if (typeof r.status === 'number')
		return e === 0 && n === 0 ? 'true' : 'untrue';
	return 'unknown';	// no answer at all (a network error): nothing was promised
}

const stack = await startStack({ server: opt.server, env: { UPSTREAM_TIMEOUT_MS: 2000,
    UPSTREAM_MAX_RETRIES: 1, SEND_VOID_GRACE_SEC: 5, RATE_LIMIT_PER_MINUTE: 0 } });
const started = Date.now();
try {
	const tag = `soak-${randomUUID().slice(0, 8)}`;
	const customers = [];
	for (let i = 0; i < CUSTOMERS; i++) {
		const id = await subscribeCustomer(stack, { email: `soak${i}-${tag}@example.com`,
		    name: `Soak ${i}` });
		customers.push({ id, key: lastApiKey[id] });
	}
	// enough credit that most sends succeed, few enough that some hit 402
	// (credits per request: 1, 2-4 for a multi, 2-5 messages of 1-4 for a batch)
	const perRequest = 1 + MULTI * 2 + BATCH * (3.5 * 2.5 - 1);
	const perCustomer = Math.ceil(SENDS * perRequest / CUSTOMERS * 0.9);
	for (const c of customers)
		await setBalance(stack, c, perCustomer);

	// The journal's size on disk (journal hygiene): the database file alone;
	// the write-ahead log beside it is recycled at each checkpoint (~4 MiB).
	const journalBytes = () => {
		try { return statSync(stack.settings.MAILKIT_DB).size; } catch { return 0; }
	};
	const bytesBefore = journalBytes();
	const results = [];
	const statuses = {};
	let issued = 0, faults = 0, batches = 0, multis = 0;
	async function client() {
		while (issued < SENDS && Date.now() < DEADLINE) {
			const n = issued++;
			if (Math.random() < FAULT_RATE) {
				faults++;
				// 1 to 3 failures in a row: one is absorbed by MailKit's own
				// retry, more reach the answer
				const mode = pick(MODES);
				await sandboxFault(stack, { target: pick(TARGETS), mode,
				    count: 1 + Math.floor(Math.random() * 3), stall_ms: 2500,
				    late_ms: mode === 'late' ? 4000 : undefined });
			}
			const c = pick(customers), key = randomUUID(), kind = Math.random();
			const isBatch = kind < BATCH, multi = !isBatch && kind < BATCH + MULTI;
			const body = isBatch ? Array.from({ length: 2 + Math.floor(Math.random() * 4) },
			    (_, i) => message(`${tag} #${n}.${i}`, Math.random() < 0.5)) :
			    message(`${tag} #${n}`, multi);
			const path = isBatch ? '/emails/batch' : '/send';
			const opts = { key: c.key, headers: { 'Idempotency-Key': key }, timeout: 60_000 };
			let r;
			try {
				r = await postJson(stack, path, body, opts);
				// a careful client retries once, with its key, after a 5xx
				if (r.status >= 500)
					r = await postJson(stack, path, body, opts);
			} catch {
				r = { status: 'network' };
			}
			const label = isBatch ? `batch ${r.status}` : r.status;
			statuses[label] = (statuses[label] || 0) + 1;
			if (!isBatch) {
				multis += multi;
				results.push({ ref: refOf(c.id, key), status: r.status, id: r.json?.id, c,
				    credits: recipients(body) });
				continue;
			}
			batches++;
			// the batch's own answer for every message, or each message's own
			const each = { sent: 200, queued: 202, unconfirmed: 202, failed: 400 };
			for (const [i, m] of body.entries()) {
				const d = r.status === 200 || r.status === 202 ? r.json.data[i] : null;
				results.push({ ref: batchRefOf(refOf(c.id, key), i), c, id: d?.id,
				    status: d ? each[d.status] : r.status, credits: recipients(m) });
			}
		}
	}
	await Promise.all(Array.from({ length: CLIENTS }, client));
	const loadSecs = (Date.now() - started) / 1000;
	await request(stack, 'DELETE', '/sandbox/admin/faults');
	const faultsStopped = Date.now();

	// Let the background finish: every 202 delivered (or failed), every void fenced.
	let state, verdicts, settledAfter = null;
	for (;;) {
		state = await finalState(stack);
		for (const r of results.filter((x) => x.status === 202 && !x.failed)) {
			if ((state.emails.get(r.ref) ?? 0) === 0 && (state.net.get(r.ref) ?? 0) === 0) {
				const e = await getJson(stack, `/emails/${r.id}`, { key: r.c.key });
				r.failed = e.json?.status === 'failed';
			}
		}
		verdicts = results.map((r) => judge(r, state));
		if (!verdicts.includes('pending') && !verdicts.includes('untrue')) {
			settledAfter = (Date.now() - faultsStopped) / 1000;
			break;
		}
		if (Date.now() - faultsStopped > Math.max(SETTLE_MS, 90_000))
			break;
		await sleep(1000);
	}
	const rec = await admin(stack, ['reconcile', '--min-age', '0', '--quiet']);

	const count = (v) => verdicts.filter((x) => x === v).length;
	// emails delivered, counting recipients (every ref is one of ours)
	const credits = new Map(results.map((r) => [r.ref, r.credits]));
	const emails = [...state.emails.entries()].reduce((a, [ref, e]) =>
	    a + e * (credits.get(ref) ?? 1), 0);
	const messages = [...state.emails.values()].reduce((a, b) => a + b, 0);
	const netDebits = [...state.net.values()].reduce((a, b) => a + b, 0);
	const queued = results.filter((r) => r.status === 202);
	console.log(`soak: ${issued} requests (${multis} multi-recipient sends, ${batches} batches; ` +
	    `${results.length} emails) from ${CLIENTS} clients (${CUSTOMERS} customers, ` +
	    `API keys) through ${opt.server} in ${loadSecs.toFixed(1)} s; ${faults} faults armed ` +
	    `(rate ${FAULT_RATE}, 1-3 calls each; ${TARGETS.join(', ')} x ${MODES.join(', ')})`);
	console.log(`answers: ${JSON.stringify(statuses)}`);
	console.log(`truth: ${count('true')} true, ${count('untrue')} untrue, ` +
	    `${count('pending')} still pending, ${count('unknown')} unanswered`);
	console.log(`202s: ${queued.length}, ${queued.filter((r) => !r.failed).length} delivered, ` +
	    `${queued.filter((r) => r.failed).length} failed and refunded; all settled ` +
	    (settledAfter === null ? 'NOT within the wait' : `${settledAfter.toFixed(1)} s after the faults stopped`));
	console.log(`emails delivered ${messages} (${emails} counting recipients), ` +
	    `net credits debited ${netDebits}`);
	const [[rows, bodies, longest]] = await sqlite(stack.settings.MAILKIT_DB,
	    'SELECT count(*), coalesce(sum(length(message)), 0), coalesce(max(length(message)), 0)' +
	    ' FROM sends');
	const bytesAfter = journalBytes();
	console.log(`journal: ${rows} rows holding ${bodies} bytes of messages (longest ${longest}); ` +
	    `database file ${(bytesBefore / 1024).toFixed(0)} KiB before the load, ` +
	    `${(bytesAfter / 1024).toFixed(0)} KiB after ` +
	    `(${((bytesAfter - bytesBefore) / Math.max(1, results.length)).toFixed(0)} bytes per send, ` +
	    'kept 48 h)');
	console.log(rec.stdout.trim().split('\n').pop());
	for (const [i, r] of results.entries())
		if (verdicts[i] === 'untrue' || verdicts[i] === 'pending')
			console.log(`  ${verdicts[i]}: answered ${r.status}, ref ${r.ref.slice(0, 12)}…: ` +
			    `${state.emails.get(r.ref) ?? 0} emails, net ${state.net.get(r.ref) ?? 0}`);
	process.exitCode = count('untrue') === 0 && count('pending') === 0 && emails === netDebits &&
	    settledAfter !== null && settledAfter <= SETTLE_MS / 1000 ? 0 : 1;
} finally {
	await stack.stop({ keep: process.env.MAILKIT_KEEP_STATE === '1' });
}
