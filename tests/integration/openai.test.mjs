// openai.test.mjs: the sandbox's OpenAI emulation (/sandbox/openai/v1) driven through
// lighttpd by the official npm `openai` SDK: completions with honest usage, streaming,
// max_tokens, OpenAI's errors as the SDK's error classes, and the fault controls.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { getJson, missingPrerequisite, sandboxFault, skipFile, startStack, testPackages }
    from './harness.mjs';

const [{ OpenAI }] = testPackages('openai');
{
	const why = missingPrerequisite('lighttpd');
	if (why)
		skipFile(why);
}

const MODEL = 'gpt-5-mini';
// The sandbox's tokenizer (src/sandbox/README.md): a token is a run of letters, digits
// and non-ASCII bytes, or one other non-space character; a prompt costs 3 per message
// plus 3.
const tokens = (s) => (s.match(/[\p{L}\p{N}\u0080-\uffff]+|[^\s\p{L}\p{N}\u0080-\uffff]/gu)
    ?? []).length;
const promptTokens = (messages) => 3 + messages.reduce((n, m) => n + 3 + tokens(m.content), 0);

let stack, client;
before(async () => {
	stack = await startStack({ server: 'lighttpd' });
	client = new OpenAI({ baseURL: `${stack.sandboxUrl}/openai/v1`, apiKey: 'sk-test',
	    maxRetries: 0 });
});
after(async () => { await stack?.stop(); });

const calls = async () => (await getJson(stack, '/sandbox/admin/stats')).json.calls.openai;

test('a completion answers the last user message with usage that adds up', async () => {
	const messages = [{ role: 'system', content: 'You are terse.' },
	    { role: 'user', content: 'Hello, world! How are you?' }];
	const c = await client.chat.completions.create({ model: MODEL, messages });
	assert.match(c.id, /^chatcmpl-/);
	assert.equal(c.object, 'chat.completion');
	assert.equal(c.model, MODEL);
	assert.ok(Math.abs(c.created - Date.now() / 1000) < 60, `created ${c.created}`);
	assert.equal(c.choices.length, 1);
	assert.equal(c.choices[0].message.role, 'assistant');
	assert.equal(c.choices[0].message.content, 'You said: Hello, world! How are you?');
	assert.equal(c.choices[0].finish_reason, 'stop');
	assert.equal(c.usage.prompt_tokens, promptTokens(messages));
	assert.equal(c.usage.prompt_tokens, 3 + (3 + 4) + (3 + 8));
	assert.equal(c.usage.completion_tokens, tokens(c.choices[0].message.content));
	assert.equal(c.usage.completion_tokens, 3 + 8);
	assert.equal(c.usage.total_tokens, c.usage.prompt_tokens + c.usage.completion_tokens);
	// deterministic: the same request, the same text and counts
	const again = await client.chat.completions.create({ model: MODEL, messages });
	assert.equal(again.choices[0].message.content, c.choices[0].message.content);
	assert.deepEqual(again.usage, c.usage);
	assert.notEqual(again.id, c.id);
});

test('max_tokens and max_completion_tokens cut the reply: finish_reason "length"', async () => {
	const messages = [{ role: 'user', content: 'one two three four five six' }];
	const c = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 4 });
	assert.equal(c.choices[0].message.content, 'You said: one');
	assert.equal(c.choices[0].finish_reason, 'length');
	assert.equal(c.usage.completion_tokens, 4);
	assert.equal(c.usage.total_tokens, promptTokens(messages) + 4);
	const d = await client.chat.completions.create({ model: MODEL, messages,
	    max_completion_tokens: 2 });
	assert.equal(d.choices[0].message.content, 'You said');
	assert.equal(d.choices[0].finish_reason, 'length');
	// a limit the reply fits in is no cut
	const e = await client.chat.completions.create({ model: MODEL, messages, max_tokens: 9 });
	assert.equal(e.choices[0].finish_reason, 'stop');
	assert.equal(e.usage.completion_tokens, 9);
});

test('streaming: chunks in SSE, the finish chunk, the usage chunk, [DONE]', async () => {
	const messages = [{ role: 'user', content: 'Stream me, please.' }];
	const stream = await client.chat.completions.create({ model: MODEL, messages,
	    stream: true, stream_options: { include_usage: true } });
	const chunks = [];
	for await (const chunk of stream)
		chunks.push(chunk);
	assert.ok(chunks.length >= 4, `${chunks.length} chunks`);
	const ids = new Set(chunks.map((ch) => ch.id));
	assert.equal(ids.size, 1);
	assert.match([...ids][0], /^chatcmpl-/);
	for (const ch of chunks)
		assert.equal(ch.object, 'chat.completion.chunk');
	assert.equal(chunks[0].choices[0].delta.role, 'assistant');
	const text = chunks.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
	assert.equal(text, 'You said: Stream me, please.');
	const finish = chunks.filter((ch) => ch.choices[0]?.finish_reason);
	assert.deepEqual(finish.map((ch) => ch.choices[0].finish_reason), ['stop']);
	const last = chunks.at(-1);
	assert.deepEqual(last.choices, []);
	assert.deepEqual(last.usage, { prompt_tokens: promptTokens(messages),
	    completion_tokens: tokens(text), total_tokens: promptTokens(messages) + tokens(text) });
	for (const ch of chunks.slice(0, -1))
		assert.equal(ch.usage, null);
	// without include_usage: no usage chunk; with max_tokens the finish is "length"
	const plain = [];
	for await (const chunk of await client.chat.completions.create({ model: MODEL, messages,
	    stream: true, max_tokens: 3 }))
		plain.push(chunk);
	assert.ok(plain.every((ch) => ch.choices.length === 1 && !('usage' in ch)));
	assert.equal(plain.map((ch) => ch.choices[0].delta.content ?? '').join(''), 'You said:');
	assert.equal(plain.at(-1).choices[0].finish_reason, 'length');
});

test('the raw stream is text/event-stream framed as OpenAI frames it', async () => {
	const r = await fetch(`${stack.sandboxUrl}/openai/v1/chat/completions`, {
		method: 'POST',
		headers: { 'Content-Type': 'application/json', Authorization: 'Bearer sk-test' },
		body: JSON.stringify({ model: MODEL, stream: true,
		    messages: [{ role: 'user', content: 'hi' }] }) });
	assert.equal(r.status, 200);
	assert.match(r.headers.get('content-type'), /^text\/event-stream/);
	const body = await r.text();
	assert.ok(body.endsWith('data: [DONE]\n\n'), body);
	const events = body.split('\n\n').filter((e) => e !== '');
	for (const e of events)
		assert.match(e, /^data: /);
	assert.equal(events.length, 1 + 4 + 1 + 1);	// role; You, said, :, hi; finish; [DONE]
});

test('a missing key is a 401 AuthenticationError in OpenAI\'s shape', async () => {
	const anon = new OpenAI({ baseURL: `${stack.sandboxUrl}/openai/v1`, apiKey: 'sk-x',
	    maxRetries: 0, defaultHeaders: { Authorization: null } });
	await assert.rejects(anon.chat.completions.create({ model: MODEL,
	    messages: [{ role: 'user', content: 'hi' }] }), (e) => {
		assert.ok(e instanceof OpenAI.AuthenticationError, e.constructor.name);
		assert.equal(e.status, 401);
		assert.equal(e.type, 'invalid_request_error');
		return true;
	});
	const r = await fetch(`${stack.sandboxUrl}/openai/v1/models`);
	assert.equal(r.status, 401);
	const j = await r.json();
	assert.deepEqual(Object.keys(j.error).sort(), ['code', 'message', 'param', 'type']);
});

test('bad requests are 400 BadRequestErrors naming the param; an unknown model 404',
    async () => {
	const cases = [
		[{ messages: [{ role: 'user', content: 'hi' }] }, 'model'],
		[{ model: MODEL }, 'messages'],
		[{ model: MODEL, messages: [] }, 'messages'],
		[{ model: MODEL, messages: [{ role: 'wizard', content: 'hi' }] }, 'messages'],
		[{ model: MODEL, messages: [{ role: 'user', content: 'hi' }], max_tokens: 0 },
		    'max_tokens'],
		[{ model: MODEL, messages: [{ role: 'user', content: 'hi' }],
		    stream_options: { include_usage: true } }, 'stream_options'],
	];
	const before = await calls();
	for (const [body, param] of cases)
		await assert.rejects(client.chat.completions.create(body), (e) => {
			assert.ok(e instanceof OpenAI.BadRequestError, `${param}: ${e}`);
			assert.equal(e.status, 400);
			assert.equal(e.type, 'invalid_request_error');
			assert.equal(e.param, param);
			return true;
		});
	await assert.rejects(client.chat.completions.create({ model: 'gpt-nope',
	    messages: [{ role: 'user', content: 'hi' }] }), (e) => {
		assert.ok(e instanceof OpenAI.NotFoundError, String(e));
		assert.equal(e.code, 'model_not_found');
		return true;
	});
	// refused before any fault is consumed: no call counted
	assert.equal(await calls(), before);
});

test('the models list names the models served', async () => {
	const ids = [];
	for await (const m of client.models.list())
		ids.push(m.id);
	assert.deepEqual(ids, ['gpt-5-mini', 'gpt-4o-mini']);
	const m = await client.models.retrieve('gpt-4o-mini');
	assert.equal(m.object, 'model');
	await assert.rejects(client.models.retrieve('gpt-nope'), OpenAI.NotFoundError);
});

test('an injected 429 carries retry-after and the SDK retries it', async () => {
	const retrying = new OpenAI({ baseURL: `${stack.sandboxUrl}/openai/v1`,
	    apiKey: 'sk-test', maxRetries: 2 });
	await sandboxFault(stack, { target: 'openai', mode: '429' });
	const before = await calls();
	const t0 = Date.now();
	const c = await retrying.chat.completions.create({ model: MODEL,
	    messages: [{ role: 'user', content: 'retry me' }] });
	assert.equal(c.choices[0].message.content, 'You said: retry me');
	assert.equal(await calls(), before + 2);
	assert.ok(Date.now() - t0 >= 900, `retried after ${Date.now() - t0} ms`);
	// without retries the 429 is a RateLimitError with the header
	await sandboxFault(stack, { target: 'openai', mode: '429' });
	await assert.rejects(client.chat.completions.create({ model: MODEL,
	    messages: [{ role: 'user', content: 'hi' }] }), (e) => {
		assert.ok(e instanceof OpenAI.RateLimitError, String(e));
		assert.equal(e.headers.get('retry-after'), '1');
		assert.equal(e.code, 'rate_limit_exceeded');
		return true;
	});
});

test('an injected 500 is an InternalServerError; a stall times the client out',
    async () => {
	await sandboxFault(stack, { target: 'openai', mode: '500' });
	await assert.rejects(client.chat.completions.create({ model: MODEL,
	    messages: [{ role: 'user', content: 'hi' }] }), OpenAI.InternalServerError);
	await sandboxFault(stack, { target: 'openai', mode: 'stall', stall_ms: 3000 });
	await assert.rejects(client.chat.completions.create({ model: MODEL,
	    messages: [{ role: 'user', content: 'hi' }] }, { timeout: 500 }),
	    OpenAI.APIConnectionTimeoutError);
});

test('"drop" cuts a stream mid-way: the connection breaks; no finish, no usage, no [DONE]', async () => {
	const body = { model: MODEL, messages: [{ role: 'user', content: 'a b c d e f g h' }],
	    stream: true, stream_options: { include_usage: true } };
	// on the wire: a 200 whose body breaks off before its Content-Length
	await sandboxFault(stack, { target: 'openai', mode: 'drop' });
	const raw = await fetch(`${stack.sandboxUrl}/openai/v1/chat/completions`, { method: 'POST',
	    headers: { 'content-type': 'application/json', authorization: 'Bearer sk-test' },
	    body: JSON.stringify(body) });
	assert.equal(raw.status, 200);
	await assert.rejects(raw.text(), /terminated/, 'the connection breaks mid-body');
	// through the SDK: what came before the cut, and nothing after it
	await sandboxFault(stack, { target: 'openai', mode: 'drop' });
	const chunks = [];
	try {
		for await (const chunk of await client.chat.completions.create(body))
			chunks.push(chunk);
	} catch (e) {
		assert.match(String(e), /terminated|aborted|closed|ECONNRESET/i, String(e));
	}
	const text = chunks.map((ch) => ch.choices[0]?.delta?.content ?? '').join('');
	const full = 'You said: a b c d e f g h';
	assert.ok(text.length > 0 && text.length < full.length && full.startsWith(text), text);
	assert.ok(chunks.every((ch) => ch.choices.length === 1 && !ch.choices[0].finish_reason));
	assert.ok(chunks.every((ch) => ch.usage == null));
});
