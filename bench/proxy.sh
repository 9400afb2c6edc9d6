#!/usr/bin/env bash
# The pull-through proxy against its upstream and against Berth's own pulls, side by side
# in one run (bench/proxy.py measures): a release berthd with a `[[proxy]]` (prefix `up`)
# in front of Distribution (Debian's docker-registry), both on loopback, GC off.
#  1. first (uncached) pull of a fresh blob through the proxy against pulling the same
#     blob from Distribution directly (target: proxy >= 90 % of direct), and against
#     Distribution's own pull-through cache (proxy mode) in front of it: over loopback
#     (every process on the same two cores: a measure of the proxy's CPU cost), and over
#     a link to a network namespace where a second Distribution serves the same storage,
#     as an upstream is reached in use, at each of LINK_RATES (default "1gbit 10gbit",
#     Linux's tbf; a proxy prefix and a Distribution proxy per rate, so each is a miss);
#  2. the proxied blob once cached against the same blob pushed to a local repository
#     of the same berthd (target: ratio ~1);
#  3. the peak RSS (VmHWM, reset through /proc/PID/clear_refs) of a second, fresh berthd
#     while curl pulls an uncached 4 GiB blob through its proxy (target: < 64 MiB), and
#     that pull's rate.
# Every blob is fresh random bytes, pushed to Distribution by POST then PUT ?digest=, in
# an image whose manifest is pulled through the proxy first (untimed), as clients do;
# downloads are `curl -o /dev/null`; which side goes first alternates between rounds.
#
#   bash bench/proxy.sh [--rounds N]        (default 3 rounds)
#
# BIG_MIB (default 1024) sizes the blobs of parts 1-2, HUGE_MIB (default 4096) part 3's.
# Needs: docker-registry, curl, ip and tc (installed if missing); root (clear_refs, the
# namespace).
# Run it as `flock /tmp/cargo.lock bash bench/proxy.sh` on a shared machine, so no
# compile runs during the measurements.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
install_missing docker-registry:docker-registry curl:curl ip:iproute2 tc:iproute2

cargo build --release -p berth-server
work=$(mktemp -d /tmp/berth-proxy.XXXXXX)
pids=()
ns=berth-bench-up.$$ host_if=bbh$$ far_if=bbu$$ far_ip=10.203.0.2
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"
  ip link del "$host_if" 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true
}
trap cleanup EXIT

# Distribution's proxies over the link listen on 5135 and up, one per rate.
berth=5131 peer=5132 fresh=5133 peer_proxy=5134 peer_proxy_far=5135
start_distribution "$work" $peer
pids+=($peer_pid)
# The far upstream: the same storage served from a namespace behind a shaped veth link
# (the rate limits what leaves the namespace, which is the blobs' direction).
ip netns add "$ns"
ip link add "$host_if" type veth peer name "$far_if"
ip link set "$far_if" netns "$ns"
ip addr add 10.203.0.1/30 dev "$host_if"
ip link set "$host_if" up
ip -n "$ns" addr add $far_ip/30 dev "$far_if"
ip -n "$ns" link set "$far_if" up
ip -n "$ns" link set lo up
rates=(${LINK_RATES:-1gbit 10gbit})
sed "s/addr: 127.0.0.1:$peer/addr: $far_ip:$peer/" "$work/peer.yml" >"$work/far.yml"
ip netns exec "$ns" docker-registry serve "$work/far.yml" >"$work/far.log" 2>&1 &
pids+=($!)
cat >"$work/berth.toml" <<TOML
listen = "127.0.0.1:$berth"
data_dir = "$work/berth"
[[proxy]]
prefix = "up"
upstream = "http://127.0.0.1:$peer"
access = "anonymous"
TOML
for i in "${!rates[@]}"; do
  printf '[[proxy]]\nprefix = "far%s"\nupstream = "http://%s:%s"\naccess = "anonymous"\n' \
    "$i" "$far_ip" "$peer" >>"$work/berth.toml"
done
BERTH_GC_INTERVAL=off BERTH_LOG=warn target/release/berthd serve --config "$work/berth.toml" \
  >"$work/berth.log" 2>&1 &
berth_pid=$!; pids+=($berth_pid)
# Part 3's: the same, fresh.
sed -e "s/:$berth\"/:$fresh\"/" -e "s|$work/berth\"|$work/fresh\"|" "$work/berth.toml" >"$work/fresh.toml"
BERTH_GC_INTERVAL=off BERTH_LOG=warn target/release/berthd serve --config "$work/fresh.toml" \
  >"$work/fresh.log" 2>&1 &
fresh_pid=$!; pids+=($fresh_pid)
up() {
  local base=$1
  [[ $base == *:* ]] || base=127.0.0.1:$base
  for _ in $(seq 100); do curl -sf "http://$base/v2/" >/dev/null && return; sleep 0.1; done
  echo "server on $base did not start" >&2; exit 1
}
up $peer
up $far_ip:$peer
# The peer's own pull-through cache (Distribution's proxy mode) in front of it (it checks
# its upstream when it starts).
cat >"$work/peer-proxy.yml" <<YML
version: 0.1
log: { level: error }
storage:
  filesystem: { rootdirectory: $work/peer-proxy }
proxy: { remoteurl: "http://127.0.0.1:$peer" }
http: { addr: 127.0.0.1:$peer_proxy }
YML
docker-registry serve "$work/peer-proxy.yml" >"$work/peer-proxy.log" 2>&1 &
pids+=($!)
for i in "${!rates[@]}"; do
  sed -e "s|$work/peer-proxy|$work/peer-proxy-far$i|" -e "s|127.0.0.1:$peer\"|$far_ip:$peer\"|" \
    -e "s/:$peer_proxy/:$((peer_proxy_far + i))/" "$work/peer-proxy.yml" >"$work/peer-proxy-far$i.yml"
  docker-registry serve "$work/peer-proxy-far$i.yml" >"$work/peer-proxy-far$i.log" 2>&1 &
  pids+=($!)
done
for port in $berth $fresh $peer_proxy; do up $port; done
for i in "${!rates[@]}"; do up $((peer_proxy_far + i)); done

python3 bench/proxy.py --work "$work" --berth "http://127.0.0.1:$berth" --berth-pid $berth_pid \
  --peer "http://127.0.0.1:$peer" --peer-pid $peer_pid --spool "$work/berth/proxy-spool/up" \
  --peer-proxy "http://127.0.0.1:$peer_proxy" --far "http://$far_ip:$peer" \
  --peer-proxy-far "http://127.0.0.1:$peer_proxy_far" --link-ns "$ns" --link-if "$far_if" \
  --link-rates "${rates[@]}" \
  --fresh-berth "http://127.0.0.1:$fresh" --fresh-pid $fresh_pid --fresh-spool "$work/fresh/proxy-spool/up" \
  --big-mib "${BIG_MIB:-1024}" --huge-mib "${HUGE_MIB:-4096}" "$@" ||
  { status=$?; echo "--- berthd log (tail)" >&2; tail -20 "$work/berth.log" >&2; exit $status; }
