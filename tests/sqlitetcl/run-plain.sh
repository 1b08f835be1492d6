#!/usr/bin/env bash
# Convenience: build the testfixture (cached) and run the suite on a plain
# directory, producing the baseline that compare.sh judges a LiteFS run by.
#
# Usage: run-plain.sh [TESTDIR [OUTDIR [TEST...]]]
#   TESTDIR  plain directory for the databases (default /tmp/sqlitetcl-plain)
#   OUTDIR   results (default TESTDIR.out)
#   TEST...  scripts to run (default: run-suite.sh's list)
# Prints the per-script summary table (also in OUTDIR/summary.tsv).
#
# Typical use:
#   tests/sqlitetcl/run-plain.sh /tmp/plain /tmp/plain.out
#   tests/sqlitetcl/run-suite.sh /mnt/litefs /tmp/litefs.out
#   tests/sqlitetcl/compare.sh /tmp/plain.out /tmp/litefs.out
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
testdir=${1:-/tmp/sqlitetcl-plain}
outdir=${2:-$testdir.out}
if [[ $# -gt 2 ]]; then shift 2; else set --; fi

tf=$("$here/build-testfixture.sh" </dev/null | tail -n1)
echo "testfixture: $tf" >&2
TESTFIXTURE=$tf "$here/run-suite.sh" "$testdir" "$outdir" "$@" </dev/null
echo "results in $outdir" >&2
