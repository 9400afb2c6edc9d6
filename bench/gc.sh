#!/usr/bin/env bash
# Garbage collection benchmark (issue 14's targets), release builds, SQLite:
#  1. collection rate: COUNT (default 100,000) unreferenced small blobs pushed, then one
#     `berthd gc` pass with grace 0 deletes them all; blobs per minute and the pass's
#     peak RSS, on local disk and on the S3 server (s3s-fs on loopback).
#  2. pushes beside a collector that never stops: regbench's small-blob push rate
#     while a pass runs every 100 ms collecting a backlog of garbage, against the rate
#     without garbage collection, side by side, alternating, twice;
#  3. the worst case: tiny blobs each deleted 1 s after its push, so the collector
#     deletes as many files as the pushes write.
# Usage: bench/gc.sh [COUNT] [PUSHES]   (defaults 100000 and 20000; COUNT 0 skips 1.)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-100000}
pushes=${2:-20000}
. bench/lib.sh
install_missing /usr/bin/time:time
command -v s3s-fs >/dev/null || cargo install --locked s3s-fs@0.14.1 --features binary
cargo build --release -p berth-server
cargo build --release -p berth-tests --example gc_bench
berthd=target/release/berthd
client=target/release/examples/gc_bench
work=$(mktemp -d /tmp/berth-gc-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=5211

wait_up() { for _ in $(seq 200); do curl -sf "http://127.0.0.1:$1/v2/" >/dev/null && return; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }

# Starts s3s-fs on its own port and sets `settings` to what points berthd at it (not in
# a subshell: its pid must reach the clean-up).
start_s3() {
  local dir=$work/s3-$1 s3port=$((port + 500))
  mkdir -p "$dir/registry"
  s3s-fs --host 127.0.0.1 --port $s3port --access-key bench --secret-key bench-secret "$dir" >/dev/null 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/$s3port) 2>/dev/null && break; sleep 0.05; done
  settings="BERTH_STORAGE_BACKEND=s3 BERTH_STORAGE_BUCKET=registry BERTH_STORAGE_ENDPOINT=http://127.0.0.1:$s3port BERTH_STORAGE_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret"
}

echo "## 1. collecting $count unreferenced blobs"
[ "$count" -gt 0 ] && for backend in local s3; do
  port=$((port + 1))
  data=$work/data-$backend
  settings=""
  [ $backend = s3 ] && start_s3 $backend
  env $settings BERTH_GC_INTERVAL=off "$berthd" serve --listen 127.0.0.1:$port --data-dir "$data" >"$work/serve-$backend.log" 2>&1 &
  pid=$!; pids+=($pid)
  wait_up $port
  "$client" "http://127.0.0.1:$port" "$count" 32 | sed "s/^/$backend: /"
  kill $pid; wait $pid 2>/dev/null || true
  env $settings BERTH_GC_GRACE=0s /usr/bin/time -v "$berthd" gc --data-dir "$data" >"$work/gc-$backend.out" 2>"$work/gc-$backend.err"
  python3 - "$backend" "$work/gc-$backend.out" "$work/gc-$backend.err" <<'PY'
import re, sys
backend, out, err = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
m = re.search(r"deleted \d+ manifests, (\d+) blobs \((\d+) bytes\).* in ([\d.]+) s", out)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
blobs, secs = int(m.group(1)), float(m.group(3))
print(f"{backend}: gc deleted {blobs} blobs in {secs:.1f} s = {blobs / secs * 60:,.0f} blobs/min, peak RSS {rss / 1024:.1f} MiB")
PY
done

regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }

# One push-rate measurement: berthd with the given settings; SEED blobs pushed and left
# unreferenced, then WAIT seconds (past the grace, so they are garbage), then the load.
push_round() { # name settings seed wait load...
  local name=$1 settings=$2 seed=$3 wait=$4; shift 4
  port=$((port + 1))
  env $settings "$berthd" serve --listen 127.0.0.1:$port --data-dir "$work/$name" >"$work/$name.log" 2>&1 &
  local pid=$!; pids+=($pid)
  wait_up $port
  "$client" "http://127.0.0.1:$port" "$seed" 32 1 >/dev/null
  sleep "$wait"
  "$@" "http://127.0.0.1:$port" | tee -a "$work/$name.out"
  kill $pid; wait $pid 2>/dev/null || true
  deleted=$( (grep -o 'deleted [0-9]* manifests, [0-9]* blobs' "$work/$name.log" || true) | awk '{s+=$4} END {print s+0}')
  echo "  ($name: the collector deleted $deleted blobs meanwhile)"
}
ratio() { # label file-with-gc file-without pattern
  python3 - "$@" <<'PY'
import re, sys
label, on, off, pat = sys.argv[1:5]
best = lambda p: max(float(m.group(1)) for l in open(p) for m in [re.search(pat, l)] if m)
a, b = best(on), best(off)
print(f"{label}: with gc / without = {a:.0f} / {b:.0f} = {a / b:.2f}")
PY
}
regbench_small() { python3 "$regbench" "$1" --only small --small-count "$pushes" | grep small_blob_upload: ; }
tiny_pushes() { "$client" "$1" "$pushes" 32 2; }

echo "## 2. regbench's small blobs ($pushes of 4 KiB, POST+PUT) while a pass runs every 100 ms,"
echo "##    collecting a backlog of $pushes blobs pushed earlier (grace 15 s)"
for round in 1 2; do
  push_round "small-off-$round" "BERTH_GC_INTERVAL=off" "$pushes" 16 regbench_small
  push_round "small-on-$round" "BERTH_GC_INTERVAL=100ms BERTH_GC_GRACE=15s" "$pushes" 16 regbench_small
done
cat "$work"/small-on-*.out > "$work/small-on.txt"; cat "$work"/small-off-*.out > "$work/small-off.txt"
ratio "regbench small blobs" "$work/small-on.txt" "$work/small-off.txt" 'small_blob_upload: ([\d.]+)'

echo "## 3. worst case: tiny blobs (20 bytes, one POST each), every one deleted 1 s after its"
echo "##    push (grace 1 s, a pass every 100 ms): as many file deletions as file writes"
for round in 1 2; do
  push_round "tiny-off-$round" "BERTH_GC_INTERVAL=off" 5000 1.2 tiny_pushes
  push_round "tiny-on-$round" "BERTH_GC_INTERVAL=100ms BERTH_GC_GRACE=1s" 5000 1.2 tiny_pushes
done
cat "$work"/tiny-on-*.out > "$work/tiny-on.txt"; cat "$work"/tiny-off-*.out > "$work/tiny-off.txt"
ratio "tiny blobs, deleted as fast as pushed" "$work/tiny-on.txt" "$work/tiny-off.txt" ': ([\d.]+) blobs/s'
