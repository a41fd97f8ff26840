#!/usr/bin/env python3
"""Fills a registry for the GC benchmark, or measures push throughput.

  gc_fill.py fill HOST:PORT MANIFESTS BLOBS_PER_MANIFEST SEED   # push, then delete every other manifest
  gc_fill.py push HOST:PORT SECONDS SEED [STAMPS]               # small pushes for SECONDS (or until STAMPS.stop exists)
  gc_fill.py rate - STAMPS START_MS END_MS                      # pushes/s within a window

Every request goes to 127.0.0.1 only. Processes x threads with keep-alive connections.
"""
import hashlib
import http.client
import json
import os
import sys
import threading
import time
from multiprocessing import Pool

THREADS = 8
PROCS = 2


def conn(host):
    h, p = host.split(":")
    return http.client.HTTPConnection(h, int(p), timeout=60)


def request(c, method, path, body=b"", headers=None):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r.status, r.getheader("Location"), data


def blob(c, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st, loc, _ = request(c, "POST", f"/v2/{repo}/blobs/uploads/")
    assert st == 202, (st, repo)
    if loc.startswith("http"):
        loc = "/" + loc.split("/", 3)[3]
    sep = "&" if "?" in loc else "?"
    st, _, body = request(c, "PUT", f"{loc}{sep}digest={d}", data,
                          {"Content-Type": "application/octet-stream"})
    assert st == 201, (st, body)
    return d, len(data)


def image(c, repo, tag, seed, n_blobs):
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    cd, cs = blob(c, repo, cfg)
    layers = []
    for i in range(n_blobs - 1):
        d, s = blob(c, repo, f"{seed} layer {i}".encode() * 4)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s})
    m = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": layers,
    }).encode()
    st, _, body = request(c, "PUT", f"/v2/{repo}/manifests/{tag}", m,
                          {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert st == 201, (st, body)
    return "sha256:" + hashlib.sha256(m).hexdigest()


def fill_part(args):
    host, lo, hi, n_blobs, seed = args
    todo = list(range(lo, hi))
    lock = threading.Lock()
    deleted = [0]

    def worker():
        c = conn(host)
        while True:
            with lock:
                if not todo:
                    return
                i = todo.pop()
            repo = f"bench/r{i % 100}"
            d = image(c, repo, f"t{i}", f"{seed}-{i}", n_blobs)
            if i % 2 == 1:
                st, _, body = request(c, "DELETE", f"/v2/{repo}/manifests/{d}")
                if st == 202:
                    with lock:
                        deleted[0] += 1
                else:
                    # distribution 2.8 answers some concurrent deletes with 500: count, go on.
                    print(f"DELETE {repo}@{d}: {st} {body[:200]!r}", file=sys.stderr)

    ts = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return deleted[0]


def push_part(args):
    host, seconds, seed, part, stop = args
    end = time.time() + seconds
    counts = [0] * THREADS

    stamps = [[] for _ in range(THREADS)]

    def worker(k):
        c = conn(host)
        n = 0
        while time.time() < end and not (stop and os.path.exists(stop)):
            image(c, f"load/p{part}-{k}", f"t{n % 10}", f"{seed}-{part}-{k}-{n}", 3)
            stamps[k].append(time.time())
            n += 1
        counts[k] = n

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return [t for s in stamps for t in s]


def main():
    mode, host = sys.argv[1], sys.argv[2]
    if mode == "fill":
        n, n_blobs, seed = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        step = (n + PROCS - 1) // PROCS
        parts = [(host, k * step, min(n, (k + 1) * step), n_blobs, seed) for k in range(PROCS)]
        with Pool(PROCS) as p:
            deleted = sum(p.map(fill_part, parts))
        print(deleted)
    elif mode == "push":
        seconds, seed = float(sys.argv[3]), sys.argv[4]
        start = time.time()
        with Pool(PROCS) as p:
            stop = sys.argv[5] + ".stop" if len(sys.argv) > 5 else None
            parts = p.map(push_part, [(host, seconds, seed, k, stop) for k in range(PROCS)])
            stamps = [t for part in parts for t in part]
        print(f"{len(stamps) / (time.time() - start):.1f}")
        if len(sys.argv) > 5:
            with open(sys.argv[5], "w") as f:
                f.write("\n".join(f"{t:.3f}" for t in stamps))
    elif mode == "rate":
        # rate HOST STAMPS_FILE START_MS END_MS: pushes/s completed within the window
        stamps = [float(x) for x in open(sys.argv[3]).read().split()]
        lo, hi = int(sys.argv[4]) / 1000, int(sys.argv[5]) / 1000
        n = sum(1 for t in stamps if lo <= t <= hi)
        print(f"{n / max(hi - lo, 1e-3):.1f}")


if __name__ == "__main__":
    main()
