"""Pull-path measurements for bench/pull.sh: servers side by side, in alternating rounds.

Downloads: curl fetching the same bytes from Berth, Distribution and nginx (sendfile on),
for a multi-object blob (the big file) and a single-object one (the small file), whole and
ranged, by 1 client and by 8 at once. Metadata: wrk (GET) and oha (HEAD: wrk cannot send
HEAD) request rates against Berth's manifest, blob and tags endpoints and against nginx
serving a file of the manifest's size, with the same connection count.

Prints one line per measurement, then a table of medians and ratios.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def curl_run(urls, headers, byte_range, clients):
    """Bytes/s of `clients` curl processes, each fetching every URL in `urls` in turn
    over one connection."""
    procs = []
    start = time.monotonic()
    for _ in range(clients):
        with tempfile.NamedTemporaryFile("w", delete=False, suffix=".curl") as cfg:
            for h in headers:
                cfg.write(f'header = "{h}"\n')
            if byte_range:
                cfg.write(f'range = "{byte_range}"\n')
            for url in urls:
                cfg.write(f'url = "{url}"\noutput = "/dev/null"\n')
        procs.append(subprocess.Popen(
            ["curl", "-sSf", "-K", cfg.name, "-w", "%{size_download}\n"],
            stdout=subprocess.PIPE, text=True))
    total = 0
    for p in procs:
        out, _ = p.communicate()
        if p.returncode != 0:
            raise SystemExit(f"curl failed ({p.returncode})")
        total += sum(int(line) for line in out.split())
    return total / (time.monotonic() - start)


def wrk_run(url, headers, seconds, connections):
    """(requests/s, p99 ms, non-2xx count) of wrk GETs."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, float(p99.group(1)) * scale, int(bad.group(1)) if bad else 0


def oha_head_run(url, headers, seconds, connections):
    """(requests/s, p99 ms, non-2xx count) of oha HEADs over keep-alive connections."""
    cmd = ["oha", "-m", "HEAD", "-c", str(connections), "-z", f"{seconds}s", "--no-tui",
           "--output-format", "json"]
    for h in headers:
        cmd += ["-H", h]
    out = json.loads(subprocess.run(cmd + [url], capture_output=True, text=True,
                                    check=True).stdout)
    codes = out.get("statusCodeDistribution") or {}
    bad = sum(n for code, n in codes.items() if not code.startswith("2"))
    return (out["summary"]["requestsPerSec"], out["latencyPercentiles"]["p99"] * 1000, bad)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("setup", help="JSON written by bench/pull.sh")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=5, help="per request-rate run")
    ap.add_argument("--connections", type=int, default=64)
    args = ap.parse_args()
    s = json.load(open(args.setup))
    big, small = s["big_size"], s["small_size"]
    # (name, {server: (urls, headers)}, range, clients)
    downloads = []
    for clients in (1, 8):
        for label, key, size, rng in (
            ("multi-object, whole", "big", big, None),
            ("multi-object, ranged", "big", big, f"{big // 4}-{big * 3 // 4 - 1}"),
            ("single-object, whole", "small", small, None),
            ("single-object, ranged", "small", small, f"{small // 4}-{small * 3 // 4 - 1}"),
        ):
            # Small transfers are repeated over one connection so each run lasts a while.
            repeat = 1 if key == "big" else 64
            urls = {srv: [u[key]] * repeat for srv, u in s["blob_urls"].items()}
            downloads.append((f"download {label}, {clients} client(s)", urls, rng, clients))
    results = {}

    def record(name, server, value):
        results.setdefault(name, {}).setdefault(server, []).append(value)

    auth = [f"Authorization: Bearer {s['token']}"] if s.get("token") else []
    for r in range(args.rounds):
        for name, urls, rng, clients in downloads:
            servers = list(urls)
            # Rotate who goes first: the machine's state drifts within a round.
            servers = servers[r % len(servers):] + servers[:r % len(servers)]
            for srv in servers:
                headers = auth if srv == "berth-auth" else []
                mbs = curl_run(urls[srv], headers, rng, clients) / 1e6
                print(f"{name} [{srv}]: {mbs:.0f} MB/s", flush=True)
                record(name, srv, (mbs, None))
        for name, path in s["metadata"].items():
            for srv, base, headers in (
                ("berth", s["berth"], ["Accept: " + MANIFEST_ACCEPT]),
                ("berth-auth", s["berth_auth"], ["Accept: " + MANIFEST_ACCEPT] + auth),
            ):
                run = oha_head_run if name == "blob HEAD" else wrk_run
                rate, p99, bad = run(base + path.replace("{repo}", s["repo"][srv]),
                                     headers, args.seconds, args.connections)
                if bad:
                    raise SystemExit(f"{name} [{srv}]: {bad} error responses")
                print(f"{name} [{srv}]: {rate:.0f} req/s, p99 {p99:.2f} ms", flush=True)
                record(name, srv, (rate, p99))
        for tool, run in (("wrk GET", wrk_run), ("oha HEAD", oha_head_run)):
            rate, p99, _ = run(s["nginx_manifest"], [], args.seconds, args.connections)
            print(f"nginx small file, {tool}: {rate:.0f} req/s, p99 {p99:.2f} ms", flush=True)
            record(f"nginx {tool}", "nginx", (rate, p99))

    med = {n: {srv: statistics.median(v[0] for v in vals) for srv, vals in by.items()}
           for n, by in results.items()}
    p99 = {n: {srv: (statistics.median(v[1] for v in vals), max(v[1] for v in vals))
               for srv, vals in by.items() if vals[0][1] is not None}
           for n, by in results.items()}
    print(f"\nMedians of {args.rounds} rounds (downloads in MB/s, requests in req/s; "
          "p99 in ms: the median round's / the worst round's)")
    print(f"{'download':44} {'berth':>8} {'peer':>8} {'nginx':>8} {'vs peer':>8} {'vs nginx':>9}")
    for name, *_ in downloads:
        m = med[name]
        print(f"{name[9:]:44} {m['berth']:8.0f} {m['peer']:8.0f} {m['nginx']:8.0f} "
              f"{m['berth'] / m['peer']:7.2f}x {100 * m['berth'] / m['nginx']:8.0f}%")
    print(f"\n{'request':22} {'berth':>8} {'p99':>11} {'auth on':>8} {'p99':>11} "
          f"{'nginx':>8} {'open':>6} {'auth':>6}")
    for name in s["metadata"]:
        nginx = med["nginx oha HEAD" if name == "blob HEAD" else "nginx wrk GET"]["nginx"]
        m, p = med[name], p99[name]
        def p99s(srv):
            return f"{p[srv][0]:.2f}/{p[srv][1]:.2f}"
        print(f"{name:22} {m['berth']:8.0f} {p99s('berth'):>11} {m['berth-auth']:8.0f} "
              f"{p99s('berth-auth'):>11} {nginx:8.0f} {100 * m['berth'] / nginx:5.0f}% "
              f"{100 * m['berth-auth'] / nginx:5.0f}%")


if __name__ == "__main__":
    sys.exit(main())
