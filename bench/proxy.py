"""Pull-through proxy measurements for bench/proxy.sh, in alternating rounds.

Berth (a `[[proxy]]` with prefix `up` in front of Distribution) and Distribution side by
side: 1. the first, uncached pull through the proxy against the same blob pulled from
Distribution directly, over loopback and (prefixes `far0`, `far1`, ...) over a link of
each rate to the same storage served from a network namespace; 2. the proxied blob once cached against the same blob pushed to a
local repository of the same berthd; 3. berthd's peak RSS during an uncached pull of a
large blob through the proxy (and that pull's rate, against the direct one).

Downloads are `curl -o /dev/null`, rated by curl's own size and time. Before each one the
dirty pages are written back (`sync`), so no server pays for an earlier one's writes. A
fetch is committed once its spool file is gone (the fetch task removes it only after
storing the blob); the next measurement waits for that. Prints one line per
measurement, then a table of medians and ratios.
"""

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

CHUNK = 8 * 1024 * 1024
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MIB = 1024 * 1024


def make_blob(path, size):
    """Writes `size` fresh random bytes to `path`; their digest."""
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            data = os.urandom(min(CHUNK, left))
            h.update(data)
            f.write(data)
            left -= len(data)
    return "sha256:" + h.hexdigest()


def push(base, repo, path, digest):
    """A whole blob as POST then PUT ?digest= (the body streamed from `path` by curl)."""
    req = urllib.request.Request(f"{base}/v2/{repo}/blobs/uploads/", data=b"", method="POST")
    loc = urllib.request.urlopen(req).headers["Location"]
    loc = loc if loc.startswith("http") else base + loc
    sep = "&" if "?" in loc else "?"
    subprocess.run(["curl", "-sSf", "-o", "/dev/null", "-X", "PUT", "-T", path,
                    "-H", "Content-Type: application/octet-stream", "-H", "Expect:",
                    f"{loc}{sep}digest={digest}"], check=True)


def publish(work, peer, berth, repo, digest, size, tag, prefixes=("up",)):
    """An image whose one layer is `digest` pushed to the peer as `repo:tag`, and its
    manifest pulled through each proxy prefix (untimed): Berth fetches a blob only for a
    cached manifest that lists it, as clients ask for the manifest first."""
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    path = f"{work}/config-{tag}"
    with open(path, "wb") as f:
        f.write(config)
    push(peer, repo, path, config_digest)
    os.remove(path)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": digest, "size": size}],
    }).encode()
    req = urllib.request.Request(f"{peer}/v2/{repo}/manifests/{tag}", data=manifest,
                                 method="PUT", headers={"Content-Type": OCI_MANIFEST})
    urllib.request.urlopen(req).read()
    for prefix in prefixes:
        req = urllib.request.Request(f"{berth}/v2/{prefix}/{repo}/manifests/{tag}",
                                     headers={"Accept": OCI_MANIFEST})
        urllib.request.urlopen(req).read()


def pull(url, size):
    """Bytes/s of one curl download of `url` to /dev/null (checked: 200, `size` bytes)."""
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "900", "-o", "/dev/null",
         "-w", "%{http_code} %{size_download} %{time_total}", url],
        capture_output=True, text=True)
    fields = out.stdout.split()
    if out.returncode != 0 or len(fields) != 3 or fields[0] != "200" or int(fields[1]) != size:
        raise SystemExit(f"GET {url}: curl {out.returncode} {out.stdout!r} {out.stderr.strip()}"
                         f" (expected 200 and {size} bytes)")
    return int(fields[1]) / float(fields[2])


def settle():
    """Dirty pages written back, and a moment for the servers to go idle."""
    os.sync()
    time.sleep(0.5)


def proxy_counters(berth, prefix="up"):
    text = urllib.request.urlopen(f"{berth}/metrics").read().decode()
    def get(name):
        m = re.search(rf'^{name}{{proxy="{prefix}"}} (\d+)', text, re.M)
        return int(m.group(1)) if m else 0
    return get("berth_proxy_hits_total"), get("berth_proxy_misses_total")


def wait_committed(spool, timeout=600):
    """Seconds until the spool directory is empty (every fetch stored)."""
    start = time.monotonic()
    while os.listdir(spool):
        if time.monotonic() - start > timeout:
            raise SystemExit(f"the fetch did not commit within {timeout} s: {os.listdir(spool)}")
        time.sleep(0.02)
    return time.monotonic() - start


def status_kib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise SystemExit(f"no {field} for pid {pid}")


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


class Sampler:
    """The largest VmRSS and RssAnon of a process, sampled every 10 ms."""

    def __init__(self, pid):
        self.pid, self.rss, self.anon = pid, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            self.rss = max(self.rss, status_kib(self.pid, "VmRSS"))
            self.anon = max(self.anon, status_kib(self.pid, "RssAnon"))
            time.sleep(0.01)

    def done(self):
        self.stop.set()
        self.thread.join()
        return self


def verify(url, digest, size):
    """Whether `url` serves exactly the blob (hashed as it arrives)."""
    h, n = hashlib.sha256(), 0
    with urllib.request.urlopen(url) as res:
        while data := res.read(CHUNK):
            h.update(data)
            n += len(data)
    return n == size and "sha256:" + h.hexdigest() == digest


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--berth", required=True)
    ap.add_argument("--berth-pid", type=int, required=True)
    ap.add_argument("--peer", required=True)
    ap.add_argument("--peer-pid", type=int, required=True)
    ap.add_argument("--spool", required=True, help="the proxy's spool directory")
    ap.add_argument("--peer-proxy", required=True,
                    help="Distribution in pull-through mode in front of --peer")
    ap.add_argument("--fresh-berth", required=True,
                    help="a second berthd, like the first but fresh, for part 3")
    ap.add_argument("--fresh-pid", type=int, required=True)
    ap.add_argument("--fresh-spool", required=True)
    ap.add_argument("--far", required=True,
                    help="the same Distribution storage, served across the shaped link")
    ap.add_argument("--peer-proxy-far", required=True,
                    help="Distribution in pull-through mode in front of --far (the first "
                         "rate's; the next rates' on the next ports)")
    ap.add_argument("--link-ns", required=True, help="the namespace at the link's far end")
    ap.add_argument("--link-if", required=True, help="its end of the link")
    ap.add_argument("--link-rates", required=True, nargs="+", help="tc rates, e.g. 1gbit")
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--huge-mib", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    big, huge = a.big_mib * MIB, a.huge_mib * MIB
    remote, local = "bench/proxy", "bench/local"
    direct_url = lambda d: f"{a.peer}/v2/{remote}/blobs/{d}"
    proxy_url = lambda d: f"{a.berth}/v2/up/{remote}/blobs/{d}"
    local_url = lambda d: f"{a.berth}/v2/{local}/blobs/{d}"
    start_rss = status_kib(a.berth_pid, "VmRSS")

    # Correctness first (untimed): a fresh blob's first pull and cached pull through the
    # proxy, hashed as they arrive.
    path = f"{a.work}/check"
    digest = make_blob(path, 64 * MIB)
    push(a.peer, remote, path, digest)
    publish(a.work, a.peer, a.berth, remote, digest, 64 * MIB, "check")
    os.remove(path)
    first_ok = verify(proxy_url(digest), digest, 64 * MIB)
    wait_committed(a.spool)
    cached_ok = verify(proxy_url(digest), digest, 64 * MIB)
    print(f"check: 64 MiB blob through the proxy, first pull {'ok' if first_ok else 'WRONG BYTES'}, "
          f"cached pull {'ok' if cached_ok else 'WRONG BYTES'}", flush=True)
    if not (first_ok and cached_ok):
        raise SystemExit("the proxy served wrong bytes")

    first, direct, peer_first, commit, cached, local_rates = [], [], [], [], [], []
    # Per link rate: first pulls through the proxy, direct, through Distribution's proxy.
    far = {rate: ([], [], []) for rate in a.link_rates}
    peer_far_url = lambda i, d: (f"{a.peer_proxy_far.rsplit(':', 1)[0]}:"
                                 f"{int(a.peer_proxy_far.rsplit(':', 1)[1]) + i}/v2/{remote}/blobs/{d}")
    peer_proxy_url = lambda d: f"{a.peer_proxy}/v2/{remote}/blobs/{d}"

    def first_pulls(r, digest, where, sides, spool, prefix):
        """1. The first pull through the proxy against the direct pull and the peer's
        proxy (`sides`: name -> (url, rates)), alternating who goes first; the proxy's
        fetch is committed before anything else runs."""
        names = list(sides) if r % 2 == 0 else list(sides)[::-1]
        for side in names:
            url, rates = sides[side]
            settle()
            if side == "proxy":
                _, misses = proxy_counters(a.berth, prefix)
                rate = pull(url, big)
                commit.append(wait_committed(spool))
                if proxy_counters(a.berth, prefix)[1] != misses + 1:
                    raise SystemExit("the first pull through the proxy was not a miss")
            else:
                rate = pull(url, big)
            rates.append(rate)
            print(f"round {r + 1}: first pull {where} [{side}]: {rate / 1e6:.0f} MB/s"
                  + (f" (committed {commit[-1]:.1f} s after)" if side == "proxy" else ""),
                  flush=True)

    for r in range(a.rounds):
        path = f"{a.work}/big"
        digest = make_blob(path, big)
        push(a.peer, remote, path, digest)
        prefixes = ["up"] + [f"far{i}" for i in range(len(a.link_rates))]
        publish(a.work, a.peer, a.berth, remote, digest, big, f"round{r + 1}", prefixes)
        first_pulls(r, digest, "over loopback", {
            "direct": (direct_url(digest), direct),
            "proxy": (proxy_url(digest), first),
            "peer proxy": (peer_proxy_url(digest), peer_first),
        }, a.spool, "up")
        for i, rate in enumerate(a.link_rates):
            subprocess.run(["ip", "netns", "exec", a.link_ns, "tc", "qdisc", "replace", "dev",
                            a.link_if, "root", "tbf", "rate", rate, "burst", "4mb",
                            "latency", "50ms"], check=True)
            proxied, straight, peers = far[rate]
            first_pulls(r, digest, f"over a {rate} link", {
                "direct": (f"{a.far}/v2/{remote}/blobs/{digest}", straight),
                "proxy": (f"{a.berth}/v2/far{i}/{remote}/blobs/{digest}", proxied),
                "peer proxy": (peer_far_url(i, digest), peers),
            }, os.path.join(os.path.dirname(a.spool), f"far{i}"), f"far{i}")
        # 2. The cached blob against the same blob in a local repository of the same
        # berthd, alternating who goes first, twice.
        push(a.berth, local, path, digest)
        os.remove(path)
        order = ("cached", "local") if r % 2 == 0 else ("local", "cached")
        for side in order + order[::-1]:
            settle()
            if side == "cached":
                hits, misses = proxy_counters(a.berth)
                rate = pull(proxy_url(digest), big)
                if proxy_counters(a.berth) != (hits + 1, misses):
                    raise SystemExit("the cached pull was not served from the cache")
                cached.append(rate)
            else:
                rate = pull(local_url(digest), big)
                local_rates.append(rate)
            print(f"round {r + 1}: pull from Berth [{side}]: {rate / 1e6:.0f} MB/s", flush=True)

    # 3. Peak RSS during a large first pull (then the direct pull, for its rate).
    # On a berthd that has served nothing else, so the figure is this pull's (a busy
    # process's allocator keeps what earlier work freed).
    path = f"{a.work}/huge"
    digest = make_blob(path, huge)
    push(a.peer, remote, path, digest)
    publish(a.work, a.peer, a.fresh_berth, remote, digest, huge, "huge")
    os.remove(path)
    settle()
    before_rss = status_kib(a.fresh_pid, "VmRSS")
    before_anon = status_kib(a.fresh_pid, "RssAnon")
    reset_peak(a.fresh_pid)
    sampler = Sampler(a.fresh_pid)
    huge_rate = pull(f"{a.fresh_berth}/v2/up/{remote}/blobs/{digest}", huge)
    peak_pull = status_kib(a.fresh_pid, "VmHWM")
    huge_commit = wait_committed(a.fresh_spool)
    peak_commit = status_kib(a.fresh_pid, "VmHWM")
    sampler.done()
    print(f"{a.huge_mib} MiB first pull through the proxy: {huge_rate / 1e6:.0f} MB/s; berthd VmRSS "
          f"{before_rss / 1024:.1f} MiB before (anon {before_anon / 1024:.1f}), VmHWM "
          f"{peak_pull / 1024:.1f} MiB at the pull's end, {peak_commit / 1024:.1f} MiB once "
          f"committed ({huge_commit:.1f} s after); sampled peak anon {sampler.anon / 1024:.1f} MiB",
          flush=True)
    settle()
    peer_before = status_kib(a.peer_pid, "VmRSS")
    reset_peak(a.peer_pid)
    huge_direct = pull(direct_url(digest), huge)
    peer_peak = status_kib(a.peer_pid, "VmHWM")
    print(f"{a.huge_mib} MiB pull from Distribution directly: {huge_direct / 1e6:.0f} MB/s; "
          f"Distribution VmRSS {peer_before / 1024:.1f} MiB before, VmHWM {peer_peak / 1024:.1f} MiB",
          flush=True)

    med = lambda xs: statistics.median(xs) / 1e6
    rows = []
    for rate, (proxied, straight, peers) in far.items():
        rows += [
            (f"first pull via proxy, {rate} link, MB/s", med(proxied), med(straight),
             "direct from Distribution", ">= 0.90x", med(proxied) / med(straight) >= 0.90),
            (f"first pull via proxy, {rate} link, MB/s", med(proxied), med(peers),
             "Distribution's own proxy mode", ">= 1x", med(proxied) >= med(peers)),
        ]
    rows += [
        ("first pull via proxy, loopback, MB/s", med(first), med(direct),
         "direct from Distribution", ">= 0.90x", med(first) / med(direct) >= 0.90),
        ("first pull via proxy, loopback, MB/s", med(first), med(peer_first),
         "Distribution's own proxy mode", ">= 1x", med(first) >= med(peer_first)),
        ("cached pull via proxy, MB/s", med(cached), med(local_rates), "local repo, same berthd",
         "~1x (0.90-1.10)", 0.90 <= med(cached) / med(local_rates) <= 1.10),
        (f"peak RSS, {a.huge_mib} MiB first pull, MiB", peak_pull / 1024, peer_peak / 1024,
         "Distribution serving it", "< 64 MiB", peak_pull / 1024 < 64),
        ("  same, until the fetch is committed, MiB", peak_commit / 1024, peer_peak / 1024,
         "Distribution serving it", "< 64 MiB", peak_commit / 1024 < 64),
        (f"{a.huge_mib} MiB first pull via proxy, MB/s", huge_rate / 1e6, huge_direct / 1e6,
         "direct from Distribution", ">= 0.90x", huge_rate / huge_direct >= 0.90),
    ]
    print(f"\nMedians of {a.rounds} rounds ({a.big_mib} MiB blobs; cached/local: "
          f"{2 * a.rounds} pulls each); part 3 once, {a.huge_mib} MiB")
    print(f"{'metric':46} {'berth':>8} {'peer/ref':>9} {'ratio':>7}  {'target':16} {'result':6}  reference")
    for name, b, p, ref, target, ok in rows:
        print(f"{name:46} {b:8.1f} {p:9.1f} {b / p:6.2f}x  {target:16} {'pass' if ok else 'FAIL':6}  {ref}")
    print()
    for rate, (proxied, straight, peers) in far.items():
        print(f"per round over the {rate} link: first via proxy {[round(x / 1e6) for x in proxied]}, "
              f"via Distribution's proxy {[round(x / 1e6) for x in peers]}, direct "
              f"{[round(x / 1e6) for x in straight]} MB/s")
    print(f"per round over loopback: first via proxy {[round(x / 1e6) for x in first]}, via Distribution's "
          f"proxy {[round(x / 1e6) for x in peer_first]}, direct "
          f"{[round(x / 1e6) for x in direct]}, cached {[round(x / 1e6) for x in cached]}, "
          f"local {[round(x / 1e6) for x in local_rates]} MB/s")
    print(f"commit (spool file stored and removed) after a {a.big_mib} MiB first pull (every link): median "
          f"{statistics.median(commit):.1f} s; after the {a.huge_mib} MiB one: {huge_commit:.1f} s")
    print(f"berthd VmRSS at start {start_rss / 1024:.1f} MiB, before part 3 {before_rss / 1024:.1f} MiB "
          f"(anon {before_anon / 1024:.1f}); peak through the commit {peak_commit / 1024:.1f} MiB, "
          f"sampled peak anon {sampler.anon / 1024:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
