#!/usr/bin/env bash
# Node benchmark (as root): container start and image pull, reg side by side with the peers
# installed here, same image, same machine, same run. Prints a table of ratios.
#
#   bench/node.sh                 # 30 starts per runtime, 20 x 4 MiB layers pulled 3 times
#   RUNS=10 ROUNDS=1 bench/node.sh
#
# Peers (each optional; missing ones are reported and skipped): docker (dockerd running),
# podman, crun, runc, skopeo + umoci. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}
ROUNDS=${ROUNDS:-3}
LAYERS=${LAYERS:-20}
LAYER_MIB=${LAYER_MIB:-4}

[ "$(id -u)" = 0 ] || { echo "bench: containers need root"; exit 1; }
for t in python3 curl skopeo; do
    command -v "$t" >/dev/null || { echo "bench: $t is missing (apt-get install it)"; exit 1; }
done
[ -x /bin/busybox ] || { echo "bench: /bin/busybox missing (apt-get install busybox-static)"; exit 1; }
cargo build --release --locked --bin reg >&2
REG=$PWD/target/release/reg

work=$(mktemp -d /tmp/reg-nodebench.XXXXXX)
pids=()
cleanup() {
    set +e
    REG_HOST="unix://$work/data/node.sock" "$REG" ps -aq 2>/dev/null | xargs -r env REG_HOST="unix://$work/data/node.sock" "$REG" rm -f >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker rmi -f "$IMG" "$BIG" >/dev/null 2>&1
    fi
    if command -v podman >/dev/null; then podman rmi -f "$IMG" >/dev/null 2>&1; fi
    umount "$work/bundle/rootfs" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
REG_LOG=warn "$REG" serve --addr "127.0.0.1:$port" --data "$work/data" 2>"$work/reg.log" &
pids+=("$!")
for _ in $(seq 100); do [ -S "$work/data/node.sock" ] && curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
export REG_HOST="unix://$work/data/node.sock" REG_NODE_DEFAULT_REGISTRY="127.0.0.1:$port" REG_CONFIG_DIR="$work/cfg"
IMG="127.0.0.1:$port/bench/busybox:v1"
BIG="127.0.0.1:$port/bench/big:v1"

# --- images: busybox (one layer) and a 20-layer image of random files ------------------------
python3 - "$work" "$LAYERS" "$LAYER_MIB" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile
work, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def layout(root, layers, cmd):
    os.makedirs(f"{root}/blobs/sha256", exist_ok=True)
    def put(b):
        d = hashlib.sha256(b).hexdigest()
        open(f"{root}/blobs/sha256/{d}", "wb").write(b)
        return {"digest": "sha256:" + d, "size": len(b)}
    descs, diffs = [], []
    for files in layers:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
            for path, data, mode in files:
                ti = tarfile.TarInfo(path); ti.size = len(data); ti.mode = mode; ti.mtime = 0
                t.addfile(ti, io.BytesIO(data))
        raw = raw.getvalue()
        diffs.append("sha256:" + hashlib.sha256(raw).hexdigest())
        descs.append(dict(put(gzip.compress(raw, 1, mtime=0)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip"))
    cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": cmd, "Env": ["PATH=/bin"]},
           "rootfs": {"type": "layers", "diff_ids": diffs}}
    c = dict(put(json.dumps(cfg).encode()), mediaType="application/vnd.oci.image.config.v1+json")
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": c, "layers": descs}).encode()
    md = dict(put(m), mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": "v1"})
    json.dump({"schemaVersion": 2, "manifests": [md]}, open(f"{root}/index.json", "w"))
    open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
bb = open("/bin/busybox", "rb").read()
layout(f"{work}/bb", [[("bin/busybox", bb, 0o755)]], ["/bin/busybox", "true"])
big = [[(f"data/l{i}/f{j}", os.urandom(256 << 10), 0o644) for j in range(mib * 4)] for i in range(n)]
layout(f"{work}/big", big, ["/bin/true"])
PY
skopeo copy -q --dest-tls-verify=false "oci:$work/bb:v1" "docker://$IMG"
skopeo copy -q --dest-tls-verify=false "oci:$work/big:v1" "docker://$BIG"
"$REG" pull "$IMG" >/dev/null

# --- helpers ---------------------------------------------------------------------------------
# ms per run: the median of RUNS runs of "$@" (output discarded; a failure aborts).
median_ms() {
    local f="$work/times"; : > "$f"
    for _ in $(seq "$RUNS"); do
        local t0 t1; t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; "$@" >&2 || true; exit 1; }
        t1=$(date +%s%N); echo $(((t1 - t0) / 1000)) >> "$f"
    done
    python3 -c "import statistics,sys;print(round(statistics.median(float(l) for l in open(sys.argv[1]))/1000,1))" "$f"
}
# seconds: the best of ROUNDS runs of "$@" after running the reset command given first.
best_s() {
    local reset=$1; shift; local best=""
    for _ in $(seq "$ROUNDS"); do
        eval "$reset" >/dev/null 2>&1 || true
        local t0 t1; t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; exit 1; }
        t1=$(date +%s%N)
        local s; s=$(python3 -c "print(($t1-$t0)/1e9)")
        if [ -z "$best" ] || python3 -c "import sys;sys.exit(0 if $s < $best else 1)"; then best=$s; fi
    done
    python3 -c "print(round($best,2))"
}
have_docker() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }

declare -A start pull
start[reg]=$(median_ms "$REG" run --rm --network none "$IMG" /bin/busybox true)

# A bundle for the raw runtimes: umoci's (or our own rootfs) with `true` as the process.
if command -v umoci >/dev/null; then
    umoci unpack --image "$work/bb:v1" "$work/bundle" >/dev/null 2>&1
    python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["/bin/busybox", "true"]; c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
PY
    if command -v runc >/dev/null; then
        start[runc]=$(median_ms sh -c "runc run -b '$work/bundle' bench-\$(date +%s%N)")
    fi
    if command -v crun >/dev/null; then
        # crun refuses hybrid cgroup hosts (DESIGN.md §7) unless /sys/fs/cgroup/unified is
        # unmounted in a private mount namespace: measure that wrapper alone and subtract it.
        wrap="unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified 2>/dev/null; exec \"\$0\" \"\$@\"'"
        if [ -d /sys/fs/cgroup/unified ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
            with=$(median_ms sh -c "$wrap crun run -b '$work/bundle' bench-\$(date +%s%N)")
            alone=$(median_ms sh -c "$wrap true")
            start[crun]=$(python3 -c "print(round($with - $alone, 1))")
        else
            start[crun]=$(median_ms sh -c "crun run -b '$work/bundle' bench-\$(date +%s%N)")
        fi
    fi
fi
if have_docker; then
    docker pull -q "$IMG" >/dev/null
    start[docker]=$(median_ms docker run --rm --network none "$IMG" /bin/busybox true)
fi
if command -v podman >/dev/null; then
    # podman's default nofile/nproc rlimits cannot be set without CAP_SYS_RESOURCE (DESIGN.md §7):
    # give it this shell's own.
    if podman pull -q --tls-verify=false "$IMG" >/dev/null 2>&1 &&
        v=$(median_ms podman run --rm --network none --ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=$(ulimit -Su):$(ulimit -Hu)" "$IMG" /bin/busybox true); then
        start[podman]=$v
    else
        echo "bench: podman failed (see above); left out" >&2
    fi
fi

pull[reg]=$(best_s "'$REG' rmi '$BIG'" "$REG" pull "$BIG")
if have_docker; then
    pull[docker]=$(best_s "docker rmi -f '$BIG'" docker pull -q "$BIG")
fi
if command -v umoci >/dev/null; then
    pull[skopeo+umoci]=$(best_s "rm -rf '$work/sk' '$work/skb'" sh -c "skopeo copy -q --src-tls-verify=false 'docker://$BIG' 'oci:$work/sk:v1' && umoci unpack --image '$work/sk:v1' '$work/skb'")
fi

# --- table -----------------------------------------------------------------------------------
echo
echo "reg node vs peers, $(nproc) cores; start = median of $RUNS runs of 'run --rm --network none IMG true';"
echo "pull = best of $ROUNDS, ${LAYERS} layers x ${LAYER_MIB} MiB from a local reg registry (store emptied before each)"
echo
printf '| %-34s | %10s | %12s |\n' "container start (ms)" "ms" "peer/reg"
printf '|%s|%s|%s|\n' "------------------------------------" "------------" "--------------"
for k in reg crun runc podman docker; do
    [ -n "${start[$k]:-}" ] || { printf '| %-34s | %10s | %12s |\n' "$k" "missing" "-"; continue; }
    printf '| %-34s | %10s | %11sx |\n' "$k" "${start[$k]}" "$(python3 -c "print(round(${start[$k]}/${start[reg]},2))")"
done
echo
printf '| %-34s | %10s | %12s |\n' "pull of the ${LAYERS}-layer image (s)" "s" "peer/reg"
printf '|%s|%s|%s|\n' "------------------------------------" "------------" "--------------"
for k in reg docker skopeo+umoci; do
    [ -n "${pull[$k]:-}" ] || { printf '| %-34s | %10s | %12s |\n' "$k" "missing" "-"; continue; }
    printf '| %-34s | %10s | %11sx |\n' "$k" "${pull[$k]}" "$(python3 -c "print(round(${pull[$k]}/${pull[reg]},2))")"
done
echo
echo "targets: reg start <= 2x crun (and >= 10x faster than docker); reg pull >= 3x faster than docker pull"
