#!/bin/bash
# bench.sh: MailKit's CPU per request and memory, against a null FastCGI responder (the floor).
#
# Not a test: run by hand from a configured build directory (see README,
# "Performance").  It starts, on 127.0.0.1 only:
#   - a sandbox stack (mailkit-stack in sandbox mode), used only for its
#     Dodo/Resend emulation, on its own lighttpd so its CPU is not MailKit's;
#   - the MailKit stack under test (mailkit-stack with an env file pointing
#     at that sandbox: "real" mode, no sandbox of its own);
#   - the floor stack: the same mailkit-stack, web server config and worker
#     counts, with every program replaced by null.fcgi ({"ok":true}).
# It drives GET /credits/{id}, POST /send and POST /webhooks/dodo with wrk,
# samples utime+stime of exactly the stack's processes (the pids in
# STATE/run/*.pid, plus the web server's children: Apache's workers), their
# VmRSS and PSS, runs a leak check, and repeats the routes through Apache.
# Everything it started is stopped by pid on exit.
#
# With --latency it measures concurrency instead: the sandbox answers each
# Dodo/Resend call after SANDBOX_LATENCY_MS (0 and 100 by default), and
# GET /credits/{id} and POST /send are driven closed-loop by 64 and 256
# clients through each web server, next to the tutorial's own Express
# server (server.ts taken from the tutorial at run time, its npm
# dependencies installed under OUT/express) on the same sandbox: req/s
# against the closed-loop limit, p99, errors and the whole stack's PSS
# sampled in the middle of each run.

set -u
umask 022

me=bench.sh
here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/../.." && pwd)

# ------------------------------------------------------------------ options
duration=10		# seconds per measured wrk run
connections=32
wrk_threads=2
workers=${MAILKIT_WORKERS:-1}	# spawn-fcgi -F per program (mailkit-stack's default)
threads=		# MAILKIT_THREADS per worker process; "": the settings' default
servers="lighttpd apache"
leak_requests=100000
leak_max_s=300		# the leak check's wrk runs stop here even if short of the count
port_base=18600
out=bench-results
builddir=${MAILKIT_BUILDDIR:-}
profile=no		# --profile: perf record MailKit's processes during each measured run
WARMUP_S=2
QUIET_MAX_S=60		# bound of the wait for an idle sandbox before each run
WRK_GRACE_S=30		# wrk gets -d plus this before timeout(1) ends it
latency_mode=no		# --latency: the concurrency benchmark (see above)
latencies="0 100"	# SANDBOX_LATENCY_MS values of --latency
clients="64 256"	# wrk -c values of --latency
express=yes		# --latency: also the tutorial's Express server
tutorial=${MAILKIT_TUTORIAL:-$srcdir/../shared/seeds/mailkit-tutorial.md}

usage() {
	cat <<EOF
Usage: tests/bench/bench.sh [options]   (from the build directory)

  --duration S         seconds per measured run (default $duration)
  --connections N      wrk -c (default $connections)
  --wrk-threads N      wrk -t (default $wrk_threads)
  --workers N          FastCGI processes per program, spawn-fcgi -F (default $workers)
  --threads N          MAILKIT_THREADS per process (default: the settings' default)
  --servers LIST       web servers to measure, in order (default "$servers")
  --leak-requests N    requests of the leak check, 0 to skip (default $leak_requests)
  --port-base N        ports N..N+4 on 127.0.0.1 (default $port_base)
  --out DIR            results: bench.json, bench.svg, runs.jsonl, state/ (default $out)
  --builddir DIR       where mailkit-stack and the programs are (default: cwd)
  --latency            the concurrency benchmark: --latencies x --clients x servers,
                       MailKit next to the tutorial's Express server
  --latencies LIST     SANDBOX_LATENCY_MS values (default "$latencies")
  --clients LIST       closed-loop clients, wrk -c (default "$clients")
  --no-express         --latency without the Express server
  --tutorial FILE      the tutorial markdown holding server.ts (default $tutorial)
  --profile            also sample MailKit's processes with perf (cpu-clock, call
                       graphs) during each measured run: OUT/perf-SERVER-ROUTE.data
                       and a flat report, OUT/perf-SERVER-ROUTE.txt
EOF
}

die() { printf '%s: %s\n' "$me" "$*" >&2; exit 1; }
say() { printf '%s: %s\n' "$me" "$*" >&2; }
num() { case $2 in ''|*[!0-9]*) die "$1 needs a number, not '$2'" ;; esac; }

while [ $# -gt 0 ]; do
	case $1 in
	--duration) num "$1" "${2:-}"; duration=$2; shift ;;
	--connections) num "$1" "${2:-}"; connections=$2; shift ;;
	--wrk-threads) num "$1" "${2:-}"; wrk_threads=$2; shift ;;
	--workers) num "$1" "${2:-}"; workers=$2; shift ;;
	--threads) num "$1" "${2:-}"; threads=$2; shift ;;
	--servers) servers=${2:-}; shift ;;
	--leak-requests) num "$1" "${2:-}"; leak_requests=$2; shift ;;
	--port-base) num "$1" "${2:-}"; port_base=$2; shift ;;
	--out) out=${2:-}; shift ;;
	--builddir) builddir=${2:-}; shift ;;
	--profile) profile=yes ;;
	--latency) latency_mode=yes ;;
	--latencies) latencies=${2:-}; shift ;;
	--clients) clients=${2:-}; shift ;;
	--no-express) express=no ;;
	--tutorial) tutorial=${2:-}; shift ;;
	-h|--help) usage; exit 0 ;;
	*) usage >&2; die "unknown argument: $1" ;;
	esac
	shift
done
for v in $latencies; do num --latencies "$v"; [ "$v" -le 10000 ] || die "--latencies: at most 10000"; done
for v in $clients; do num --clients "$v"; [ "$v" -ge 1 ] && [ "$v" -le 1000 ] || die "--clients: 1-1000"; done
[ "$duration" -ge 1 ] && [ "$duration" -le 300 ] || die "--duration must be 1-300"
[ "$connections" -ge 1 ] && [ "$connections" -le 1000 ] || die "--connections must be 1-1000"
[ "$wrk_threads" -ge 1 ] && [ "$wrk_threads" -le "$connections" ] || die "--wrk-threads must be 1-connections"
[ "$leak_requests" -le 10000000 ] || die "--leak-requests is at most 10000000"
for s in $servers; do
	case $s in lighttpd|apache) ;; *) die "--servers: lighttpd and/or apache, not '$s'" ;; esac
done

if [ -z "$builddir" ]; then
	if [ -f ./config.status ]; then builddir=$PWD; else builddir=$srcdir; fi
fi
builddir=$(cd "$builddir" && pwd) || die "no build directory $builddir"
stack=$builddir/mailkit-stack
for p in mailkit-stack checkout.fcgi credits.fcgi send.fcgi emails.fcgi webhook.fcgi sandbox.fcgi; do
	[ -x "$builddir/$p" ] || die "$builddir/$p is missing: run ./configure && make first"
done
for t in wrk node curl make; do
	command -v "$t" >/dev/null || die "$t is needed (apt-get install wrk nodejs curl make)"
done
if [ "$profile" = yes ]; then
	command -v perf >/dev/null || die "--profile needs perf (apt-get install linux-perf)"
fi
make -s -C "$builddir" null.fcgi >&2 || die "make null.fcgi failed"

mkdir -p "$out" || die "cannot create $out"
out=$(cd "$out" && pwd)
state_root=$out/state
runs=$out/runs.jsonl
clk_tck=$(getconf CLK_TCK)
cpus=$(nproc)

port_sandbox=$port_base
port_of() {	# port_of SERVER STACK
	local i=1
	[ "$1" = apache ] && i=3
	[ "$2" = floor ] && i=$((i + 1))
	echo $((port_base + i))
}
[ $((port_base + 4)) -le 65535 ] || die "--port-base too high"

# ------------------------------------------------------------------ cleanup
started_states=()
wrk_pid=
perf_pid=
express_pid=
cleanup() {
	local rc=$? s
	trap - EXIT INT TERM HUP
	if [ -n "$express_pid" ] && kill -0 "$express_pid" 2>/dev/null; then
		kill -TERM "$express_pid" 2>/dev/null
	fi
	if [ -n "$wrk_pid" ] && kill -0 "$wrk_pid" 2>/dev/null; then
		kill -TERM "$wrk_pid" 2>/dev/null
	fi
	if [ -n "$perf_pid" ] && kill -0 "$perf_pid" 2>/dev/null; then
		kill -INT "$perf_pid" 2>/dev/null
	fi
	for s in "${started_states[@]}"; do
		"$stack" stop --state "$s" >/dev/null 2>&1
	done
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ------------------------------------------------------------------ processes
# The pids of a stack: every pid file its mailkit-stack wrote, and the web
# server's children (Apache's worker processes; lighttpd has none).
stack_pids() {	# stack_pids STATE -> one pid per line
	local f p srv
	for f in "$1"/run/*.pid; do
		[ -f "$f" ] || continue
		# spawn-fcgi ends the file without a newline: read the last line too
		while read -r p || [ -n "$p" ]; do
			case $p in ''|*[!0-9]*) continue ;; esac
			[ -d "/proc/$p" ] && echo "$p"
		done <"$f"
	done | sort -un | {
		while read -r p; do
			echo "$p"
			srv=$(cat "$1/run/server.pid" 2>/dev/null)
			[ "$p" = "$srv" ] && pgrep -P "$p"
		done
	} | sort -un
}

# The pids of what is measured: a stack's state directory, or "pid:N" (Express).
pids_of() {	# pids_of TARGET
	case $1 in
	pid:*) [ -d "/proc/${1#pid:}" ] && echo "${1#pid:}" ;;
	*) stack_pids "$1" ;;
	esac
}

# "pid ticks" per process: utime+stime, plus cutime+cstime (children the
# process reaped: Apache's parent collects the workers it retires).
cpu_snapshot() {	# cpu_snapshot STATE
	local p
	for p in $(pids_of "$1"); do
		awk -v pid="$p" '{ sub(/^.*\) /, ""); print pid, $12 + $13 + $14 + $15 }' \
		    "/proc/$p/stat" 2>/dev/null
	done
}

# Ticks used between two snapshots.  A process gone by the second one was
# reaped by its parent, whose cutime now holds its whole life: take its
# ticks of the first snapshot back out.
cpu_delta() {	# cpu_delta FILE_BEFORE FILE_AFTER
	awk 'NR == FNR { b[$1] = $2; next }
	     { d += $2 - ($1 in b ? b[$1] : 0); seen[$1] = 1 }
	     END { for (p in b) if (!(p in seen)) d -= b[p]; print d + 0 }' "$1" "$2"
}

# The machine's "busy idle" jiffies, summed over all CPUs (/proc/stat).
machine_cpu() {
	awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6; exit }' /proc/stat
}

# Wait (at most QUIET_MAX_S) until the sandbox stack is idle: after a run
# it may still be busy for a while (SQLite checkpoints, webhook deliveries
# of a sandbox that is not record-only), which would otherwise share the
# CPUs with the next measured run.
quiesce() {
	local i=0 a b
	while [ $i -lt $QUIET_MAX_S ]; do
		cpu_snapshot "$sbx_state" >"$out/cpu.quiet"
		sleep 1
		cpu_snapshot "$sbx_state" >"$out/cpu.quiet2"
		[ "$(cpu_delta "$out/cpu.quiet" "$out/cpu.quiet2")" -le $((clk_tck / 20)) ] && return 0
		i=$((i + 1))
	done
	say "the sandbox stack is still busy after ${QUIET_MAX_S} s; measuring anyway"
}

# JSON: {"rss_kb":N,"pss_kb":N,"procs":[{pid,name,rss_kb,pss_kb}...]}
mem_json() {	# mem_json STATE
	local p name rss pss first=1 trss=0 tpss=0 list=
	for p in $(pids_of "$1"); do
		name=$(tr -cd 'A-Za-z0-9._-' <"/proc/$p/comm" 2>/dev/null)
		rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$p/status" 2>/dev/null)
		pss=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null)
		[ -n "$rss" ] || continue
		[ -n "$pss" ] || pss=$rss	# no smaps_rollup: PSS unknown, counted as RSS
		trss=$((trss + rss))
		tpss=$((tpss + pss))
		[ $first -eq 1 ] || list="$list,"
		first=0
		list="$list{\"pid\":$p,\"name\":\"$name\",\"rss_kb\":$rss,\"pss_kb\":$pss}"
	done
	printf '{"rss_kb":%d,"pss_kb":%d,"procs":[%s]}' "$trss" "$tpss" "$list"
}

# ------------------------------------------------------------------ stacks
start_stack() {	# start_stack STATE PORT SERVER ENV_FILE [STACK_SCRIPT]
	local st=$1 port=$2 server=$3 envf=$4 script=${5:-$stack}
	rm -rf "$st"
	mkdir -p "$st" || die "cannot create $st"
	started_states+=("$st")
	${threads:+env MAILKIT_THREADS=$threads} "$script" start --state "$st" --port "$port" --server "$server" \
	    --workers "$workers" ${envf:+--env-file "$envf"} >"$st.start.log" 2>&1 ||
		{ cat "$st.start.log" >&2; die "could not start the stack in $st"; }
}

stop_stack() {	# stop_stack STATE
	"$stack" stop --state "$1" >/dev/null 2>&1
}

# The floor: a copy of mailkit-stack next to links named like the programs,
# all pointing at null.fcgi (mailkit-stack takes the programs from its own
# directory in a build tree; www/ and conf/ are the source tree's).
floor_bin=$out/floor-bin
rm -rf "$floor_bin"
mkdir -p "$floor_bin" || die "cannot create $floor_bin"
cp "$stack" "$floor_bin/mailkit-stack"
for p in checkout credits send emails webhook; do
	ln -s "$builddir/null.fcgi" "$floor_bin/$p.fcgi"
done
ln -s "$builddir/mailkit-supervise" "$floor_bin/mailkit-supervise"	# the same supervisor
touch "$floor_bin/config.status"	# tree mode, whatever the copy's neighbours

# ------------------------------------------------------------------ the sandbox
rm -rf "$state_root"
mkdir -p "$state_root" && chmod 0755 "$state_root" "$out" || die "cannot create $state_root"
: >"$runs"
rm -f "$out"/signed-*.txt "$out"/wrk-*
sbx_state=$state_root/sandbox
say "starting the sandbox stack on 127.0.0.1:$port_sandbox"
# Record-only webhooks: delivering them to the sandbox stack's own MailKit
# (which knows none of the bench's customers) is CPU taken from the stack
# under test.  The stacks started later are in real mode and ignore this.
export SANDBOX_WEBHOOK_URL=
start_stack "$sbx_state" "$port_sandbox" lighttpd ""
sbx=http://127.0.0.1:$port_sandbox/sandbox

# MailKit in "real" mode, its upstreams the sandbox's emulation.
webhook_key=whsec_$(head -c 32 /dev/urandom | base64 | tr -d '\n')
env_file=$out/mailkit-bench.env
cat >"$env_file" <<EOF
# written by tests/bench/bench.sh: MailKit against the sandbox of another stack
DODO_PAYMENTS_API_KEY=bench_dodo_key
DODO_PAYMENTS_BASE_URL=$sbx/dodo
RESEND_API_KEY=re_bench_key
RESEND_BASE_URL=$sbx/resend
DODO_WEBHOOK_KEY=$webhook_key
CREDIT_ENTITLEMENT_ID=cde_sandbox_email
PLAN_PRODUCT_ID=pdt_sandbox_plan
TOPUP_PRODUCT_ID=pdt_sandbox_topup
MAIL_FROM=MailKit Bench <bench@mailkit.test>
# One API key sends all the load: the limiter still counts every request
# (its cost is measured) but never refuses one.
RATE_LIMIT_PER_MINUTE=1000000
EOF
chmod 0644 "$env_file"

# ------------------------------------------------------------------ load
# run_wrk NAME URL [VAR=value ...]: one bounded wrk run; its JSON on stdout.
run_wrk() {
	local name=$1 url=$2 res=$out/wrk-$1.json d=$duration rc
	shift 2
	local vars=("$@") v
	for v in "${vars[@]}"; do
		case $v in BENCH_DURATION=*) d=${v#*=} ;; esac
	done
	rm -f "$res" "$res".done.*
	env "${vars[@]}" BENCH_RESULT="$res" BENCH_WRK_THREADS="$wrk_threads" \
	    timeout $((d + WRK_GRACE_S)) wrk -t "$wrk_threads" -c "$connections" -d "${d}s" \
	    --timeout 10s -s "$here/wrk.lua" "$url" >"$out/wrk-$name.out" 2>&1 &
	wrk_pid=$!
	# A request cap: wrk sleeps its whole -d even when every thread has
	# stopped, so end it (SIGINT, which timeout(1) passes on) once they all have.
	case " ${vars[*]} " in *" BENCH_MAX="[1-9]*)
		while kill -0 "$wrk_pid" 2>/dev/null; do
			if [ "$(ls "$res".done.* 2>/dev/null | wc -l)" -ge "$wrk_threads" ]; then
				kill -INT "$wrk_pid" 2>/dev/null
				break
			fi
			sleep 0.2
		done ;;
	esac
	wait "$wrk_pid"
	rc=$?
	wrk_pid=
	[ $rc -eq 0 ] && [ -s "$res" ] ||
		{ cat "$out/wrk-$name.out" >&2; die "wrk run $name failed (status $rc)"; }
	cat "$res"
}

# perf_start STATE BASE: sample the stack's processes until perf_stop.
# cpu-clock (a software event) works where hardware counters do not.
perf_start() {
	local pids
	pids=$(stack_pids "$1" | paste -sd, -)
	perf record -q -e cpu-clock -F 2000 -g -o "$2.data" -p "$pids" >"$2.log" 2>&1 &
	perf_pid=$!
	sleep 0.5	# perf attaches before the load starts
}

perf_stop() {	# perf_stop BASE: end the sampling, write its flat report
	[ -n "$perf_pid" ] || return 0
	kill -INT "$perf_pid" 2>/dev/null
	wait "$perf_pid" 2>/dev/null
	perf_pid=
	perf report -q -i "$1.data" --no-children --sort comm,dso,sym --percent-limit 0.5 \
	    >"$1.txt" 2>>"$1.log" || say "perf report failed: see $1.log"
	say "profile: $1.txt"
}

# measure KIND SERVER STACK ROUTE STATE URL [VAR=value ...]: a wrk run with the
# stack's CPU sampled around it and its memory after; appends to runs.jsonl.
measure() {
	local kind=$1 server=$2 stk=$3 route=$4 st=$5 url=$6 w cpu mem
	shift 6
	quiesce
	[ "$profile" = yes ] && [ "$kind" = measure ] && [ "$stk" = mailkit ] &&
		perf_start "$st" "$out/perf-$server-$route"
	cpu_snapshot "$st" >"$out/cpu.before"
	w=$(run_wrk "$kind-$server-$stk-$route" "$url" "$@") || exit 1
	cpu_snapshot "$st" >"$out/cpu.after"
	perf_stop "$out/perf-$server-$route"
	cpu=$(cpu_delta "$out/cpu.before" "$out/cpu.after")
	mem=$(mem_json "$st")
	mem=${mem#\{}
	printf '{"kind":"%s","server":"%s","stack":"%s","route":"%s","clk_tck":%d,"cpu_ticks":%d,%s,"wrk":%s}\n' \
	    "$kind" "$server" "$stk" "$route" "$clk_tck" "$cpu" "${mem%\}}" "$w" >>"$runs"
	awk -v r="$route" -v s="$stk" -v v="$server" -v t="$clk_tck" -v c="$cpu" '
	    { match($0, /"requests":[0-9]+/); n = substr($0, RSTART + 11, RLENGTH - 11);
	      match($0, /"duration_us":[0-9]+/); us = substr($0, RSTART + 14, RLENGTH - 14);
	      per = 0; if (n + 0 > 0) per = c / t * 1e6 / n	# (mawk: no ">" inside printf)
	      printf "%s: %-8s %-7s %-7s %8.0f req/s  %7.1f us CPU/request\n", "bench.sh", v, s, r,
	          n / (us / 1e6), per }' <<<"$w" >&2
}

# The request rate of the last measured run, whole requests per second.
last_rate() {
	tail -n 1 "$runs" | awk '{ match($0, /"requests":[0-9]+/); n = substr($0, RSTART + 11, RLENGTH - 11);
	    match($0, /"duration_us":[0-9]+/); us = substr($0, RSTART + 14, RLENGTH - 14);
	    printf "%d\n", (us > 0 ? n / (us / 1e6) : 0) + 0.5 }'
}

# mem_record KIND SERVER STACK STATE: a memory sample alone.
mem_record() {
	local mem
	mem=$(mem_json "$4")
	printf '{"kind":"%s","server":"%s","stack":"%s",%s\n' "$1" "$2" "$3" "${mem#\{}" >>"$runs"
}

# ------------------------------------------------------------------ a customer
# Subscribe through the sandbox's hosted checkout (as a browser would: the
# claim token from /checkout/subscribe fetches the first API key at the
# return), then credit the customer generously with the dashboard's form.
# Sets customer and api_key.
subscribe() {	# subscribe MAILKIT_URL
	local base=$1 sub url claim csrf loc id ret
	# a buyer per stack: the stacks share one sandbox, which refuses a
	# second plan for the same email (409)
	subscribe_n=$(( ${subscribe_n:-0} + 1 ))
	sub=$(curl -sf -m 10 -H 'Content-Type: application/json' \
	    -d "{\"email\":\"bench$subscribe_n@example.org\",\"name\":\"Bench\"}" \
	    "$base/checkout/subscribe") || die "POST /checkout/subscribe failed"
	url=$(sed -n 's/.*"checkout_url":"\([^"]*\)".*/\1/p' <<<"$sub")
	claim=$(sed -n 's/.*"claim_token":"\([^"]*\)".*/\1/p' <<<"$sub")
	[ -n "$url" ] || die "no checkout_url in: $sub"
	# the hosted page's form carries a per-page token (src/sandbox/guard.c)
	csrf=$(curl -sf -m 10 "$url" | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -n 1)
	[ -n "$csrf" ] || die "no form token on the checkout page $url"
	loc=$(curl -s -m 10 -o /dev/null -w '%{redirect_url}' --data-urlencode "csrf=$csrf" \
	    --data-urlencode 'card=4242 4242 4242 4242' \
	    --data-urlencode 'exp=12 / 34' --data-urlencode 'cvc=123' --data-urlencode 'cardholder=Bench' "$url")
	id=$(sed -n 's/.*[?&]subscription_id=\([^&]*\).*/\1/p' <<<"$loc")
	[ -n "$id" ] || die "the sandbox checkout did not redirect with a subscription: $loc"
	ret=$(curl -sf -m 10 ${claim:+-H "Authorization: Bearer $claim"} "$base/checkout/return?subscription_id=$id")
	customer=$(sed -n 's/.*"customer_id":"\([^"]*\)".*/\1/p' <<<"$ret")
	api_key=$(sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p' <<<"$ret")
	[ -n "$customer" ] || die "GET /checkout/return found no customer: $ret"
	curl -sf -m 10 -o /dev/null -H 'Content-Type: application/json' \
	    -d '{"entry_type":"credit","amount":"50000000"}' \
	    "$sbx/customers/$customer/adjust" || die "could not credit $customer"
}

# Request bodies.  The webhook is a cheap event MailKit only logs and
# records (credit.deducted), signed anew for each run.
send_body=$out/send.json
hook_body=$out/webhook.json
sign() {	# sign COUNT PREFIX -> file name
	local f=$out/signed-$2.txt
	node "$here/bench.mjs" sign "$webhook_key" "$hook_body" "$1" "$2" >"$f" || die "signing failed"
	echo "$f"
}
# Enough distinct webhook-ids for the fastest plausible rate.
hook_count=$((duration * 40000))

bench_server() {	# bench_server SERVER
	local server=$1 mk_state fl_state mk fl route url st stk
	mk_state=$state_root/mailkit-$server
	fl_state=$state_root/floor-$server
	say "starting MailKit ($server) on 127.0.0.1:$(port_of "$server" mailkit) and its floor on $(port_of "$server" floor)"
	start_stack "$mk_state" "$(port_of "$server" mailkit)" "$server" "$env_file"
	start_stack "$fl_state" "$(port_of "$server" floor)" "$server" "$env_file" "$floor_bin/mailkit-stack"
	mk=http://127.0.0.1:$(port_of "$server" mailkit)
	fl=http://127.0.0.1:$(port_of "$server" floor)
	subscribe "$mk"	# a customer per stack: each has its own database of API keys
	export BENCH_AUTH=$api_key	# "" when MAILKIT_AUTH=customer_id: no header
	printf '{"customer_id":"%s","to":["reader@example.org"],"subject":"Benchmark","html":"<p>Hello from the MailKit benchmark.</p>"}' \
	    "$customer" >"$send_body"
	printf '{"business_id":"bus_bench","type":"credit.deducted","timestamp":"%s","data":{"payload_type":"CreditLedgerEntry","customer_id":"%s","credit_entitlement_id":"cde_sandbox_email","transaction_type":"debit","amount":"1","balance_after":"4999"}}' \
	    "$(date -u +%Y-%m-%dT%H:%M:%S.000000Z)" "$customer" >"$hook_body"

	# warm-up: connections to the sandbox, SQLite caches; not recorded
	for stk in floor mailkit; do
		url=$mk; st=$mk_state
		[ $stk = floor ] && { url=$fl; st=$fl_state; }
		run_wrk "warm-$server-$stk-credits" "$url/credits/$customer" BENCH_DURATION=$WARMUP_S >/dev/null || exit 1
		run_wrk "warm-$server-$stk-send" "$url/send" BENCH_DURATION=$WARMUP_S BENCH_METHOD=POST \
		    BENCH_BODY_FILE="$send_body" >/dev/null || exit 1
		run_wrk "warm-$server-$stk-webhook" "$url/webhooks/dodo" BENCH_DURATION=$WARMUP_S BENCH_METHOD=POST \
		    BENCH_BODY_FILE="$hook_body" BENCH_SIGNED_FILE="$(sign $((WARMUP_S * 25000)) "warm-$server-$stk-$$")" >/dev/null || exit 1
	done

	for route in credits webhook send; do	# sends last: they leave the sandbox busiest
		# the floor flat out, MailKit flat out, then the floor again at the
		# rate MailKit reached ("floor@rate"): a null responder's CPU per
		# request itself falls as the rate rises (fewer wake-ups per request)
		for stk in floor mailkit floor@rate; do
			url=$mk; st=$mk_state; rate=()
			[ $stk = mailkit ] || { url=$fl; st=$fl_state; }
			[ $stk = floor@rate ] && rate=(BENCH_RATE="$(last_rate)" BENCH_CONNECTIONS="$connections")
			case $route in
			credits) measure measure "$server" $stk credits "$st" "$url/credits/$customer" \
			    "${rate[@]}" ;;
			send) measure measure "$server" $stk send "$st" "$url/send" BENCH_METHOD=POST \
			    BENCH_BODY_FILE="$send_body" "${rate[@]}" ;;
			webhook) measure measure "$server" $stk webhook "$st" "$url/webhooks/dodo" BENCH_METHOD=POST \
			    BENCH_BODY_FILE="$hook_body" BENCH_SIGNED_FILE="$(sign "$hook_count" "bench-$server-${stk%@*}-$$")" \
			    "${rate[@]}" ;;
			esac || exit 1
		done
	done
	sleep 1
	mem_record idle "$server" mailkit "$mk_state"
	mem_record idle "$server" floor "$fl_state"

	# leak check, on the first server: memory before and after N more requests
	if [ "$server" = "${servers%% *}" ] && [ "$leak_requests" -gt 0 ]; then
		# 40% balances, 40% webhooks, 20% sends; sends are the slowest
		# (three upstream calls), so they get 60% of the time budget
		local n_credits=$((leak_requests * 4 / 10)) n_hook=$((leak_requests * 4 / 10)) n_send
		n_send=$((leak_requests - n_credits - n_hook))
		say "leak check: $leak_requests requests on MailKit ($server), at most ${leak_max_s} s"
		mem_record leak-before "$server" mailkit "$mk_state"
		measure leak-load "$server" mailkit credits "$mk_state" "$mk/credits/$customer" \
		    BENCH_MAX="$n_credits" BENCH_DURATION=$((leak_max_s * 25 / 100)) || exit 1
		measure leak-load "$server" mailkit webhook "$mk_state" "$mk/webhooks/dodo" BENCH_METHOD=POST \
		    BENCH_BODY_FILE="$hook_body" BENCH_SIGNED_FILE="$(sign $((n_hook + connections)) "leak-$$")" \
		    BENCH_MAX="$n_hook" BENCH_DURATION=$((leak_max_s * 15 / 100)) || exit 1
		measure leak-load "$server" mailkit send "$mk_state" "$mk/send" BENCH_METHOD=POST \
		    BENCH_BODY_FILE="$send_body" BENCH_MAX="$n_send" BENCH_DURATION=$((leak_max_s * 60 / 100)) || exit 1
		sleep 1
		mem_record leak-after "$server" mailkit "$mk_state"
	fi
	stop_stack "$mk_state"
	stop_stack "$fl_state"
}

# ------------------------------------------------------------------ --latency
# The tutorial's server.ts, as the tutorial prints it, run with tsx under
# Node.  One change: its `environment: 'test_mode'` line goes, because the
# Dodo SDK refuses that option next to DODO_PAYMENTS_BASE_URL (which points
# it at the sandbox, as RESEND_BASE_URL does the Resend SDK).  Nothing of it
# is kept in the source tree: it lives under OUT/express.
express_dir=$out/express
express_port=$((port_base + 5))
express_prepare() {
	[ -f "$tutorial" ] || die "no tutorial at $tutorial (--tutorial FILE)"
	mkdir -p "$express_dir" || die "cannot create $express_dir"
	awk '/^ *```typescript server\.ts/ { on = 1; next }
	     on && /^ *```/ { exit }
	     on { sub(/^      /, ""); print }' "$tutorial" |
	    grep -v "environment: 'test_mode'," >"$express_dir/server.ts"
	grep -q "app.listen" "$express_dir/server.ts" || die "no server.ts found in $tutorial"
	if [ ! -d "$express_dir/node_modules/express" ] || [ ! -d "$express_dir/node_modules/tsx" ]; then
		say "installing the tutorial's npm dependencies into $express_dir (npm)"
		[ -f "$express_dir/package.json" ] ||
			printf '{"name":"mailkit-tutorial-bench","private":true}\n' >"$express_dir/package.json"
		timeout 600 npm install --prefix "$express_dir" --no-audit --no-fund --loglevel=error \
		    dodopayments resend express dotenv tsx >"$express_dir/npm.log" 2>&1 ||
			{ cat "$express_dir/npm.log" >&2; die "npm install failed"; }
	fi
}

express_start() {	# express_start: on 127.0.0.1:$express_port, against $sbx
	local i=0
	(cd "$express_dir" && exec env DODO_PAYMENTS_API_KEY=bench_dodo_key \
	    DODO_PAYMENTS_BASE_URL="$sbx/dodo" DODO_WEBHOOK_KEY="$webhook_key" \
	    RESEND_API_KEY=re_bench_key RESEND_BASE_URL="$sbx/resend" \
	    CREDIT_ENTITLEMENT_ID=cde_sandbox_email PLAN_PRODUCT_ID=pdt_sandbox_plan \
	    TOPUP_PRODUCT_ID=pdt_sandbox_topup BASE_URL="http://127.0.0.1:$express_port" \
	    PORT="$express_port" node --import tsx server.ts) >"$express_dir/server.log" 2>&1 &
	express_pid=$!
	while ! curl -s -o /dev/null -m 1 "http://127.0.0.1:$express_port/" 2>/dev/null; do
		kill -0 "$express_pid" 2>/dev/null || { cat "$express_dir/server.log" >&2; die "Express did not start"; }
		[ $i -lt 60 ] || die "Express did not answer within 30 s"
		sleep 0.5
		i=$((i + 1))
	done
}

express_stop() {
	[ -n "$express_pid" ] || return 0
	kill -TERM "$express_pid" 2>/dev/null
	wait "$express_pid" 2>/dev/null
	express_pid=
}

# measure_lat LATENCY SERVER STACK ROUTE CLIENTS TARGET URL [VAR=value ...]: one
# closed-loop run (after a short warm-up that lets the pools grow), the
# target's CPU around it and its memory in the middle of it.
measure_lat() {
	local lat=$1 server=$2 stk=$3 route=$4 c=$5 st=$6 url=$7 w cpu mem name mem_pid m0 m1 sbx busy idle
	shift 7
	name=lat$lat-$server-$stk-$route-c$c
	connections=$c
	quiesce
	run_wrk "warm-$name" "$url" BENCH_DURATION=$WARMUP_S "$@" >/dev/null || exit 1
	cpu_snapshot "$st" >"$out/cpu.before"
	cpu_snapshot "$sbx_state" >"$out/sbx.before"
	m0=$(machine_cpu)
	( sleep $(( (duration + 1) / 2 )); mem_json "$st" >"$out/mem.mid" ) &
	mem_pid=$!
	w=$(run_wrk "$name" "$url" "$@") || exit 1
	m1=$(machine_cpu)
	wait "$mem_pid"
	cpu_snapshot "$st" >"$out/cpu.after"
	cpu_snapshot "$sbx_state" >"$out/sbx.after"
	cpu=$(cpu_delta "$out/cpu.before" "$out/cpu.after")
	sbx=$(cpu_delta "$out/sbx.before" "$out/sbx.after")
	# what bounds a run that falls short: the share of all CPUs in use, and the sandbox's part
	busy=$(( ${m1% *} - ${m0% *} ))
	idle=$(( ${m1#* } - ${m0#* } ))
	mem=$(cat "$out/mem.mid")
	mem=${mem#\{}
	printf '{"kind":"latency","latency_ms":%d,"clients":%d,"server":"%s","stack":"%s","route":"%s","clk_tck":%d,"cpu_ticks":%d,"sandbox_cpu_ticks":%d,"machine_busy_ticks":%d,"machine_idle_ticks":%d,%s,"wrk":%s}\n' \
	    "$lat" "$c" "$server" "$stk" "$route" "$clk_tck" "$cpu" "$sbx" "$busy" "$idle" "${mem%\}}" "$w" >>"$runs"
	tail -n 1 "$runs" | node "$here/bench.mjs" line >&2
}

bench_latency() {
	local lat server st url c
	[ "$express" = yes ] && express_prepare
	for lat in $latencies; do
		stop_stack "$sbx_state"
		say "sandbox with SANDBOX_LATENCY_MS=$lat"
		SANDBOX_LATENCY_MS=$lat start_stack "$sbx_state" "$port_sandbox" lighttpd ""
		for server in $servers; do
			st=$state_root/mailkit-$server
			start_stack "$st" "$(port_of "$server" mailkit)" "$server" "$env_file"
			url=http://127.0.0.1:$(port_of "$server" mailkit)
			subscribe "$url"
			export BENCH_AUTH=$api_key
			printf '{"customer_id":"%s","to":["reader@example.org"],"subject":"Benchmark","html":"<p>Hello from the MailKit benchmark.</p>"}' \
			    "$customer" >"$send_body"
			for c in $clients; do
				measure_lat "$lat" "$server" mailkit credits "$c" "$st" "$url/credits/$customer"
				measure_lat "$lat" "$server" mailkit send "$c" "$st" "$url/send" \
				    BENCH_METHOD=POST BENCH_BODY_FILE="$send_body"
			done
			stop_stack "$st"
		done
		if [ "$express" = yes ]; then
			# the tutorial's /send takes "to" as one address, and no API key
			printf '{"customer_id":"%s","to":"reader@example.org","subject":"Benchmark","html":"<p>Hello from the MailKit benchmark.</p>"}' \
			    "$customer" >"$out/send-express.json"
			express_start
			export BENCH_AUTH=
			for c in $clients; do
				measure_lat "$lat" node express credits "$c" "pid:$express_pid" \
				    "http://127.0.0.1:$express_port/credits/$customer"
				measure_lat "$lat" node express send "$c" "pid:$express_pid" \
				    "http://127.0.0.1:$express_port/send" BENCH_METHOD=POST \
				    BENCH_BODY_FILE="$out/send-express.json"
			done
			express_stop
		fi
	done
	stop_stack "$sbx_state"
	cat >"$out/meta.json" <<EOF
{"cpus":$cpus,"duration":$duration,"wrk_threads":$wrk_threads,"workers":$workers,
 "threads":"${threads:-default}","servers":"$servers","latencies":"$latencies","clients":"$clients",
 "machine":"$(uname -srm) / $(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)",
 "upstream_calls":{"mailkit":{"credits":1,"send":2},"express":{"credits":1,"send":3}},
 "targets":{"limit_share":0.9,"p99_extra_ms":100,"memory_kb":30720}}
EOF
	node "$here/bench.mjs" latency "$runs" "$out/meta.json" "$out"
}

if [ "$latency_mode" = yes ]; then
	bench_latency
	exit $?
fi

for s in $servers; do
	bench_server "$s"
done
stop_stack "$sbx_state"

cat >"$out/meta.json" <<EOF
{"cpus":$cpus,"duration":$duration,"connections":$connections,"wrk_threads":$wrk_threads,
 "workers":$workers,"threads":"${threads:-default}","servers":"$servers",
 "machine":"$(uname -srm) / $(awk -F: '/model name/ { sub(/^ +/, "", $2); print $2; exit }' /proc/cpuinfo)",
 "targets":{"cpu_ratio":{"credits":3,"send":6,"webhook":2},"memory_kb":30720,
            "leak_requests":$leak_requests,"leak_growth_kb":256}}
EOF
node "$here/bench.mjs" report "$runs" "$out/meta.json" "$out"
