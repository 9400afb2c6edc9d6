#!/usr/bin/env bash
# The web UI benchmark: starts a release berthd (SQLite, fresh data dir), seeds it with
# REPOS repositories of TAGS tags each through the registry API (default 10,000 × 10 =
# 100,000 tags), then reports the server time (Server-Timing) of the explore, search,
# repository and tag pages and of the JSON search. Target: under 50 ms each.
# Usage: bench/web.sh [REPOS] [TAGS_PER_REPO]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p berth-server
cargo build --release -p berth-tests --example web_bench
work=$(mktemp -d /tmp/berth-web-bench.XXXXXX)
port=5111
target/release/berthd serve --listen 127.0.0.1:$port --data-dir "$work/data" >"$work/berthd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
RUST_LOG=warn target/release/examples/web_bench "http://127.0.0.1:$port" "${1:-10000}" "${2:-10}"
