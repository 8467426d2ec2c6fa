// providers.test.mjs: MAIL_PROVIDER=sendgrid and =postmark through lighttpd and Apache
// against the sandbox's emulations (/sandbox/sendgrid, /sandbox/postmark): the request
// in each API's shape, its refusals mapped to MailKit's answers, and — neither having an
// idempotency key — an unknown outcome never sent twice.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';

import {
	QUICK_UPSTREAM, balance, emailStatus, keyedCustomer, missingPrerequisite, postJson,
	sandboxEmails, sandboxFault, journalKey, skipFile, startStack,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd') || missingPrerequisite('apache');
if (why)
	skipFile(why);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
for (const [provider, server] of [['sendgrid', 'lighttpd'], ['sendgrid', 'apache'],
    ['postmark', 'lighttpd'], ['postmark', 'apache']]) {
	describe(`MAIL_PROVIDER=${provider} through ${server}`, () => {
		let stack, c;
		before(async () => {
			stack = await startStack({ server, env: { ...QUICK_UPSTREAM, MAIL_PROVIDER: provider } });
			c = await keyedCustomer(stack, provider);
		});
		after(async () => { await stack?.stop(); });

		const send = (body, key = randomUUID()) => postJson(stack, '/send', body,
		    { key: c.key, headers: { 'Idempotency-Key': key } });
		const copies = async (subject) =>
		    (await sandboxEmails(stack)).filter((e) => e.subject === subject);

		test(`a message in ${provider}'s shape, cc, bcc, reply_to and tags included`,
		    { timeout: 60_000 }, async () => {
			const key = randomUUID(), subject = `sg ${randomUUID()}`;
			const before = await balance(stack, c);
			const r = await send({ to: ['delivered@resend.dev'], cc: 'cc@example.com',
			    bcc: 'bcc@example.com', reply_to: 'help@mailkit.test',
			    tags: [{ name: 'category', value: 'welcome' }], subject, text: 'hi',
			    html: '<p>hi</p>' }, key);
			assert.equal(r.status, 200, r.text);
			assert.equal(await balance(stack, c), before - 3);
			const got = await copies(subject);
			assert.equal(got.length, 1);
			// SendGrid's 202 has no body: the id is the send's key; Postmark's MessageID
			const sendKey = `mk-send-${journalKey(c.id, key)}`;
			assert.equal(r.json.provider_id, provider === 'sendgrid' ? sendKey : got[0].id);
			assert.deepEqual([got[0].from, got[0].to, got[0].cc, got[0].bcc, got[0].reply_to,
			    got[0].text, got[0].html],
			    ['MailKit <notifications@mailkit.test>', ['delivered@resend.dev'],
			    ['cc@example.com'], ['bcc@example.com'], ['help@mailkit.test'], 'hi',
			    '<p>hi</p>']);
			assert.deepEqual(got[0].tags, [{ name: 'category', value: 'welcome' },
			    { name: 'mailkit_send', value: sendKey }]);
		});

		const faults = [
			{ mode: '422', name: 'a refusal of the email: 400, all credits back', status: 400,
			    net: 0, copies: 0 },
			{ mode: '429', name: 'a 429: queued, delivered once later', status: 202,
			    state: 'queued', later: 'sent', net: 1, copies: 1 },
			{ mode: '500', name: 'a 500: unconfirmed, never resent', status: 202,
			    state: 'unconfirmed', net: 1, copies: 0 },
			{ mode: 'accept500', name: 'accepted but answered 500: unconfirmed, one copy',
			    status: 202, state: 'unconfirmed', net: 1, copies: 1 },
			{ mode: 'drop', name: 'no answer at all: unconfirmed, never resent', status: 202,
			    state: 'unconfirmed', net: 1, copies: 0 },
		];
		for (const f of faults) {
			test(f.name, { timeout: 60_000 }, async () => {
				const subject = `sg fault ${f.mode} ${randomUUID()}`;
				const before = await balance(stack, c);
				await sandboxFault(stack, { target: 'email_send', mode: f.mode, count: 1 });
				const r = await send({ to: 'delivered@resend.dev', subject, text: 'x' });
				assert.equal(r.status, f.status, r.text);
				if (f.state)
					assert.equal(r.json.status, f.state, r.text);
				if (f.later)
					await emailStatus(stack, c, r.json.id, f.later);
				else
					await sleep(3000);	// a retry, if there were one, would come
				if (f.state === 'unconfirmed')
					await emailStatus(stack, c, r.json.id, 'unconfirmed');
				assert.equal(await balance(stack, c), before - f.net);
				assert.equal((await copies(subject)).length, f.copies);
			});
		}
	});
}
