#!/usr/bin/env bash
# reg build side by side with buildah bud and docker build: the same Dockerfile and context
# (busybox base from each tool's local store; three RUNs; a COPY of 2,000 small files and one
# of a 50 MiB file), cold (--no-cache) and warm (no change). Prints medians and ratios.
# Peers are optional (missing ones are reported and skipped). Only 127.0.0.1 is contacted.
#
#   sudo bench/build.sh            # RUNS=3 by default
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
RUNS=${RUNS:-3}
FILES=${FILES:-2000}
BIG_MIB=${BIG_MIB:-50}

prepare
work=$(mktemp -d /tmp/reg-bench-build.XXXXXX)
pids=()
have_docker() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if have_docker; then docker rmi -f bench/build:docker "${IMG:-none}" >/dev/null 2>&1 || true; fi
    if command -v buildah >/dev/null; then
        buildah rmi -f bench/build:buildah "${IMG:-none}" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
start_reg

ctx=$work/ctx
mkdir -p "$ctx/files"
python3 - "$ctx" "$FILES" "$BIG_MIB" <<'EOF'
import os, random, sys
ctx, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(7)
for i in range(n):
    d = os.path.join(ctx, "files", f"d{i % 20:02}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05}.txt"), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(200, 4000)))
with open(os.path.join(ctx, "big.bin"), "wb") as f:
    for _ in range(big):
        f.write(os.urandom(1 << 20))
EOF
cat > "$ctx/Dockerfile" <<EOF
FROM $IMG
RUN ["/bin/busybox", "--install", "-s", "/bin"]
RUN mkdir -p /app && echo built > /app/stamp
COPY files/ /app/files/
COPY big.bin /app/big.bin
RUN ls /app/files | wc -l > /app/count
EOF

declare -A cold warm
echo "bench: reg" >&2
# Cold means a new machine: no layer cache and no copy of the context on the agent.
reg_cold() {
    rm -rf "$work/data/node/build-contexts"
    "$REG" build --no-cache -t bench/build:reg "$ctx"
}
cold[reg]=$(median_ms reg_cold)
warm[reg]=$(median_ms "$REG" build -t bench/build:reg "$ctx")

if have_docker; then
    echo "bench: docker (classic builder; BuildKit is not installed here)" >&2
    docker pull -q "$IMG" >/dev/null
    export DOCKER_BUILDKIT=0
    cold[docker]=$(median_ms docker build --no-cache --network none -t bench/build:docker "$ctx")
    warm[docker]=$(median_ms docker build --network none -t bench/build:docker "$ctx")
else
    echo "bench: docker/dockerd not available; left out" >&2
fi
if command -v buildah >/dev/null; then
    echo "bench: buildah" >&2
    buildah pull -q --tls-verify=false "$IMG" >/dev/null
    # chroot isolation: buildah's runc defaults need CAP_SYS_RESOURCE for rlimits (DESIGN §7).
    b=(buildah bud --layers --isolation chroot -t bench/build:buildah)
    cold[buildah]=$(median_ms "${b[@]}" --no-cache "$ctx")
    warm[buildah]=$(median_ms "${b[@]}" "$ctx")
else
    echo "bench: buildah not installed (apt-get install buildah); left out" >&2
fi

ratio() { python3 -c "import sys;print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}x')" "$1" "$2"; }
printf '\n%-10s %12s %12s %14s %14s\n' tool "cold ms" "warm ms" "reg/cold" "reg/warm"
for k in reg buildah docker; do
    [ -n "${cold[$k]:-}" ] || continue
    printf '%-10s %12s %12s %14s %14s\n' "$k" "${cold[$k]}" "${warm[$k]}" \
        "$(ratio "${cold[reg]}" "${cold[$k]}")" "$(ratio "${warm[reg]}" "${warm[$k]}")"
done
echo "context: $FILES small files + ${BIG_MIB} MiB file; median of $RUNS runs each"
echo "targets: reg cold <= 0.8x the faster peer, reg warm <= 0.2x"
