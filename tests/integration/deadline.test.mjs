// deadline.test.mjs: every request ends in bounded time — a stalled upstream
// is answered 504 within REQUEST_TIMEOUT_MS (retries and backoff included),
// and while another process holds the database's write lock, requests fail
// side by side within STORE_BUSY_TIMEOUT_MS with 503 + Retry-After, nothing
// charged, and succeed again once it is released.  Once through lighttpd,
// once through Apache, each against its own stack on loopback.
import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import {
	clearSandboxFaults, getJson, holdDatabaseLock, missingPrerequisite, postJson, sandboxFault,
	sandboxStats, skipFile, stackTest, startStack, subscribeWithKey,
} from './harness.mjs';

const SERVERS = ['lighttpd', 'apache'];
const REQUEST_TIMEOUT_MS = 2000;	// the deadline under test
const STORE_BUSY_MS = 500;		// the bounded wait for the write lock
const STALL_MS = 20_000;		// the upstream's stall: far past the deadline
const MARGIN_MS = 2000;			// a loaded 2-core machine's slack
const PARALLEL = 8;			// requests waiting for the lock at once
const TEST_MS = 60_000;
const START_MS = 120_000;

for (const server of SERVERS) {
	const missing = missingPrerequisite(server);
	if (missing)
		skipFile(`${server}: ${missing}`);
}



function assertJsonError(res, status, what) {
	const ctx = `${what}: got ${res.status} ${res.text.slice(0, 200)}`;
	assert.equal(res.status, status, ctx);
	assert.match(res.headers.get('content-type') || '', /^application\/json\b/, ctx);
	assert.equal(typeof res.json?.error, 'string', ctx);
}

for (const server of SERVERS) describe(server, () => {
	let stack;
	let customer;
	const test = stackTest(server, () => stack, TEST_MS);

	before(async () => {
		stack = await startStack({ server, env: {
			REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS),
			STORE_BUSY_TIMEOUT_MS: String(STORE_BUSY_MS),
		} });
		customer = await subscribeWithKey(stack);
	}, { timeout: START_MS });
	after(async () => {
		await stack?.stop();
	});

	test('a stalled upstream is answered 504 within the request deadline', async () => {
		// every attempt stalls: without the deadline, 3 attempts of UPSTREAM_TIMEOUT_MS
		await sandboxFault(stack, { target: 'balance_read', mode: 'stall', count: 5,
			stall_ms: STALL_MS });
		try {
			const t0 = Date.now();
			const res = await getJson(stack, `/credits/${customer.customer_id}`,
			    { key: customer.api_key, timeout: STALL_MS });
			const ms = Date.now() - t0;
			assertJsonError(res, 504, 'GET /credits with a stalled upstream');
			assert.ok(ms >= REQUEST_TIMEOUT_MS - 100, `answered after ${ms} ms, before the deadline`);
			assert.ok(ms <= REQUEST_TIMEOUT_MS + MARGIN_MS,
			    `answered after ${ms} ms: deadline ${REQUEST_TIMEOUT_MS} ms`);
		} finally {
			await clearSandboxFaults(stack);
		}
		// and the next request is served normally
		const ok = await getJson(stack, `/credits/${customer.customer_id}`, { key: customer.api_key });
		assert.equal(ok.status, 200, ok.text);
	});

	test('a stalled send is an unknown outcome, answered within the deadline', async () => {
		await sandboxFault(stack, { target: 'email_send', mode: 'stall', count: 5,
			stall_ms: STALL_MS });
		try {
			const t0 = Date.now();
			const res = await postJson(stack, '/send', { to: 'delivered@resend.dev',
				subject: 'deadline', html: '<p>deadline</p>' },
			    { key: customer.api_key, timeout: STALL_MS,
			      headers: { 'Idempotency-Key': `deadline-${Date.now()}` } });
			const ms = Date.now() - t0;
			// the debit went through, the provider's answer never came: the
			// billing code's "queued" (202) or a 5xx with nothing charged
			assert.ok(res.status === 202 || res.status >= 500, `${res.status} ${res.text}`);
			assert.ok(ms <= REQUEST_TIMEOUT_MS + MARGIN_MS,
			    `answered after ${ms} ms: deadline ${REQUEST_TIMEOUT_MS} ms`);
		} finally {
			await clearSandboxFaults(stack);
		}
	});

	test('a held write lock: 503 with Retry-After, in parallel, nothing charged', async () => {
		const before = await sandboxStats(stack);
		const lock = await holdDatabaseLock(stack);
		let results, ms;
		try {
			const t0 = Date.now();
			results = await Promise.all(Array.from({ length: PARALLEL }, (_, i) =>
				postJson(stack, '/send', { to: 'delivered@resend.dev', subject: `locked ${i}`,
					html: '<p>locked</p>' },
				    { key: customer.api_key, timeout: 30_000,
				      headers: { 'Idempotency-Key': `locked-${Date.now()}-${i}` } })));
			ms = Date.now() - t0;
		} finally {
			await lock.release();
		}
		for (const res of results) {
			assertJsonError(res, 503, 'POST /send while the lock is held');
			assert.match(res.headers.get('retry-after') || '', /^\d+$/, 'Retry-After');
		}
		// side by side: one after another would take PARALLEL x STORE_BUSY_MS
		assert.ok(ms <= STORE_BUSY_MS + MARGIN_MS,
		    `${PARALLEL} requests answered after ${ms} ms (bound ${STORE_BUSY_MS} ms each)`);
		const afterStats = await sandboxStats(stack);
		assert.equal(afterStats.debits, before.debits, 'a refused send was charged');
		// released: the same kind of request goes through
		const ok = await postJson(stack, '/send', { to: 'delivered@resend.dev', subject: 'unlocked',
			html: '<p>unlocked</p>' },
		    { key: customer.api_key, headers: { 'Idempotency-Key': `unlocked-${Date.now()}` } });
		assert.equal(ok.status, 200, ok.text);
	});
});
