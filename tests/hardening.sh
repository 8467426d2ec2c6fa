#!/bin/sh
# hardening.sh: the memory-safety proof that `make check` runs last (TAP).
#
#   1. a copy of the tree (make distdir) configured with --enable-sanitizers
#      (ASan + UBSan, any report fatal) builds,
#   2. its unit tests pass, leak-checked,
#   3. its lighttpd route tests pass with no sanitizer report from any
#      FastCGI program (the harness reads STATE/log/{asan,ubsan}.* at stop),
#   4. the lighttpd route tests pass with every FastCGI program of this build
#      under valgrind memcheck: no error, no definite or indirect leak,
#   5. each libFuzzer target (tests/fuzz) runs FUZZ_SECONDS (default 15)
#      from its committed corpus without a crash.
#
# Run by make check with MAILKIT_SRCDIR/MAILKIT_BUILDDIR set.  A missing tool
# (clang, valgrind, node...) skips its step, or fails it when
# MAILKIT_REQUIRE_ALL_TESTS=1.  MAILKIT_HARDENING=0 skips everything.
# Logs: tests/hardening/ in the build tree.
set -u

srcdir=${MAILKIT_SRCDIR:?run me from make check}
builddir=${MAILKIT_BUILDDIR:?run me from make check}
require=${MAILKIT_REQUIRE_ALL_TESTS:-0}
fuzz_seconds=${FUZZ_SECONDS:-15}
work=$builddir/tests/hardening
tree=$work/asan-tree
jobs=${HARDENING_JOBS:-2}

# The sub-makes are ours, not the calling make's jobserver's.
unset MAKEFLAGS MFLAGS MAKELEVEL MAKEOVERRIDES GNUMAKEFLAGS
MAKE=${MAKE:-make}

echo "1..7"
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; }
skip() {	# skip WHAT REASON: a SKIP, or a failure when every test is required
	n=$((n + 1))
	if [ "$require" = 1 ]; then
		failed=1
		echo "not ok $n - $1 # $2 (MAILKIT_REQUIRE_ALL_TESTS=1)"
	else
		echo "ok $n - $1 # SKIP $2"
	fi
}
show() {	# show LOG: the end of a step's log, as TAP comments
	tail -n "${2:-60}" "$1" | sed 's/^/# /'
}
elapsed() { echo "$(( $(date +%s) - $1 )) s"; }

# (It needs no write access to the source tree: make distcheck runs it too.)
if [ "${MAILKIT_HARDENING:-1}" = 0 ]; then
	for what in "asan build" "asan unit tests" "asan lighttpd routes" \
	    "valgrind lighttpd routes" "fuzz whsig" "fuzz request" "fuzz settings"; do
		n=$((n + 1))
		echo "ok $n - $what # SKIP MAILKIT_HARDENING=0"
	done
	exit 0
fi

mkdir -p "$work" || exit 1
node_bin=$(sed -n 's/^NODE = //p' "$builddir/Makefile")
have_node=no
[ -n "$node_bin" ] && [ "$node_bin" != no ] && [ -x "$node_bin" ] && have_node=yes

# ------------------------------------------------------------ 1-3: sanitizers
t0=$(date +%s)
log=$work/asan-build.log
built=no
{
	rm -rf "$tree" &&
	$MAKE -C "$builddir" distdir distdir="$tree" &&
	cd "$tree" &&
	./configure -q --enable-sanitizers &&
	$MAKE -j"$jobs" &&
	$MAKE -j"$jobs" check TESTS=
} >"$log" 2>&1 && built=yes
cd "$builddir" || exit 1
if [ $built = yes ]; then
	ok "asan build: configure --enable-sanitizers and make ($(elapsed "$t0"))"
elif grep -q 'cannot build with sanitizers' "$log"; then
	skip "asan build" "the compiler cannot build with sanitizers (see $log)"
else
	not_ok "asan build (see $log)"
	show "$log"
fi

# Criterion runs each test in a worker process whose sanitizer reports (a
# leak found at its exit, say) neither reach the TAP output nor change the
# exit status: the unit tests' reports go to files, read here.  (The
# integration harness does the same for the FastCGI programs by itself.)
reports=$work/asan-reports
sanitizer_reports() {	# sanitizer_reports: the report files, if any
	grep -l -E 'ERROR: [A-Za-z]*Sanitizer|runtime error' "$reports"/* 2>/dev/null
}

asan_check() {	# asan_check WHAT TESTS...: make check TESTS=... in the ASan tree
	what=$1
	shift
	t0=$(date +%s)
	log=$work/asan-$(echo "$what" | tr ' ' '-').log
	rm -rf "$reports" && mkdir -p "$reports"
	if (cd "$tree" &&
	    ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$reports/asan" &&
	    UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}log_path=$reports/ubsan" &&
	    export ASAN_OPTIONS UBSAN_OPTIONS &&
	    $MAKE -j"$jobs" check TESTS="$*" MAILKIT_REQUIRE_ALL_TESTS="$require") \
	    >"$log" 2>&1 && [ -z "$(sanitizer_reports)" ]; then
		# "N passed, N failed, N skipped", reworded: one closing line per run
		ok "asan $what: $(sed -n 's/^\([0-9]*\) passed, \([0-9]*\) failed, \([0-9]*\) skipped$/\1 pass, \2 fail, \3 skip/p' "$log" | tail -n 1) ($(elapsed "$t0"))"
	else
		not_ok "asan $what (see $log)"
		show "$log" 20
		for f in $(sanitizer_reports); do
			echo "# ==== $f"
			show "$f" 40
		done
		for f in "$tree"/tests/unit/*.log "$tree"/tests/integration/*.log; do
			[ -f "$f" ] && grep -q -E '^(not ok|# (FAIL|ERROR): [1-9])' "$f" &&
				{ echo "# ==== $f"; show "$f" 80; }
		done
	fi
}

if [ $built != yes ]; then
	skip "asan unit tests" "no ASan build"
	skip "asan lighttpd routes" "no ASan build"
else
	units=$(cd "$tree" && ls tests/unit/test_*.c 2>/dev/null | sed 's/\.c$//' | tr '\n' ' ')
	if [ -z "$units" ] || ! [ -x "$tree/${units%% *}" ]; then
		skip "asan unit tests" "no unit tests built (Criterion missing?)"
	else
		asan_check "unit tests" $units
	fi
	if [ $have_node = no ]; then
		skip "asan lighttpd routes" "node not found"
	else
		asan_check "lighttpd routes" tests/integration/lighttpd.test.mjs
	fi
fi

# ------------------------------------------------------------ 4: valgrind
t0=$(date +%s)
log=$work/valgrind-lighttpd.log
if ! command -v valgrind >/dev/null 2>&1; then
	skip "valgrind lighttpd routes" "valgrind not found (apt-get install valgrind)"
elif [ $have_node = no ]; then
	skip "valgrind lighttpd routes" "node not found"
elif MAILKIT_TEST_VALGRIND=1 "$node_bin" --test-reporter=tap \
    "$srcdir/tests/integration/lighttpd.test.mjs" >"$log" 2>&1; then
	ok "valgrind lighttpd routes: $(grep -E '^# (pass|fail) ' "$log" | tr '\n' ' ')($(elapsed "$t0"))"
else
	not_ok "valgrind lighttpd routes (see $log)"
	show "$log" 120
fi

# ------------------------------------------------------------ 5-7: fuzzing
for target in whsig request settings; do
	t0=$(date +%s)
	log=$work/fuzz-$target.log
	FUZZ_DIR=$work/fuzz "$srcdir/tests/fuzz/run.sh" "$target" "$fuzz_seconds" >"$log" 2>&1
	rc=$?
	summary=$(sed -n "s/^run.sh: $target: //p" "$log")
	case $rc in
	0) ok "fuzz $target: $summary ($(elapsed "$t0"))" ;;
	77) skip "fuzz $target" "$(tail -n 1 "$log")" ;;
	*) not_ok "fuzz $target (see $log)"; show "$log" 80 ;;
	esac
done
exit $failed
