// billing.test.mjs: exactly one credit per email — no overdraw, no double
// charge, no lost debit — under concurrency, retries, upstream faults and a
// worker killed mid-send, through the real stack (lighttpd, spawn-fcgi,
// SQLite) against the sandbox.  Each invariant is checked on both sides:
// emails in the sandbox outbox and entries in the sandbox's credit ledger.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';

import {
	BUILDDIR, clearSandboxFaults, dodoLedgerEntry, getJson, mailedText, missingPrerequisite,
	postJson, request,
	restartStack, sandboxEmails, sandboxFault, skipFile, startStack, subscribeCustomer,
	webhookHeaders,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd');
if (why)
	skipFile(why);

const NO_CREDIT = 'No email credits remaining. Buy a top-up pack to keep sending.';
// Short timeouts keep the fault matrix quick: one retry, 1.5 s per attempt.
// The billing invariants are about money, not about who may call: these
// stacks run the tutorial's auth mode (the body's customer_id is trusted),
// which routes.mjs's key tests do not need to repeat.
const TUTORIAL_AUTH = { MAILKIT_AUTH: 'customer_id' };
const FAST = { UPSTREAM_TIMEOUT_MS: 1500, UPSTREAM_CONNECT_TIMEOUT_MS: 1000,
    UPSTREAM_MAX_RETRIES: 1, ...TUTORIAL_AUTH };
const STALL_MS = 2500;		// longer than one attempt above

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ helpers

const LOW_BALANCE_AT = 1000;	// the sandbox's threshold: 20 % of 5000

async function newCustomer(stack, credits) {
	const email = `billing-${randomUUID().slice(0, 8)}@example.com`;
	const id = await subscribeCustomer(stack, { email, name: 'Billing Test' });
	if (credits !== undefined) {
		await setBalance(stack, id, credits);
		// Going under the threshold makes webhook.fcgi email a low-balance
		// notice a moment later; wait for it, so that it cannot take the
		// email_send fault a test is about to set for its own send.
		if (credits < LOW_BALANCE_AT)
			await lowBalanceNoticeSent(stack, email);
	}
	return { id, email };
}

async function lowBalanceNoticeSent(stack, email, timeoutMs = 10_000) {
	const until = Date.now() + timeoutMs;
	while (Date.now() < until) {
		if ((await sandboxEmails(stack)).some((e) => JSON.stringify(e.to).includes(email) &&
		    /running low/i.test(e.subject)))
			return;
		await sleep(100);
	}
	assert.fail(`no low-balance notice to ${email} within ${timeoutMs} ms`);
}

// Move the balance to exactly `want` with the sandbox's "Adjust balance" form.
async function setBalance(stack, id, want) {
	const have = Number(await balance(stack, id));
	if (have === want)
		return;
	const body = new URLSearchParams({
		entry_type: have > want ? 'debit' : 'credit', amount: String(Math.abs(have - want)) });
	const r = await request(stack, 'POST', `/sandbox/customers/${id}/adjust`,
	    { json: Object.fromEntries(body) });
	assert.ok(r.status === 303 || r.status === 200, `adjust: ${r.status} ${r.text}`);
	assert.equal(Number(await balance(stack, id)), want);
}

async function balance(stack, id) {
	const r = await getJson(stack, `/credits/${id}`);
	assert.equal(r.status, 200, `GET /credits: ${r.text}`);
	return r.json.balance;
}

// Ledger entries MailKit wrote for this customer (metadata.mailkit_ref).
async function ledger(stack, id) {
	const r = await getJson(stack, `/credits/${id}/ledger?limit=100`);
	assert.equal(r.status, 200, `GET ledger: ${r.text}`);
	const ours = r.json.items.filter((e) => e.metadata && e.metadata.mailkit_ref);
	return {
		debits: ours.filter((e) => !e.is_credit).length,
		refunds: ours.filter((e) => e.is_credit).length,
	};
}

async function emailsTagged(stack, tag) {
	return (await sandboxEmails(stack)).filter((e) => String(e.subject).includes(tag)).length;
}

const sendBody = (customer, tag, extra = {}) => ({
	customer_id: customer.id, to: 'delivered@resend.dev', subject: `test ${tag}`,
	html: `<p>${tag}</p>`, ...extra });

function send(stack, customer, tag, { key, timeout = 60_000, extra } = {}) {
	const headers = key ? { 'Idempotency-Key': key } : {};
	return postJson(stack, '/send', sendBody(customer, tag, extra), { headers, timeout });
}

// mailkit-admin with the stack's settings.
function admin(stack, args) {
	const env = { ...process.env, ...stack.settings, MAILKIT_LOG_FILE: '',
	    MAILKIT_ENV_FILE: '' };
	return new Promise((resolve) => {
		execFile(path.join(BUILDDIR, 'mailkit-admin'), args, { env, timeout: 120_000 },
		    (error, stdout, stderr) => resolve({ code: error ? (error.code ?? 1) : 0,
			stdout, stderr }));
	});
}

// Resolve everything pending; bounded: stalled upstream calls may hold a key briefly.
async function reconcileUntilSettled(stack) {
	let r;
	for (let i = 0; i < 12; i++) {
		r = await admin(stack, ['reconcile', '--min-age', '0']);
		if (r.code === 0 && / 0 pending;/.test(r.stdout))
			return r;
		await sleep(1000);
	}
	assert.fail(`reconcile did not settle:\n${r.stdout}${r.stderr}`);
}

// Emails sent for `tag` equal net credits debited for `customer`: the invariant.
async function assertBalanced(stack, customer, tag, { emails, start }) {
	const l = await ledger(stack, customer.id);
	const sent = await emailsTagged(stack, tag);
	assert.equal(sent, emails, `emails sent for ${tag}`);
	assert.equal(l.debits - l.refunds, emails, `net credits debited for ${tag} ` +
	    `(debits ${l.debits}, refunds ${l.refunds})`);
	if (start !== undefined)
		assert.equal(Number(await balance(stack, customer.id)), start - emails, 'balance');
}

function assertJsonError(r, statuses) {
	assert.ok(statuses.includes(r.status), `status ${r.status} not in ${statuses}: ${r.text}`);
	assert.match(r.headers.get('content-type') || '', /application\/json/);
	if (r.status >= 400)
		assert.equal(typeof r.json?.error, 'string', r.text);
	else
		assert.equal(typeof r.json?.id, 'string', r.text);
}

// ------------------------------------------------------------------ the stack

let stack;
before(async () => { stack = await startStack({ env: FAST }); });
after(async () => { await stack?.stop(); });

describe('no overdraw', () => {
	test('50 concurrent sends against 10 credits: exactly 10 go out and 10 are debited',
	    { timeout: 120_000 }, async () => {
		const c = await newCustomer(stack, 10);
		const tag = `conc-${randomUUID().slice(0, 6)}`;
		const rs = await Promise.all(Array.from({ length: 50 }, (_, i) =>
		    send(stack, c, `${tag} #${i}`)));
		const ok = rs.filter((r) => r.status === 200);
		const refused = rs.filter((r) => r.status === 402);
		assert.equal(ok.length, 10, rs.map((r) => r.status).join(' '));
		assert.equal(refused.length, 40);
		for (const r of refused)
			assert.equal(r.json.error, NO_CREDIT);
		assert.equal(new Set(ok.map((r) => r.json.id)).size, 10, 'distinct email ids');
		assert.equal(await balance(stack, c.id), '0');
		await assertBalanced(stack, c, tag, { emails: 10 });
		const rec = await admin(stack, ['reconcile', '--min-age', '0']);
		assert.equal(rec.code, 0, rec.stdout + rec.stderr);
		assert.match(rec.stdout, /no drift/);
	});
});

describe('idempotent retries', () => {
	test('a retry with the same Idempotency-Key replays the first answer: one email, one debit',
	    async () => {
		const c = await newCustomer(stack, 20);
		const tag = `retry-${randomUUID().slice(0, 6)}`;
		const key = `order-${randomUUID()}`;
		const a = await send(stack, c, tag, { key });
		const b = await send(stack, c, tag, { key });
		assert.equal(a.status, 200, a.text);
		assert.deepEqual([b.status, b.json], [a.status, a.json]);
		await assertBalanced(stack, c, tag, { emails: 1, start: 20 });

		// the same key with a different body is refused and moves nothing
		const other = await send(stack, c, `${tag}-changed`, { key });
		assert.equal(other.status, 409, other.text);
		assert.match(other.json.error, /different request/);
		assert.equal(await emailsTagged(stack, `${tag}-changed`), 0);
		assert.equal(await balance(stack, c.id), '19');
	});

	test('a refusal is replayed too (402 stays 402, no late charge)', async () => {
		const c = await newCustomer(stack, 0);
		const key = randomUUID();
		const a = await send(stack, c, 'refused', { key });
		assert.equal(a.status, 402);
		await setBalance(stack, c.id, 5);
		const b = await send(stack, c, 'refused', { key });
		assert.deepEqual([b.status, b.json], [402, { error: NO_CREDIT }]);
		assert.equal(await balance(stack, c.id), '5');
	});

	test('concurrent duplicates wait for the first and get its answer', async () => {
		const c = await newCustomer(stack, 20);
		const tag = `dup-${randomUUID().slice(0, 6)}`;
		const key = randomUUID();
		const rs = await Promise.all(Array.from({ length: 6 }, () => send(stack, c, tag, { key })));
		assert.deepEqual(rs.map((r) => r.status), [200, 200, 200, 200, 200, 200]);
		assert.equal(new Set(rs.map((r) => r.json.id)).size, 1);
		await assertBalanced(stack, c, tag, { emails: 1, start: 20 });
	});

	test('without a key, each request is at most one email and one debit', async () => {
		const c = await newCustomer(stack, 20);
		const tag = `nokey-${randomUUID().slice(0, 6)}`;
		const rs = await Promise.all([send(stack, c, tag), send(stack, c, tag)]);
		assert.deepEqual(rs.map((r) => r.status), [200, 200]);
		await assertBalanced(stack, c, tag, { emails: 2, start: 20 });
	});

	test('a send the provider failed is queued (202) and a retry gets it sent, once',
	    async () => {
		const c = await newCustomer(stack, 20);
		const tag = `resume-${randomUUID().slice(0, 6)}`;
		const key = randomUUID();
		await sandboxFault(stack, { target: 'email_send', mode: '500', count: 2 });
		const a = await send(stack, c, tag, { key });
		assert.deepEqual([a.status, a.json.status], [202, 'queued'], a.text);
		assert.equal(await emailsTagged(stack, tag), 0);
		const b = await send(stack, c, tag, { key });
		assert.deepEqual([b.status, b.json.id, b.json.status], [200, a.json.id, 'sent'], b.text);
		await assertBalanced(stack, c, tag, { emails: 1, start: 20 });
	});

	test('Idempotency-Key is 1-256 printable characters', async () => {
		const c = await newCustomer(stack, 5);
		const r = await send(stack, c, 'longkey', { key: 'k'.repeat(257) });
		assertJsonError(r, [400]);
		assert.equal(await balance(stack, c.id), '5');
	});
});

// Every upstream call of a send, failing every way the sandbox can fail.
describe('fault matrix', () => {
	const modes = ['500', '429', 'stall', 'drop'];

	for (const target of ['ledger_debit', 'email_send']) {
		for (const mode of modes) {
			test(`${target} ${mode}: answered, then resolved with emails = debits`,
			    { timeout: 90_000 }, async () => {
				const c = await newCustomer(stack, 10);
				const tag = `${target}-${mode}-${randomUUID().slice(0, 6)}`;
				const key = randomUUID();
				// two failures: the first attempt and its one retry
				await sandboxFault(stack, { target, mode, count: 2, stall_ms: STALL_MS });
				const first = await send(stack, c, tag, { key });
				// 202: debited, delivered later; 5xx: the debit is unconfirmed
				// and nothing will be charged unless this retry takes it up
				assertJsonError(first, target === 'email_send' ? [200, 202] :
				    [200, 502, 503, 504]);
				await clearSandboxFaults(stack);
				if (mode === 'stall')
					await sleep(STALL_MS + 500);	// stalled calls finish late
				const again = await send(stack, c, tag, { key });
				assert.equal(again.status, 200, again.text);
				if (first.status < 300)
					assert.equal(again.json.id, first.json.id);
				await reconcileUntilSettled(stack);
				await assertBalanced(stack, c, tag, { emails: 1, start: 10 });
			});
		}
	}

	// A definite refusal gives the credit back; the refund itself can fail.
	for (const mode of modes) {
		test(`ledger_credit ${mode}: a refused email is refunded exactly once`,
		    { timeout: 90_000 }, async () => {
			const c = await newCustomer(stack, 10);
			const tag = `refund-${mode}-${randomUUID().slice(0, 6)}`;
			await sandboxFault(stack, { target: 'email_send', mode: '422', count: 1 });
			await sandboxFault(stack, { target: 'ledger_credit', mode, count: 2,
			    stall_ms: STALL_MS });
			const r = await send(stack, c, tag, { key: randomUUID() });
			assertJsonError(r, [400]);
			await clearSandboxFaults(stack);
			if (mode === 'stall')
				await sleep(STALL_MS + 500);
			await reconcileUntilSettled(stack);
			const l = await ledger(stack, c.id);
			assert.deepEqual([l.debits, l.refunds], [1, 1], 'one debit, one refund');
			await assertBalanced(stack, c, tag, { emails: 0, start: 10 });
		});
	}

	for (const mode of modes) {
		test(`balance_read ${mode}: GET /credits answers JSON and moves nothing`,
		    { timeout: 60_000 }, async () => {
			const c = await newCustomer(stack, 7);
			await sandboxFault(stack, { target: 'balance_read', mode, count: 2,
			    stall_ms: STALL_MS });
			const r = await getJson(stack, `/credits/${c.id}`);
			assertJsonError(r, [502, 504]);
			await clearSandboxFaults(stack);
			if (mode === 'stall')
				await sleep(STALL_MS + 500);
			assert.equal(await balance(stack, c.id), '7');
			assert.deepEqual(await ledger(stack, c.id), { debits: 0, refunds: 0 });
		});
	}
});

// kill -9 of the send workers while their upstream call is in flight.
describe('crash', () => {
	let slow;
	before(async () => {
		slow = await startStack({ env: { UPSTREAM_TIMEOUT_MS: 15000, UPSTREAM_MAX_RETRIES: 0,
		    ...TUTORIAL_AUTH } });
	});
	after(async () => { await slow?.stop(); });

	async function killSendWorkers(s) {
		const text = await readFile(path.join(s.stateDir, 'run', 'send.pid'), 'utf8');
		const pids = text.split(/\s+/).filter((w) => /^\d+$/.test(w)).map(Number);
		assert.ok(pids.length > 0);
		for (const pid of pids)
			process.kill(pid, 'SIGKILL');
	}

	for (const target of ['email_send', 'ledger_debit']) {
		test(`a worker killed during ${target} is finished exactly once after restart`,
		    { timeout: 120_000 }, async () => {
			const c = await newCustomer(slow, 10);
			const tag = `crash-${target}-${randomUUID().slice(0, 6)}`;
			const key = randomUUID();
			await sandboxFault(slow, { target, mode: 'stall', count: 1, stall_ms: 4000 });
			const pending = send(slow, c, tag, { key, timeout: 30_000 });
			await sleep(1000);		// the worker is now blocked in the stalled call
			await killSendWorkers(slow);
			const dead = await pending;	// the web server answers for the dead worker
			assert.notEqual(dead.status, 200);
			slow = await restartStack(slow);
			await sleep(3500);		// the stalled call completes inside the sandbox
			// the restarted send.fcgi's delivery threads (or reconcile) finish it
			await reconcileUntilSettled(slow);
			await assertBalanced(slow, c, tag, { emails: 1, start: 10 });
			// the client's retry now gets the email's id, and nothing moves
			const retry = await send(slow, c, tag, { key });
			assert.equal(retry.status, 200, retry.text);
			await assertBalanced(slow, c, tag, { emails: 1, start: 10 });
		});
	}
});

describe('webhooks handled once', () => {
	async function deliver(s, body, id) {
		const text = JSON.stringify(body);
		return request(s, 'POST', '/webhooks/dodo', { body: text,
		    headers: webhookHeaders(s, text, { id }) });
	}

	const balanceLow = (c, available) => ({
		business_id: 'bus_test', type: 'credit.balance_low',
		timestamp: new Date().toISOString(),
		data: { payload_type: 'CreditBalanceLow', customer_id: c.id,
		    credit_entitlement_id: 'cde_sandbox_email', credit_entitlement_name: 'Email Credits',
		    available_balance: String(available), subscription_credits_amount: '5000',
		    threshold_amount: '1000', threshold_percent: 20 } });

	async function notices(s, c) {
		return (await sandboxEmails(s)).filter((e) => JSON.stringify(e.to).includes(c.email) &&
		    /running low/i.test(e.subject)).length;
	}

	test('a redelivered webhook-id is acknowledged, not handled twice; one notice per crossing',
	    async () => {
		const c = await newCustomer(stack);
		const id = `msg_${randomUUID()}`;
		const first = await deliver(stack, balanceLow(c, 999), id);
		const again = await deliver(stack, balanceLow(c, 999), id);
		assert.deepEqual([first.status, first.json], [200, { received: true }]);
		assert.deepEqual([again.status, again.json], [200, { received: true }]);
		assert.equal(await notices(stack, c), 1);
		// in the page's words, offering what exists (a top-up, no "upgrade")
		const notice = await mailedText(stack, c.email, 'running low');
		assert.match(notice, /you have <strong>999 emails<\/strong> left/);
		assert.match(notice, /you have 999 emails left/);
		assert.match(notice, /Buy a top-up pack \(5,000 more emails\)/);
		assert.doesNotMatch(notice, /upgrade|Email Credits/i);
		// acknowledged without being handled again: no second customer lookup or send
		const log = await readFile(path.join(stack.stateDir, 'log', 'mailkit.log'), 'utf8');
		assert.match(log, new RegExp(`credit\\.balance_low ${id}: already handled`));

		// another event while still low: no second notice
		const more = await deliver(stack, balanceLow(c, 500), `msg_${randomUUID()}`);
		assert.equal(more.status, 200);
		assert.equal(await notices(stack, c), 1);

		// a top-up re-arms it: the next crossing notifies again
		const added = await deliver(stack, {
			business_id: 'bus_test', type: 'credit.added', timestamp: new Date().toISOString(),
			data: { payload_type: 'CreditLedgerEntry', customer_id: c.id,
			    credit_entitlement_id: 'cde_sandbox_email', is_credit: true, amount: '5000',
			    balance_before: '500', balance_after: '5500',
			    transaction_type: 'credit_added' } }, `msg_${randomUUID()}`);
		assert.equal(added.status, 200);
		await sleep(1100);	// event times are whole seconds: the next crossing is later
		const next = await deliver(stack, balanceLow(c, 990), `msg_${randomUUID()}`);
		assert.equal(next.status, 200);
		assert.equal(await notices(stack, c), 2);
	});

	test('a ledger event MailKit only logs is logged per delivery, with its webhook-id',
	    async () => {
		const c = await newCustomer(stack);
		const id = `msg_${randomUUID()}`;
		const deducted = {
			business_id: 'bus_test', type: 'credit.deducted', timestamp: new Date().toISOString(),
			data: { payload_type: 'CreditLedgerEntry', customer_id: c.id,
			    credit_entitlement_id: 'cde_sandbox_email', is_credit: false, amount: '1',
			    balance_before: '5000', balance_after: '4999',
			    transaction_type: 'credit_deducted' } };
		for (let i = 0; i < 2; i++) {
			const r = await deliver(stack, deducted, id);
			assert.deepEqual([r.status, r.json], [200, { received: true }]);
		}
		const log = await readFile(path.join(stack.stateDir, 'log', 'mailkit.log'), 'utf8');
		const lines = log.split('\n').filter((l) => l.includes(`credit.deducted 1 (balance 4999) ${id}`));
		assert.equal(lines.length, 2, 'each delivery logged once');
		assert.ok(lines.every((l) => l.includes(c.id)));
		// nothing was stored for it: no claim, so no "already handled"
		assert.doesNotMatch(log, new RegExp(`credit\\.deducted ${id}: already handled`));
	});
});

describe('reconciliation', () => {
	test('reports drift when Dodo holds a debit MailKit never made', async () => {
		const c = await newCustomer(stack, 10);
		const ok = await send(stack, c, `drift-${randomUUID().slice(0, 6)}`);
		assert.equal(ok.status, 200);
		let rec = await admin(stack, ['reconcile', '--min-age', '0']);
		assert.equal(rec.code, 0, rec.stdout + rec.stderr);
		// a stray debit tagged as ours, straight at the (sandbox) ledger
		const r = await dodoLedgerEntry(stack, c.id, { entry_type: 'debit', amount: '1',
		    reason: 'email send', idempotency_key: randomUUID(),
		    metadata: { mailkit_ref: 'stray' } });
		assert.equal(r.status, 201);
		rec = await admin(stack, ['reconcile', '--min-age', '0']);
		assert.equal(rec.code, 1, rec.stdout);
		assert.match(rec.stdout, new RegExp(`${c.id}.*DRIFT`));
	});
});
