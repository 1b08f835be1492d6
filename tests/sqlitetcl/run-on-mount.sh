#!/usr/bin/env bash
# Runs SQLite's TCL test scripts on a litefs mount and on a plain directory
# of the same disk, and fails if the mount fails anything the plain
# directory passes. This is the "ordinary filesystem" acceptance test.
#
# Usage: run-on-mount.sh [TEST...]   (default: run-suite.sh's list)
# Environment: LITEFS_TCL_WORK (default /var/tmp/litefs-tcl) holds the mount,
# data dir, results (out-plain/, out-mount/) and the node's log.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${LITEFS_TCL_WORK:-/var/tmp/litefs-tcl}
log() { printf 'run-on-mount: %s\n' "$*" >&2; }

# Build testfixture first so its time is not charged to either run.
"$here/build-testfixture.sh" </dev/null >/dev/null

if mountpoint -q "$work/mnt" 2>/dev/null || grep -qs " $work/mnt " /proc/mounts; then
  umount -l "$work/mnt" || true
fi
rm -rf "$work"
mkdir -p "$work/plain" "$work/bin"
(cd "$root" && go build -o "$work/bin/litefs" ./cmd/litefs)
cat >"$work/litefs.yml" <<YML
fuse:
  dir: "$work/mnt"
data:
  dir: "$work/data"
lease:
  type: "static"
  candidate: true
  hostname: "tcl"
http:
  addr: "127.0.0.1:0"
YML

"$work/bin/litefs" mount -config "$work/litefs.yml" >"$work/litefs.log" 2>&1 </dev/null &
pid=$!
stop() {
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  grep -qs " $work/mnt " /proc/mounts && umount -l "$work/mnt" || true
}
trap stop EXIT
for _ in $(seq 1 300); do
  [[ -r $work/mnt/.lag ]] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/litefs.log" >&2; log "litefs exited"; exit 1; }
  sleep 0.1
done
[[ -r $work/mnt/.lag ]] || { log "mount not ready"; exit 1; }

log "plain directory baseline"
"$here/run-suite.sh" "$work/plain" "$work/out-plain" "$@"
log "litefs mount"
mkdir -p "$work/mnt/tcl"
"$here/run-suite.sh" "$work/mnt/tcl" "$work/out-mount" "$@"

if ! kill -0 "$pid" 2>/dev/null; then
  log "litefs died during the suite"; tail -50 "$work/litefs.log" >&2; exit 1
fi
stop
trap - EXIT
if grep -q "level=ERROR" "$work/litefs.log"; then
  log "litefs logged errors (shown; judged by the comparison below):"
  grep "level=ERROR" "$work/litefs.log" | head -20 >&2
fi
"$here/compare.sh" "$work/out-plain" "$work/out-mount"
