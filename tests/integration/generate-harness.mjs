// generate-harness.mjs: generate.fcgi (POST /api/generate) beside a sandbox stack of
// harness.mjs, on its own socket, spoken to in FastCGI as the web server would; and the
// hold arithmetic of usage.h.
import { spawn } from 'node:child_process';
import http from 'node:http';
import { existsSync } from 'node:fs';
import path from 'node:path';

import { BUILDDIR, fcgiRequest, missingPrerequisite } from './harness.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const HOLD_OVERHEAD = 16;	// usage.h: 2 * USAGE_MESSAGE_OVERHEAD
export const holdOf = (prompt, maxTokens) => Buffer.byteLength(prompt) + HOLD_OVERHEAD +
    maxTokens;

// A reason these tests cannot run here, or null.
export function missingGenerate() {
	return missingPrerequisite('lighttpd') ??
	    (existsSync(path.join(BUILDDIR, 'generate.fcgi')) ? null : 'generate.fcgi not built');
}

// generate.fcgi on STATE/generate-N.sock with the stack's settings; returns
// { call(method, path, {json, key, headers}), kill(signal), exited }.
let generation = 0;
export function startGenerate(stack, env = {}) {
	const sock = path.join(stack.stateDir, `generate-${++generation}.sock`);
	const childEnv = {
		PATH: process.env.PATH, HOME: process.env.HOME,
		...stack.settings,
		MAILKIT_ENV_FILE: path.join(stack.stateDir, 'test.env'),
		MAILKIT_SOCKET: sock,
		MAILKIT_LOG_FILE: path.join(stack.stateDir, 'log', `generate-${generation}.log`),
		OPENAI_BASE_URL: `${stack.sandboxUrl}/openai/v1`,
		OPENAI_API_KEY: 'sk-sandbox',
		...Object.fromEntries(Object.entries(env).map(([k, v]) => [k, String(v)])),
	};
	const child = spawn(path.join(BUILDDIR, 'generate.fcgi'), [], { env: childEnv,
	    stdio: ['ignore', 'ignore', 'pipe'] });
	let stderr = '';
	child.stderr.on('data', (d) => { stderr += d; });
	const exited = new Promise((r) => child.on('exit', (code, sig) => r({ code, sig })));
	const prog = {
		child, sock, exited, stderr: () => stderr,
		async ready() {
			for (let i = 0; i < 100 && !existsSync(sock); i++)
				await sleep(50);
			if (!existsSync(sock))
				throw new Error(`generate.fcgi did not start: ${stderr}`);
		},
		async call(method, uri, { json, key, headers = {} } = {}) {
			const body = json === undefined ? '' : JSON.stringify(json);
			const params = {
				REQUEST_METHOD: method, REQUEST_URI: uri, SCRIPT_NAME: '',
				SERVER_PROTOCOL: 'HTTP/1.1', REMOTE_ADDR: '127.0.0.1',
				CONTENT_LENGTH: String(Buffer.byteLength(body)),
				CONTENT_TYPE: json === undefined ? '' : 'application/json',
			};
			if (key)
				params.HTTP_AUTHORIZATION = `Bearer ${key}`;
			for (const [k, v] of Object.entries(headers))
				params[`HTTP_${k.toUpperCase().replace(/-/g, '_')}`] = v;
			const r = await fcgiRequest(sock, params, { stdin: body, timeoutMs: 60_000 });
			const text = r.stdout.split(/\r?\n\r?\n/).slice(1).join('\n\n');
			let parsed;
			try { parsed = JSON.parse(text); } catch { parsed = undefined; }
			return { status: r.status, json: parsed, text };
		},
		kill(sig = 'SIGTERM') { child.kill(sig); return exited; },
	};
	return prog;
}


// An HTTP server on 127.0.0.1 that hands each request to prog's FastCGI socket, as
// a web server would (for HTTP clients such as the official SDKs).  Resolves to
// { url, close() }.
export function httpBridge(prog) {
	return new Promise((resolve, reject) => {
		const server = http.createServer((req, res) => {
			const chunks = [];
			req.on('data', (c) => chunks.push(c));
			req.on('end', async () => {
				const body = Buffer.concat(chunks).toString('utf8');
				const params = {
					REQUEST_METHOD: req.method, REQUEST_URI: req.url, SCRIPT_NAME: '',
					SERVER_PROTOCOL: 'HTTP/1.1', REMOTE_ADDR: '127.0.0.1',
					CONTENT_LENGTH: String(Buffer.byteLength(body)),
					CONTENT_TYPE: req.headers['content-type'] ?? '',
				};
				for (const h of ['authorization', 'idempotency-key', 'user-agent'])
					if (req.headers[h] !== undefined)
						params[`HTTP_${h.toUpperCase().replace(/-/g, '_')}`] = req.headers[h];
				try {
					const r = await fcgiRequest(prog.sock, params, { stdin: body,
					    timeoutMs: 60_000 });
					const [head, ...rest] = r.stdout.split(/\r?\n\r?\n/);
					const headers = {};
					for (const line of head.split(/\r?\n/)) {
						const i = line.indexOf(':');
						if (i > 0 && !/^status$/i.test(line.slice(0, i)))
							headers[line.slice(0, i)] = line.slice(i + 1).trim();
					}
					res.writeHead(r.status || 502, headers);
					res.end(rest.join('\n\n'));
				} catch (e) {
					res.writeHead(502, { 'Content-Type': 'application/json' });
					res.end(JSON.stringify({ error: String(e) }));
				}
			});
		});
		server.once('error', reject);
		server.listen(0, '127.0.0.1', () => resolve({
			url: `http://127.0.0.1:${server.address().port}`,
			close: () => new Promise((r) => server.close(r)),
		}));
	});
}
