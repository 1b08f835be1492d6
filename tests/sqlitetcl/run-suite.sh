#!/usr/bin/env bash
# Run SQLite's own TCL test scripts with their database files in TESTDIR, to
# show that a directory (e.g. a LiteFS FUSE mount) behaves like a plain one.
#
# Usage: run-suite.sh TESTDIR OUTDIR [TEST...]
#   TESTDIR  directory the databases live in; each script gets a fresh empty
#            subdirectory TESTDIR/NAME, removed afterwards to save space.
#   OUTDIR   per-script results (created if missing; use a fresh one per run,
#            since compare.sh reads every NAME.status it finds there):
#              NAME.log       full testfixture output
#              NAME.failures  failed test-case names, one per line, sorted
#              NAME.status    ok | exit N | timeout | signal N |
#                             setup-failed | not-run (suite deadline passed)
#              NAME.time      wall seconds
#            plus summary.tsv (test status errors tests seconds) for humans.
#   TEST...  script names without .test (default: the project's list below).
#
# Environment:
#   TESTFIXTURE         testfixture binary (default: built/located by
#                       build-testfixture.sh next to this script)
#   SQLITE_SRC          SQLite source root the scripts run from
#                       (default: src/ beside the testfixture in the cache)
#   SQLITE_TCL_TIMEOUT  seconds, overrides every per-script timeout
#   SQLITE_TCL_TIMEOUT_SCALE  integer multiplier for the per-script timeouts
#                       (default 1; a slow filesystem may want 2 or 3)
#   SQLITE_TCL_DEADLINE seconds for the whole run (default 2700): scripts are
#                       cut short / not started once it is spent, so a hung
#                       filesystem cannot eat CI's 90-minute limit
#   KEEP_TESTDIR=1      keep TESTDIR/NAME after each script (for debugging)
#
# Exit status: 0 when every script ran (whatever its failures: judging them is
# compare.sh's job, against a plain-directory baseline); 2 on usage/setup
# errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { echo "usage: $0 TESTDIR OUTDIR [TEST...]" >&2; exit 2; }
[[ $# -ge 2 ]] || usage
testroot=$1 outdir=$2
shift 2

default_tests=(select1 insert delete update trans rollback savepoint journal1
  pager1 lock lock2 wal wal2 wal3 walcrash vacuum incrvacuum exclusive backup
  bigfile mmap1 crash)
if [[ $# -gt 0 ]]; then tests=("${@%.test}"); else tests=("${default_tests[@]}"); fi

# Per-script timeouts in seconds. On a plain directory (2-core CI VM) the
# whole default list takes under a minute, the slowest scripts being crash
# (~16 s), walcrash (~12 s), wal3 (~6 s) and trans (~5 s); everything else
# takes 0-2 s. On a litefs mount, per-commit costs make trans (~60 s), wal3
# (40-250 s, depending on load), bigfile (~140 s, a 16 GB sparse database)
# and crash (~60 s) the slow ones. Timeouts leave headroom for a loaded
# machine while still catching hangs. Scripts not listed get the default.
declare -A timeouts=(
  [trans]=600 [pager1]=300 [wal3]=900 [walcrash]=600 [crash]=900 [bigfile]=900
)
readonly default_timeout=180
scale=${SQLITE_TCL_TIMEOUT_SCALE:-1}
deadline=${SQLITE_TCL_DEADLINE:-2700}

log() { printf 'run-suite: %s\n' "$*" >&2; }

tf=${TESTFIXTURE:-}
if [[ -z $tf ]]; then
  # Idempotent; just prints the cached path once built.
  tf=$("$here/build-testfixture.sh" </dev/null | tail -n1)
fi
[[ -x $tf ]] || { log "testfixture not executable: $tf"; exit 2; }
src=${SQLITE_SRC:-$(dirname "$tf")/src}
[[ -f $src/test/tester.tcl ]] || { log "no SQLite source tree at $src"; exit 2; }

# tester.tcl splits "--testdir=PATH" on every "=", so such a path would be
# silently truncated.
[[ $testroot != *=* ]] || { log "TESTDIR must not contain '=': $testroot"; exit 2; }
mkdir -p "$testroot" "$outdir"
# Absolute paths: testfixture runs with cwd = source root.
testroot=$(cd "$testroot" && pwd)
outdir=$(cd "$outdir" && pwd)

# Extract failed test-case names from a log. Three sources, unioned, because
# a script that dies mid-way never prints the final list:
#   "! NAME expected: [...]"         wrong result
#   "NAME...\nError: MSG"            Tcl error inside do_test
#   "!Failures on these tests: A B"  final summary
# Plus pseudo-names for errors tester.tcl counts without a test name:
#   "(files-left-open)", "(unfreed-memory)".
extract_failures() {
  awk '
    /^! [^ ]+ expected: / { print $2 }
    /^!Failures on these tests:/ { for (i = 5; i <= NF; i++) print $i }
    /^Error: / && last != "" { print last }
    /^[^ ]+\.\.\./ { n = $0; sub(/\.\.\..*/, "", n); last = n }
    /^[0-9]+ files were left open/ { print "(files-left-open)" }
    /^Unfreed memory: / { print "(unfreed-memory)" }
  ' "$1" | LC_ALL=C sort -u
}

# Record one script's results (status, time, failures, summary row).
record() {
  local name=$1 status=$2 secs=$3 log=$outdir/$1.log summary errors=- ntests=-
  printf '%s\n' "$status" >"$outdir/$name.status"
  printf '%s\n' "$secs" >"$outdir/$name.time"
  touch "$log"
  extract_failures "$log" >"$outdir/$name.failures"
  # "N errors out of M tests" (or "N new errors and K known errors out of M").
  summary=$(grep -Eo '^[0-9]+ (new )?errors( and [0-9]+ known errors)? out of [0-9]+ tests' \
    "$log" | tail -n1 || true)
  if [[ -n $summary ]]; then
    errors=${summary%% *}
    ntests=${summary##*out of }
    ntests=${ntests%% *}
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$status" "$errors" "$ntests" "$secs" \
    >>"$outdir/summary.tsv"
  log "$name: $status, $errors errors out of $ntests tests, ${secs}s"
}

# Check every script exists before spending time on any.
for name in "${tests[@]}"; do
  [[ -f $src/test/$name.test ]] || { log "no such test script: $src/test/$name.test"; exit 2; }
done

printf 'test\tstatus\terrors\ttests\tseconds\n' >"$outdir/summary.tsv"
suite_start=$SECONDS
for name in "${tests[@]}"; do
  rm -f "$outdir/$name".{log,failures,status,time}
  left=$(( deadline - (SECONDS - suite_start) ))
  if [[ $left -le 0 ]]; then
    echo "not run: suite deadline of ${deadline}s passed" >"$outdir/$name.log"
    record "$name" not-run 0
    continue
  fi
  t=${SQLITE_TCL_TIMEOUT:-$(( ${timeouts[$name]:-$default_timeout} * scale ))}
  if [[ $t -gt $left ]]; then t=$left; fi
  dir=$testroot/$name
  # A fresh empty directory per script: leftovers from an earlier run (or
  # another script) would change results. Bounded, in case the filesystem
  # under test hangs; a failure here is recorded, not fatal.
  if ! { timeout 120 rm -rf "$dir" && mkdir -p "$dir"; } >"$outdir/$name.log" 2>&1; then
    record "$name" setup-failed 0
    continue
  fi
  log "$name (timeout ${t}s)"
  start=$SECONDS
  rc=0
  # timeout signals testfixture's whole process group (crash/lock tests spawn
  # child testfixtures); -k: SIGKILL if SIGTERM is ignored. No stdin: CI has
  # none and no test needs it.
  (cd "$src" && exec timeout -k 30 "$t" "$tf" "test/$name.test" --testdir="$dir") \
    </dev/null >"$outdir/$name.log" 2>&1 || rc=$?
  secs=$(( SECONDS - start ))
  if [[ $rc -eq 0 ]]; then
    status=ok
  elif [[ $rc -eq 124 ]] || { [[ $rc -eq 137 ]] && [[ $secs -ge $t ]]; }; then
    status=timeout
  elif [[ $rc -gt 128 ]]; then
    status="signal $(( rc - 128 ))"
  else
    status="exit $rc"
  fi
  record "$name" "$status" "$secs"

  if [[ ${KEEP_TESTDIR:-0} != 1 ]]; then
    # Best effort and bounded: a broken filesystem must not stop the rest.
    timeout 120 rm -rf "$dir" || log "warning: could not remove $dir"
  fi
done
total=$(( SECONDS - suite_start ))
printf 'TOTAL\t-\t-\t-\t%s\n' "$total" >>"$outdir/summary.tsv"

column -t -s $'\t' "$outdir/summary.tsv" 2>/dev/null || cat "$outdir/summary.tsv"
