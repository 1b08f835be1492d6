#!/usr/bin/env bash
# Build SQLite 3.40.1's TCL `testfixture` (the interpreter that runs SQLite's
# own test/*.test scripts) from Debian's source package.
#
# Usage: build-testfixture.sh
#   env LITEFS_CACHE  cache root (default /var/cache/litefs-ci)
#   env CACHE         exact cache dir (default $LITEFS_CACHE/sqlite-3.40.1)
#
# Idempotent: once $CACHE/testfixture exists it only prints its path. The last
# line of stdout is always the absolute path of the testfixture; all logging
# goes to stderr so callers can do TF=$(build-testfixture.sh | tail -n1).
#
# Cache layout (outside the repo so CI re-runs and fresh clones reuse it):
#   $CACHE/dl/          apt-get source downloads
#   $CACHE/src/         unpacked (and patched) SQLite source tree; run tests here
#   $CACHE/build/       out-of-tree configure/make directory
#   $CACHE/testfixture  the finished binary
set -euo pipefail

readonly SQLITE_VERSION=3.40.1
CACHE=${CACHE:-${LITEFS_CACHE:-/var/cache/litefs-ci}/sqlite-${SQLITE_VERSION}}
readonly CACHE
readonly ORIG_TARBALL=sqlite3_${SQLITE_VERSION}.orig.tar.xz
readonly SRC=$CACHE/src
readonly BUILD=$CACHE/build
readonly TF=$CACHE/testfixture

log() { printf 'build-testfixture: %s\n' "$*" >&2; }

# Work around a tester.tcl quirk: its argv loop leaves a global Tcl variable
# `a` behind (a scalar) whenever an argument such as --testdir is passed, and
# wal2.test later does `set a(0) ...`, which then dies with "variable isn't
# array". Unset it just before testdir is normalised.
# Idempotent: only inserts the line if the line above isn't already it.
patch_tester() {
  local f=$SRC/test/tester.tcl
  # Fixed strings (no regex/shell expansion); the `$` is literal Tcl.
  # shellcheck disable=SC2016
  local anchor='set testdir [file normalize $testdir]'
  local fix='unset -nocomplain a'
  # Exit 0 = already patched, 1 = needs patching, 2 = anchor missing.
  local st=0
  ANCHOR=$anchor FIX=$fix awk '
    index($0, ENVIRON["ANCHOR"]) { seen = 1; if (index(prev, ENVIRON["FIX"])) ok = 1 }
    { prev = $0 }
    END { exit seen ? (ok ? 0 : 1) : 2 }' "$f" || st=$?
  case $st in
    0) return 0 ;;
    1) ;;
    *) log "ERROR: anchor line not found in $f"; return 1 ;;
  esac
  log "patching $f ($fix)"
  ANCHOR=$anchor FIX=$fix awk '
    index($0, ENVIRON["ANCHOR"]) { match($0, /^[ \t]*/); print substr($0, 1, RLENGTH) ENVIRON["FIX"] }
    { print }' "$f" >"$f.tmp"
  mv "$f.tmp" "$f"
}

# Fast path: already built. Still make sure the source tree is patched, since
# the tests are run from it (cheap and idempotent).
if [[ -x $TF && -f $SRC/test/tester.tcl ]]; then
  patch_tester
  printf '%s\n' "$TF"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  log "ERROR: first build needs root (apt-get); run once as root or pre-populate $CACHE"
  exit 1
fi

mkdir -p "$CACHE"
# Serialise concurrent builds (e.g. two CI jobs on one machine) on the cache.
exec 9>"$CACHE/.lock"
flock 9
# Another process may have finished the build while we waited for the lock.
if [[ -x $TF && -f $SRC/test/tester.tcl ]]; then
  patch_tester
  printf '%s\n' "$TF"
  exit 0
fi

export DEBIAN_FRONTEND=noninteractive

# apt-get source needs a deb-src entry; Debian images ship only `deb` ones
# (deb822 file /etc/apt/sources.list.d/debian.sources). Only the main archive
# is needed: we only use the upstream orig tarball, identical across Debian
# revisions of 3.40.1.
need_update=0
if ! grep -rqsE '^[[:space:]]*deb-src[[:space:]]|^Types:.*deb-src' \
    /etc/apt/sources.list /etc/apt/sources.list.d/; then
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-bookworm}")
  log "adding deb-src entry for $codename"
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  {
    printf 'Types: deb-src\n'
    printf 'URIs: http://deb.debian.org/debian\n'
    printf 'Suites: %s %s-updates\n' "$codename" "$codename"
    printf 'Components: main\n'
    if [[ -f $keyring ]]; then printf 'Signed-By: %s\n' "$keyring"; fi
  } >/etc/apt/sources.list.d/litefs-src.sources
  need_update=1
fi
# A brand-new machine may have no package lists at all, or no Sources lists.
if [[ $need_update -eq 1 ]] || ! apt-cache showsrc sqlite3 2>/dev/null | grep -q "$ORIG_TARBALL"; then
  log "apt-get update"
  apt-get update -q >&2
fi

# tcl-dev for tclConfig.sh/headers; gcc/make/xz in case the image is minimal.
# --no-upgrade: never touch already-installed packages.
log "installing build dependencies"
apt-get install -y -q --no-upgrade tcl-dev gcc make libc6-dev xz-utils >&2

mkdir -p "$CACHE/dl"
if [[ ! -f $CACHE/dl/$ORIG_TARBALL ]]; then
  log "downloading sqlite3 source package"
  # Run in the download dir: apt-get source writes to the current directory.
  (cd "$CACHE/dl" && apt-get source -q --download-only sqlite3 >&2)
fi
if [[ ! -f $CACHE/dl/$ORIG_TARBALL ]]; then
  log "ERROR: $ORIG_TARBALL not downloaded (is Debian's sqlite3 still ${SQLITE_VERSION}?)"
  exit 1
fi

if [[ ! -f $SRC/test/tester.tcl ]]; then
  log "unpacking $ORIG_TARBALL"
  rm -rf "$SRC" "$SRC.tmp"
  mkdir -p "$SRC.tmp"
  tar -xJf "$CACHE/dl/$ORIG_TARBALL" -C "$SRC.tmp" --strip-components=1
  mv "$SRC.tmp" "$SRC"
fi
patch_tester

# Out-of-tree build so the source tree stays clean for running the tests.
# Start from a fresh build dir: a half-finished one from a killed run is not
# worth trusting, and the whole build takes well under a minute.
log "configuring in $BUILD"
rm -rf "$BUILD"
mkdir -p "$BUILD"
(cd "$BUILD" && "$SRC/configure" --with-tcl=/usr/lib/tcl8.6 >&2)
log "building testfixture (make -j$(nproc))"
make -C "$BUILD" -j"$(nproc)" testfixture >&2

# Install atomically so the fast path never sees a partial binary.
cp "$BUILD/testfixture" "$TF.tmp"
mv "$TF.tmp" "$TF"
log "built $TF"
printf '%s\n' "$TF"
