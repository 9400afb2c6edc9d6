#!/usr/bin/env bash
# Runs every test of the workspace against real services: installs what is missing
# (Debian packages: PostgreSQL, skopeo, umoci, busybox, docker-registry, Chromium and
# its WebDriver, debootstrap, qemu-user-static), sets up arm64 emulation for the
# multi-platform build test, starts a throwaway PostgreSQL, builds the binaries, runs
# `cargo test --workspace`, then fuzzes every parser of outside input for 200 s
# in all (tests/fuzz.sh; BERTH_FUZZ_SECONDS sets the total). Used as-is by .ci/run.
# Screenshots of the web UI's pages are kept in target/test-artifacts/web/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# --- packages -------------------------------------------------------------
need=()
have() { command -v "$1" >/dev/null 2>&1; }
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
have psql || need+=(postgresql-client)
have skopeo || need+=(skopeo)
have umoci || need+=(umoci)
[ -x /bin/busybox ] || need+=(busybox-static)
have openssl || need+=(openssl)
have sqlite3 || need+=(sqlite3)
have docker-registry || need+=(docker-registry)
have chromium || need+=(chromium)
have chromedriver || need+=(chromium-driver)
# The cluster fault tests build their images from a debootstrapped Debian (compose/).
have debootstrap || need+=(debootstrap)
# Multi-platform builds run an arm64 RUN under qemu (binfmt).
[ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] || need+=(qemu-user-static)
# Rootless builds map a user's subordinate ids with newuidmap / newgidmap.
have newuidmap || need+=(uidmap)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && have apt-get; then
    echo "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing packages: ${need[*]} (install them with apt-get as root)" >&2
    [ "${CI:-}" = "" ] || exit 1
  fi
fi

# --- arm64 emulation: qemu registered with the kernel's binfmt_misc (the F flag
# opens qemu now, so it runs in chroots and containers), and an arm64 busybox for
# the test's image (Debian's busybox-static for arm64, unpacked, not installed).
if [ "$(id -u)" = 0 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] \
    || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
  if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
  fi
  arm64_dir="$root/target/test-deps/arm64-busybox"
  if [ ! -x "$arm64_dir/bin/busybox" ]; then
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt-get update -qq
    mkdir -p "$root/target/test-deps"
    (cd "$root/target/test-deps" && rm -f busybox-static_*_arm64.deb \
      && apt-get download -qq busybox-static:arm64 \
      && dpkg-deb -x busybox-static_*_arm64.deb "$arm64_dir")
  fi
  export BERTH_TEST_ARM64_BUSYBOX="$arm64_dir/bin/busybox"
fi

# --- S3: s3s-fs, a real S3 protocol server over a directory (tests start their own)
if ! have s3s-fs; then
  echo "installing s3s-fs (S3-compatible server for the cluster tests)"
  cargo install --quiet s3s-fs@0.14.1 --features binary --locked
fi

# --- PostgreSQL: a private cluster on a loopback port, removed on exit ------
. tests/postgres.sh
trap stop_postgres EXIT
start_postgres "${BERTH_TEST_PG_PORT:-54329}"
export BERTH_TEST_POSTGRES_URL="$PG_ADMIN_URL"

# --- build and test ---------------------------------------------------------
cargo build --workspace --bins
cargo test --workspace -- "$@"

# --- fuzz the parsers for a bounded time (skipped when tests are filtered)
if [ $# -eq 0 ]; then
  bash tests/fuzz.sh "${BERTH_FUZZ_SECONDS:-200}"
fi
