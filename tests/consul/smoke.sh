#!/usr/bin/env bash
# Builds the Consul agent and checks that a dev agent on loopback elects
# itself leader, so the lease tests have a working agent on a fresh machine.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
consul=$("$here/build.sh")
dir=$(mktemp -d)
port=${CONSUL_SMOKE_PORT:-18500}
"$consul" agent -dev -client 127.0.0.1 -bind 127.0.0.1 -http-port "$port" \
	-grpc-port -1 -grpc-tls-port -1 -dns-port -1 -serf-lan-port 18301 -serf-wan-port 18302 -server-port 18300 \
	-data-dir "$dir" >"$dir/consul.log" 2>&1 </dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 1 150); do
	leader=$(curl -fsS "http://127.0.0.1:$port/v1/status/leader" 2>/dev/null || true)
	if [[ -n $leader && $leader != '""' ]]; then
		echo "consul smoke: agent up, leader $leader"
		exit 0
	fi
	sleep 0.2
done
echo "consul smoke: no leader after 30s" >&2
tail -20 "$dir/consul.log" >&2
exit 1
