// messages.test.mjs: complete messages through lighttpd and Apache with the Resend
// provider (the sandbox): cc, bcc, reply_to and tags validated like `to`, passed to
// Resend in its own shape, kept in the journal so a background delivery sends the same
// message, and echoed by GET /emails/{id}; one credit per recipient, all or nothing.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import {
	QUICK_UPSTREAM, admin, balance, emailStatus, keyedCustomer, missingPrerequisite, postJson,
	sandboxEmails, sandboxFault, setBalance, skipFile, startStack,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd') || missingPrerequisite('apache');
if (why)
	skipFile(why);

const TAGS = [{ name: 'category', value: 'receipt' }, { name: 'plan_id', value: 'pro-2' }];

const addresses = (n, domain) => Array.from({ length: n }, (_, i) => `r${i}@${domain}`);

for (const server of ['lighttpd', 'apache']) {
	describe(`complete messages through ${server}`, () => {
		let stack, c;
		before(async () => {
			stack = await startStack({ server, env: QUICK_UPSTREAM });
			c = await keyedCustomer(stack, 'messages');
		});
		after(async () => { await stack?.stop(); });

		const send = (body, key = randomUUID()) => postJson(stack, '/send', body,
		    { key: c.key, headers: { 'Idempotency-Key': key } });

		test('cc, bcc, reply_to and tags reach Resend in its shape and are echoed',
		    { timeout: 60_000 }, async () => {
			const subject = `complete ${randomUUID()}`;
			const r = await send({ to: 'delivered@resend.dev', cc: ['cc1@example.com'],
			    bcc: 'bcc1@example.com', reply_to: ['help@mailkit.test'], tags: TAGS, subject,
			    text: 'hi' });
			assert.equal(r.status, 200, r.text);
			const sent = (await sandboxEmails(stack)).filter((e) => e.subject === subject);
			assert.equal(sent.length, 1);
			assert.deepEqual([sent[0].to, sent[0].cc, sent[0].bcc, sent[0].reply_to,
			    sent[0].tags], [['delivered@resend.dev'], ['cc1@example.com'],
			    ['bcc1@example.com'], ['help@mailkit.test'], TAGS]);
			const e = await emailStatus(stack, c, r.json.id, 'sent');
			assert.deepEqual([e.cc, e.bcc, e.reply_to, e.tags],
			    [['cc1@example.com'], ['bcc1@example.com'], ['help@mailkit.test'], TAGS]);
		});

		test('a queued send is delivered later with the same cc, bcc, reply_to and tags',
		    { timeout: 60_000 }, async () => {
			const subject = `queued ${randomUUID()}`;
			// one retry: two 500s make the outcome unknown (queued), a third is retried past
			await sandboxFault(stack, { target: 'email_send', mode: '500', count: 3 });
			const r = await send({ to: 'delivered@resend.dev', cc: 'cc2@example.com',
			    bcc: ['bcc2@example.com', 'bcc3@example.com'], reply_to: 'help@mailkit.test',
			    tags: TAGS, subject, html: '<p>hi</p>' });
			assert.equal(r.status, 202, r.text);
			await emailStatus(stack, c, r.json.id, 'sent', 30_000);
			const sent = (await sandboxEmails(stack)).filter((e) => e.subject === subject);
			assert.equal(sent.length, 1);
			assert.deepEqual([sent[0].cc, sent[0].bcc, sent[0].reply_to, sent[0].tags],
			    [['cc2@example.com'], ['bcc2@example.com', 'bcc3@example.com'],
			    ['help@mailkit.test'], TAGS]);
		});

		test('cc, bcc, reply_to and tags are validated before anything is charged',
		    { timeout: 60_000 }, async () => {
			const before = await balance(stack, c);
			const bad = [
				[{ cc: 'carol@example.com\r\nBcc: x@evil.test' }, /cc is not a valid/],
				[{ bcc: ['ok@example.com', 'not an address'] }, /bcc is not a valid/],
				[{ reply_to: 'a@b.c\u0000' }, /reply_to/],
				[{ cc: addresses(25, 'cc.example'), bcc: addresses(25, 'bcc.example') },
				    /more than 50 addresses together/],
				[{ to: addresses(50, 'to.example'), cc: 'one-more@example.com' },
				    /more than 50 addresses together/],
				[{ tags: [{ name: 'bad name', value: 'x' }] }, /tags/],
				[{ tags: [{ name: 'a', value: 'b', extra: 'c' }] }, /tags/],
				[{ tags: { name: 'a', value: 'b' } }, /tags/],
				[{ tags: Array.from({ length: 21 }, (_, i) => ({ name: `t${i}`, value: 'v' })) },
				    /more than 20 tags/],
				[{ from: 'someone@else.test' }, /unknown field: from/],
			];
			for (const [extra, message] of bad) {
				const r = await send({ to: 'delivered@resend.dev', subject: 'bad', text: 'x',
				    ...extra });
				assert.equal(r.status, 400, `${JSON.stringify(extra).slice(0, 80)}: ${r.text}`);
				assert.match(r.json.error, message);
			}
			assert.equal(await balance(stack, c), before);
			// 50 in all is the limit, not past it: 50 credits
			const ok = await send({ to: addresses(40, 'to.example'),
			    cc: addresses(5, 'cc.example'), bcc: addresses(5, 'bcc.example'),
			    subject: 'fifty', text: 'x' });
			assert.equal(ok.status, 200, ok.text);
			assert.equal(await balance(stack, c), before - 50);
		});

		test('N recipients cost N credits, taken in one debit', { timeout: 60_000 }, async () => {
			const before = await balance(stack, c);
			const r = await send({ to: 'delivered@resend.dev', cc: 'cc@example.com',
			    bcc: ['b1@example.com', 'b2@example.com'], subject: 'four', text: 'x' });
			assert.equal(r.status, 200, r.text);
			assert.equal(await balance(stack, c), before - 4);
			const e = await emailStatus(stack, c, r.json.id, 'sent');
			assert.deepEqual(e.ledger.map((l) => [l.type, l.amount]), [['debit', '4']]);
			// reconcile counts credits, not ledger entries: a customer of its own
			const d = await keyedCustomer(stack, 'recon-credits');
			assert.equal((await postJson(stack, '/send', { to: 'delivered@resend.dev',
			    cc: 'cc@example.com', subject: 'two', text: 'x' }, { key: d.key,
			    headers: { 'Idempotency-Key': randomUUID() } })).status, 200);
			const rec = await admin(stack, ['reconcile', '--min-age', '0']);
			const row = rec.stdout.split('\n').find((l) => l.startsWith(d.id));
			assert.ok(row, rec.stdout);
			// customer sent failed pending debits refunds credits repaired verdict
			assert.deepEqual(row.split(/\s+/).slice(1, 8), ['1', '0', '0', '1', '0', '2', '0'],
			    row);
			assert.match(rec.stdout, /credits? debited \(net\)/);
		});

		test('a refusal gives all of them back', { timeout: 60_000 }, async () => {
			const before = await balance(stack, c);
			await sandboxFault(stack, { target: 'email_send', mode: '422', count: 1 });
			const r = await send({ to: 'delivered@resend.dev', cc: 'cc@example.com',
			    bcc: 'b1@example.com', subject: 'refused', text: 'x' });
			assert.equal(r.status, 400, r.text);
			assert.equal(await balance(stack, c), before);
		});

		test('not enough credit for every recipient: 402, nothing sent, nothing taken',
		    { timeout: 60_000 }, async () => {
			await setBalance(stack, c, 2);
			const subject = `short ${randomUUID()}`;
			const r = await send({ to: 'delivered@resend.dev', cc: 'cc@example.com',
			    bcc: 'b1@example.com', subject, text: 'x' });
			assert.equal(r.status, 402, r.text);
			assert.equal(await balance(stack, c), 2);
			assert.equal((await sandboxEmails(stack)).filter((m) => m.subject === subject)
			    .length, 0);
			// exactly enough: sent
			const ok = await send({ to: 'delivered@resend.dev', cc: 'cc@example.com',
			    subject, text: 'x' });
			assert.equal(ok.status, 200, ok.text);
			assert.equal(await balance(stack, c), 0);
		});
	});
}
