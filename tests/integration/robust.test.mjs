// robust.test.mjs: no route down — supervised programs come back after
// kill -9 (and back off when they keep dying), the web servers' own errors
// are JSON on the API paths, HEAD works where GET does, and slow or idle
// clients do not hold up anyone else.  Once through lighttpd, once through
// Apache, each against its own stack on loopback.
import { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import {
	clearSandboxFaults, missingPrerequisite, postJson, request, sandboxFault, skipFile,
	stackTest, startStack, subscribeWithKey,
} from './harness.mjs';

const SERVERS = ['lighttpd', 'apache'];
const MAX_BODY = 4096;		// MAX_BODY_BYTES: lighttpd's own cap is 64 KB above it
const BACKEND_TIMEOUT_S = 6;	// BACKEND_TIMEOUT: the web server's 504 for a hung program (well
				// above a legitimate request on a loaded 2-core test machine)
const RESTART_MS = 1000;	// a killed program is back within this
const SLOW_CLIENTS = 256;	// half trickle a /send body, half send half a request head
const DELAY_MS = 100;		// what they may add to a legitimate request
const TEST_MS = 30_000;
const START_MS = 120_000;
const POOL_CLIENTS = 48;	// balances in flight at once in the pool test
const POOL_STALL_MS = 1500;	// each one's upstream time
const POOL_REST_THREADS = 6;	// at rest: 4 request threads, main, the upstream transfer loop
const POOL_SHRINK_MS = 20_000;	// idle threads end after 5 s in accept (SERVER_IDLE_S), plus slack
const UNKNOWN_OUTCOME = /retry with the same key to learn the outcome/;

for (const server of SERVERS) {
	const missing = missingPrerequisite(server);
	if (missing)
		skipFile(`${server}: ${missing}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// A JSON error reply: status (one of), application/json, {"error": "..."}.
function assertJsonError(res, statuses, what) {
	const want = [statuses].flat();
	const ctx = `${what}: got ${res.status} ${res.headers['content-type'] ?? res.headers.get?.('content-type')} ` +
	    `${String(res.text ?? res.body).slice(0, 200)}`;
	assert.ok(want.includes(res.status), ctx);
	const ct = res.headers.get ? res.headers.get('content-type') : res.headers['content-type'];
	assert.match(ct || '', /^application\/json\b/, ctx);
	const j = JSON.parse(res.text ?? res.body);
	assert.equal(typeof j.error, 'string', ctx);
	assert.ok(j.error.length > 0, ctx);
	return j;
}

// One raw HTTP/1.1 exchange on a fresh connection (for requests fetch will
// not make): resolves to { status, headers, body } once the server closes.
function rawHttp(port, text, { timeoutMs = 10_000 } = {}) {
	return new Promise((resolve, reject) => {
		const sock = net.createConnection({ host: '127.0.0.1', port });
		const chunks = [];
		const timer = setTimeout(() => { sock.destroy(); reject(new Error('raw request timed out')); },
		    timeoutMs);
		sock.on('data', (d) => chunks.push(d));
		sock.on('error', () => { /* a reset after the reply is fine */ });
		sock.on('close', () => {
			clearTimeout(timer);
			const all = Buffer.concat(chunks).toString('latin1');
			const split = all.indexOf('\r\n\r\n');
			const head = split === -1 ? all : all.slice(0, split);
			const headers = {};
			for (const line of head.split('\r\n').slice(1)) {
				const c = line.indexOf(':');
				if (c > 0)
					headers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
			}
			let body = split === -1 ? '' : all.slice(split + 4);
			if (/chunked/i.test(headers['transfer-encoding'] || ''))
				body = body.replace(/(^|\r\n)[0-9a-fA-F]+\r\n/g, '$1').replace(/\r\n$/, '');
			resolve({ status: Number(/^HTTP\/1\.\d (\d+)/.exec(head)?.[1] ?? 0), headers, body });
		});
		sock.write(text);
	});
}

async function programPids(stack, prog) {
	const text = await readFile(path.join(stack.stateDir, 'run', `${prog}.pid`), 'utf8').catch(() => '');
	return text.split(/\s+/).filter((w) => /^\d+$/.test(w)).map(Number);
}

// Threads of a process, from /proc.
function threadsOf(pid) {
	const status = readFileSync(`/proc/${pid}/status`, 'utf8');
	return Number(/^Threads:\s+(\d+)/m.exec(status)[1]);
}

const alive = (pid) => { try { process.kill(pid, 0); return true; } catch { return false; } };

// Poll the program's pid file until it names a live process other than
// `old`; resolves to { pid, ms } or fails after `limitMs`.
async function waitForRestart(stack, prog, old, limitMs) {
	const t0 = Date.now();
	for (;;) {
		const pid = (await programPids(stack, prog)).find((p) => p !== old && alive(p));
		if (pid)
			return { pid, ms: Date.now() - t0 };
		if (Date.now() - t0 > limitMs)
			assert.fail(`${prog}.fcgi not restarted within ${limitMs} ms`);
		await sleep(20);
	}
}

// One request on a connection of its own (a new client; fetch's pooled
// connections may have been closed by a busy server).  Resolves to
// { status, ms }.
function freshRequest(port, method, urlPath, { key, body } = {}) {
	return new Promise((resolve, reject) => {
		const t0 = performance.now();
		const headers = { Authorization: `Bearer ${key}` };
		if (body !== undefined)
			Object.assign(headers, { 'Content-Type': 'application/json',
			    'Content-Length': Buffer.byteLength(body) });
		const req = http.request({ host: '127.0.0.1', port, method, path: urlPath, headers,
		    agent: false, timeout: 10_000 }, (res) => {
			let text = '';
			res.setEncoding('utf8');
			res.on('data', (d) => { text += d; });
			res.on('end', () => resolve({ status: res.statusCode, text, ms: performance.now() - t0 }));
		});
		req.on('timeout', () => req.destroy(new Error(`${method} ${urlPath} timed out`)));
		req.on('error', reject);
		req.end(body);
	});
}

function median(xs) {
	const s = [...xs].sort((a, b) => a - b);
	return s[Math.floor(s.length / 2)];
}

// One stack at a time: each server's tests in a block of their own.
for (const server of SERVERS) describe(server, () => {
	let stack;
	let customer;		// { customer_id, api_key }

	before(async () => {
		stack = await startStack({ server, env: {
			MAX_BODY_BYTES: String(MAX_BODY),
			BACKEND_TIMEOUT: String(BACKEND_TIMEOUT_S),
			UPSTREAM_TIMEOUT_MS: '5000',
			UPSTREAM_MAX_RETRIES: '0',
			RATE_LIMIT_PER_MINUTE: '0',
		} });
		customer = await subscribeWithKey(stack, {});
	}, { timeout: START_MS });

	after(() => stack?.stop(), { timeout: START_MS });

	const it = stackTest(server, () => stack, TEST_MS);
	const key = () => customer.api_key;

	// A cheap request each program answers itself, and what it answers.
	const probes = {
		checkout: () => request(stack, 'GET', '/checkout/subscribe'),			// 405
		credits: () => request(stack, 'GET', '/credits/me', { key: key() }),		// 200
		send: () => postJson(stack, '/send', { to: 'not-an-address' }, { key: key() }),	// 400
		webhook: () => request(stack, 'POST', '/webhooks/dodo', { body: '{}',
		    headers: { 'Content-Type': 'application/json' } }),			// 401
		// the sandbox is no API path: what clients see is credits' answer while it is away
		sandbox: () => request(stack, 'GET', '/credits/me', { key: key() }),
	};
	const healthy = { checkout: 405, credits: 200, send: 400, webhook: 401, sandbox: 200 };

	for (const prog of Object.keys(probes)) {
		it(`kill -9 ${prog}.fcgi under load: back within ${RESTART_MS} ms, clients only ever see JSON`, async () => {
			const [old] = await programPids(stack, prog);
			assert.ok(old && alive(old), `${prog}.fcgi runs`);
			const seen = [];
			let stop = false;
			// light load: 4 clients in a loop, bounded in count and time
			const client = async () => {
				const until = Date.now() + 5000;
				for (let i = 0; i < 200 && !stop && Date.now() < until; i++) {
					const r = await probes[prog]();
					seen.push(r);
					await sleep(10);
				}
			};
			const load = Promise.all([client(), client(), client(), client()]);
			await sleep(150);
			process.kill(old, 'SIGKILL');
			const back = await waitForRestart(stack, prog, old, 3000);
			await sleep(300);
			stop = true;
			await load;
			console.log(`# ${server}: ${prog}.fcgi restarted in ${back.ms} ms; ${seen.length} requests, ` +
			    `statuses ${JSON.stringify(Object.fromEntries([...new Set(seen.map((r) => r.status))]
				.map((s) => [s, seen.filter((r) => r.status === s).length])))}`);
			assert.ok(back.ms <= RESTART_MS, `restarted after ${back.ms} ms`);
			for (const r of seen) {
				const ctx = `${r.status} ${r.headers.get('content-type')} ${r.text.slice(0, 200)}`;
				assert.match(r.headers.get('content-type') || '', /^application\/json\b/, ctx);
				assert.doesNotThrow(() => JSON.parse(r.text), ctx);
				if (r.status !== healthy[prog])
					assert.ok([500, 502, 503, 504].includes(r.status), ctx);
			}
			const now = await probes[prog]();
			assert.equal(now.status, healthy[prog], now.text);
			const log = await readFile(path.join(stack.stateDir, 'log', 'mailkit.log'), 'utf8');
			assert.match(log, new RegExp(`${prog}\\.fcgi pid ${old} killed by signal 9 \\(SIGKILL\\); restarting`));
		});
	}

	it('connections queued while a program is down wait for the next one (none lost)', async () => {
		// stopped, the program accepts nothing: the requests wait in its
		// socket's backlog, which the supervisor keeps across the restart
		const [old] = await programPids(stack, 'credits');
		process.kill(old, 'SIGSTOP');
		await sleep(100);	// every thread stopped, none in accept()
		const pending = Array.from({ length: 6 }, () => probes.credits());
		await sleep(300);
		process.kill(old, 'SIGKILL');
		const rs = await Promise.all(pending);
		assert.deepEqual(rs.map((r) => r.status), rs.map(() => 200),
		    rs.map((r) => `${r.status} ${r.text.slice(0, 120)}`).join('\n'));
		await waitForRestart(stack, 'credits', old, 3000);
	});

	// lighttpd says 500 for a program that hung up mid-reply, Apache 503
	it('a request in flight when its program dies: 500/502/503 JSON saying to retry with the same key', async () => {
		await sandboxFault(stack, { target: 'balance_read', mode: 'stall', count: 1, stall_ms: 3000 });
		try {
			const [old] = await programPids(stack, 'credits');
			const pending = probes.credits();
			await sleep(400);	// credits.fcgi now waits on the stalled upstream
			process.kill(old, 'SIGKILL');
			const r = await pending;
			const j = assertJsonError(r, [500, 502, 503], 'killed mid-request');
			assert.match(j.error, UNKNOWN_OUTCOME);
			await waitForRestart(stack, 'credits', old, 3000);
		} finally {
			await clearSandboxFaults(stack);
		}
	});

	it(`the request threads follow the load: ${POOL_CLIENTS} slow balances in flight, then back to a few`, async () => {
		const [pid] = await programPids(stack, 'credits');
		const before = threadsOf(pid);
		// each balance read answers after POOL_STALL_MS: every request holds a thread that long
		await sandboxFault(stack, { target: 'balance_read', mode: 'stall', count: POOL_CLIENTS,
		    stall_ms: POOL_STALL_MS });
		const t0 = Date.now();
		const load = Promise.all(Array.from({ length: POOL_CLIENTS },
		    () => request(stack, 'GET', '/credits/me', { key: key() })));
		await sleep(POOL_STALL_MS / 2);
		const busy = threadsOf(pid);
		const answers = await load;
		const took = Date.now() - t0;
		await clearSandboxFaults(stack);
		let after = threadsOf(pid), waited = 0;
		for (; after > POOL_REST_THREADS && waited < POOL_SHRINK_MS; waited += 250) {
			await sleep(250);
			after = threadsOf(pid);
		}
		console.log(`# ${server}: credits.fcgi threads ${before} -> ${busy} with ${POOL_CLIENTS} in flight ` +
		    `(all answered in ${took} ms) -> ${after} ${waited} ms after`);
		for (const r of answers)
			assert.equal(r.status, 200, r.text);
		assert.ok(busy >= POOL_CLIENTS, `only ${busy} threads for ${POOL_CLIENTS} requests in flight`);
		// in parallel, not in turn: one stall's time plus slack, not several
		assert.ok(took < 2 * POOL_STALL_MS, `${POOL_CLIENTS} stalled balances took ${took} ms`);
		assert.ok(after <= POOL_REST_THREADS, `${after} threads ${waited} ms after the load (${before} before)`);
	});

	it(`a hung program: the web server's 504 in JSON after BACKEND_TIMEOUT (${BACKEND_TIMEOUT_S} s)`, async () => {
		const [pid] = await programPids(stack, 'credits');
		process.kill(pid, 'SIGSTOP');
		try {
			const t0 = Date.now();
			const r = await probes.credits();
			const j = assertJsonError(r, 504, 'hung credits.fcgi');
			assert.match(j.error, UNKNOWN_OUTCOME);
			assert.ok(Date.now() - t0 < (BACKEND_TIMEOUT_S + 3) * 1000, `${Date.now() - t0} ms`);
		} finally {
			process.kill(pid, 'SIGCONT');
		}
		// the request the web server gave up on still reaches the program
		// when it wakes; afterwards the route works
		const until = Date.now() + 5000;
		let r;
		do {
			r = await probes.credits();
		} while (r.status !== 200 && Date.now() < until && await sleep(100) === undefined);
		assert.equal(r.status, 200, r.text);
	});

	it('errors the web server raises itself are JSON on API paths', async () => {
		const host = `Host: 127.0.0.1:${stack.port}\r\n`;
		const raw = (t) => rawHttp(stack.port, t);
		// an unknown path under an API prefix: the program's 404, in JSON too
		assertJsonError(await request(stack, 'GET', '/checkout/no-such-route'), 404,
		    'GET /checkout/no-such-route');
		// header line without a colon: 400
		assertJsonError(await raw(`GET /send HTTP/1.1\r\n${host}Bad header line\r\nConnection: close\r\n\r\n`),
		    400, 'malformed header');
		// a header of 9 KB: lighttpd 431, Apache 400 (LimitRequestFieldSize)
		assertJsonError(await raw(`GET /credits/me HTTP/1.1\r\n${host}X-Big: ${'a'.repeat(9000)}\r\n` +
		    'Connection: close\r\n\r\n'), server === 'lighttpd' ? 431 : 400, 'huge header');
		// a 9 KB URI: Apache 414 (LimitRequestLine); lighttpd counts it in the header: 431
		assertJsonError(await raw(`GET /credits/${'a'.repeat(9000)} HTTP/1.1\r\n${host}Connection: close\r\n\r\n`),
		    server === 'lighttpd' ? 431 : 414, 'huge URI');
		// a 3 KB URI passes the web servers: the program's own 414
		assertJsonError(await request(stack, 'GET', `/credits/${'a'.repeat(3000)}`, { key: key() }), 414,
		    'long URI');
		// a POST body with no length: lighttpd 411; Apache passes it on, the program
		// answers (415: no Content-Type either)
		assertJsonError(await raw(`POST /send HTTP/1.1\r\n${host}Connection: close\r\n\r\n`),
		    server === 'lighttpd' ? 411 : 415, 'POST without Content-Length');
		// an unknown method: lighttpd 501; Apache passes it on, the program answers 405
		assertJsonError(await request(stack, 'FOO', '/send'), server === 'lighttpd' ? 501 : 405, 'FOO /send');
		// a body above lighttpd's cap (MAX_BODY + 64 KB): lighttpd's 413; Apache
		// does not cap proxied bodies, so the program's own 413
		assertJsonError(await request(stack, 'POST', '/send', { key: key(),
		    body: JSON.stringify({ html: 'x'.repeat(MAX_BODY + 70 * 1024) }),
		    headers: { 'Content-Type': 'application/json' } }), 413, 'huge body');
		// the page's own paths keep the web server's HTML errors
		const page404 = await request(stack, 'GET', '/no-such-page.html');
		assert.equal(page404.status, 404);
		assert.match(page404.headers.get('content-type') || '', /^text\/html/);
	});

	it('HEAD works wherever GET does, with no body', async () => {
		for (const p of ['/credits/me', `/credits/${customer.customer_id}`, '/credits/me/ledger']) {
			const r = await request(stack, 'HEAD', p, { key: key() });
			assert.equal(r.status, 200, `HEAD ${p}`);
			assert.match(r.headers.get('content-type') || '', /^application\/json\b/);
			assert.equal(r.text, '');
		}
		const raw = await rawHttp(stack.port, `HEAD /credits/me HTTP/1.1\r\nHost: 127.0.0.1\r\n` +
		    `Authorization: Bearer ${key()}\r\nConnection: close\r\n\r\n`);
		assert.equal(raw.status, 200);
		assert.equal(raw.body, '', 'no body on the wire');
		const noKey = await request(stack, 'HEAD', '/credits/me');
		assert.equal(noKey.status, 401);
		assert.equal(noKey.text, '');
		// a POST-only route still says 405, now for HEAD too
		const r = await request(stack, 'HEAD', '/send');
		assert.equal(r.status, 405);
		assert.match(r.headers.get('allow') || '', /POST/);
	});

	it(`${SLOW_CLIENTS} slow-body and idle connections add at most ${DELAY_MS} ms to a send and a balance`, async () => {
		const sendOnce = async () => {
			const r = await freshRequest(stack.port, 'POST', '/send', { key: key(), body: JSON.stringify(
			    { to: 'delivered@resend.dev', subject: 'slow test', text: 'hi' }) });
			assert.equal(r.status, 200, r.text);
			return r.ms;
		};
		const balanceOnce = async () => {
			const r = await freshRequest(stack.port, 'GET', '/credits/me', { key: key() });
			assert.equal(r.status, 200, r.text);
			return r.ms;
		};
		const measure = async () => {
			const send = [], balance = [];
			for (let i = 0; i < 8; i++) {
				send.push(await sendOnce());
				balance.push(await balanceOnce());
			}
			return { send: median(send), balance: median(balance),
			    max: Math.max(...send, ...balance) };
		};
		await measure();	// warm up
		const base = await measure();

		const socks = [];
		const trickle = [];
		try {
			for (let i = 0; i < SLOW_CLIENTS; i++) {
				const s = net.createConnection({ host: '127.0.0.1', port: stack.port });
				s.on('error', () => { /* the server may drop them: that is the point */ });
				socks.push(s);
				if (i % 2 === 0) {
					s.write(`POST /send HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${key()}\r\n` +
					    'Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{');
					trickle.push(s);
				} else {
					s.write('GET /credits/me HTTP/1.1\r\nHost: 127.0.0.1\r\n');
				}
			}
			// one byte every 2 s on each slow body, for as long as the test runs
			const timer = setInterval(() => {
				for (const s of trickle)
					if (!s.destroyed)
						s.write(' ');
			}, 2000);
			try {
				// every connection is in and held; Apache has started the children
				// it keeps spare for them (one spawn round a second)
				await sleep(3000);
				const open = socks.filter((s) => !s.destroyed).length;
				const slow = await measure();
				const dSend = slow.send - base.send, dBalance = slow.balance - base.balance;
				console.log(`# ${server}: ${open}/${SLOW_CLIENTS} slow connections open; median send ` +
				    `${base.send.toFixed(1)} -> ${slow.send.toFixed(1)} ms (+${dSend.toFixed(1)}), balance ` +
				    `${base.balance.toFixed(1)} -> ${slow.balance.toFixed(1)} ms (+${dBalance.toFixed(1)}), ` +
				    `slowest ${slow.max.toFixed(1)} ms`);
				assert.ok(open >= SLOW_CLIENTS * 0.9, `only ${open} slow connections stayed open`);
				assert.ok(dSend <= DELAY_MS, `send delayed by ${dSend.toFixed(1)} ms`);
				assert.ok(dBalance <= DELAY_MS, `balance delayed by ${dBalance.toFixed(1)} ms`);
				assert.ok(slow.max <= base.max + 5 * DELAY_MS, `slowest request ${slow.max.toFixed(1)} ms`);
			} finally {
				clearInterval(timer);
			}
		} finally {
			for (const s of socks)
				s.destroy();
		}
	});

	it('a crash loop backs off, says so in the log, and recovers', async () => {
		// five deaths within 30 s (earlier tests killed it too: the backoff
		// may start before the fifth); the last restart waits at least 1 s
		const prog = 'webhook';
		let [pid] = await programPids(stack, prog);
		let back, during;
		for (let i = 0; i < 5; i++) {
			process.kill(pid, 'SIGKILL');
			// a request meanwhile waits in the socket's backlog for the restart
			if (i === 4)
				during = probes.webhook();
			back = await waitForRestart(stack, prog, pid, 10_000);
			pid = back.pid;
		}
		during = await during;
		console.log(`# ${server}: after the fifth kill within 30 s, restarted in ${back.ms} ms`);
		assert.ok(back.ms >= 900, `restarted after ${back.ms} ms: no backoff`);
		const log = await readFile(path.join(stack.stateDir, 'log', 'mailkit.log'), 'utf8');
		assert.match(log, /webhook\.fcgi pid \d+ killed by signal 9 \(SIGKILL\); it died 5 times within 30 s: backing off, restarting in \d+ ms/);
		// while it was backing off, clients waited or got JSON
		assert.match(during.headers.get('content-type') || '', /^application\/json\b/);
		assert.equal((await probes.webhook()).status, healthy.webhook, 'works again');
	});

	it('a program with no one on its socket: 503 JSON saying to retry with the same key', async () => {
		// the supervisor killed too: nothing accepts on webhook.sock any more
		const sup = Number((await readFile(path.join(stack.stateDir, 'run', 'webhook.supervisor.pid'),
		    'utf8')).trim());
		const [pid] = await programPids(stack, 'webhook');
		process.kill(sup, 'SIGKILL');
		process.kill(pid, 'SIGKILL');
		await sleep(200);
		const r = await probes.webhook();
		const j = assertJsonError(r, [502, 503], 'no listener');
		assert.match(j.error, UNKNOWN_OUTCOME);
		const head = await request(stack, 'HEAD', '/webhooks/dodo');
		assert.ok([502, 503].includes(head.status));
		assert.equal(head.text, '');
	});
});
