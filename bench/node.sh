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

. bench/lib.sh
prepare

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

start_reg
BIG="127.0.0.1:$port/bench/big:v1"

# --- a 20-layer image of random files --------------------------------------------------------
python3 bench/oci_layout.py random "$work/big" "$LAYERS" "$LAYER_MIB"
skopeo copy -q --dest-tls-verify=false "oci:$work/big:v1" "docker://$BIG"

# --- helpers ---------------------------------------------------------------------------------
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
        runc_once() { runc run -b "$work/bundle" "bench-$(date +%s%N)"; }
        start[runc]=$(median_ms runc_once)
    fi
    # The outsider's anchor (issue #26): `runc spec`'s default config (pid, net, ipc, uts and
    # mount namespaces) over the same rootfs, `true` as its process.
    if command -v runc >/dev/null; then
        mkdir -p "$work/spec"
        (cd "$work/spec" && runc spec && ln -s "$work/bundle/rootfs" rootfs)
        python3 - "$work/spec/config.json" <<'PY'
import json, sys
p = sys.argv[1]; c = json.load(open(p))
c["process"]["args"] = ["/bin/busybox", "true"]; c["process"]["terminal"] = False
json.dump(c, open(p, "w"))
PY
    fi
    if command -v crun >/dev/null; then
        # crun refuses hybrid cgroup hosts (DESIGN.md §7) unless /sys/fs/cgroup/unified is
        # unmounted in a private mount namespace: the whole timing loop runs in one such
        # namespace, so only `crun run` itself is timed.
        crun_once() { crun run -b "$work/bundle" "bench-$(date +%s%N)"; }
        crun_spec() { crun run -b "$work/spec" "bench-$(date +%s%N)"; }
        if [ -d /sys/fs/cgroup/unified ] && [ ! -e /sys/fs/cgroup/cgroup.controllers ]; then
            start[crun]=$(work=$work RUNS=$RUNS unshare -m --propagation private bash -c \
                "$(declare -f median_ms crun_once); umount /sys/fs/cgroup/unified && median_ms crun_once")
            [ -f "$work/spec/config.json" ] && start[crun-spec]=$(work=$work RUNS=15 unshare -m --propagation private bash -c \
                "$(declare -f median_ms crun_spec); umount /sys/fs/cgroup/unified && median_ms crun_spec")
        else
            start[crun]=$(median_ms crun_once)
            [ -f "$work/spec/config.json" ] && start[crun-spec]=$(RUNS=15 median_ms crun_spec)
        fi
        # reg as the outsider measured it: median of 15, end to end through the agent.
        start[reg-15]=$(RUNS=15 median_ms "$REG" run --rm --network none "$IMG" /bin/busybox true)
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
for k in reg crun runc podman docker reg-15 crun-spec; do
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
if [ -n "${start[crun-spec]:-}" ]; then
    echo "outsider's row (#26): reg-15 (median of 15) = $(python3 -c "print(round(${start[reg-15]}/${start[crun-spec]},2))")x crun-spec (runc spec's default config, median of 15, in one unshare -m); target <= 2x"
fi
echo "targets: reg start <= 2x crun (and >= 10x faster than docker); reg pull >= 3x faster than docker pull"
