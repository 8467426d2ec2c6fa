// sendgrid.test.mjs: MAIL_PROVIDER=sendgrid through lighttpd and Apache against the
// sandbox's SendGrid v3 emulation (/sandbox/sendgrid): the request in SendGrid's shape,
// its refusals mapped to MailKit's answers, and — SendGrid having no idempotency key —
// an unknown outcome never sent twice.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';

import {
	balance, emailStatus, lastApiKey, missingPrerequisite, postJson, sandboxEmails,
	sandboxFault, skipFile, startStack, subscribeCustomer,
} from './harness.mjs';

const why = missingPrerequisite('lighttpd') || missingPrerequisite('apache');
if (why)
	skipFile(why);

const ENV = { MAIL_PROVIDER: 'sendgrid', UPSTREAM_TIMEOUT_MS: 1500,
    UPSTREAM_CONNECT_TIMEOUT_MS: 1000, UPSTREAM_MAX_RETRIES: 1 };
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const refOf = (customer, key) => createHash('sha256')
    .update(Buffer.concat([Buffer.from(customer), Buffer.from([0]), Buffer.from(key)]))
    .digest('hex');

for (const server of ['lighttpd', 'apache']) {
	describe(`MAIL_PROVIDER=sendgrid through ${server}`, () => {
		let stack, c;
		before(async () => {
			stack = await startStack({ server, env: ENV });
			const id = await subscribeCustomer(stack, {
			    email: `sg-${randomUUID().slice(0, 8)}@example.com`, name: 'SendGrid Test' });
			c = { id, key: lastApiKey[id] };
		});
		after(async () => { await stack?.stop(); });

		const send = (body, key = randomUUID()) => postJson(stack, '/send', body,
		    { key: c.key, headers: { 'Idempotency-Key': key } });
		const copies = async (subject) =>
		    (await sandboxEmails(stack)).filter((e) => e.subject === subject);

		test('a message in SendGrid\'s shape, cc, bcc, reply_to and tags included',
		    { timeout: 60_000 }, async () => {
			const key = randomUUID(), subject = `sg ${randomUUID()}`;
			const before = await balance(stack, c);
			const r = await send({ to: ['delivered@resend.dev'], cc: 'cc@example.com',
			    bcc: 'bcc@example.com', reply_to: 'help@mailkit.test',
			    tags: [{ name: 'category', value: 'welcome' }], subject, text: 'hi',
			    html: '<p>hi</p>' }, key);
			assert.equal(r.status, 200, r.text);
			assert.equal(r.json.provider_id, `mk-send-${refOf(c.id, key)}`);
			assert.equal(await balance(stack, c), before - 3);
			const got = await copies(subject);
			assert.equal(got.length, 1);
			assert.deepEqual([got[0].from, got[0].to, got[0].cc, got[0].bcc, got[0].reply_to,
			    got[0].text, got[0].html],
			    ['MailKit <notifications@mailkit.test>', ['delivered@resend.dev'],
			    ['cc@example.com'], ['bcc@example.com'], ['help@mailkit.test'], 'hi',
			    '<p>hi</p>']);
			assert.deepEqual(got[0].tags, [{ name: 'category', value: 'welcome' },
			    { name: 'mailkit_send', value: r.json.provider_id }]);
		});

		const faults = [
			{ mode: '422', name: 'a 400 refusal: 400, all credits back', status: 400, net: 0,
			    copies: 0 },
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
