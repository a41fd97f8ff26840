#!/usr/bin/env bash
# User namespaces (as root): what a container start costs with a remapped root, reg vs docker,
# same image, same machine, same run. Prints a table.
#
#   bench/userns.sh               # 30 starts per row
#   RUNS=10 bench/userns.sh
#
# reg: one `reg serve` with node.userns_remap set; rows for --userns=host, the node's remap
# (the default then) and --userns=auto (a range of its own per container, idmapped layers).
# docker: the running dockerd (host ids) and a second dockerd with --userns-remap, started here
# in a private mount namespace whose /etc/subuid and /etc/subgid name a range for root (the
# host's files are not touched), with its own data root, socket and containerd. Its remapped
# image store is a chowned copy of the image: its size is printed beside reg's (which has none).
# Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-30}

. bench/lib.sh
prepare

work=$(mktemp -d /tmp/reg-usernsbench.XXXXXX)
pids=()
dpid=""
cleanup() {
    set +e
    REG_HOST="unix://$work/data/node.sock" "$REG" ps -aq 2>/dev/null | xargs -r env REG_HOST="unix://$work/data/node.sock" "$REG" rm -f >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if [ -n "$dpid" ]; then
        kill "$dpid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$dpid" 2>/dev/null || break; sleep 0.1; done
    fi
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        docker rmi -f "$IMG" >/dev/null 2>&1
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# The node's range: 10 slices of 65536 ids.
export REG_NODE_USERNS_REMAP=3000000:655360
start_reg

declare -A start
start["reg, host ids"]=$(median_ms "$REG" run --rm --network none --userns=host "$IMG" /bin/busybox true)
start["reg, node remap"]=$(median_ms "$REG" run --rm --network none "$IMG" /bin/busybox true)
start["reg, --userns=auto"]=$(median_ms "$REG" run --rm --network none --userns=auto "$IMG" /bin/busybox true)

docker_store=""
if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    docker pull -q "$IMG" >/dev/null
    start["docker, host ids"]=$(median_ms docker run --rm --network none "$IMG" /bin/busybox true)
fi
if command -v dockerd >/dev/null; then
    printf 'root:4000000:65536\n' > "$work/subid"
    mkdir -p "$work/dremap" "$work/dremap-exec"
    unshare -m --propagation private bash -c "
        mount --bind '$work/subid' /etc/subuid && mount --bind '$work/subid' /etc/subgid &&
        exec dockerd --userns-remap=root --data-root '$work/dremap' --exec-root '$work/dremap-exec' \
            -H 'unix://$work/dremap.sock' --pidfile '$work/dremap.pid' --bridge=none \
            --iptables=false --ip6tables=false" >"$work/dremap.log" 2>&1 &
    dpid=$!
    D=(docker -H "unix://$work/dremap.sock")
    for _ in $(seq 200); do "${D[@]}" info >/dev/null 2>&1 && break; sleep 0.1; done
    if "${D[@]}" info >/dev/null 2>&1 && "${D[@]}" pull -q "$IMG" >/dev/null; then
        # Its data root (one remapped tree per range) right after the pull.
        docker_store=$(du -sk "$work/dremap" 2>/dev/null | cut -f1 || true)
        start["docker, --userns-remap"]=$(median_ms "${D[@]}" run --rm --network none "$IMG" /bin/busybox true)
    else
        echo "bench: the remapping dockerd did not come up; its log:" >&2
        tail -20 "$work/dremap.log" >&2
    fi
fi


# --- table -----------------------------------------------------------------------------------
echo
echo "user namespaces, $(nproc) cores; median of $RUNS runs of 'run --rm --network none IMG true' (busybox image)"
echo
base=${start["reg, host ids"]}
printf '| %-26s | %10s | %18s |\n' "container start" "ms" "vs reg, host ids"
printf '|%s|%s|%s|\n' "----------------------------" "------------" "--------------------"
for k in "reg, host ids" "reg, node remap" "reg, --userns=auto" "docker, host ids" "docker, --userns-remap"; do
    [ -n "${start[$k]:-}" ] || { printf '| %-26s | %10s | %18s |\n' "$k" "missing" "-"; continue; }
    printf '| %-26s | %10s | %17sx |\n' "$k" "${start[$k]}" "$(python3 -c "print(round(${start[$k]}/$base,2))")"
done
echo
echo "disk: reg keeps one copy of the image for every range (its layers are idmapped per container);"
echo "docker --userns-remap keeps a chowned copy per remapped range: its data root after the pull: ${docker_store:-?} KiB"
