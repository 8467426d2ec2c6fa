#!/bin/sh
# run.sh: build one libFuzzer target with clang and fuzz it for a while.
#
#   tests/fuzz/run.sh TARGET SECONDS [libFuzzer options...]
#
# TARGET is whsig, request or settings (tests/fuzz/fuzz_TARGET.c); `all`
# runs each in turn for SECONDS.  The target is compiled, with the library
# sources themselves (not libmailkit.a, which gcc builds), by clang with
# -fsanitize=fuzzer,address,undefined.  The committed seeds in
# tests/fuzz/corpus/TARGET/ are read, never written: new inputs go to
# $FUZZ_DIR/corpus/TARGET and crashes to $FUZZ_DIR/crashes/ (FUZZ_DIR defaults
# to tests/fuzz/out under $MAILKIT_BUILDDIR, the build tree, or the source
# tree).  A crash makes the script exit non-zero and print the input; fix the
# bug and add the input to tests/fuzz/corpus/TARGET/.
#
# Environment: CLANG (default clang), FUZZ_RSS_MB (default 2048),
# MAILKIT_BUILDDIR (for config.h; default: the source tree).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
srcdir=$(cd "$here/../.." && pwd)
builddir=${MAILKIT_BUILDDIR:-$srcdir}
out=${FUZZ_DIR:-$builddir/tests/fuzz/out}
CLANG=${CLANG:-clang}
rss_mb=${FUZZ_RSS_MB:-2048}

usage() { echo "usage: $0 whsig|request|settings|all SECONDS [libFuzzer options]" >&2; exit 2; }
[ $# -ge 2 ] || usage
target=$1 seconds=$2
shift 2
case $seconds in ''|*[!0-9]*) usage ;; esac

if [ "$target" = all ]; then
	rc=0
	for t in whsig request settings; do "$0" "$t" "$seconds" "$@" || rc=1; done
	exit $rc
fi
case $target in whsig|request|settings) ;; *) usage ;; esac

command -v "$CLANG" >/dev/null 2>&1 || { echo "run.sh: $CLANG not found (apt-get install clang)" >&2; exit 77; }
[ -f "$builddir/config.h" ] || { echo "run.sh: no config.h in $builddir (run ./configure)" >&2; exit 77; }

mkdir -p "$out/bin" "$out/corpus/$target" "$out/crashes"
bin=$out/bin/fuzz_$target
libsrc=$(ls "$srcdir"/src/lib/*.c)

# Rebuild when a source is newer than the binary.
stale=1
if [ -x "$bin" ]; then
	stale=0
	for f in "$here/fuzz_$target.c" $libsrc "$srcdir"/src/lib/*.h "$0"; do
		[ "$f" -nt "$bin" ] && stale=1 && break
	done
fi
if [ $stale -eq 1 ]; then
	echo "run.sh: building $bin"
	# shellcheck disable=SC2046,SC2086
	"$CLANG" -g -O1 -fno-omit-frame-pointer \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    -DSYSCONFDIR='"/etc"' -DLOCALSTATEDIR='"/var"' \
	    -I"$builddir" -I"$srcdir/src/lib" \
	    $(pkg-config --cflags json-c libcurl openssl sqlite3) \
	    -o "$bin.tmp" "$here/fuzz_$target.c" $libsrc \
	    $(pkg-config --libs fcgi 2>/dev/null || echo -lfcgi) \
	    $(pkg-config --libs json-c libcurl openssl sqlite3) -pthread
	mv "$bin.tmp" "$bin"
fi

dict=
[ -f "$here/$target.dict" ] && dict=-dict=$here/$target.dict
log=$out/fuzz_$target.log
echo "run.sh: fuzzing $target for $seconds s (log $log)"
set +e
UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
"$bin" -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -timeout=10 \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$target-" $dict "$@" \
    "$out/corpus/$target" "$here/corpus/$target" >"$log" 2>&1
rc=$?
set -e
# One summary line: executions, coverage, corpus size.
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
cov=$(grep -E '^#[0-9]+' "$log" | tail -n 1 | sed -n 's/.*cov: \([0-9]*\).*ft: \([0-9]*\).*corp: \([0-9]*\).*/cov \1, ft \2, corpus \3/p')
echo "run.sh: $target: ${execs:-?} executions, ${cov:-no coverage line}, exit $rc"
if [ $rc -ne 0 ]; then
	tail -n 60 "$log" >&2
	for f in $(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log"); do
		echo "run.sh: crashing input $f (base64):" >&2
		base64 "$f" >&2
	done
	exit 1
fi
