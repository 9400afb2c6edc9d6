#!/usr/bin/env bash
# Push rate with events against without, side by side in one run: two release berthd on
# SQLite (blobs on local disk), one plain and one with two notification endpoints and a
# webhook on the benchmarked namespace, all three receivers answering 200 on loopback;
# ROUNDS rounds alternating. regbench measures small blob uploads (POST + PUT each, 16
# threads) and manifest PUT (wrk, 64 connections: every PUT is a tag push, so every one
# is an event to both endpoints and the webhook). After each round the events server's
# queues must drain (delivery keeps up), and the receivers' counts are printed.
#
#   bash bench/events.sh [ROUNDS=3] [SECONDS=10]
#
# Needs: wrk, apache2-utils (installed if missing), ../shared/regbench.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} seconds=${2:-10}
regbench=${REGBENCH:-../shared/regbench}
[ -e "$regbench" ] || { echo "regbench not found at $regbench (set REGBENCH)" >&2; exit 2; }
. bench/lib.sh
install_missing wrk:wrk ab:apache2-utils
cargo build --release -p berth-server

work=$(mktemp -d /tmp/berth-events-bench.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The receivers: one process answering 200 to every POST, counting events per path.
# It shares the two cores with the servers and wrk, so it counts without parsing:
# every event of an envelope has one "action" key (a quote inside a string value is
# escaped, so none can look like one); a webhook delivery is one event.
receiver=5310
python3 - "$receiver" >"$work/receiver.log" 2>&1 <<'PY' & pids+=($!)
import json, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
counts, lock = {}, threading.Lock()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        n = 1 if self.path == "/webhook" else body.count(b'"action":')
        with lock:
            counts[self.path] = counts.get(self.path, 0) + n
        self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
    def do_GET(self):
        with lock:
            out = json.dumps(counts).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(out))); self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a): pass
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
cat >"$work/events.toml" <<TOML
[[notifications]]
name = "first"
url = "http://127.0.0.1:$receiver/first"
[[notifications]]
name = "second"
url = "http://127.0.0.1:$receiver/second"
[webhooks]
allow_private = true
TOML

export BERTH_GC_INTERVAL=off BERTH_LOG=warn
plain=5311 events=5312
target/release/berthd serve --listen 127.0.0.1:$plain --data-dir "$work/plain" \
  >"$work/plain.log" 2>&1 & pids+=($!)
target/release/berthd webhook add 'bench/*' bench "http://127.0.0.1:$receiver/webhook" \
  --config "$work/events.toml" --data-dir "$work/events" >/dev/null
target/release/berthd serve --config "$work/events.toml" --listen 127.0.0.1:$events \
  --data-dir "$work/events" >"$work/events.log" 2>&1 & pids+=($!)
events_pid=$!
for port in $plain $events $receiver; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
done

# Events waiting: in the deliveries, and in the outbox (not yet fanned out).
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
queued() {
  curl -sf "http://127.0.0.1:$events/metrics" |
    awk '/^berth_events_(queued|outbox)/ { s += $2 } END { print s + 0 }'
}
for round in $(seq "$rounds"); do
  for server in plain events; do
    port=${!server}
    python3 "$regbench" "http://127.0.0.1:$port" --repo "bench/r$round" --only small,manifest-put \
      --small-count 4000 --duration "$seconds" |
      awk -v s=$server '/^(small_blob_upload|manifest_put):/ { print s, $1, $2 }'
  done
  # Delivery keeps up: the queues drain within a minute of the load (the gauges are set
  # every 5 s, so the first look is after that). The CPU the events server spends on it
  # after the load is said: work left for later is work the rates above do not count.
  cpu_at_end=$(cpu_ticks "$events_pid")
  sleep 6
  for _ in $(seq 600); do [ "$(queued)" = 0 ] && break; sleep 0.1; done
  echo "events queued_after_round: $(queued)" "cpu_after_load_s:" \
    "$(awk -v t="$(( $(cpu_ticks "$events_pid") - cpu_at_end ))" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%.1f", t / hz }')" >&2
done | tee "$work/results.txt"
echo "received: $(curl -sf http://127.0.0.1:$receiver/)"

python3 - "$work/results.txt" <<'PY'
import statistics, sys
figs = {}
for line in open(sys.argv[1]):
    server, name, value = line.split()
    figs.setdefault(name.rstrip(":"), {}).setdefault(server, []).append(float(value))
print("\nmedian of the rounds")
print(f"{'test':22} {'plain':>10} {'events':>10} {'ratio':>6} {'target':>7}")
for label, key in [("small blob uploads/s", "small_blob_upload"), ("manifest PUT/s", "manifest_put")]:
    rate = {s: statistics.median(v) for s, v in figs[key].items()}
    print(f"{label:22} {rate['plain']:10.0f} {rate['events']:10.0f} "
          f"{rate['events'] / rate['plain']:6.2f} {'>= 0.9':>7}")
PY
