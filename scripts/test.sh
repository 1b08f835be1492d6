#!/usr/bin/env bash
# Runs the whole test suite, as CI does: formatting and vet, unit tests and
# multi-process integration tests on real FUSE mounts (with -race), then
# SQLite's own TCL test suite on a litefs mount compared with a plain
# directory, and a build and smoke test of the Consul agent. Needs root;
# installs fuse3, curl and the TCL build deps itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
./scripts/setup.sh

unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt needed:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...

# The Consul agent the lease tests run against: built from the pinned module
# (cached outside the repo), and checked to elect itself leader on loopback.
./tests/consul/smoke.sh

# Integration tests must not skip for lack of FUSE or Consul in CI.
export LITEFS_REQUIRE_FUSE=1 LITEFS_REQUIRE_CONSUL=1
go test -race -count=1 -timeout 40m ./...

./tests/sqlitetcl/run-on-mount.sh
