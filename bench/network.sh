#!/usr/bin/env bash
# Network benchmark (as root): TCP throughput container -> container on one reg network and
# host -> container through `-p`, against plain loopback TCP between two host processes (the
# physical limit here); and container start time with a bridge network vs --network none.
#
#   bench/network.sh                  # 1 GiB per transfer, best of 3; 20 starts per mode
#   SIZE_MIB=256 ROUNDS=1 RUNS=5 bench/network.sh
#
# Every transfer uses the same tool on both ends (busybox nc, whose small buffers make it the
# bottleneck on loopback: the ratios compare paths, not tools). Only 127.0.0.1 and the
# containers this script starts are contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-1024}
ROUNDS=${ROUNDS:-3}
RUNS=${RUNS:-20}

[ "$(id -u)" = 0 ] || { echo "bench: containers need root"; exit 1; }
for t in python3 curl skopeo nft; do
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
COUNT=$((SIZE_MIB * 16))   # 64 KiB blocks
# The sending side: centiseconds (from /proc/uptime, 10 ms resolution) around one transfer.
SEND="a=\$(cut -d' ' -f1 /proc/uptime); $BB dd if=/dev/zero bs=65536 count=$COUNT 2>/dev/null | $BB nc HOST PORT; b=\$(cut -d' ' -f1 /proc/uptime); echo \$(( \${b%.*}\${b#*.} - \${a%.*}\${a#*.} ))"
# The receiving side holds its own stdin open (a FIFO): at EOF on stdin busybox nc half-closes.

mbps() { python3 -c "print(round($SIZE_MIB / ($1 / 100), 1) if $1 > 0 else 0)"; }
best() { sort -n | head -1; }

loopback() {
    local p; p=$(free_port)
    mkdir -p "$work/lo"; rm -f "$work/lo/in"; $BB mkfifo "$work/lo/in"
    $BB nc -l -p "$p" <>"$work/lo/in" >/dev/null &
    local srv=$!
    sleep 0.2
    $BB sh -c "${SEND//HOST PORT/127.0.0.1 $p}"
    wait "$srv" 2>/dev/null || true
}
c2c() {
    local i=$1
    "$REG" run -d --name "srv$i" --network benchnet "$IMG" $BB sh -c "$BB mkfifo /in; exec $BB nc -l -p 5001 <>/in >/dev/null" >/dev/null
    "$REG" run --rm --network benchnet "$IMG" $BB sh -c "$BB sleep 0.2; ${SEND//HOST PORT/srv$i 5001}"
    "$REG" rm -f "srv$i" >/dev/null
}
h2c() {
    local i=$1 p; p=$(free_port)
    "$REG" run -d --name "web$i" -p "127.0.0.1:$p:5001" "$IMG" $BB sh -c "$BB mkfifo /in; exec $BB nc -l -p 5001 <>/in >/dev/null" >/dev/null
    sleep 0.2
    $BB sh -c "${SEND//HOST PORT/127.0.0.1 $p}"
    "$REG" rm -f "web$i" >/dev/null
}

echo "bench: $SIZE_MIB MiB per transfer, best of $ROUNDS" >&2
lo=$(for i in $(seq "$ROUNDS"); do loopback; done | best)
cc=$(for i in $(seq "$ROUNDS"); do c2c "$i"; done | best)
hc=$(for i in $(seq "$ROUNDS"); do h2c "$i"; done | best)

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
echo "reg networking, $(nproc) cores; throughput = best of $ROUNDS transfers of $SIZE_MIB MiB (busybox nc both ends);"
echo "start = median of $RUNS runs of 'reg run --rm [--network N] IMG true'"
echo
printf '| %-44s | %10s | %14s |\n' "TCP throughput" "MiB/s" "of loopback"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "loopback, host process -> host process" "$(mbps "$lo")" "100 %"
printf '| %-44s | %10s | %12s %% |\n' "container -> container, one reg network" "$(mbps "$cc")" "$(python3 -c "print(round(100*$lo/$cc))")"
printf '| %-44s | %10s | %12s %% |\n' "host -> container through -p 127.0.0.1:P" "$(mbps "$hc")" "$(python3 -c "print(round(100*$lo/$hc))")"
echo
printf '| %-44s | %10s | %14s |\n' "container start" "ms" "network adds"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "--network none" "$none" "-"
printf '| %-44s | %10s | %11s ms |\n' "default bridge" "$bridge" "$(python3 -c "print(round($bridge-$none,1))")"
printf '| %-44s | %10s | %11s ms |\n' "user-defined network (with embedded DNS)" "$user" "$(python3 -c "print(round($user-$none,1))")"
