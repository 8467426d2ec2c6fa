// soak.mjs: thousands of sends from concurrent clients against the real stack
// while the sandbox injects random upstream faults; then everything pending is
// resolved and the two sides are counted.  A benchmark, not a test: it prints
//
//   emails sent N, net credits debited N, requests answered N/M (...)
//
// and exits 1 when the first two differ.
//
//   node tests/bench/soak.mjs [--sends 3000] [--clients 24] [--customers 6]
//                             [--fault-rate 0.05] [--seconds 600]
//
// Run from the build directory after `make`; it starts and stops its own
// stack (lighttpd, sandbox) on a loopback port.  Every loop is bounded by
// --sends and --seconds.
import { execFile } from 'node:child_process';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { parseArgs } from 'node:util';

import {
	BUILDDIR, getJson, postJson, request, sandboxFault, startStack,
	subscribeCustomer,
} from '../integration/harness.mjs';

const { values: opt } = parseArgs({ options: {
	sends: { type: 'string', default: '3000' },
	clients: { type: 'string', default: '24' },
	customers: { type: 'string', default: '6' },
	'fault-rate': { type: 'string', default: '0.05' },
	seconds: { type: 'string', default: '600' },
	server: { type: 'string', default: 'lighttpd' },
} });
const SENDS = Number(opt.sends), CLIENTS = Number(opt.clients);
const CUSTOMERS = Number(opt.customers), FAULT_RATE = Number(opt['fault-rate']);
const DEADLINE = Date.now() + Number(opt.seconds) * 1000;
const TARGETS = ['ledger_debit', 'email_send', 'ledger_credit'];
const MODES = ['500', '429', 'stall', 'drop', '422'];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pick = (a) => a[Math.floor(Math.random() * a.length)];

function admin(stack, args) {
	const env = { ...process.env, ...stack.settings, MAILKIT_LOG_FILE: '', MAILKIT_ENV_FILE: '' };
	return new Promise((resolve) => execFile(path.join(BUILDDIR, 'mailkit-admin'), args,
	    { env, timeout: 300_000 }, (e, stdout, stderr) =>
		resolve({ code: e ? (e.code ?? 1) : 0, stdout, stderr })));
}

// The tutorial's mode (customer_id in the body) keeps the clients simple;
// authentication is not what this measures.
const stack = await startStack({ server: opt.server, env: { UPSTREAM_TIMEOUT_MS: 2000,
    UPSTREAM_MAX_RETRIES: 1, MAILKIT_AUTH: 'customer_id' } });
const started = Date.now();
try {
	const tag = `soak-${randomUUID().slice(0, 8)}`;
	const customers = [];
	for (let i = 0; i < CUSTOMERS; i++)
		customers.push(await subscribeCustomer(stack, { email: `soak${i}@example.com`,
		    name: `Soak ${i}` }));
	// enough credit that most sends succeed, few enough that some hit 402
	const perCustomer = Math.ceil(SENDS / CUSTOMERS * 0.9);
	for (const id of customers) {
		const have = Number((await getJson(stack, `/credits/${id}`)).json.balance);
		await request(stack, 'POST', `/sandbox/customers/${id}/adjust`, {
			body: new URLSearchParams({ entry_type: have > perCustomer ? 'debit' : 'credit',
			    amount: String(Math.abs(have - perCustomer)) }) });
	}

	const statuses = {};
	let issued = 0, answered = 0;
	async function client() {
		while (issued < SENDS && Date.now() < DEADLINE) {
			const n = issued++;
			if (Math.random() < FAULT_RATE)
				await sandboxFault(stack, { target: pick(TARGETS), mode: pick(MODES),
				    count: 1, stall_ms: 2500 }).catch(() => {});
			const key = Math.random() < 0.5 ? randomUUID() : undefined;
			const body = { customer_id: pick(customers), to: 'delivered@resend.dev',
			    subject: `${tag} #${n}`, html: '<p>soak</p>' };
			let r;
			try {
				r = await postJson(stack, '/send', body,
				    { headers: key ? { 'Idempotency-Key': key } : {}, timeout: 60_000 });
				// a client with a key retries once after an unknown outcome
				if (key && r.status >= 500)
					r = await postJson(stack, '/send', body,
					    { headers: { 'Idempotency-Key': key }, timeout: 60_000 });
			} catch (e) {
				r = { status: 'network' };
			}
			statuses[r.status] = (statuses[r.status] || 0) + 1;
			if (typeof r.status === 'number')
				answered++;
		}
	}
	await Promise.all(Array.from({ length: CLIENTS }, client));
	await request(stack, 'DELETE', '/sandbox/admin/faults');
	await sleep(3000);	// stalled upstream calls finish

	let rec;
	for (let i = 0; i < 20; i++) {
		rec = await admin(stack, ['reconcile', '--min-age', '0', '--quiet']);
		if (/ 0 pending;/.test(rec.stdout))
			break;
		await sleep(1000);
	}

	const listed = await getJson(stack, `/sandbox/admin/emails?subject=${encodeURIComponent(tag)}`);
	const emails = listed.json.total;
	let debits = 0, refunds = 0;
	for (const id of customers) {
		for (let page = 0; page < 1000; page++) {
			const r = await fetch(`${stack.settings.DODO_PAYMENTS_BASE_URL}/credit-entitlements/` +
			    `${stack.settings.CREDIT_ENTITLEMENT_ID}/balances/${id}/ledger?page_size=100` +
			    `&page_number=${page}`, { headers: {
				Authorization: `Bearer ${stack.settings.DODO_PAYMENTS_API_KEY}` } });
			const items = (await r.json()).items;
			if (items.length === 0)
				break;
			for (const e of items.filter((x) => x.metadata?.mailkit_ref))
				e.is_credit ? refunds++ : debits++;
		}
	}
	const secs = ((Date.now() - started) / 1000).toFixed(1);
	console.log(rec.stdout.trim().split('\n').pop());
	console.log(`statuses: ${JSON.stringify(statuses)}`);
	console.log(`emails sent ${emails}, net credits debited ${debits - refunds} ` +
	    `(${debits} debits, ${refunds} refunds), requests answered ${answered}/${issued} ` +
	    `in ${secs} s`);
	process.exitCode = emails === debits - refunds ? 0 : 1;
	if (process.exitCode)
		console.log('MISMATCH: emails sent and net credits debited differ');
} finally {
	await stack.stop({ keep: process.env.MAILKIT_KEEP_STATE === '1' });
}
