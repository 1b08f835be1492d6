#!/usr/bin/env bash
# Sets up a fresh machine and runs a single-node litefs (static lease) on the
# example config: the mount is /litefs, data lives in /var/lib/litefs.
# Stop it with Ctrl-C (SIGINT) or SIGTERM; it unmounts cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/local/go/bin"
./scripts/setup.sh
mkdir -p bin
go build -o bin/litefs ./cmd/litefs
exec bin/litefs mount -config "${LITEFS_CONFIG:-litefs.yml.example}" "$@"
