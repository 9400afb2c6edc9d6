#!/usr/bin/env bash
# Runs every test of the workspace against real services: installs what is missing
# (Debian packages: PostgreSQL, skopeo, umoci, busybox, docker-registry, Chromium and
# its WebDriver, debootstrap), starts a throwaway PostgreSQL, builds the binaries, runs
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
