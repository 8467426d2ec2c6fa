// security.test.mjs: one test per finding of the security review, through
// both web servers: strict request JSON and Idempotency-Key (4).
import { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import {
	fcgiRequest, missingPrerequisite, postJson, request, sandboxStats, stackTest, startStack,
	subscribeWithKey,
} from './harness.mjs';

const TEST_MS = 60_000;
const START_MS = 120_000;
const uniq = () => randomUUID().slice(0, 8);

function assertRefused(res, status, pattern, what) {
	const ctx = `${what}: got ${res.status} ${res.text.slice(0, 200)}`;
	assert.equal(res.status, status, ctx);
	assert.equal(typeof res.json?.error, 'string', ctx);
	if (pattern)
		assert.match(res.json.error, pattern, ctx);
}

function defineSecurityTests(server) {
	if (missingPrerequisite(server))
		return;
	let stack, customer;

	before(async () => {
		stack = await startStack({ server });
		customer = await subscribeWithKey(stack);
	}, { timeout: START_MS });
	after(async () => {
		if (stack)
			await stack.stop();
	}, { timeout: START_MS });
	const it = stackTest(server, () => stack, TEST_MS);

	// ------------------------------------------------ 4: lax input
	it('finding 4: invalid UTF-8, duplicate keys, unknown fields and blank '
	    + 'Idempotency-Keys are refused before any upstream call', async () => {
		const before4 = await sandboxStats(stack);
		const post = (body, headers = {}) => request(stack, 'POST', '/send', { key: customer.api_key,
		    body, headers: { 'Content-Type': 'application/json', ...headers } });
		const good = { to: 'delivered@resend.dev', subject: `strict ${uniq()}`, html: '<p>x</p>' };

		const bad = Buffer.concat([Buffer.from('{"to":"delivered@resend.dev","subject":"a'),
		    Buffer.from([0xff, 0xfe]), Buffer.from('","html":"<p>x</p>"}')]);
		assertRefused(await post(bad), 400, /UTF-8/, 'subject with \\xff\\xfe');
		const overlong = Buffer.concat([Buffer.from('{"to":"delivered@resend.dev","subject":"a'),
		    Buffer.from([0xc0, 0xaf]), Buffer.from('","html":"<p>x</p>"}')]);
		assertRefused(await post(overlong), 400, /UTF-8/, 'overlong UTF-8');
		assertRefused(await post('{"to":"delivered@resend.dev","subject":"a","subject":"b",'
		    + '"html":"<p>x</p>"}'), 400, /repeats/, 'duplicate key');
		assertRefused(await post('{"to":"delivered@resend.dev","subject":"a","html":"<p>x</p>",'
		    + '"headers":{"X":"1","X":"2"}}'), 400, /repeats|unknown/, 'nested duplicate');
		for (const f of ['bcc', 'from', 'reply_to']) {
			assertRefused(await post(JSON.stringify({ ...good, [f]: 'a@example.org' })), 400,
			    new RegExp(`^unknown field: ${f}$`), `unknown field ${f}`);
		}
		assertRefused(await request(stack, 'POST', '/checkout/subscribe', {
		    json: { email: `u-${uniq()}@example.org`, plan: 'gold' } }), 400,
		    /^unknown field: plan$/, 'unknown field on subscribe');
		// lighttpd drops a header with a blank value before FastCGI: through it
		// the request arrives with no key at all, which the program cannot tell
		if (server === 'apache') {
			assertRefused(await post(JSON.stringify(good), { 'Idempotency-Key': ' ' }), 400,
			    /Idempotency-Key/, 'blank Idempotency-Key');
		}
		// padded keys cannot cross a web server (it trims): straight to the socket
		const sock = path.join(stack.stateDir, 'run', 'send.sock');
		for (const k of [' k1', 'k1 ', '\tk1', '']) {
			const r = await fcgiRequest(sock, { REQUEST_METHOD: 'POST', REQUEST_URI: '/send',
			    CONTENT_TYPE: 'application/json', HTTP_AUTHORIZATION: `Bearer ${customer.api_key}`,
			    HTTP_IDEMPOTENCY_KEY: k, REMOTE_ADDR: '127.0.0.1',
			    CONTENT_LENGTH: Buffer.byteLength(JSON.stringify(good)) }, { stdin: JSON.stringify(good) });
			assert.equal(r.status, 400, `Idempotency-Key ${JSON.stringify(k)}: ${r.stdout}`);
		}
		const after4 = await sandboxStats(stack);
		assert.deepEqual(after4, before4, 'no upstream call for a refused request');
		// the strictness leaves well-formed requests alone
		const ok = await post(JSON.stringify({ ...good, subject: 'caf\u00e9 \u{1F600}' }),
		    { 'Idempotency-Key': `ok-${uniq()}` });
		assert.equal(ok.status, 200, ok.text);
	});
}

defineSecurityTests('lighttpd');
defineSecurityTests('apache');
