#!/usr/bin/env bash
# Builds the pinned Consul agent (v1.16.1, see go.mod here) for the lease
# tests and prints its path. Cached outside the repo: the binary is ~160 MB
# and the first build takes about 3 minutes; later runs reuse it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PATH="$PATH:/usr/local/go/bin"
out=${LITEFS_CACHE:-/var/cache/litefs-ci}/consul-1.16.1
if [[ ! -x $out/consul ]]; then
	mkdir -p "$out"
	(cd "$here" && go build -o "$out/consul.tmp" github.com/hashicorp/consul) >&2
	mv "$out/consul.tmp" "$out/consul"
fi
echo "$out/consul"
