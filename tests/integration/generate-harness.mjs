// generate-harness.mjs: generate.fcgi (POST /api/generate) beside a sandbox stack of
// harness.mjs, on its own socket, spoken to in FastCGI as the web server would; and the
// hold arithmetic of usage.h.
import { spawn } from 'node:child_process';
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

