#!/usr/bin/env bash
# Compare a candidate run-suite.sh OUTDIR (e.g. on a LiteFS mount) against a
# baseline OUTDIR (same scripts on a plain directory, same machine/user).
#
# Usage: compare.sh BASELINE_OUTDIR CANDIDATE_OUTDIR
#
# Prints one row per script: status, test count and failure count in each run,
# and the candidate's new failures. Exits 1 if, for any script:
#   - the candidate has a failing test case that does not fail in the baseline
#     (root-only permission failures etc. fail in both, so they cancel out);
#   - the candidate ended abnormally (timeout, signal, setup-failed, not-run,
#     or no "N errors out of M tests" summary, i.e. the script died mid-way)
#     while the baseline did not;
#   - the candidate ran more than 2% fewer test cases than the baseline (an
#     early exit, e.g. a script that gives up a loop on an unexpected error).
#     crash.test is the exception: its crash-4.* loops stop at a random
#     iteration (Tcl rand() seeds), so its count varies by ~5% between runs
#     on the same plain directory (867..915 over 14 runs); it gets 15%;
#   - the script is missing from either side.
# Exit 2 on usage errors.
set -euo pipefail

[[ $# -eq 2 ]] || { echo "usage: $0 BASELINE_OUTDIR CANDIDATE_OUTDIR" >&2; exit 2; }
base=$1 cand=$2
for d in "$base" "$cand"; do
  [[ -d $d ]] || { echo "compare: not a directory: $d" >&2; exit 2; }
done

# Number of test cases a run reports, or empty if the script never finished.
count_of() {
  [[ -f $1 ]] || return 0
  grep -Eo '^[0-9]+ (new )?errors( and [0-9]+ known errors)? out of [0-9]+ tests' "$1" |
    tail -n1 | sed -E 's/.* out of ([0-9]+) tests/\1/' || true
}

# "ok" and "exit 1" (= some test cases failed) are normal endings, provided
# the final summary line was printed; anything else is abnormal.
abnormal() { # STATUS COUNT
  [[ ($1 != ok && $1 != "exit 1") || -z $2 ]]
}

# Script names from both sides (a .status file is written for every script).
mapfile -t names < <(
  for d in "$base" "$cand"; do
    for f in "$d"/*.status; do
      [[ -e $f ]] && basename "$f" .status
    done
  done | LC_ALL=C sort -u
)
[[ ${#names[@]} -gt 0 ]] || { echo "compare: no *.status files found" >&2; exit 2; }

# Allowed shortfall in test-case count, percent of the baseline's count.
declare -A tolerance=([crash]=15)
readonly default_tolerance=2

bad=0
fmt='%-12s %-14s %7s %6s   %-14s %7s %6s   %s\n'
# shellcheck disable=SC2059  # fmt is a constant format string
printf "$fmt" test base-status tests fails cand-status tests fails "new failures / problems"
for n in "${names[@]}"; do
  problems=()
  bst=missing cst=missing bcount='' ccount='' bfail=- cfail=-
  if [[ -f $base/$n.status ]]; then
    bst=$(<"$base/$n.status")
    bcount=$(count_of "$base/$n.log")
    bfail=$(grep -c . "$base/$n.failures" 2>/dev/null || true)
  fi
  if [[ -f $cand/$n.status ]]; then
    cst=$(<"$cand/$n.status")
    ccount=$(count_of "$cand/$n.log")
    cfail=$(grep -c . "$cand/$n.failures" 2>/dev/null || true)
  fi

  if [[ $bst == missing ]]; then
    problems+=("no baseline")
  elif [[ $cst == missing ]]; then
    problems+=("not in candidate")
  else
    # Failing test cases in the candidate that the baseline does not have.
    mapfile -t new < <(LC_ALL=C comm -13 \
      <(LC_ALL=C sort -u "$base/$n.failures" 2>/dev/null || true) \
      <(LC_ALL=C sort -u "$cand/$n.failures" 2>/dev/null || true))
    if [[ ${#new[@]} -gt 0 ]]; then
      # Show at most 10 names in the table; the .failures file has all.
      shown=("${new[@]:0:10}")
      more=''
      if [[ ${#new[@]} -gt 10 ]]; then more=" (+$(( ${#new[@]} - 10 )) more)"; fi
      problems+=("${#new[@]} new: ${shown[*]}$more")
    fi
    if abnormal "$cst" "$ccount" && ! abnormal "$bst" "$bcount"; then
      if [[ -n $ccount ]]; then
        problems+=("abnormal end: $cst")
      else
        problems+=("abnormal end: $cst, no summary line")
      fi
    fi
    # Early exit: too many fewer test cases than the baseline (integer math:
    # ccount*100 < bcount*(100-tol)). Needs both counts; a missing candidate
    # count is already reported as abnormal above.
    tol=${tolerance[$n]:-$default_tolerance}
    if [[ -n $bcount && -n $ccount ]] && (( ccount * 100 < bcount * (100 - tol) )); then
      problems+=("ran $ccount of baseline's $bcount tests")
    fi
  fi
  if [[ ${#problems[@]} -gt 0 ]]; then bad=1; fi
  msg=$(IFS=';'; printf '%s' "${problems[*]:-}")
  # shellcheck disable=SC2059
  printf "$fmt" "$n" "$bst" "${bcount:--}" "$bfail" "$cst" "${ccount:--}" "$cfail" "${msg//;/; }"
done

if [[ $bad -ne 0 ]]; then
  echo "compare: FAIL: the candidate differs from the baseline (see above)"
  exit 1
fi
echo "compare: OK: no new failures, crashes, timeouts or early exits"
