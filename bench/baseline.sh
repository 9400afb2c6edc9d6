#!/usr/bin/env bash
# Compares this checkout's berthd with the berthd of an earlier revision, side by side
# in one run, on regbench's request-rate tests (the metadata path): e.g.
# `bash bench/baseline.sh HEAD~1`. Both are release builds (the earlier one in a
# temporary worktree and target directory); each server is measured
# twice, alternating, and the ratio (this / earlier) of the better run of each is
# printed. Extra arguments go to regbench, e.g. `--duration 10`.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: bench/baseline.sh REVISION [regbench args]}
shift
regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }
. bench/lib.sh
install_missing wrk:wrk ab:apache2-utils curl:curl

work=$(mktemp -d /tmp/berth-baseline.XXXXXX)
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true
  git worktree remove --force "$work/src" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -p berth-server
cp target/release/berthd "$work/berthd-current"
# The earlier revision builds in a target directory of its own (cargo names workspace
# crates' artifacts by their path inside the workspace, so two checkouts sharing one
# would overwrite each other's), seeded with a copy of this one's release build so
# that only the workspace's crates compile again.
git worktree add --detach "$work/src" "$rev" >/dev/null
mkdir -p "$work/target" && cp -a target/release "$work/target/"
(cd "$work/src" && CARGO_TARGET_DIR="$work/target" cargo build --release -p berth-server)
cp "$work/target/release/berthd" "$work/berthd-baseline"

tests=manifest-put,manifest-get,head,tags
port=5111
for round in 1 2; do
  for which in baseline current; do
    port=$((port + 1))
    "$work/berthd-$which" serve --listen 127.0.0.1:$port --data-dir "$work/data-$which-$round" >"$work/$which.log" 2>&1 &
    pid=$!; pids+=($pid)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
    python3 "$regbench" "http://127.0.0.1:$port" --server-pid $pid --only "$tests" "$@" | tee -a "$work/$which.txt"
    kill $pid; wait $pid 2>/dev/null || true
  done
done

python3 - "$work/current.txt" "$work/baseline.txt" "$rev" <<'PY'
import sys
def best(p):
    out = {}
    for line in open(p):
        if ":" not in line:
            continue
        k, v = line.split(":", 1)
        parts = v.split()
        try:
            value = float(parts[0])
        except (ValueError, IndexError):
            continue
        k = k.strip()
        # Rates: higher is better; latencies (ms): lower is better.
        better = min if "ms" in parts[1:2] else max
        out[k] = better(out.get(k, value), value)
    return out
c, b = best(sys.argv[1]), best(sys.argv[2])
print(f"\n{'figure':40} {'current':>12} {sys.argv[3]:>12} {'ratio':>8}")
for k in c:
    if k in b and b[k]:
        print(f"{k:40} {c[k]:12.2f} {b[k]:12.2f} {c[k] / b[k]:8.2f}")
PY
