#!/usr/bin/env python3
"""Legitimate registry traffic while a hostile client abuses the same server (bench/hostile.sh).

  hostile.py legit URL PID SECONDS CONNS TOKEN   -> one JSON line: requests, failures, p50/p99 ms,
                                                    peak RSS MiB of PID while it ran
  hostile.py attack URL SECONDS SLOW FLOOD       -> holds SLOW slow connections (headers sent a
                                                    byte every 5 s, reconnected when cut) and
                                                    FLOOD connections sending bogus logins

The legitimate mix per worker, on one keep-alive connection each: 90 % manifest GETs, 5 % blob
GETs (64 KiB), 5 % blob pushes (64 KiB, POST + PUT). Every request must answer 2xx. Bounded:
each loop ends after SECONDS; traffic goes to the given loopback URL only.
"""
import asyncio
import base64
import hashlib
import http.client
import json
import os
import random
import sys
import threading
import time
import urllib.parse


def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


def auth_headers(token):
    return {"Authorization": f"Bearer {token}"} if token else {}


def request(c, method, path, body=None, headers=None):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r.status, r.getheader("Location"), data


def push_blob(c, h, data):
    """POST then PUT ?digest= (what every registry takes); True when stored."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st, loc, _ = request(c, "POST", "/v2/bench/app/blobs/uploads/", b"", h)
    if st != 202:
        return False, d
    p = urllib.parse.urlparse(loc)
    path = p.path + ("?" + p.query + "&" if p.query else "?")
    st, _, _ = request(c, "PUT", f"{path}digest={d}", data, {**h, "Content-Type": "application/octet-stream"})
    return st == 201, d


def seed(url, token):
    """One image bench/app:v1 (a 64 KiB layer, a config, a manifest)."""
    c = conn(url)
    h = auth_headers(token)
    blobs = []
    for data in (os.urandom(65536), b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'):
        ok, d = push_blob(c, h, data)
        assert ok, "seed blob"
        blobs.append((d, len(data)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[1][0], "size": blobs[1][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blobs[0][0], "size": blobs[0][1]}],
    }).encode()
    st, _, _ = request(c, "PUT", "/v2/bench/app/manifests/v1", manifest,
                       {**h, "Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert st == 201, f"seed manifest: {st}"
    return blobs[0][0]


def legit(url, pid, seconds, conns, token):
    layer = seed(url, token)
    stop = time.time() + seconds
    lat, failures, lock = [], [], threading.Lock()
    h = auth_headers(token)

    def worker(i):
        rnd = random.Random(i)
        c = conn(url)
        mine, bad = [], []
        while time.time() < stop:
            pick = rnd.random()
            t0 = time.perf_counter()
            try:
                if pick < 0.90:
                    st, _, _ = request(c, "GET", "/v2/bench/app/manifests/v1",
                                       headers={**h, "Accept": "application/vnd.oci.image.manifest.v1+json"})
                    ok = st == 200
                elif pick < 0.95:
                    st, _, _ = request(c, "GET", f"/v2/bench/app/blobs/{layer}", headers=h)
                    ok = st == 200
                else:
                    ok, _ = push_blob(c, h, os.urandom(65536))
                    st = "push"
            except (OSError, http.client.HTTPException) as e:
                ok, st = False, repr(e)
                c.close()
                c = conn(url)
            mine.append((time.perf_counter() - t0) * 1000)
            if not ok:
                bad.append(st)
        with lock:
            lat.extend(mine)
            failures.extend(bad)

    rss = [0]
    def sample():
        while time.time() < stop:
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            rss[0] = max(rss[0], int(line.split()[1]) // 1024)
            except OSError:
                pass
            time.sleep(0.2)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(conns)]
    threads.append(threading.Thread(target=sample))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(len(lat) * p))], 1) if lat else None
    print(json.dumps({"requests": len(lat), "failures": len(failures), "examples": [str(f) for f in failures[:3]],
                      "p50": q(0.50), "p99": q(0.99), "rss_mib": rss[0]}))


async def attack(url, seconds, slow, flood):
    u = urllib.parse.urlparse(url)
    stop = time.time() + seconds
    counts = {"slow_reconnects": 0, "logins": 0, "answers": {}}

    async def slowloris():
        while time.time() < stop:
            try:
                r, w = await asyncio.open_connection(u.hostname, u.port)
                w.write(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n")
                await w.drain()
                while time.time() < stop:
                    await asyncio.sleep(5)
                    w.write(b"X")
                    await w.drain()
                    if r.at_eof():
                        break
                w.close()
            except OSError:
                await asyncio.sleep(0.5)
            counts["slow_reconnects"] += 1

    async def bogus():
        while time.time() < stop:
            try:
                r, w = await asyncio.open_connection(u.hostname, u.port)
                while time.time() < stop:
                    cred = base64.b64encode(f"user{random.randrange(10**6)}:guess{random.randrange(10**9)}".encode()).decode()
                    w.write(f"GET /v2/ HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {cred}\r\n\r\n".encode())
                    await w.drain()
                    status = (await r.readline()).split(b" ")[1:2]
                    length = 0
                    while True:
                        line = await r.readline()
                        if not line or line in (b"\r\n", b"\n"):
                            break
                        if line.lower().startswith(b"content-length:"):
                            length = int(line.split(b":")[1])
                    if length:
                        await r.readexactly(length)
                    key = status[0].decode() if status else "closed"
                    counts["answers"][key] = counts["answers"].get(key, 0) + 1
                    counts["logins"] += 1
                    if key == "closed":
                        break
                w.close()
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                await asyncio.sleep(0.05)

    await asyncio.gather(*[slowloris() for _ in range(slow)], *[bogus() for _ in range(flood)])
    print(json.dumps(counts))


if __name__ == "__main__":
    if sys.argv[1] == "legit":
        legit(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]), sys.argv[6] if len(sys.argv) > 6 else "")
    else:
        asyncio.run(attack(sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
