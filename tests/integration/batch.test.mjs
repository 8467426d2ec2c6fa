// batch.test.mjs: POST /emails/batch through lighttpd and Apache with the Resend
// provider (the sandbox): up to 100 messages, every one validated before anything is
// charged, the whole batch's credits (one per recipient) reserved all or nothing under
// the request's Idempotency-Key, one id per message, and each message then answering
// for itself as POST /send does (sent, queued and delivered later, or refused by the
// provider with its own credits given back).
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import {
	QUICK_UPSTREAM, balance, emailStatus, keyedCustomer, missingPrerequisite, postJson,
	sandboxEmails, sandboxFault, setBalance, skipFile, startStack,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd') || missingPrerequisite('apache');
if (why)
	skipFile(why);

// Three messages of 1, 3 and 2 recipients: 6 credits.
const mixed = (subject) => [
	{ to: 'delivered@resend.dev', subject: `${subject} a`, html: '<p>a</p>' },
	{ to: ['delivered@resend.dev'], cc: 'cc@example.com', bcc: ['b1@example.com'],
	    reply_to: 'help@mailkit.test', tags: [{ name: 'kind', value: 'receipt' }],
	    subject: `${subject} b`, text: 'b' },
	{ to: ['one@example.com', 'two@example.com'], subject: `${subject} c`, text: 'c' },
];

for (const server of ['lighttpd', 'apache']) {
	describe(`batch send through ${server}`, () => {
		let stack, c;
		before(async () => {
			// a batch's upstream calls share one request deadline (3/4 of it: 1.5 s)
			stack = await startStack({ server, env: { ...QUICK_UPSTREAM,
			    REQUEST_TIMEOUT_MS: 2000 } });
			c = await keyedCustomer(stack, 'batch');
		});
		after(async () => { await stack?.stop(); });

		const batch = (body, key = randomUUID()) => postJson(stack, '/emails/batch', body,
		    { key: c.key, headers: { 'Idempotency-Key': key } });
		const outbox = async (subject) => (await sandboxEmails(stack))
		    .filter((e) => e.subject.startsWith(subject));

		test('a batch of mixed messages: one id each, all sent, charged the total once',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 20);
			const subject = `mixed ${randomUUID()}`, key = randomUUID();
			const r = await batch(mixed(subject), key);
			assert.equal(r.status, 200, r.text);
			assert.equal(r.json.data.length, 3);
			assert.deepEqual(r.json.data.map((m) => m.status), ['sent', 'sent', 'sent']);
			assert.equal(new Set(r.json.data.map((m) => m.id)).size, 3);
			assert.equal(await balance(stack, c), 14);
			const sent = await outbox(subject);
			assert.equal(sent.length, 3);
			// each message is an email of its own, with its own recipients' debit
			const amounts = [];
			for (const [i, m] of r.json.data.entries()) {
				const e = await emailStatus(stack, c, m.id, 'sent');
				assert.equal(e.subject, `${subject} ${'abc'[i]}`);
				assert.equal(e.provider_id, m.provider_id);
				amounts.push(e.ledger.map((l) => `${l.type} ${l.amount}`).join());
			}
			assert.deepEqual(amounts, ['debit 1', 'debit 3', 'debit 2']);
			const b = await emailStatus(stack, c, r.json.data[1].id, 'sent');
			assert.deepEqual([b.cc, b.bcc, b.reply_to], [['cc@example.com'], ['b1@example.com'],
			    ['help@mailkit.test']]);
			// the same key again: the same answer, nothing sent or charged again
			const again = await batch(mixed(subject), key);
			assert.equal(again.status, 200, again.text);
			assert.deepEqual(again.json, r.json);
			assert.equal(await balance(stack, c), 14);
			assert.equal((await outbox(subject)).length, 3);
			// the same key with another batch: 409, nothing sent
			const other = mixed(subject);
			other[2].text = 'changed';
			const conflict = await batch(other, key);
			assert.equal(conflict.status, 409, conflict.text);
			const shorter = await batch(mixed(subject).slice(0, 2), key);
			assert.equal(shorter.status, 409, shorter.text);
			assert.equal(await balance(stack, c), 14);
			assert.equal((await outbox(subject)).length, 3);
		});

		test('credit for only part of the batch: 402, nothing sent, nothing taken',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 5);
			const subject = `short ${randomUUID()}`, key = randomUUID();
			const r = await batch(mixed(subject), key);
			assert.equal(r.status, 402, r.text);
			assert.match(r.json.error, /No email credits remaining/);
			assert.equal(await balance(stack, c), 5);
			assert.equal((await outbox(subject)).length, 0);
			// replayed as it was
			const again = await batch(mixed(subject), key);
			assert.equal(again.status, 402, again.text);
			assert.equal(await balance(stack, c), 5);
			// exactly enough for the whole batch (a new key): sent
			await setBalance(stack, c, 6);
			const ok = await batch(mixed(subject));
			assert.equal(ok.status, 200, ok.text);
			assert.equal(await balance(stack, c), 0);
			assert.equal((await outbox(subject)).length, 3);
		});

		test('a bad message is named by its index and nothing is charged',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 20);
			const subject = `invalid ${randomUUID()}`;
			const bad = [
				[(b) => { b[2].to = 'not an address'; }, /^message 2: to is not a valid/],
				[(b) => { delete b[1].subject; }, /^message 1: subject/],
				[(b) => { b[0].html = undefined; b[0].text = undefined; },
				    /^message 0: html or text is required/],
				[(b) => { b[1].cc = Array.from({ length: 49 }, (_, i) => `c${i}@example.com`); },
				    /^message 1: to, cc and bcc list more than 50/],
				[(b) => { b[2].from = 'x@evil.test'; }, /^message 2: unknown field: from/],
				[(b) => { b[1] = 'hello'; }, /^message 1: must be a JSON object/],
			];
			for (const [spoil, message] of bad) {
				const body = mixed(subject);
				spoil(body);
				const r = await batch(body);
				assert.equal(r.status, 400, `${message}: ${r.text}`);
				assert.match(r.json.error, message);
			}
			for (const body of [[], Array.from({ length: 101 }, () => mixed(subject)[0]),
			    { to: 'delivered@resend.dev', subject, text: 'x' }]) {
				const r = await batch(body);
				assert.equal(r.status, 400, r.text);
			}
			assert.equal(await balance(stack, c), 20);
			assert.equal((await outbox(subject)).length, 0);
		});

		test('a provider refusal of one message refunds only that message',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 20);
			const subject = `refused ${randomUUID()}`;
			const body = mixed(subject);
			// the first send of the batch (message 0 is the 1-recipient one; make it 3)
			body[0].cc = ['x@example.com', 'y@example.com'];
			await sandboxFault(stack, { target: 'email_send', mode: '422', count: 1 });
			const r = await batch(body);
			assert.equal(r.status, 200, r.text);
			assert.deepEqual(r.json.data.map((m) => m.status), ['failed', 'sent', 'sent']);
			assert.ok(r.json.data[0].error, r.text);
			assert.equal(await balance(stack, c), 15);
			const e = await emailStatus(stack, c, r.json.data[0].id, 'failed');
			assert.deepEqual(e.ledger.map((l) => [l.type, l.amount]),
			    [['debit', '3'], ['refund', '3']]);
			assert.equal((await outbox(subject)).length, 2);
		});

		test('a provider fault queues one message (202); it is delivered later',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 20);
			const subject = `queued ${randomUUID()}`;
			// one retry: two 500s make message 0's outcome unknown, a third is retried past
			await sandboxFault(stack, { target: 'email_send', mode: '500', count: 3 });
			const r = await batch(mixed(subject));
			assert.equal(r.status, 202, r.text);
			assert.deepEqual(r.json.data.map((m) => m.status), ['queued', 'sent', 'sent']);
			assert.equal(await balance(stack, c), 14);
			const e = await emailStatus(stack, c, r.json.data[0].id, 'sent', 30_000);
			assert.equal(e.subject, `${subject} a`);
			assert.equal((await outbox(subject)).length, 3);
			assert.equal(await balance(stack, c), 14);
		});

		test('a batch that outlasts its time queues the rest (202); all are delivered',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 20);
			const subject = `slow ${randomUUID()}`;
			// message 0's send stalls until its attempt times out (1.5 s): the time is spent
			await sandboxFault(stack, { target: 'email_send', mode: 'stall', count: 1,
			    stall_ms: 2500 });
			const r = await batch(mixed(subject));
			assert.equal(r.status, 202, r.text);
			assert.deepEqual(r.json.data.map((m) => m.status), ['queued', 'queued', 'queued']);
			assert.equal(await balance(stack, c), 14);
			for (const m of r.json.data)
				await emailStatus(stack, c, m.id, 'sent', 30_000);
			assert.equal((await outbox(subject)).length, 3);
			assert.equal(await balance(stack, c), 14);
		});
	});
}
