#!/usr/bin/env bash
# The pull path against the machine's limit, side by side in one run (bench/pull.py
# measures): blob downloads with curl from Berth, Distribution (Debian's docker-registry)
# and nginx (sendfile on) serving the same bytes; request rates of Berth's metadata
# endpoints (auth off and on) against nginx serving a file of a manifest's size.
#
#   bash bench/pull.sh [--rounds N] [--seconds S]     (defaults: 3 rounds, 5 s per rate)
#
# BIG_MIB (default 512) sizes the multi-object blob; the single-object one is 4 MiB
# (Berth's first object of an upload holds 4 MiB).
#
# Needs: docker-registry, nginx, wrk, curl (installed if missing) and oha (`cargo install
# --locked`, if missing: a load generator that sends HEAD and reports sub-millisecond
# percentiles; wrk cannot send HEAD and ab reports whole milliseconds).
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/lib.sh
install_missing docker-registry:docker-registry wrk:wrk curl:curl nginx:nginx

command -v oha >/dev/null || cargo install --locked oha@1.16.0
cargo build --release -p berth-server
work=$(mktemp -d /tmp/berth-pull.XXXXXX)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

berth=5111 berth_auth=5112 peer=5113 nginx=5114
export BERTH_GC_INTERVAL=off
target/release/berthd serve --listen 127.0.0.1:$berth --data-dir "$work/berth" >"$work/berth.log" 2>&1 &
pids+=($!)
echo bench-password | target/release/berthd user add --data-dir "$work/berth-auth" --password-stdin bench >/dev/null
# Tokens outlive the run.
BERTH_AUTH_TOKEN_TTL_SECS=86400 target/release/berthd serve --listen 127.0.0.1:$berth_auth \
  --data-dir "$work/berth-auth" >"$work/berth-auth.log" 2>&1 &
pids+=($!)
start_distribution "$work" $peer
pids+=($peer_pid)
mkdir -p "$work/www"
# nginx as fast as it goes for small files: no access log, keep-alive connections never
# closed by a request count, open file descriptors cached.
cat >"$work/nginx.conf" <<NGX
user root; daemon off; worker_processes 2; pid $work/nginx.pid; error_log $work/nginx.err;
events {}
http {
  access_log off; sendfile on; keepalive_requests 100000000; open_file_cache max=100;
  server { listen 127.0.0.1:$nginx; root $work/www; }
}
NGX
nginx -c "$work/nginx.conf" &
pids+=($!)
for port in $berth $berth_auth $peer $nginx; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
done

head -c $((${BIG_MIB:-512} * 1024 * 1024)) /dev/urandom >"$work/www/big"
head -c $((4 * 1024 * 1024)) /dev/urandom >"$work/www/small"

python3 - "$work" $berth $berth_auth $peer $nginx <<'PY'
import hashlib, json, os, sys, urllib.request
work, berth, berth_auth, peer, nginx = sys.argv[1], *map(int, sys.argv[2:])
def url(port): return f"http://127.0.0.1:{port}"
token = json.load(urllib.request.urlopen(urllib.request.Request(
    url(berth_auth) + "/auth/token?service=berth&scope=repository:bench/pull:pull,push",
    headers={"Authorization": "Basic YmVuY2g6YmVuY2gtcGFzc3dvcmQ="})))["token"]
def request(method, u, data=None, headers={}):
    return urllib.request.urlopen(urllib.request.Request(u, data=data, method=method, headers=headers))
def push_blob(port, repo, data, headers={}):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    # Berth and Distribution both take a whole blob as POST then PUT.
    loc = request("POST", f"{url(port)}/v2/{repo}/blobs/uploads/", b"", headers).headers["Location"]
    loc = loc if loc.startswith("http") else url(port) + loc
    sep = "&" if "?" in loc else "?"
    request("PUT", f"{loc}{sep}digest={digest}", data,
            {**headers, "Content-Type": "application/octet-stream"})
    return digest
blobs = {name: open(f"{work}/www/{name}", "rb").read() for name in ("big", "small")}
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers",
    "diff_ids": ["sha256:" + "0" * 64]}}, separators=(",", ":")).encode()
repo = {"berth": "bench/pull", "berth-auth": "bench/pull"}
auth = {"Authorization": f"Bearer {token}"}
digests = {}
for port, headers in ((berth, {}), (berth_auth, auth), (peer, {})):
    for name, data in blobs.items():
        digests[name] = push_blob(port, "bench/pull", data, headers)
    cfg = push_blob(port, "bench/pull", config, headers)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg, "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digests["small"],
                "size": len(blobs["small"])}]}, separators=(",", ":")).encode()
for port, headers in ((berth, {}), (berth_auth, auth)):
    for tag in ["latest"] + [f"v{i}" for i in range(1, 11)]:
        request("PUT", f"{url(port)}/v2/bench/pull/manifests/{tag}", manifest,
                {**headers, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
open(f"{work}/www/manifest", "wb").write(manifest)
mdigest = "sha256:" + hashlib.sha256(manifest).hexdigest()
setup = {
    "big_size": len(blobs["big"]), "small_size": len(blobs["small"]),
    "blob_urls": {
        "berth": {n: f"{url(berth)}/v2/bench/pull/blobs/{d}" for n, d in digests.items()},
        "peer": {n: f"{url(peer)}/v2/bench/pull/blobs/{d}" for n, d in digests.items()},
        "nginx": {n: f"{url(nginx)}/{n}" for n in blobs},
    },
    "berth": url(berth), "berth_auth": url(berth_auth), "token": token, "repo": repo,
    "metadata": {
        "manifest GET by tag": "/v2/{repo}/manifests/latest",
        "manifest GET by digest": "/v2/{repo}/manifests/" + mdigest,
        "blob HEAD": "/v2/{repo}/blobs/" + digests["small"],
        "tags list": "/v2/{repo}/tags/list",
    },
    "nginx_manifest": f"{url(nginx)}/manifest",
}
json.dump(setup, open(f"{work}/setup.json", "w"))
PY
# The files are in the page cache (just written); every server reads them from there.
python3 bench/pull.py "$work/setup.json" "$@"
