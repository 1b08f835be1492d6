#!/usr/bin/env bash
# Installs what litefs needs on a fresh Debian machine (run as root): FUSE 3
# for fusermount3, and curl for the test scripts. Idempotent, never prompts.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
if ! command -v fusermount3 >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
	apt-get update -qq
	apt-get install -y -qq fuse3 curl >/dev/null
fi
if [ ! -e /dev/fuse ]; then
	echo "setup: /dev/fuse is missing; this machine cannot run FUSE mounts" >&2
	exit 1
fi
