#!/usr/bin/env bash
# The metadata cache on PostgreSQL against SQLite, side by side in one run: the same
# release berthd on each (blobs on local disk for both, so only the database differs),
# one replica each, ROUNDS rounds alternating. regbench measures manifest GET by tag,
# blob HEAD and the tags list at 64 connections; wrk (same connections and duration)
# measures manifest GET by digest, which regbench has no test for.
#
#   bash bench/cache.sh [ROUNDS=3] [SECONDS=10]
#
# Needs: postgresql, wrk, apache2-utils (installed if missing), ../shared/regbench.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} seconds=${2:-10}
regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }
. bench/lib.sh
install_missing wrk:wrk ab:apache2-utils psql:postgresql-client
install_postgres
cargo build --release -p berth-server

work=$(mktemp -d /tmp/berth-cache-bench.XXXXXX)
pids=()
. tests/postgres.sh
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; stop_postgres; rm -rf "$work"; }
trap cleanup EXIT
start_postgres 54338
psql "$PG_ADMIN_URL" -qc "CREATE DATABASE berth_bench"

export BERTH_GC_INTERVAL=off BERTH_LOG=warn
sqlite=5301 postgres=5302
target/release/berthd serve --listen 127.0.0.1:$sqlite --data-dir "$work/sqlite" \
  >"$work/sqlite.log" 2>&1 & pids+=($!)
BERTH_DATABASE_URL="${PG_ADMIN_URL%/*}/berth_bench" target/release/berthd serve \
  --listen 127.0.0.1:$postgres --data-dir "$work/postgres" >"$work/postgres.log" 2>&1 & pids+=($!)
for port in $sqlite $postgres; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
done

accept=application/vnd.oci.image.manifest.v1+json
for round in $(seq "$rounds"); do
  for db in sqlite postgres; do
    port=${!db}
    repo=bench/r$round
    python3 "$regbench" "http://127.0.0.1:$port" --repo "$repo" --only manifest-get,head,tags \
      --duration "$seconds" | awk -v db=$db '/^(manifest_get_by_tag|blob_head|tags_list)(_p99)?:/ { print db, $1, $2 }'
    digest=$(curl -sfI -H "Accept: $accept" "http://127.0.0.1:$port/v2/$repo/manifests/latest" |
      tr -d '\r' | awk -F': ' 'tolower($1) == "docker-content-digest" { print $2 }')
    wrk -t2 -c64 -d"${seconds}s" --latency -H "Accept: $accept" \
      "http://127.0.0.1:$port/v2/$repo/manifests/$digest" >"$work/wrk.txt"
    awk -v db=$db '/Requests\/sec/ { print db, "manifest_get_by_digest:", $2 }
      $1 == "99%" { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
        print db, "manifest_get_by_digest_p99:", v * (u == "us" ? 0.001 : u == "s" ? 1000 : 1) }' "$work/wrk.txt"
  done
done | tee "$work/results.txt"

python3 - "$work/results.txt" <<'PY'
import statistics, sys
figs = {}
for line in open(sys.argv[1]):
    db, name, value = line.split()
    figs.setdefault(name.rstrip(":"), {}).setdefault(db, []).append(float(value))
rows = [("manifest GET by digest", "manifest_get_by_digest", 0.8), ("blob HEAD", "blob_head", 0.8),
        ("manifest GET by tag", "manifest_get_by_tag", 0.5), ("tags list", "tags_list", 0.5)]
print(f"\nmedian of the rounds, 64 connections")
print(f"{'request':24} {'SQLite req/s':>12} {'PostgreSQL':>11} {'ratio':>6} {'target':>7} {'p99 SQLite':>11} {'p99 PG':>7}")
for label, key, target in rows:
    rate = {db: statistics.median(v) for db, v in figs[key].items()}
    p99 = {db: statistics.median(v) for db, v in figs[f"{key}_p99"].items()}
    print(f"{label:24} {rate['sqlite']:12.0f} {rate['postgres']:11.0f} {rate['postgres'] / rate['sqlite']:6.2f} "
          f"{'>= ' + str(target):>7} {p99['sqlite']:9.2f}ms {p99['postgres']:5.2f}ms")
PY
