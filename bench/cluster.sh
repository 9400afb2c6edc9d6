#!/usr/bin/env bash
# Cluster benchmark: berthd (release) on PostgreSQL + S3 (s3s-fs), one replica vs two,
# each behind the same nginx load balancer, in one run. Measures concurrent pushes and
# pulls: CLIENTS regbench processes at once, each pushing and pulling its own big
# blob (summed MB/s), then small-blob pushes and manifest GETs at 64 connections.
#
#   bench/cluster.sh [CLIENTS=4] [BLOB_SIZE=256M]
#
# Needs: postgresql, nginx, wrk, apache2-utils, s3s-fs (installed if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
clients=${1:-4} blob_size=${2:-256M}
regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }
. bench/lib.sh
install_missing nginx:nginx wrk:wrk ab:apache2-utils psql:postgresql-client
install_postgres
command -v s3s-fs >/dev/null || cargo install --quiet s3s-fs@0.14.1 --features binary --locked
cargo build --release -p berth-server

work=$(mktemp -d /tmp/berth-cluster-bench.XXXXXX)
pids=()
. tests/postgres.sh
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; stop_postgres; rm -rf "$work"; }
trap cleanup EXIT
start_postgres 54339
psql "$PG_ADMIN_URL" -qc "CREATE DATABASE berth_bench"
mkdir -p "$work/s3/registry"
s3s-fs --host 127.0.0.1 --port 5209 --access-key bench --secret-key bench-secret-key "$work/s3" \
  >"$work/s3.log" 2>&1 & pids+=($!)

export BERTH_DATABASE_URL="${PG_ADMIN_URL%/*}/berth_bench" BERTH_STORAGE_BACKEND=s3 \
  BERTH_STORAGE_BUCKET=registry BERTH_STORAGE_ENDPOINT=http://127.0.0.1:5209 \
  AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret-key BERTH_LOG=warn
for port in 5201 5202; do
  target/release/berthd serve --listen 127.0.0.1:$port --data-dir "$work/replica-$port" \
    >"$work/berth-$port.log" 2>&1 & pids+=($!)
done
# Port 5210: one replica; port 5220: both (round robin). Same proxy settings.
cat >"$work/nginx.conf" <<NGX
user root; daemon off; worker_processes 2; pid $work/nginx.pid; error_log $work/nginx.err;
events { worker_connections 1024; }
http {
  access_log off;
  upstream one { server 127.0.0.1:5201; keepalive 64; }
  upstream two { server 127.0.0.1:5201; server 127.0.0.1:5202; keepalive 64; }
  proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host \$http_host;
  client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;
  server { listen 127.0.0.1:5210; location / { proxy_pass http://one; } }
  server { listen 127.0.0.1:5220; location / { proxy_pass http://two; } }
}
NGX
nginx -c "$work/nginx.conf" & pids+=($!)
for port in 5201 5202 5210 5220; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
done

# regbench makes its random data file on first use: once, before clients run in parallel.
python3 "$regbench" http://127.0.0.1:5201 --only mono --blob-size "$blob_size" >/dev/null

# Runs CLIENTS regbench processes at once against $1; prints summed MB/s per figure.
concurrent() {
  local url=$1 label=$2
  local running=()
  for i in $(seq "$clients"); do
    python3 "$regbench" "$url" --only mono,download --blob-size "$blob_size" >"$work/$label-$i.txt" 2>"$work/$label-$i.err" &
    running+=($!)
  done
  wait "${running[@]}"
  awk -v l="$label" '/^(blob_upload_monolithic|blob_download):/ { s[$1] += $2 } END { for (k in s) printf "%s_%s %.1f MB/s\n", l, substr(k, 1, length(k)-1), s[k] }' \
    "$work/$label"-*.txt | sort
  python3 "$regbench" "$url" --only small,manifest-get | grep -E '^(small_blob_upload|manifest_get_by_tag):' | sed "s/^/${label}_/"
}
{
  concurrent http://127.0.0.1:5210 one
  concurrent http://127.0.0.1:5220 two
} | tee "$work/results.txt"
python3 - "$work/results.txt" <<'PY'
import sys
figs = {}
for line in open(sys.argv[1]):
    name, value = line.split()[0].rstrip(":"), float(line.split()[1])
    setup, fig = name.split("_", 1)
    figs.setdefault(fig, {})[setup] = value
print(f"\n{'figure':22} {'1 replica':>10} {'2 replicas':>11} {'ratio':>6}")
for fig, v in figs.items():
    if "one" in v and "two" in v:
        print(f"{fig:22} {v['one']:10.1f} {v['two']:11.1f} {v['two'] / v['one']:6.2f}")
PY
