#!/usr/bin/env bash
# Network benchmark (as root): TCP throughput container -> container on one reg network and
# host -> container through `-p`, against plain loopback TCP between two host processes (the
# physical limit here); and container start time with a bridge network vs --network none.
#
#   bench/network.sh                  # 2 GiB per transfer, 5 rounds; 20 starts per mode
#   SIZE_MIB=256 ROUNDS=1 RUNS=5 bench/network.sh
#
# Only 127.0.0.1 and the containers this script starts are contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-2048}
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-20}

[ "$(id -u)" = 0 ] || { echo "bench: containers need root"; exit 1; }
for t in python3 curl skopeo nft nsenter; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing (apt-get install it)"; exit 1; }
done
[ -x /bin/busybox ] || { echo "bench: /bin/busybox missing (apt-get install busybox-static)"; exit 1; }
cargo build --release --locked --bin reg >&2
REG=$PWD/target/release/reg

work=$(mktemp -d /tmp/reg-netbench.XXXXXX)
pids=()
cleanup() {
    set +e
    "$REG" ps -aq 2>/dev/null | xargs -r "$REG" rm -f >/dev/null 2>&1
    "$REG" network rm benchnet >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for f in /run/reg/subnets/*; do [ "$(cat "$f" 2>/dev/null)" = "$work/data/node" ] && rm -f "$f"; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
port=$(free_port)
REG_LOG=warn "$REG" serve --addr "127.0.0.1:$port" --data "$work/data" 2>"$work/reg.log" &
pids+=("$!")
for _ in $(seq 100); do [ -S "$work/data/node.sock" ] && curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
export REG_HOST="unix://$work/data/node.sock" REG_NODE_DEFAULT_REGISTRY="127.0.0.1:$port" REG_CONFIG_DIR="$work/cfg"
IMG="127.0.0.1:$port/bench/busybox:v1"

python3 - "$work/bb" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
root = sys.argv[1]
os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
    data = open("/bin/busybox", "rb").read()
    ti = tarfile.TarInfo("bin/busybox"); ti.size = len(data); ti.mode = 0o755
    t.addfile(ti, io.BytesIO(data))
raw = raw.getvalue()
layer = dict(put(gzip.compress(raw, 1, mtime=0)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/busybox", "true"], "Env": ["PATH=/bin"]},
       "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}
c = dict(put(json.dumps(cfg).encode()), mediaType="application/vnd.oci.image.config.v1+json")
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": [layer]}).encode()
md = dict(put(m), mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": "v1"})
json.dump({"schemaVersion": 2, "manifests": [md]}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
skopeo copy -q --dest-tls-verify=false "oci:$work/bb:v1" "docker://$IMG"
"$REG" pull "$IMG" >/dev/null
"$REG" network create benchnet >/dev/null

BB=/bin/busybox
# The traffic tool: python3 with 1 MiB writes, run on the host or inside a container's network
# namespace (`nsenter --net=<container>/netns`): the busybox image has nothing that can fill a
# fast link (busybox nc tops out near 500 MiB/s even on loopback here), and the path measured
# is the container's own (its veth, the bridge, nftables, the -p proxy).
cat > "$work/tp.py" <<'PY'
import socket, sys, time
mode, host, port, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1)
    c, _ = s.accept()
    while c.recv(1 << 20):
        pass
    c.close()
else:
    buf = b"\0" * (1 << 20)
    for _ in range(100):
        try:
            s = socket.create_connection((host, port)); break
        except OSError:
            time.sleep(0.05)
    t = time.monotonic()
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR); s.recv(1)
    print(round(mib / (time.monotonic() - t), 1))
PY
tp() { python3 "$work/tp.py" "$@"; }
netns_of() { echo "$work/data/node/containers/$1/netns"; }

loopback() {
    local p; p=$(free_port)
    tp recv 127.0.0.1 "$p" 0 & local r=$!
    tp send 127.0.0.1 "$p" "$SIZE_MIB"; wait "$r"
}
c2c() {
    local rx tx ip
    rx=$("$REG" run -d --network benchnet "$IMG" $BB sleep 600)
    tx=$("$REG" run -d --network benchnet "$IMG" $BB sleep 600)
    ip=$("$REG" inspect "$rx" | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["NetworkSettings"]["IPAddress"])')
    nsenter --net="$(netns_of "$rx")" python3 "$work/tp.py" recv 0.0.0.0 5001 0 & local r=$!
    nsenter --net="$(netns_of "$tx")" python3 "$work/tp.py" send "$ip" 5001 "$SIZE_MIB"; wait "$r"
    "$REG" rm -f "$rx" "$tx" >/dev/null
}
h2c() {
    local p id; p=$(free_port)
    id=$("$REG" run -d -p "127.0.0.1:$p:5001" "$IMG" $BB sleep 600)
    nsenter --net="$(netns_of "$id")" python3 "$work/tp.py" recv 0.0.0.0 5001 0 & local r=$!
    sleep 0.3   # the proxy drops a client whose container is not listening yet
    tp send 127.0.0.1 "$p" "$SIZE_MIB"; wait "$r"
    "$REG" rm -f "$id" >/dev/null
}

# Interleaved rounds (loopback, container, -p), ratios taken within each round: this machine's
# loopback alone varies by 2x from one transfer to the next.
echo "bench: $SIZE_MIB MiB per transfer, $ROUNDS interleaved rounds" >&2
: > "$work/rounds"
for i in $(seq "$ROUNDS"); do
    echo "$(loopback) $(c2c) $(h2c)" >> "$work/rounds"
done
read -r lo cc hc ccr hcr < <(python3 - "$work/rounds" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: round(statistics.median(xs), 1)
print(med([r[0] for r in rows]), med([r[1] for r in rows]), med([r[2] for r in rows]),
      round(100 * statistics.median([r[1] / r[0] for r in rows])),
      round(100 * statistics.median([r[2] / r[0] for r in rows])))
PY
)

median_ms() {
    local f="$work/times"; : > "$f"
    for _ in $(seq "$RUNS"); do
        local t0 t1; t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; "$@" >&2 || true; exit 1; }
        t1=$(date +%s%N); echo $(((t1 - t0) / 1000)) >> "$f"
    done
    python3 -c "import statistics,sys;print(round(statistics.median(float(l) for l in open(sys.argv[1]))/1000,1))" "$f"
}
none=$(median_ms "$REG" run --rm --network none "$IMG" $BB true)
bridge=$(median_ms "$REG" run --rm "$IMG" $BB true)
user=$(median_ms "$REG" run --rm --network benchnet "$IMG" $BB true)

echo
echo "reg networking, $(nproc) cores; throughput = median of $ROUNDS interleaved rounds of $SIZE_MIB MiB transfers (python3, 1 MiB writes,"
echo "in the containers' network namespaces); start = median of $RUNS runs of 'reg run --rm [--network N] IMG true'"
echo
printf '| %-44s | %10s | %14s |\n' "TCP throughput" "MiB/s" "of loopback"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "loopback, host process -> host process" "$lo" "100 %"
printf '| %-44s | %10s | %12s %% |\n' "container -> container, one reg network" "$cc" "$ccr"
printf '| %-44s | %10s | %12s %% |\n' "host -> container through -p 127.0.0.1:P" "$hc" "$hcr"
echo
printf '| %-44s | %10s | %14s |\n' "container start" "ms" "network adds"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "--network none" "$none" "-"
printf '| %-44s | %10s | %11s ms |\n' "default bridge" "$bridge" "$(python3 -c "print(round($bridge-$none,1))")"
printf '| %-44s | %10s | %11s ms |\n' "user-defined network (with embedded DNS)" "$user" "$(python3 -c "print(round($user-$none,1))")"
