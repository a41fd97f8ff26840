#!/usr/bin/env bash
# Engine API benchmark (as root): the docker CLI itself, pointed at reg's node socket and at
# dockerd, doing the same work on the same image. Prints a side-by-side table.
#
#   bench/engine.sh              # 20 runs of each (5 of stats), 100 containers for ps and stats
#   RUNS=10 COUNT=50 bench/engine.sh
#
# Needs dockerd running (the docker peer); without it only reg's column is printed. Only
# 127.0.0.1 is contacted (dockerd pulls the image from the local reg registry).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-20}
COUNT=${COUNT:-100}

. bench/lib.sh
prepare docker

work=$(mktemp -d /tmp/reg-enginebench.XXXXXX)
pids=()
label="reg-engine-bench=$$"
cleanup() {
    set +e
    for h in "unix://$work/data/node.sock" ""; do
        ids=$(docker ${h:+-H "$h"} ps -aq --filter "label=$label" 2>/dev/null)
        [ -n "$ids" ] && docker ${h:+-H "$h"} rm -f $ids >/dev/null 2>&1
    done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    if have_docker; then docker rmi -f "$IMG" >/dev/null 2>&1; fi
    rm -rf "$work"
}
trap cleanup EXIT
have_docker() { docker info >/dev/null 2>&1; }

start_reg
REGD="unix://$work/data/node.sock"
export DOCKER_CONFIG="$work/docker-config"

declare -A run ps api ping stats
run[reg]=$(median_ms docker -H "$REGD" run --rm --network none "$IMG" /bin/busybox true)
if have_docker; then
    docker pull -q "$IMG" >/dev/null
    run[dockerd]=$(median_ms docker run --rm --network none "$IMG" /bin/busybox true)
fi

# COUNT running containers on each, then `docker ps` (and `ps -a`) timed.
many() {
    local host=$1
    for i in $(seq "$COUNT"); do
        docker ${host:+-H "$host"} run -d --network none --label "$label" "$IMG" /bin/busybox sleep 3600 >/dev/null
    done
}
many "$REGD"
ps[reg]=$(median_ms docker -H "$REGD" ps)
# One `docker stats` reading of every container (fewer runs: dockerd takes seconds for it).
stats[reg]=$(RUNS=${STATS_RUNS:-5} median_ms docker -H "$REGD" stats --no-stream)
api[reg]=$(median_ms curl -sf --unix-socket "$work/data/node.sock" http://node/v1.44/containers/json)
ping[reg]=$(median_ms curl -sf --unix-socket "$work/data/node.sock" http://node/_ping)
if have_docker; then
    many ""
    ps[dockerd]=$(median_ms docker ps)
    stats[dockerd]=$(RUNS=${STATS_RUNS:-5} median_ms docker stats --no-stream)
    api[dockerd]=$(median_ms curl -sf --unix-socket /var/run/docker.sock http://node/v1.41/containers/json)
    ping[dockerd]=$(median_ms curl -sf --unix-socket /var/run/docker.sock http://node/_ping)
fi
# The client's own floor: the docker CLI starting and printing its version, no daemon asked.
floor=$(median_ms docker --version)

echo
echo "the docker CLI ($(docker version --format '{{.Client.Version}}')) against reg's node socket and against dockerd, $(nproc) cores;"
echo "median of $RUNS runs, wall-clock of the command as typed"
echo
printf '| %-44s | %10s | %10s | %12s |\n' "work" "reg (ms)" "dockerd (ms)" "dockerd/reg"
printf '|%s|%s|%s|%s|\n' "----------------------------------------------" "------------" "------------" "--------------"
row() {
    local name=$1 r=$2 d=${3:-}
    if [ -n "$d" ]; then
        printf '| %-44s | %10s | %10s | %11sx |\n' "$name" "$r" "$d" "$(python3 -c "print(round($d/$r,2))")"
    else
        printf '| %-44s | %10s | %10s | %12s |\n' "$name" "$r" "missing" "-"
    fi
}
row "docker run --rm --network none IMG true" "${run[reg]}" "${run[dockerd]:-}"
row "docker ps with $COUNT running containers" "${ps[reg]}" "${ps[dockerd]:-}"
row "docker stats --no-stream, $COUNT containers" "${stats[reg]}" "${stats[dockerd]:-}"
row "GET /containers/json, $COUNT containers (curl)" "${api[reg]}" "${api[dockerd]:-}"
row "GET /_ping (curl): the client's floor" "${ping[reg]}" "${ping[dockerd]:-}"
row "docker --version (the CLI alone, no daemon)" "$floor" "$floor"
echo
echo "target: reg >= 5x faster than dockerd on both rows"
