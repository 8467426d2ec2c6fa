// mounted.mjs: every route of MailKit through a web server that mounts it
// under a path prefix (the snippets for the system's Apache and lighttpd,
// systemd socket activation, mod_fcgid's .htaccess), against the sandbox
// of a stack from startStack().  `front()` is { baseUrl } of the server
// under test, e.g. http://127.0.0.1:18450/mailkit; `stack()` the stack
// whose sandbox plays Dodo and Resend.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import {
	getJson, payCheckout, postJson, request, webhookHeaders, randomSecret,
} from './harness.mjs';

function assertJson(res, status, what) {
	const ctx = `${what}: got ${res.status} ${res.headers.get('content-type')} ${res.text.slice(0, 300)}`;
	assert.equal(res.status, status, ctx);
	assert.match(res.headers.get('content-type') || '', /^application\/json\b/, ctx);
	assert.ok(res.json && typeof res.json === 'object', ctx);
	if (status >= 400)
		assert.equal(typeof res.json.error, 'string', ctx);
}

/*
 * Define the tests with `it` (stackTest's kind): the page, subscribe, the
 * hosted checkout and its return with the API key, credits, the ledger,
 * top-up, send, emails, a signed and a forged webhook, unknown routes, and
 * (with `stopProgram`, which makes one program unreachable and returns a
 * function that undoes it) the server's own JSON error for a dead program.
 */
export function defineMountedRoutes(it, front, stack, { stopProgram } = {}) {
	let key, customer, emailId;

	it('GET <prefix>/ serves the page, which calls the API with relative URLs', async () => {
		const r = await request(front(), 'GET', '/');
		assert.equal(r.status, 200, r.text.slice(0, 300));
		assert.match(r.headers.get('content-type') || '', /^text\/html/);
		assert.match(r.text, /<title>/);
		assert.doesNotMatch(r.text, /fetch\('\//, 'no absolute fetch in the page');
	});

	it('subscribe → checkout → return through the prefix gives an API key', async () => {
		const email = `mounted-${randomUUID().slice(0, 8)}@example.org`;
		const sub = await postJson(front(), '/checkout/subscribe', { email, name: 'Mounted' });
		assertJson(sub, 200, 'subscribe');
		const back = await payCheckout(stack(), sub.json.checkout_url);
		const ret = await getJson(front(), `/checkout/return${back.search}`,
		    { key: sub.json.claim_token });
		assertJson(ret, 200, 'return');
		assert.match(ret.json.api_key, /^mk_/);
		key = ret.json.api_key;
		customer = ret.json.customer_id;
	});

	it('Authorization reaches the programs: credits with a key 200, without 401', async () => {
		const none = await getJson(front(), '/credits/me');
		assertJson(none, 401, 'credits without key');
		const r = await getJson(front(), '/credits/me', { key });
		assertJson(r, 200, 'credits');
		assert.equal(r.json.customer_id, customer);
		assert.equal(String(r.json.balance), '5000');
		const ledger = await getJson(front(), '/credits/me/ledger?limit=5', { key });
		assertJson(ledger, 200, 'ledger');
		assert.ok(Array.isArray(ledger.json.items));
	});

	it('send, then the email by id and in the list', async () => {
		const subject = `mounted ${randomUUID().slice(0, 8)}`;
		const r = await postJson(front(), '/send', { to: 'delivered@resend.dev', subject,
		    text: 'hello' }, { key, headers: { 'Idempotency-Key': randomUUID() } });
		assertJson(r, 200, 'send');
		assert.equal(r.json.status, 'sent');
		emailId = r.json.id;
		const one = await getJson(front(), `/emails/${emailId}`, { key });
		assertJson(one, 200, 'email');
		assert.equal(one.json.subject, subject);
		const list = await getJson(front(), '/emails?limit=5', { key });
		assertJson(list, 200, 'emails');
		assert.ok(list.json.data.some((e) => e.id === emailId));
		const bal = await getJson(front(), '/credits/me', { key });
		assert.equal(String(bal.json.balance), '4999');
	});

	it('top-up opens a checkout', async () => {
		const r = await postJson(front(), '/checkout/topup', {}, { key });
		assertJson(r, 200, 'topup');
		assert.equal(typeof r.json.checkout_url, 'string');
	});

	it('a signed webhook arrives byte for byte (200); a forged one is 401', async () => {
		const body = JSON.stringify({ business_id: 'bus_test', type: 'credit.deducted',
		    timestamp: new Date().toISOString(), data: { customer_id: customer } });
		const ok = await request(front(), 'POST', '/webhooks/dodo',
		    { body, headers: webhookHeaders(stack(), body) });
		assertJson(ok, 200, 'webhook');
		const bad = await request(front(), 'POST', '/webhooks/dodo',
		    { body, headers: webhookHeaders(stack(), body, { secret: randomSecret() }) });
		assertJson(bad, 401, 'forged webhook');
	});

	it('the programs see their own paths: unknown route and method in JSON', async () => {
		assertJson(await getJson(front(), '/send/nothing-here', { key }), 404, 'unknown path');
		assertJson(await request(front(), 'DELETE', '/credits/me', { key }), 405, 'wrong method');
	});

	if (stopProgram) {
		it('a program that is not running: the server answers in JSON', async () => {
			const restore = await stopProgram('emails');
			try {
				const r = await getJson(front(), '/emails?limit=1', { key });
				assert.ok([502, 503].includes(r.status), `${r.status} ${r.text.slice(0, 200)}`);
				assertJson(r, r.status, 'dead program');
			} finally {
				await restore();
			}
			// lighttpd keeps a failed backend out of use for a second
			let back;
			for (let i = 0; i < 50; i++) {
				back = await getJson(front(), '/emails?limit=1', { key });
				if (back.status === 200)
					break;
				await new Promise((r) => setTimeout(r, 100));
			}
			assertJson(back, 200, 'back');
		});
	}
}
