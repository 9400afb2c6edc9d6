#!/usr/bin/env bash
# Benchmarks berthd (release build) and Distribution (Debian's docker-registry) side by
# side, in one run, with the registry-agnostic ../shared/regbench, and prints each
# figure for both plus the ratio; then the pull path against the machine's limit
# (bench/pull.sh: curl downloads beside Distribution and nginx, request rates beside
# nginx). Extra arguments go to regbench for both servers, e.g.
# `bench/run.sh --only mono,download --blob-size 4G` (PULL=0 skips bench/pull.sh).
#
# Needs: docker-registry, wrk, apache2-utils (ab), curl (installed if missing; pull.sh adds nginx).
set -euo pipefail
cd "$(dirname "$0")/.."
regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }

. bench/lib.sh
install_missing docker-registry:docker-registry wrk:wrk ab:apache2-utils curl:curl

cargo build --release -p berth-server
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

berth_port=5101 peer_port=5102
target/release/berthd serve --listen 127.0.0.1:$berth_port --data-dir "$work/berth" >"$work/berth.log" 2>&1 &
berth_pid=$!; pids+=($berth_pid)
start_distribution "$work" $peer_port
pids+=($peer_pid)
for port in $berth_port $peer_port; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
done

python3 "$regbench" "http://127.0.0.1:$berth_port" --server-pid $berth_pid "$@" | tee "$work/berth.txt"
python3 "$regbench" "http://127.0.0.1:$peer_port" --server-pid $peer_pid "$@" | tee "$work/peer.txt"

python3 - "$work/berth.txt" "$work/peer.txt" <<'PY'
import sys
def load(p):
    out = {}
    for line in open(p):
        if ":" in line:
            k, v = line.split(":", 1)
            parts = v.split()
            try:
                out[k.strip()] = (float(parts[0]), " ".join(parts[1:]))
            except (ValueError, IndexError):
                pass
    return out
b, p = load(sys.argv[1]), load(sys.argv[2])
print(f"\n{'figure':40} {'berth':>12} {'peer':>12} {'ratio':>8}")
for k in b:
    if k in p:
        ratio = b[k][0] / p[k][0] if p[k][0] else float("inf")
        print(f"{k:40} {b[k][0]:12.1f} {p[k][0]:12.1f} {ratio:8.2f}  {b[k][1]}")
PY

# The servers above are stopped first: pull.sh starts its own, and each run has the
# machine to itself.
cleanup
trap - EXIT
[ "${PULL:-1}" = 0 ] || bash bench/pull.sh
