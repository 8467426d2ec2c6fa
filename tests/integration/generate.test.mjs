// generate.test.mjs: POST /api/generate (generate.fcgi), billed in tokens: holds that
// stop at zero, Idempotency-Key replays, nothing billed when the model fails, and
// (with the sandbox's events ingest and meter) usage billed exactly once.
// generate.fcgi runs on its own socket beside a sandbox stack (startGenerate), and
// is spoken to in FastCGI, as the web server would.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import path from 'node:path';

import { SRCDIR, getJson, keyedCustomer, sandboxFault, clearSandboxFaults, setBalance,
    balance, journalKey, skipFile, startStack } from './harness.mjs';
import { holdOf, httpBridge, missingGenerate, startGenerate } from './generate-harness.mjs';

{
	const why = missingGenerate();
	if (why)
		skipFile(why);
}

let stack, gen;
before(async () => {
	stack = await startStack({ server: 'lighttpd' });
	gen = startGenerate(stack);
	await gen.ready();
});
after(async () => {
	if (gen)
		await gen.kill();
	await stack?.stop();
});

const openaiCalls = async () => (await getJson(stack, '/sandbox/admin/stats')).json.calls.openai;
const generate = (customer, json, headers) => gen.call('POST', '/api/generate',
    { json, key: customer.key, headers });

test('a completion is answered with its text, its tokens and its billing', async () => {
	const c = await keyedCustomer(stack, 'gen-basic');
	await setBalance(stack, c, 1000);
	const r = await generate(c, { prompt: 'Hello there, model!', max_tokens: 50 });
	assert.equal(r.status, 200, r.text);
	assert.match(r.json.id, /^gen_[0-9a-f]{32}$/);
	assert.equal(r.json.text, 'You said: Hello there, model!');
	assert.equal(r.json.model, 'gpt-5-mini');
	assert.equal(r.json.usage.total_tokens, r.json.usage.prompt_tokens + r.json.usage.completion_tokens);
	assert.equal(r.json.tokens_used, r.json.usage.total_tokens);
	assert.ok(r.json.tokens_used > 0);
	assert.equal(r.json.billing.hold, holdOf('Hello there, model!', 50));
	assert.ok(r.json.tokens_used <= r.json.billing.hold, 'the hold bounds the cost');
	assert.match(r.json.billing.event_id, /^mk-gen-[0-9a-f]{32}$/);
	const g = await gen.call('GET', `/api/generate/${r.json.id}`, { key: c.key });
	assert.equal(g.status, 200, g.text);
	assert.equal(g.json.text, r.json.text);
	assert.equal(g.json.tokens_used, r.json.tokens_used);
	// another customer cannot see it
	const other = await keyedCustomer(stack, 'gen-other');
	assert.equal((await gen.call('GET', `/api/generate/${r.json.id}`, { key: other.key })).status, 404);
});

test('bad input is a 400 before any upstream call', async () => {
	const c = await keyedCustomer(stack, 'gen-bad');
	const before = await openaiCalls();
	for (const body of [{}, { prompt: '' }, { prompt: 5 }, { prompt: 'x', max_tokens: 0 },
	    { prompt: 'x', max_tokens: 1.5 }, { prompt: 'x', max_tokens: 'ten' },
	    { prompt: 'x', max_tokens: 10_000_000 }, { prompt: 'x', tools: [] },
	    { prompt: 'x'.repeat(64 * 1024 + 1) }]) {
		const r = await generate(c, body);
		assert.equal(r.status, 400, `${JSON.stringify(body).slice(0, 60)}: ${r.text}`);
		assert.equal(typeof r.json.error, 'string');
	}
	assert.equal(await openaiCalls(), before);
	assert.equal((await gen.call('POST', '/api/generate', { json: { prompt: 'x' } })).status, 401);
});

test('Starter at zero gets 402, and a hold the balance cannot cover is refused', async () => {
	const c = await keyedCustomer(stack, 'gen-zero');
	await setBalance(stack, c, 0);
	const before = await openaiCalls();
	let r = await generate(c, { prompt: 'hi', max_tokens: 10 });
	assert.equal(r.status, 402, r.text);
	assert.match(r.json.error, /Not enough tokens/);
	await setBalance(stack, c, holdOf('hi', 10) - 1);
	r = await generate(c, { prompt: 'hi', max_tokens: 10 });
	assert.equal(r.status, 402, r.text);
	assert.equal(await openaiCalls(), before, 'no model call for a refused hold');
	await setBalance(stack, c, holdOf('hi', 10));
	r = await generate(c, { prompt: 'hi', max_tokens: 10 });
	assert.equal(r.status, 200, r.text);
	// its usage now counts until the meter deducts it: the next one is refused
	r = await generate(c, { prompt: 'hi', max_tokens: 10 });
	assert.equal(r.status, 402, r.text);
});

test('50 concurrent requests at the edge of zero never overspend', async () => {
	const c = await keyedCustomer(stack, 'gen-race');
	const prompt = 'race to the bottom';
	const hold = holdOf(prompt, 40);
	const bal = hold * 7 + hold / 2 | 0;	// room for 7 holds, not 8
	await setBalance(stack, c, bal);
	// every model call takes 300 ms: the requests overlap, holding at once
	await sandboxFault(stack, { target: 'openai', mode: 'stall', count: 50, stall_ms: 300 });
	const rs = await Promise.all(Array.from({ length: 50 },
	    () => generate(c, { prompt, max_tokens: 40 })));
	await clearSandboxFaults(stack);
	const ok = rs.filter((r) => r.status === 200);
	assert.deepEqual(rs.filter((r) => r.status !== 200 && r.status !== 402).map((r) => r.text), []);
	// the 7 holds that fit at once pass; one settling to its real count (below
	// its hold) may free room for a later one
	assert.ok(ok.length >= 7, `admitted ${ok.length}`);
	const used = ok.reduce((n, r) => n + r.json.tokens_used, 0);
	assert.ok(used <= bal, `used ${used} > balance ${bal}`);
	assert.equal(new Set(ok.map((r) => r.json.id)).size, ok.length);
	// no hold is left behind: what is left admits exactly what it covers
	const next = await generate(c, { prompt, max_tokens: 40 });
	assert.equal(next.status, bal - used >= hold ? 200 : 402, next.text);
});

test('Idempotency-Key: a retry replays the answer, a different request is a 409', async () => {
	const c = await keyedCustomer(stack, 'gen-idem');
	await setBalance(stack, c, 1000);
	const key = `idem-${randomUUID()}`;
	const before = await openaiCalls();
	const [a, b] = await Promise.all([
	    generate(c, { prompt: 'once only', max_tokens: 20 }, { 'Idempotency-Key': key }),
	    generate(c, { prompt: 'once only', max_tokens: 20 }, { 'Idempotency-Key': key })]);
	assert.equal(a.status, 200, a.text);
	assert.equal(b.status, 200, b.text);
	assert.equal(a.json.id, b.json.id);
	const c3 = await generate(c, { prompt: 'once only', max_tokens: 20 }, { 'Idempotency-Key': key });
	assert.equal(c3.json.id, a.json.id);
	assert.equal(c3.json.text, a.json.text);
	assert.equal(c3.json.tokens_used, a.json.tokens_used);
	assert.equal(await openaiCalls(), before + 1, 'the model was asked once');
	const d = await generate(c, { prompt: 'something else', max_tokens: 20 }, { 'Idempotency-Key': key });
	assert.equal(d.status, 409, d.text);
	const e = await generate(c, { prompt: 'once only', max_tokens: 21 }, { 'Idempotency-Key': key });
	assert.equal(e.status, 409, e.text);
	// the event id is derived from customer + key, as /send's keys are
	assert.equal(a.json.billing.event_id, `mk-gen-${journalKey(c.id, key)}`);
});

test('a model failure bills nothing and releases the hold', async () => {
	const c = await keyedCustomer(stack, 'gen-fail');
	const prompt = 'will this fail';
	await setBalance(stack, c, holdOf(prompt, 30));
	await sandboxFault(stack, { target: 'openai', mode: '500', count: 10 });
	try {
		const r = await generate(c, { prompt, max_tokens: 30 });
		assert.equal(r.status, 502, r.text);
		assert.match(r.json.error, /nothing was charged/);
	} finally {
		await clearSandboxFaults(stack);
	}
	// the hold is gone: the whole balance admits the same request again
	const r = await generate(c, { prompt, max_tokens: 30 });
	assert.equal(r.status, 200, r.text);
	const key = `fail-${randomUUID()}`;
	await setBalance(stack, c, 1000);
	await sandboxFault(stack, { target: 'openai', mode: '429', count: 10 });
	try {
		const f = await generate(c, { prompt, max_tokens: 30 }, { 'Idempotency-Key': key });
		assert.equal(f.status, 503, f.text);
	} finally {
		await clearSandboxFaults(stack);
	}
	// a retry with the same key after a failure is asked again
	const g = await generate(c, { prompt, max_tokens: 30 }, { 'Idempotency-Key': key });
	assert.equal(g.status, 200, g.text);
	assert.equal(await balance(stack, c), 1000, 'nothing billed by the ledger directly');
});

test('POST /v1/chat/completions: the official openai SDK with a MailKit key, billed the same', async (t) => {
	let OpenAI;
	try {
		OpenAI = createRequire(path.join(SRCDIR, 'tests', 'package.json'))('openai').OpenAI;
	} catch {
		if (process.env.MAILKIT_REQUIRE_ALL_TESTS === '1')
			throw new Error('node_modules missing (npm ci --prefix tests)');
		t.skip('node_modules missing');
		return;
	}
	const bridge = await httpBridge(gen);
	try {
		const c = await keyedCustomer(stack, 'gen-sdk');
		await setBalance(stack, c, 1000);
		const client = new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: c.key, maxRetries: 0 });
		const messages = [{ role: 'system', content: 'Be terse.' },
		    { role: 'user', content: 'Hello from the SDK' }];
		const r = await client.chat.completions.create({ model: 'gpt-5-mini', messages,
		    max_tokens: 30 });
		assert.equal(r.object, 'chat.completion');
		assert.match(r.id, /^chatcmpl-[0-9a-f]{32}$/);
		assert.equal(r.choices[0].message.content, 'You said: Hello from the SDK');
		assert.equal(r.choices[0].finish_reason, 'stop');
		assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
		// the same request, billed as /api/generate: its hold covered both messages
		const g = await gen.call('GET', `/api/generate/gen_${r.id.slice(9)}`, { key: c.key });
		assert.equal(g.status, 200, g.text);
		assert.equal(g.json.tokens_used, r.usage.total_tokens);
		assert.equal(g.json.billing.hold, Buffer.byteLength('Be terse.Hello from the SDK') +
		    3 * 8 + 30);
		// OpenAI's error shape: the SDK's error classes
		await setBalance(stack, c, 0);
		await assert.rejects(client.chat.completions.create({ model: 'gpt-5-mini', messages }),
		    (e) => e.status === 402 && e.error?.type === 'insufficient_quota');
		await assert.rejects(client.chat.completions.create({ model: 'gpt-5-mini', messages,
		    stream: true }), (e) => e instanceof OpenAI.BadRequestError);
		await assert.rejects(client.chat.completions.create({ model: 'gpt-5-mini',
		    messages: [{ role: 'tool', content: 'x' }] }), (e) => e instanceof OpenAI.BadRequestError);
		await assert.rejects(new OpenAI({ baseURL: `${bridge.url}/v1`, apiKey: 'mk_wrong',
		    maxRetries: 0 }).chat.completions.create({ model: 'gpt-5-mini', messages }),
		    (e) => e instanceof OpenAI.AuthenticationError);
	} finally {
		await bridge.close();
	}
});
