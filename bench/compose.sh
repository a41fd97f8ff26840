#!/usr/bin/env bash
# Compose benchmark (as root, dockerd running): `up -d` and `down` of a 10-service project,
# `reg compose` on a reg node vs Debian's docker-compose on dockerd, same file, same image,
# same machine. Plain wall-clock of the commands as typed; prints a table.
#
#   bench/compose.sh              # 10 rounds of up + down each
#   RUNS=5 SERVICES=10 bench/compose.sh
#
# Each service is the busybox image sleeping, stopped by SIGKILL (so `down` measures the
# engines, not a grace period). Only 127.0.0.1 is contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-10}
SERVICES=${SERVICES:-10}

. bench/lib.sh
prepare docker-compose
docker info >/dev/null 2>&1 || { echo "bench: dockerd is not running"; exit 1; }

work=$(mktemp -d /tmp/reg-composebench.XXXXXX)
pids=()
cleanup() {
    set +e
    (cd "$work/proj" && "$REG" compose down >/dev/null 2>&1)
    (cd "$work/proj" && docker-compose -p benchd down >/dev/null 2>&1)
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    docker rmi -f "$IMG" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

start_reg
docker pull -q "$IMG" >/dev/null
mkdir -p "$work/proj"
{
    echo "services:"
    for i in $(seq "$SERVICES"); do
        cat <<EOF
  s$i:
    image: $IMG
    command: ["/bin/busybox", "sleep", "100000"]
    stop_signal: SIGKILL
EOF
    done
} > "$work/proj/compose.yaml"

# ms of one run of "$@" in the project directory (a failure aborts).
ms() {
    local t0 t1; t0=$(date +%s%N)
    (cd "$work/proj" && "$@" >/dev/null 2>&1) || { echo "bench: failed: $*" >&2; (cd "$work/proj" && "$@" >&2) || true; exit 1; }
    t1=$(date +%s%N); echo $(((t1 - t0) / 1000000))
}
median() { python3 -c "import statistics,sys;print(statistics.median(int(x) for x in sys.argv[1:]))" "$@"; }

declare -a reg_up reg_down dc_up dc_down
for _ in $(seq "$RUNS"); do
    reg_up+=("$(ms "$REG" compose -p benchr up -d)")
    reg_down+=("$(ms "$REG" compose -p benchr down)")
    dc_up+=("$(ms docker-compose -p benchd up -d)")
    dc_down+=("$(ms docker-compose -p benchd down)")
done

ru=$(median "${reg_up[@]}"); rd=$(median "${reg_down[@]}")
du=$(median "${dc_up[@]}"); dd=$(median "${dc_down[@]}")
echo
echo "compose, $SERVICES services, $(nproc) cores; median of $RUNS rounds; docker-compose $(docker-compose version --short 2>/dev/null) on dockerd $(docker version -f '{{.Server.Version}}' 2>/dev/null)"
echo
printf '| %-22s | %14s | %22s | %8s |\n' "work" "reg compose (ms)" "docker-compose (ms)" "ratio"
printf '|%s|%s|%s|%s|\n' "------------------------" "------------------" "------------------------" "----------"
printf '| %-22s | %16s | %22s | %7sx |\n' "up -d" "$ru" "$du" "$(python3 -c "print(round($du/$ru,2))")"
printf '| %-22s | %16s | %22s | %7sx |\n' "down" "$rd" "$dd" "$(python3 -c "print(round($dd/$rd,2))")"
echo
echo "goal: reg >= 5x faster"
