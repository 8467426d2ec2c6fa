// soak-lib.mjs: what the soaks (soak.mjs, neural-soak.mjs) share: their
// command line, and small helpers.
import { parseArgs } from 'node:util';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const pick = (a) => a[Math.floor(Math.random() * a.length)];

/*
 * The soak's options: `count` (its request count option, e.g. 'sends') with
 * countDefault, --settle with settleDefault seconds, `extra` parseArgs options,
 * and those of every soak (--clients, --customers, --fault-rate, --seconds,
 * --server).  Returns { opt, count, clients, customers, faultRate, deadline
 * (Date.now() ms when the load stops), settleMs }.
 */
export function soakOptions(count, countDefault, settleDefault, extra = {}) {
	const { values: opt } = parseArgs({ options: {
		[count]: { type: 'string', default: String(countDefault) },
		clients: { type: 'string', default: '24' },
		customers: { type: 'string', default: '6' },
		'fault-rate': { type: 'string', default: '0.2' },
		seconds: { type: 'string', default: '900' },
		settle: { type: 'string', default: String(settleDefault) },
		server: { type: 'string', default: 'lighttpd' },
		...extra,
	} });
	return {
		opt,
		count: Number(opt[count]),
		clients: Number(opt.clients),
		customers: Number(opt.customers),
		faultRate: Number(opt['fault-rate']),
		deadline: Date.now() + Number(opt.seconds) * 1000,
		settleMs: Number(opt.settle) * 1000,
	};
}
