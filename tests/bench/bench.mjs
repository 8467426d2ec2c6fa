// bench.mjs: helpers of tests/bench/bench.sh — sign webhook deliveries, and turn
// the raw runs into the table (stdout), bench.json and bench.svg.
//
//   node bench.mjs sign SECRET BODY_FILE COUNT PREFIX > lines
//       COUNT Standard Webhooks deliveries of the body in BODY_FILE, one
//       "webhook-id webhook-timestamp webhook-signature" line each, ids
//       PREFIX-0 ... PREFIX-(COUNT-1), all stamped now.
//   node bench.mjs report RUNS_JSONL META_JSON OUT_DIR
//       Prints the table and writes OUT_DIR/bench.json and OUT_DIR/bench.svg.
//   node bench.mjs latency RUNS_JSONL META_JSON OUT_DIR
//       The same for bench.sh --latency: req/s against the closed-loop limit,
//       p99, errors and PSS per latency, clients and server, Express beside.
//   node bench.mjs line < RUN_JSON
//       One --latency run as a line of progress.
import { createHmac } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

// ------------------------------------------------------------------ report

function report(runsFile, metaFile, outDir) {
	const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
	const runs = readFileSync(runsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
	const targets = meta.targets;
	const derive = (r) => {
		const w = r.wrk;
		const seconds = w.duration_us / 1e6;
		const cpuUs = (r.cpu_ticks / r.clk_tck) * 1e6;
		return {
			server: r.server, stack: r.stack, route: r.route,
			requests: w.requests, seconds,
			rps: w.requests / seconds,
			p50_ms: w.latency_us.p50 / 1000, p99_ms: w.latency_us.p99 / 1000,
			cpu_us_per_req: w.requests > 0 ? cpuUs / w.requests : null,
			cpu_share: cpuUs / (w.duration_us * meta.cpus),	// of the whole machine
			rss_kb: r.rss_kb, pss_kb: r.pss_kb, procs: r.procs,
			errors: w.errors, unexpected_status: w.unexpected_status,
			first_unexpected: w.first_unexpected, reused_ids: w.reused_ids,
		};
	};
	const all = runs.filter((r) => r.kind === 'measure').map(derive);
	const rows = [];
	const problems = [];
	const notes = [];
	for (const m of all.filter((r) => r.stack === 'mailkit')) {
		const f = all.find((r) => r.stack === 'floor' && r.server === m.server && r.route === m.route);
		const fr = all.find((r) => r.stack === 'floor@rate' && r.server === m.server && r.route === m.route);
		const ratio = (a, b) => (a != null && b ? a / b : null);
		const target = targets.cpu_ratio[m.route];
		const row = {
			server: m.server, route: m.route,
			mailkit: m, floor: f || null, floor_at_rate: fr || null,
			ratio: f ? {
				rps: ratio(m.rps, f.rps), p50: ratio(m.p50_ms, f.p50_ms), p99: ratio(m.p99_ms, f.p99_ms),
				cpu: ratio(m.cpu_us_per_req, f.cpu_us_per_req),
			} : null,
			cpu_ratio_at_rate: fr ? ratio(m.cpu_us_per_req, fr.cpu_us_per_req) : null,
			target_cpu_ratio: target,
		};
		// the target against both floors: flat out (the cheapest a request
		// through this server gets) and at MailKit's own rate
		row.met = row.ratio && row.ratio.cpu != null ? row.ratio.cpu <= target : null;
		row.met_at_rate = row.cpu_ratio_at_rate != null ? row.cpu_ratio_at_rate <= target : null;
		for (const r of [m, f, fr].filter(Boolean)) {
			const sock = r.errors.connect + r.errors.read + r.errors.write + r.errors.timeout;
			// every answer must be the expected one; a few socket errors under
			// overload (a server closing kept-alive connections) are noted only
			if (r.unexpected_status > 0)
				problems.push(`${r.server} ${r.stack} ${r.route}: ${r.unexpected_status} of ${r.requests} responses not 200 (first: ${r.first_unexpected})`);
			if (sock > r.requests / 1000)
				problems.push(`${r.server} ${r.stack} ${r.route}: ${sock} socket errors in ${r.requests} requests`);
			else if (sock > 0)
				notes.push(`${r.server} ${r.stack} ${r.route}: ${sock} socket errors in ${r.requests} requests (under 0.1%)`);
			if (r.reused_ids > 0)
				problems.push(`${r.server} ${r.stack} ${r.route}: ${r.reused_ids} webhook ids sent twice (sign more deliveries)`);
		}
		rows.push(row);
	}

	// memory: the MailKit stack of each server, idle after its runs (the last sample)
	const memory = [];
	for (const server of [...new Set(runs.map((r) => r.server))]) {
		for (const stack of ['mailkit', 'floor']) {
			const s = runs.filter((r) => r.server === server && r.stack === stack && r.pss_kb != null).pop();
			if (s)
				memory.push({ server, stack, rss_kb: s.rss_kb, pss_kb: s.pss_kb, procs: s.procs });
		}
	}
	const defaultMem = memory.find((x) => x.server === 'lighttpd' && x.stack === 'mailkit');

	// leak check
	let leak = null;
	const before = runs.find((r) => r.kind === 'leak-before');
	const after = runs.find((r) => r.kind === 'leak-after');
	if (before && after) {
		const load = runs.filter((r) => r.kind === 'leak-load');
		const perProc = after.procs.map((p) => {
			const b = before.procs.find((q) => q.pid === p.pid);
			return { pid: p.pid, name: p.name, rss_kb_before: b ? b.rss_kb : null, rss_kb_after: p.rss_kb,
				pss_kb_before: b ? b.pss_kb : null, pss_kb_after: p.pss_kb };
		});
		leak = {
			server: before.server,
			requests: load.reduce((n, r) => n + r.wrk.requests, 0),
			seconds: load.reduce((n, r) => n + r.wrk.duration_us / 1e6, 0),
			rss_kb_before: before.rss_kb, rss_kb_after: after.rss_kb,
			pss_kb_before: before.pss_kb, pss_kb_after: after.pss_kb,
			rss_growth_kb: after.rss_kb - before.rss_kb,
			pss_growth_kb: after.pss_kb - before.pss_kb,
			same_processes: before.procs.map((p) => p.pid).sort().join() === after.procs.map((p) => p.pid).sort().join(),
			processes: perProc,
		};
		leak.met = leak.same_processes && leak.rss_growth_kb <= targets.leak_growth_kb &&
		    leak.requests >= targets.leak_requests;
		for (const r of load) {
			const bad = r.wrk.unexpected_status + r.wrk.errors.connect + r.wrk.errors.read + r.wrk.errors.write + r.wrk.errors.timeout;
			if (bad > 0)
				problems.push(`leak load ${r.route}: ${bad} failed or unexpected responses (first: ${r.wrk.first_unexpected || 'socket error'})`);
		}
	}

	const result = {
		generated_at: new Date().toISOString(), ...meta,
		routes: rows, memory,
		memory_target: defaultMem ? {
			stack: 'lighttpd, default config', pss_kb: defaultMem.pss_kb, rss_kb: defaultMem.rss_kb,
			limit_kb: targets.memory_kb, met: defaultMem.pss_kb < targets.memory_kb,
		} : null,
		leak, problems, notes,
	};
	writeFileSync(join(outDir, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
	writeFileSync(join(outDir, 'bench.svg'), svg(result));
	process.stdout.write(table(result));
	process.stdout.write(`\nwrote ${join(outDir, 'bench.json')} and ${join(outDir, 'bench.svg')}\n`);
}

const f0 = (x) => (x == null ? '-' : x.toFixed(0));
const f1 = (x) => (x == null ? '-' : x.toFixed(1));
const f2 = (x) => (x == null ? '-' : x.toFixed(2));
const mb = (kb) => (kb == null ? '-' : (kb / 1024).toFixed(1));
const yes = (b) => (b == null ? '?' : b ? 'yes' : 'NO');

function pad(cells, widths) {
	return cells.map((c, i) => (i < 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ');
}

function table(r) {
	const out = [];
	out.push(`MailKit benchmark, ${r.generated_at} (${r.cpus} CPUs; wrk -t${r.wrk_threads} -c${r.connections} -d${r.duration}s; ` +
	    `${r.workers} worker process(es) x ${r.threads} thread(s) per program)`);
	out.push('');
	const w = [9, 11, 9, 8, 8, 9, 7, 7, 7, 7, 8, 6, 9, 6];
	out.push(pad(['server', 'route', 'req/s', 'p50 ms', 'p99 ms', 'CPU us/r', 'x rps', 'x p50', 'x p99', 'x CPU',
		'target', 'met', 'x CPU@r', 'met@r'], w));
	for (const row of r.routes) {
		const m = row.mailkit, f = row.floor, fr = row.floor_at_rate, x = row.ratio || {};
		out.push(pad([row.server, row.route, f0(m.rps), f2(m.p50_ms), f2(m.p99_ms), f1(m.cpu_us_per_req),
			f2(x.rps), f2(x.p50), f2(x.p99), f2(x.cpu), `<=${row.target_cpu_ratio}x`, yes(row.met),
			f2(row.cpu_ratio_at_rate), yes(row.met_at_rate)], w));
		if (f)
			out.push(pad(['', ' floor', f0(f.rps), f2(f.p50_ms), f2(f.p99_ms), f1(f.cpu_us_per_req),
				'', '', '', '', '', '', '', ''], w));
		if (fr)
			out.push(pad(['', ' floor@rate', f0(fr.rps), f2(fr.p50_ms), f2(fr.p99_ms), f1(fr.cpu_us_per_req),
				'', '', '', '', '', '', '', ''], w));
	}
	out.push('');
	out.push('(x = MailKit / floor, the floor being null.fcgi behind the same web server config, flat out;');
	out.push(' x CPU@r and met@r: against the floor driven at MailKit\'s own request rate (floor@rate);');
	out.push(' CPU = user+system time of the stack\'s own processes, web server and FastCGI workers)');
	out.push('');
	out.push(pad(['server', 'stack', 'procs', 'RSS MB', 'PSS MB'], [9, 8, 6, 8, 8]));
	for (const m of r.memory)
		out.push(pad([m.server, m.stack, m.procs.length, mb(m.rss_kb), mb(m.pss_kb)], [9, 8, 6, 8, 8]));
	if (r.memory_target)
		out.push(`whole stack (lighttpd, default config) PSS ${mb(r.memory_target.pss_kb)} MB < ${mb(r.memory_target.limit_kb)} MB: ` +
		    `${yes(r.memory_target.met)}  (RSS summed over processes, shared pages counted in each: ${mb(r.memory_target.rss_kb)} MB)`);
	if (r.leak) {
		const l = r.leak;
		out.push(`leak check (${l.server}): ${l.requests} requests in ${f0(l.seconds)} s; RSS ${mb(l.rss_kb_before)} -> ${mb(l.rss_kb_after)} MB ` +
		    `(${l.rss_growth_kb >= 0 ? '+' : ''}${l.rss_growth_kb} kB), PSS ${mb(l.pss_kb_before)} -> ${mb(l.pss_kb_after)} MB ` +
		    `(${l.pss_growth_kb >= 0 ? '+' : ''}${l.pss_growth_kb} kB); ` +
		    `no growth (<= ${r.targets.leak_growth_kb} kB, same processes): ${yes(l.met)}`);
	}
	for (const n of r.notes)
		out.push(`note: ${n}`);
	for (const p of r.problems)
		out.push(`PROBLEM: ${p}`);
	return out.join('\n') + '\n';
}

// ------------------------------------------------------------------ svg

function esc(s) {
	return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

// Two panels: CPU per request against the floor (with each target), and memory.
function svg(r) {
	const W = 760, rowH = 26, left = 170, barW = 470;
	const parts = [];
	let y = 30;
	const text = (x, yy, s, attrs = '') => parts.push(`<text x="${x}" y="${yy}" ${attrs}>${esc(s)}</text>`);
	text(10, y, 'MailKit: CPU microseconds per request (own processes), against the FastCGI floor', 'font-weight="bold"');
	y += 14;
	text(10, y + 4, `${r.cpus} CPUs, wrk -t${r.wrk_threads} -c${r.connections} -d${r.duration}s, ${r.workers} process(es) x ${r.threads} thread(s) per program`, 'font-size="11" fill="#555"');
	y += 14;
	text(10, y + 4, 'dashed line = target x the flat-out floor; "at rate" = x the floor driven at MailKit\'s own rate', 'font-size="11" fill="#555"');
	y += 16;
	const maxCpu = Math.max(1, ...r.routes.flatMap((x) => [x.mailkit.cpu_us_per_req || 0,
		(x.floor?.cpu_us_per_req || 0) * x.target_cpu_ratio]));
	const sx = (v) => (v / maxCpu) * barW;
	for (const row of r.routes) {
		y += 8;
		const f = row.floor, m = row.mailkit;
		text(10, y + 13, `${row.server} ${row.route}`);
		// blue: the target met against both floors; orange: against one; red: neither
		const misses = [row.met, row.met_at_rate].filter((v) => v === false).length;
		parts.push(`<rect x="${left}" y="${y}" width="${sx(m.cpu_us_per_req || 0).toFixed(1)}" height="${rowH / 2 + 2}" fill="${['#3a7bd5', '#f0ad4e', '#d9534f'][misses]}"/>`);
		text(left + sx(m.cpu_us_per_req || 0) + 4, y + 12, `${f1(m.cpu_us_per_req)} us (${f2(row.ratio?.cpu)}x; ` +
		    `${f2(row.cpu_ratio_at_rate)}x at rate)`, 'font-size="11"');
		if (f) {
			const fy = y + rowH / 2 + 3;
			parts.push(`<rect x="${left}" y="${fy}" width="${sx(f.cpu_us_per_req || 0).toFixed(1)}" height="${rowH / 2 - 4}" fill="#aaa"/>`);
			text(left + sx(f.cpu_us_per_req || 0) + 4, fy + 9, `floor ${f1(f.cpu_us_per_req)} us`, 'font-size="10" fill="#555"');
			const tx = left + sx(f.cpu_us_per_req * row.target_cpu_ratio);
			parts.push(`<line x1="${tx.toFixed(1)}" y1="${y - 3}" x2="${tx.toFixed(1)}" y2="${y + rowH + 1}" stroke="#333" stroke-dasharray="3,2"/>`);
		}
		y += rowH;
	}
	// memory panel
	y += 36;
	text(10, y, 'Resident memory of each stack (PSS, shared pages split; RSS summed over processes)', 'font-weight="bold"');
	y += 10;
	const limit = r.targets.memory_kb;
	const mems = r.memory.slice();
	if (r.leak)
		mems.push({ server: r.leak.server, stack: 'after leak run', pss_kb: r.leak.pss_kb_after, rss_kb: r.leak.rss_kb_after, procs: r.leak.processes });
	const maxMem = Math.max(limit, ...mems.map((m) => m.rss_kb));
	const mx = (v) => (v / maxMem) * barW;
	for (const m of mems) {
		y += 8;
		text(10, y + 13, `${m.server} ${m.stack}`);
		parts.push(`<rect x="${left}" y="${y}" width="${mx(m.pss_kb).toFixed(1)}" height="${rowH / 2 + 2}" fill="#3a9d5d"/>`);
		text(left + mx(m.pss_kb) + 4, y + 12, `PSS ${mb(m.pss_kb)} MB (${m.procs.length} processes)`, 'font-size="11"');
		const ry = y + rowH / 2 + 3;
		parts.push(`<rect x="${left}" y="${ry}" width="${mx(m.rss_kb).toFixed(1)}" height="${rowH / 2 - 4}" fill="#bbb"/>`);
		text(left + mx(m.rss_kb) + 4, ry + 9, `RSS sum ${mb(m.rss_kb)} MB`, 'font-size="10" fill="#555"');
		y += rowH;
	}
	const lx = left + mx(limit);
	parts.push(`<line x1="${lx.toFixed(1)}" y1="${y - mems.length * (rowH + 8) - 4}" x2="${lx.toFixed(1)}" y2="${y + 2}" stroke="#333" stroke-dasharray="3,2"/>`);
	text(lx + 3, y + 14, `${mb(limit)} MB target`, 'font-size="10"');
	y += 30;
	return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ` +
	    `font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="#fff"/>\n` +
	    parts.join('\n') + '\n</svg>\n';
}

// ------------------------------------------------------------------ --latency

// One latency run as the table shows it; calls: upstream calls per request.
function latencyRow(r, meta) {
	const w = r.wrk;
	const seconds = w.duration_us / 1e6;
	const calls = meta.upstream_calls[r.stack][r.route];
	const upstreamMs = calls * r.latency_ms;
	const sock = w.errors.connect + w.errors.read + w.errors.write + w.errors.timeout;
	const row = {
		latency_ms: r.latency_ms, clients: r.clients, server: r.server, stack: r.stack, route: r.route,
		requests: w.requests, rps: w.requests / seconds,
		p50_ms: w.latency_us.p50 / 1000, p99_ms: w.latency_us.p99 / 1000,
		cpu_us_per_req: w.requests > 0 ? (r.cpu_ticks / r.clk_tck) * 1e6 / w.requests : null,
		// the whole machine during the run, and the sandbox's (the upstreams') share of it
		machine_busy: r.machine_busy_ticks + r.machine_idle_ticks > 0 ?
		    r.machine_busy_ticks / (r.machine_busy_ticks + r.machine_idle_ticks) : null,
		sandbox_cpu_share: r.machine_busy_ticks + r.machine_idle_ticks > 0 && r.sandbox_cpu_ticks != null ?
		    r.sandbox_cpu_ticks / (r.machine_busy_ticks + r.machine_idle_ticks) : null,
		errors: sock + w.unexpected_status, first_unexpected: w.first_unexpected,
		pss_kb: r.pss_kb, rss_kb: r.rss_kb, procs: r.procs ? r.procs.length : null,
		upstream_ms: upstreamMs,
		// closed loop: each client has one request in flight, which takes at
		// least the upstream time of its calls
		limit_rps: upstreamMs > 0 ? r.clients / (upstreamMs / 1000) : null,
	};
	row.limit_share = row.limit_rps ? row.rps / row.limit_rps : null;
	return row;
}

// A share as a whole percentage, "-" if unknown.
const pct = (v) => (v == null ? '-' : (100 * v).toFixed(0));

function latencyLine(r) {
	const meta = { upstream_calls: { mailkit: { credits: 1, send: 2 }, express: { credits: 1, send: 3 } } };
	const x = latencyRow(r, meta);
	process.stdout.write(`bench.sh: ${x.latency_ms} ms  c${x.clients}  ${x.server.padEnd(8)} ${x.stack.padEnd(7)} ` +
	    `${x.route.padEnd(7)} ${x.rps.toFixed(0).padStart(6)} req/s  p99 ${x.p99_ms.toFixed(1)} ms  ` +
	    `${x.errors} errors  ${(x.cpu_us_per_req || 0).toFixed(0)} us CPU/req  PSS ${(x.pss_kb / 1024).toFixed(1)} MB  ` +
	    `machine ${pct(x.machine_busy)} busy (sandbox ${pct(x.sandbox_cpu_share)})\n`);
}

function latencyReport(runsFile, metaFile, outDir) {
	const meta = JSON.parse(readFileSync(metaFile, 'utf8'));
	const rows = readFileSync(runsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l))
	    .filter((r) => r.kind === 'latency').map((r) => latencyRow(r, meta));
	const t = meta.targets;
	const problems = [];
	for (const m of rows.filter((r) => r.stack === 'mailkit')) {
		const e = rows.find((r) => r.stack === 'express' && r.route === m.route &&
		    r.clients === m.clients && r.latency_ms === m.latency_ms);
		m.express_rps = e ? e.rps : null;
		m.checks = {
			limit: m.limit_share == null ? null : m.limit_share >= t.limit_share,
			express: e ? m.rps >= e.rps : null,
			p99: m.latency_ms > 0 ? m.p99_ms <= m.upstream_ms + t.p99_extra_ms : null,
			errors: m.errors === 0,
			memory: m.pss_kb < t.memory_kb,
		};
		for (const [k, v] of Object.entries(m.checks))
			if (v === false)
				problems.push(`${m.latency_ms} ms, ${m.clients} clients, ${m.server} ${m.route}: ${k} not met`);
	}
	const result = { generated_at: new Date().toISOString(), ...meta, runs: rows, problems };
	writeFileSync(join(outDir, 'bench.json'), JSON.stringify(result, null, 2) + '\n');
	writeFileSync(join(outDir, 'bench.svg'), latencySvg(result));
	const w = [7, 7, 9, 8, 7, 7, 8, 6, 8, 7, 6, 8, 7, 6, 5];
	const out = [`MailKit concurrency benchmark, ${result.generated_at} (${meta.cpus} CPUs, ${meta.duration} s per run, ` +
	    `closed loop; limit = clients / upstream time of the route's calls)`, ''];
	out.push(pad(['lat ms', 'clients', 'server', 'route', 'req/s', 'limit', '% limit', 'p99 ms', 'CPU us/r',
		'errors', 'PSS MB', 'Express', 'met', 'busy%', 'sbx%'], w));
	for (const r of rows) {
		const met = r.checks ? Object.values(r.checks).every((v) => v !== false) : null;
		out.push(pad([r.latency_ms, r.clients, r.stack === 'express' ? 'express' : r.server, r.route,
			f0(r.rps), f0(r.limit_rps), r.limit_share == null ? '-' : (100 * r.limit_share).toFixed(0),
			f1(r.p99_ms), f0(r.cpu_us_per_req), r.errors, mb(r.pss_kb),
			r.express_rps == null ? '' : f0(r.express_rps), r.checks ? yes(met) : '',
			pct(r.machine_busy), pct(r.sandbox_cpu_share)], w));
	}
	out.push('');
	out.push('busy%: all CPUs in use during the run (wrk, web server, MailKit, sandbox); sbx%: the sandbox\'s share');
	out.push(`targets (MailKit): >= ${100 * t.limit_share}% of the limit and >= Express's req/s, p99 <= upstream time + ` +
	    `${t.p99_extra_ms} ms, no errors, whole stack PSS < ${mb(t.memory_kb)} MB (sampled mid-run)`);
	for (const p of problems)
		out.push(`NOT MET: ${p}`);
	process.stdout.write(out.join('\n') + `\n\nwrote ${join(outDir, 'bench.json')} and ${join(outDir, 'bench.svg')}\n`);
}

// Bars of req/s per latency and clients, one group per route, with the limit marked.
function latencySvg(r) {
	const parts = [];
	const W = 900, left = 230, barW = W - left - 150;
	let y = 40;
	const text = (x, yy, s, attrs = '') => parts.push(`<text x="${x}" y="${yy}" ${attrs}>${s}</text>`);
	text(10, 22, `MailKit vs the tutorial's Express: req/s, closed loop (${r.generated_at})`, 'font-weight="bold"');
	const colours = { lighttpd: '#2a6', apache: '#26a', express: '#c62' };
	for (const route of ['credits', 'send']) {
		for (const lat of [...new Set(r.runs.map((x) => x.latency_ms))]) {
			for (const c of [...new Set(r.runs.map((x) => x.clients))]) {
				const group = r.runs.filter((x) => x.route === route && x.latency_ms === lat && x.clients === c);
				if (!group.length)
					continue;
				const max = Math.max(...group.map((x) => Math.max(x.rps, x.limit_rps || 0)));
				text(10, y + 12, `${route}, ${lat} ms, ${c} clients`, 'font-size="12"');
				for (const x of group) {
					const key = x.stack === 'express' ? 'express' : x.server;
					const bw = (x.rps / max) * barW;
					parts.push(`<rect x="${left}" y="${y}" width="${bw.toFixed(1)}" height="12" fill="${colours[key]}"/>`);
					text(left + bw + 4, y + 10, `${key} ${f0(x.rps)}/s p99 ${f0(x.p99_ms)} ms`, 'font-size="10"');
					y += 15;
				}
				const lim = group[0].limit_rps;
				if (lim) {
					const lx = left + (lim / max) * barW;
					parts.push(`<line x1="${lx.toFixed(1)}" y1="${y - 15 * group.length - 2}" x2="${lx.toFixed(1)}" y2="${y}" stroke="#333" stroke-dasharray="3,2"/>`);
				}
				y += 10;
			}
		}
	}
	text(10, y + 10, 'dashed: the closed-loop limit of MailKit\'s route (clients / upstream time)', 'font-size="10"');
	y += 24;
	return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${y}" viewBox="0 0 ${W} ${y}" ` +
	    `font-family="sans-serif" font-size="12">\n<rect width="100%" height="100%" fill="#fff"/>\n` +
	    parts.join('\n') + '\n</svg>\n';
}

// ------------------------------------------------------------------ main

const [cmd, ...args] = process.argv.slice(2);

if (cmd === 'sign') {
	const [secret, bodyFile, countText, prefix] = args;
	const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
	const body = readFileSync(bodyFile);
	const ts = String(Math.floor(Date.now() / 1000));
	const count = Number(countText);
	const lines = [];
	for (let i = 0; i < count; i++) {
		const id = `${prefix}-${i}`;
		const mac = createHmac('sha256', key);
		mac.update(`${id}.${ts}.`);
		mac.update(body);
		lines.push(`${id} ${ts} v1,${mac.digest('base64')}`);
	}
	process.stdout.write(lines.join('\n') + '\n');
} else if (cmd === 'report') {
	report(...args);
} else if (cmd === 'latency') {
	latencyReport(...args);
} else if (cmd === 'line') {
	latencyLine(JSON.parse(readFileSync(0, 'utf8')));
} else {
	process.stderr.write('usage: bench.mjs sign SECRET BODY_FILE COUNT PREFIX | report RUNS META OUT | latency RUNS META OUT | line < RUN\n');
	process.exit(2);
}
