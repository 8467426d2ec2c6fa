// smtp.test.mjs: MAIL_PROVIDER=smtp end to end through lighttpd and Apache, against real
// SMTP servers on loopback: Debian's python3-aiosmtpd (STARTTLS on a certificate made
// here, AUTH required) and Postfix's smtp-sink (rejects, disconnects and delays at each
// stage of the dialogue).  Each send is judged on both sides: what the relay received
// (byte for byte where it matters) and the credits Dodo's ledger kept.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { accessSync, constants as fsc } from 'node:fs';
import { chmod, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
	balance, emailStatus, freePort, keyedCustomer, missingPrerequisite, postJson, journalKey,
	skipFile, startStack,
} from './harness.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const PYTHON = '/usr/bin/python3';
const SMTP_SINK = ['/usr/sbin/smtp-sink', '/usr/lib/postfix/sbin/smtp-sink']
    .find((p) => { try { accessSync(p, fsc.X_OK); return true; } catch { return false; } });

const why = missingPrerequisite('lighttpd') || missingPrerequisite('apache') ||
    (SMTP_SINK ? null : 'smtp-sink not installed (Debian package postfix)') ||
    (() => {
	try {
		execFileSync(PYTHON, ['-c', 'import aiosmtpd'], { stdio: 'ignore' });
		return null;
	} catch { return 'python3-aiosmtpd not installed'; }
    })();
if (why)
	skipFile(why);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const USER = 'mailkit-relay', PASSWORD = `pw-${randomUUID()}`;
const FROM = 'Zoë at MailKit <notify@mailkit.test>';
// Short timeouts so the delay cases stay short: a reply later than 2 s is a timeout.
const TIMEOUTS = { UPSTREAM_TIMEOUT_MS: 2000, UPSTREAM_CONNECT_TIMEOUT_MS: 1000 };

// ------------------------------------------------------------- SMTP servers

function portOpen(port) {
	return new Promise((resolve) => {
		const s = net.connect({ port, host: '127.0.0.1' }, () => { s.destroy(); resolve(true); });
		s.on('error', () => resolve(false));
	});
}

async function waitPort(port, open) {
	for (let i = 0; i < 100; i++) {
		if (await portOpen(port) === open)
			return;
		await sleep(50);
	}
	throw new Error(`port ${port} did not ${open ? 'open' : 'close'}`);
}

// A server process we started; stop() ends exactly it, by its pid.
function serve(file, args, port) {
	const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
	let output = '';
	child.stdout.on('data', (d) => { output += d; });
	child.stderr.on('data', (d) => { output += d; });
	const exited = new Promise((resolve) => child.on('exit', resolve));
	return {
		output: () => output,
		ready: () => waitPort(port, true),
		async stop() {
			if (child.exitCode === null && child.signalCode === null)
				child.kill('SIGTERM');
			await exited;
			await waitPort(port, false);
		},
	};
}

// aiosmtpd: STARTTLS required, AUTH required; messages land in dir as JSON.
async function startRelay(port, dir, { tls, auth = true }) {
	const args = [path.join(here, 'smtp-server.py'), String(port), dir];
	if (tls)
		args.push('--tls', tls.cert, tls.key);
	if (auth)
		args.push('--auth', USER, PASSWORD);
	const p = serve(PYTHON, args, port);
	await p.ready();
	return p;
}

// smtp-sink with fault options; each message it takes becomes one file in dir.
async function startSink(port, dir, opts = []) {
	const args = [...(process.getuid() === 0 ? ['-u', 'nobody'] : []), '-4',
	    '-d', `${dir}/%H%M%S.`, ...opts, `127.0.0.1:${port}`, '10'];
	const p = serve(SMTP_SINK, args, port);
	await p.ready();
	return p;
}

// What aiosmtpd received: [{ mail_from, rcpt_tos, tls, login, data (latin1 string) }].
async function relayed(dir) {
	const out = [];
	for (const f of (await readdir(dir)).filter((n) => n.endsWith('.json')).sort()) {
		const m = JSON.parse(await readFile(path.join(dir, f), 'utf8'));
		m.data = Buffer.from(m.data, 'base64').toString('latin1');
		out.push(m);
	}
	return out;
}

// Messages of one send (by Message-ID) a sink dumped into dir.
async function sunk(dir, messageId) {
	let n = 0;
	for (const f of await readdir(dir)) {
		if ((await readFile(path.join(dir, f), 'latin1')).includes(`Message-ID: <${messageId}>`))
			n++;
	}
	return n;
}

// ------------------------------------------------------------- MailKit side

function send(stack, c, key, body) {
	return postJson(stack, '/send', body, { key: c.key, headers: { 'Idempotency-Key': key },
	    timeout: 30_000 });
}

// Quoted-printable (RFC 2045) back to bytes, as a UTF-8 string.
function unqp(s) {
	const bytes = [];
	const text = s.replace(/=\r\n/g, '');
	for (let i = 0; i < text.length; i++) {
		if (text[i] === '=') {
			bytes.push(parseInt(text.slice(i + 1, i + 3), 16));
			i += 2;
		} else
			bytes.push(text.charCodeAt(i));
	}
	return Buffer.from(bytes).toString('utf8');
}

const b64 = (s) => Buffer.from(s, 'utf8').toString('base64');

for (const server of ['lighttpd', 'apache']) {
	describe(`MAIL_PROVIDER=smtp through ${server}`, () => {
		let tmp, tls, relayPort, relayDir, relay, sinkPort, sinkDir, tlsStack, plainStack;
		let a, b;	// customers of tlsStack and plainStack

		before(async () => {
			tmp = await mkdtemp(path.join(os.tmpdir(), 'mailkit-smtp-'));
			// a certificate for 127.0.0.1, made now; MailKit trusts it through SMTP_CA_FILE
			tls = { cert: path.join(tmp, 'cert.pem'), key: path.join(tmp, 'key.pem') };
			execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes',
			    '-keyout', tls.key, '-out', tls.cert, '-days', '1', '-subj', '/CN=relay.test',
			    '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'ignore' });
			relayDir = path.join(tmp, 'relay');
			sinkDir = path.join(tmp, 'sink');
			await Promise.all([relayDir, sinkDir].map((d) =>
			    import('node:fs/promises').then((fs) => fs.mkdir(d))));
			/* smtp-sink runs as nobody when started by root: it must reach and write its dir */
			await chmod(tmp, 0o711);
			await chmod(sinkDir, 0o777);
			relayPort = await freePort();
			sinkPort = await freePort();
			relay = await startRelay(relayPort, relayDir, { tls });
			tlsStack = await startStack({ server, env: { ...TIMEOUTS, MAIL_PROVIDER: 'smtp',
			    SMTP_URL: `smtp://127.0.0.1:${relayPort}/mailkit.test`, SMTP_USERNAME: USER,
			    SMTP_PASSWORD: PASSWORD, SMTP_CA_FILE: tls.cert, MAIL_FROM: FROM } });
			a = await keyedCustomer(tlsStack, 'smtp');
			// plain SMTP on loopback, the faults' stack (SMTP_TLS=none, no AUTH)
			plainStack = await startStack({ server, env: { ...TIMEOUTS, MAIL_PROVIDER: 'smtp',
			    SMTP_URL: `smtp://127.0.0.1:${sinkPort}/mailkit.test`, SMTP_TLS: 'none',
			    MAIL_FROM: 'notify@mailkit.test' } });
			b = await keyedCustomer(plainStack, 'smtp');
		});
		after(async () => {
			await relay?.stop();
			await tlsStack?.stop();
			await plainStack?.stop();
			if (tmp)
				await rm(tmp, { recursive: true, force: true });
		});

		test('a message over STARTTLS with AUTH, byte for byte', { timeout: 60_000 }, async () => {
			const key = randomUUID(), ref = journalKey(a.id, key), id = `mk-send-${ref}@mailkit.test`;
			const before = await balance(tlsStack, a);
			const text = 'Hello Zoë,\n.a line that starts with a dot\n.\nend = fin \n';
			const html = '<p>Grüße</p>\n<p>' + 'x'.repeat(100) + '</p>';
			const tags = [{ name: 'category', value: 'welcome' }];
			const r = await send(tlsStack, a, key, { to: ['ada@example.com', 'bob@example.org'],
			    cc: 'carol@example.net', bcc: ['hidden@example.com'],
			    reply_to: 'support@mailkit.test', tags, subject: 'Grüße from MailKit', html,
			    text });
			assert.equal(r.status, 200, r.text);
			assert.equal(r.json.status, 'sent');
			assert.equal(r.json.provider_id, id);
			assert.equal(await balance(tlsStack, a), before - 4);	// one credit per recipient
			const e = await emailStatus(tlsStack, a, r.json.id, 'sent');
			assert.deepEqual([e.to, e.cc, e.bcc, e.reply_to, e.tags],
			    [['ada@example.com', 'bob@example.org'], ['carol@example.net'],
			    ['hidden@example.com'], ['support@mailkit.test'], tags]);

			const got = (await relayed(relayDir)).filter((m) => m.data.includes(`<${id}>`));
			assert.equal(got.length, 1);
			const m = got[0];
			// the envelope, bcc included, over TLS, logged in
			assert.deepEqual([m.mail_from, m.rcpt_tos, m.tls, m.login],
			    ['notify@mailkit.test', ['ada@example.com', 'bob@example.org',
			    'carol@example.net', 'hidden@example.com'], true, USER]);
			// the bcc is in no header, nor anywhere in the message
			assert.ok(!m.data.includes('hidden@'), m.data);
			// CRLF everywhere, never a bare CR or LF
			assert.equal(m.data.replace(/\r\n/g, '').search(/[\r\n]/), -1);
			const [head, ...rest] = m.data.split('\r\n\r\n');
			const boundary = /boundary="(=_mk_[0-9a-f]{24})"/.exec(head)?.[1];
			assert.ok(boundary, head);
			assert.match(head, /^Date: (Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d \+0000$/m);
			assert.equal(head.replace(/^Date: .*\r\n/m, ''), [
			    `Message-ID: <${id}>`,
			    `From: =?UTF-8?B?${b64('Zoë at MailKit')}?= <notify@mailkit.test>`,
			    'To: ada@example.com, bob@example.org',
			    'Cc: carol@example.net',
			    'Reply-To: support@mailkit.test',
			    `Subject: =?UTF-8?B?${b64('Grüße from MailKit')}?=`,
			    'MIME-Version: 1.0',
			    `Content-Type: multipart/alternative; boundary="${boundary}"`].join('\r\n'));
			const body = rest.join('\r\n\r\n');
			const parts = body.split(`--${boundary}`);
			assert.equal(parts.length, 4, body);	// preamble, text, html, "--\r\n"
			assert.equal(parts[3], '--\r\n');
			const part = (p) => {
				const [h, ...b] = p.replace(/^\r\n/, '').split('\r\n\r\n');
				return { h, b: b.join('\r\n\r\n') };
			};
			const t = part(parts[1]), h = part(parts[2]);
			assert.equal(t.h, 'Content-Type: text/plain; charset=utf-8\r\n' +
			    'Content-Transfer-Encoding: quoted-printable');
			assert.equal(h.h, 'Content-Type: text/html; charset=utf-8\r\n' +
			    'Content-Transfer-Encoding: quoted-printable');
			// dot-stuffed by libcurl once and unstuffed by the relay: the lines arrive as sent
			assert.equal(t.b, 'Hello Zo=C3=AB,\r\n.a line that starts with a dot\r\n.\r\n' +
			    'end =3D fin=20\r\n');
			assert.equal(unqp(t.b), text.replace(/\n/g, '\r\n'));
			assert.equal(unqp(h.b), html.replace(/\n/g, '\r\n') + '\r\n');
			for (const line of h.b.split('\r\n'))
				assert.ok(line.length <= 76, line);
		});

		test('a relay without STARTTLS is refused: 502, refunded, nothing sent',
		    { timeout: 60_000 }, async () => {
			// the same port now answers without TLS (smtp-sink offers no STARTTLS)
			await relay.stop();
			const sink = await startSink(relayPort, sinkDir);
			try {
				const key = randomUUID(), id = `mk-send-${journalKey(a.id, key)}@mailkit.test`;
				const before = await balance(tlsStack, a);
				const r = await send(tlsStack, a, key, { to: 'ada@example.com', subject: 'no tls',
				    text: 'secret' });
				assert.equal(r.status, 502, r.text);
				assert.equal(await balance(tlsStack, a), before);
				assert.equal(await sunk(sinkDir, id), 0);
			} finally {
				await sink.stop();
				relay = await startRelay(relayPort, relayDir, { tls });
			}
		});

		test('a plaintext attempt at the STARTTLS relay fails: 502, refunded, nothing sent',
		    { timeout: 60_000 }, async () => {
			const r2 = await startRelay(sinkPort, relayDir, { tls });
			try {
				const key = randomUUID(), id = `mk-send-${journalKey(b.id, key)}@mailkit.test`;
				const before = await balance(plainStack, b);
				const r = await send(plainStack, b, key, { to: 'ada@example.com',
				    subject: 'plain', text: 'x' });
				assert.equal(r.status, 502, r.text);
				assert.equal(await balance(plainStack, b), before);
				const got = (await relayed(relayDir)).filter((m) => m.data.includes(`<${id}>`));
				assert.equal(got.length, 0);
			} finally {
				await r2.stop();
			}
		});

		// Each fault of smtp-sink, at each stage, and what the client is told.
		const faults = [
			{ name: 'RCPT refused for good (5xx)', opts: ['-f', 'RCPT'], status: 400,
			    net: 0, copies: 0 },
			// (smtp-sink keeps what it received, even what it then refused: one copy)
			{ name: 'the message refused after its end (5xx to ".")', opts: ['-f', '.'],
			    status: 400, net: 0, copies: 1 },
			{ name: 'MAIL refused for now (4xx): queued, delivered later', opts: ['-r', 'MAIL'],
			    status: 202, state: 'queued', later: 'sent', net: 1, copies: 1 },
			{ name: '421 and a hang-up at DATA: queued, delivered later', opts: ['-Q', 'DATA'],
			    status: 202, state: 'queued', later: 'sent', net: 1, copies: 1 },
			{ name: 'a hang-up after RCPT: queued, delivered later', opts: ['-q', 'RCPT'],
			    status: 202, state: 'queued', later: 'sent', net: 1, copies: 1 },
			{ name: 'DATA answered too late: queued, delivered later', opts: ['-w', '4'],
			    status: 202, state: 'queued', later: 'sent', net: 1, copies: 1 },
			{ name: 'a hang-up after the final ".": unconfirmed, never resent',
			    opts: ['-q', '.'], status: 202, state: 'unconfirmed', net: 1, copies: 1 },
			{ name: 'no answer to the final "." in time: unconfirmed, never resent',
			    opts: ['-W', '.:4'], status: 202, state: 'unconfirmed', net: 1, copies: 1 },
		];
		for (const f of faults) {
			test(f.name, { timeout: 60_000 }, async () => {
				const key = randomUUID(), id = `mk-send-${journalKey(b.id, key)}@mailkit.test`;
				const before = await balance(plainStack, b);
				let sink = await startSink(sinkPort, sinkDir, f.opts);
				let r;
				try {
					r = await send(plainStack, b, key, { to: 'ada@example.com',
					    subject: `fault ${f.opts.join(' ')}`, text: 'x' });
				} finally {
					await sink.stop();
				}
				assert.equal(r.status, f.status, r.text);
				if (f.state)
					assert.equal(r.json.status, f.state, r.text);
				// a healthy relay from now on: whatever is retried gets through
				sink = await startSink(sinkPort, sinkDir);
				try {
					if (f.later)
						await emailStatus(plainStack, b, r.json.id, f.later);
					else
						await sleep(3000);	// a retry, if there were one, would come
					if (f.state === 'unconfirmed') {
						const e = await emailStatus(plainStack, b, r.json.id, 'unconfirmed');
						assert.match(e.error, /may have been delivered/);
					}
					assert.equal(await balance(plainStack, b), before - f.net);
					assert.equal(await sunk(sinkDir, id), f.copies);
				} finally {
					await sink.stop();
				}
			});
		}

		// REQUEST_TIMEOUT_MS bounds the relay as it bounds every HTTP upstream:
		// a relay silent after "." for 6 s, a per-call timeout of 8 s, a request
		// bound of 1.5 s: the answer comes at the bound, unconfirmed (without the
		// bound it would wait for the relay and answer 200 after 6 s).
		test('the request\'s time bound holds for the relay', { timeout: 60_000 }, async () => {
			const bounded = await startStack({ server, env: { UPSTREAM_TIMEOUT_MS: 8000,
			    REQUEST_TIMEOUT_MS: 1500, MAIL_PROVIDER: 'smtp', SMTP_TLS: 'none',
			    SMTP_URL: `smtp://127.0.0.1:${sinkPort}/mailkit.test`,
			    MAIL_FROM: 'notify@mailkit.test' } });
			const sink = await startSink(sinkPort, sinkDir, ['-W', '.:6']);
			try {
				const c = await keyedCustomer(bounded, 'smtp-bound');
				const before = await balance(bounded, c), t0 = Date.now();
				const r = await send(bounded, c, randomUUID(), { to: 'ada@example.com',
				    subject: 'bounded', text: 'x' });
				const ms = Date.now() - t0;
				assert.equal(r.status, 202, r.text);
				assert.equal(r.json.status, 'unconfirmed', r.text);
				assert.ok(ms < 5000, `answered after ${ms} ms`);
				assert.equal(await balance(bounded, c), before - 1);
			} finally {
				await sink.stop();
				await bounded.stop();
			}
		});
	});
}
