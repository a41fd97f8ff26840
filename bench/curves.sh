#!/usr/bin/env bash
# The cost curves of issue #26 (as root): how container start grows with the number of layers
# and with concurrent starts, and how pull time grows with image size and layer count — reg
# beside docker (dockerd running) and skopeo copy + umoci unpack, same images, same machine.
#
#   bench/curves.sh                        # everything (~30 minutes on 2 cores, ~20 GB of disk)
#   SIZES_MIB="100 1024" bench/curves.sh   # smaller pulls only
#   PULLS=0 bench/curves.sh                # start curves only
#
# Start: median of RUNS `run --rm --network none IMG true` per image. Concurrent: wall clock
# of CONCURRENT such runs started at once (best of 3). Pull: one pull per tool and image into
# an emptied store, from a local reg registry. Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-15}
LAYER_COUNTS=${LAYER_COUNTS:-"1 10 50 150"}
CONCURRENT=${CONCURRENT:-20}
SIZES_MIB=${SIZES_MIB:-"100 1024 3072"}
PULL_LAYERS=${PULL_LAYERS:-"20 100"}
PULLS=${PULLS:-1}

. bench/lib.sh
prepare umoci

work=$(mktemp -d /tmp/reg-curves.XXXXXX)
pids=()
docker_images=()
cleanup() {
    set +e
    REG_HOST="unix://$work/data/node.sock" "$REG" ps -aq 2>/dev/null | xargs -r env REG_HOST="unix://$work/data/node.sock" "$REG" rm -f >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
        for i in "${docker_images[@]}"; do docker rmi -f "$i" >/dev/null 2>&1; done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
have_docker() { command -v docker >/dev/null && docker info >/dev/null 2>&1; }
secs() { python3 -c "print(round(($2-$1)/1e9,2))"; }

start_reg

# --- start vs layers ---------------------------------------------------------------------------
declare -A by_layers docker_layers
for n in $LAYER_COUNTS; do
    img="127.0.0.1:$port/bench/layers:$n"
    python3 bench/oci_layout.py layered "$work/l$n" "$n"
    skopeo copy -q --dest-tls-verify=false "oci:$work/l$n:v1" "docker://$img"
    "$REG" pull "$img" >/dev/null
    by_layers[$n]=$(median_ms "$REG" run --rm --network none "$img")
    if have_docker; then
        docker_images+=("$img")
        # dockerd's overlay2 stacks at most 125 layers ("max depth exceeded").
        if docker pull -q "$img" >/dev/null 2>"$work/docker-pull.err"; then
            docker_layers[$n]=$(median_ms docker run --rm --network none "$img")
        else
            echo "bench: docker pull of $n layers: $(cat "$work/docker-pull.err")" >&2
            docker_layers[$n]=refused
        fi
    fi
done

# --- concurrent starts -------------------------------------------------------------------------
# Wall clock of CONCURRENT runs started together, best of 3.
concurrent() {
    local best=""
    for _ in 1 2 3; do
        local t0 t1 ps=()
        t0=$(date +%s%N)
        for _ in $(seq "$CONCURRENT"); do "$@" >/dev/null 2>&1 & ps+=("$!"); done
        for p in "${ps[@]}"; do wait "$p" || { echo "bench: a concurrent run failed: $*" >&2; exit 1; }; done
        t1=$(date +%s%N)
        local ms=$(((t1 - t0) / 1000000))
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
    done
    echo "$best"
}
declare -A conc
conc[reg]=$(concurrent "$REG" run --rm --network none "$IMG" /bin/busybox true)
if have_docker; then
    docker pull -q "$IMG" >/dev/null
    docker_images+=("$IMG")
    conc[docker]=$(concurrent docker run --rm --network none "$IMG" /bin/busybox true)
fi

# --- pull vs size ------------------------------------------------------------------------------
declare -A pull_reg pull_docker pull_skopeo
if [ "$PULLS" = 1 ]; then
    for layers in $PULL_LAYERS; do
        for size in $SIZES_MIB; do
            mib=$(((size + layers / 2) / layers))
            [ "$mib" -ge 1 ] || mib=1
            key="$size/$layers"
            img="127.0.0.1:$port/bench/size:$size-$layers"
            echo "bench: generating ${size} MiB in $layers layers" >&2
            python3 bench/oci_layout.py random "$work/s" "$layers" "$mib"
            skopeo copy -q --dest-tls-verify=false "oci:$work/s:v1" "docker://$img"
            rm -rf "$work/s"
            t0=$(date +%s%N); "$REG" pull "$img" >/dev/null; t1=$(date +%s%N)
            pull_reg[$key]=$(secs "$t0" "$t1")
            "$REG" rmi "$img" >/dev/null
            if have_docker; then
                t0=$(date +%s%N); docker pull -q "$img" >/dev/null; t1=$(date +%s%N)
                pull_docker[$key]=$(secs "$t0" "$t1")
                docker rmi -f "$img" >/dev/null
            fi
            t0=$(date +%s%N)
            skopeo copy -q --src-tls-verify=false "docker://$img" "oci:$work/sk:v1"
            umoci unpack --image "$work/sk:v1" "$work/skb" >/dev/null
            t1=$(date +%s%N)
            pull_skopeo[$key]=$(secs "$t0" "$t1")
            rm -rf "$work/sk" "$work/skb"
        done
    done
fi

# --- tables ------------------------------------------------------------------------------------
echo
echo "cost curves, $(nproc) cores"
echo
echo "start vs layers: median of $RUNS 'run --rm --network none IMG' (ms)"
printf '| %-8s | %8s | %8s | %10s |\n' layers reg docker docker/reg
printf '|%s|%s|%s|%s|\n' ---------- ---------- ---------- ------------
for n in $LAYER_COUNTS; do
    d=${docker_layers[$n]:-}
    case "$d" in ''|refused) r=- ;; *) r=$(python3 -c "print(round($d/${by_layers[$n]},1))") ;; esac
    printf '| %-8s | %8s | %8s | %10s |\n' "$n" "${by_layers[$n]}" "${d:--}" "$r"
done
echo
echo "$CONCURRENT concurrent 'run --rm --network none IMG true': wall clock, best of 3 (ms)"
printf '| %-8s | %8s | %10s |\n' tool ms "per start"
printf '|%s|%s|%s|\n' ---------- ---------- ------------
for k in reg docker; do
    [ -n "${conc[$k]:-}" ] || continue
    printf '| %-8s | %8s | %10s |\n' "$k" "${conc[$k]}" "$(python3 -c "print(round(${conc[$k]}/$CONCURRENT,1))")"
done
if [ "$PULLS" = 1 ]; then
    echo
    echo "pull vs size: seconds, store emptied before each (skopeo+umoci: copy to an OCI layout, then unpack)"
    printf '| %-14s | %8s | %8s | %13s | %10s | %11s |\n' "MiB/layers" reg docker skopeo+umoci docker/reg skopeo/reg
    printf '|%s|%s|%s|%s|%s|%s|\n' ---------------- ---------- ---------- --------------- ------------ -------------
    for layers in $PULL_LAYERS; do
        for size in $SIZES_MIB; do
            key="$size/$layers"
            r=${pull_reg[$key]}; d=${pull_docker[$key]:-}; s=${pull_skopeo[$key]}
            printf '| %-14s | %8s | %8s | %13s | %10s | %11s |\n' "$key" "$r" "${d:--}" "$s" \
                "$([ -n "$d" ] && python3 -c "print(round($d/$r,1))" || echo -)" "$(python3 -c "print(round($s/$r,1))")"
        done
    done
fi
