#!/usr/bin/env bash
# Garbage collection benchmark: reg's online GC against distribution's offline
# `docker-registry garbage-collect`, on the same data pushed over HTTP to both (MANIFESTS images of
# BLOBS blobs each in 100 repositories; every other manifest then deleted, so half the blobs are
# garbage). For reg it also measures push throughput while the collection runs.
#
#   bench/gc.sh                           # 10,000 manifests / 50,000 blobs
#   MANIFESTS=2000 bench/gc.sh            # quicker
#   STORAGE=s3 METADATA=postgres bench/gc.sh   # both on one Garage bucket (see bench/lib.sh)
#
# Needs: python3, curl, docker-registry (apt-get install docker-registry). Only 127.0.0.1 is used.
set -euo pipefail
cd "$(dirname "$0")/.."
MANIFESTS=${MANIFESTS:-10000}
BLOBS=${BLOBS:-5}
. bench/lib.sh
need curl python3 docker-registry
cargo build --release --locked --bin reg >&2
REG=$PWD/target/release/reg

bench_work reg-gc-bench
now_ms() { date +%s%3N; }
# Files under $1 (named $2, if given): the stored blobs, counted on the local filesystem only
# (on S3 the table shows what the collectors report).
objects() {
    if [ "${STORAGE:-filesystem}" = s3 ]; then echo -; else find "$1" -type f ${2:+-name "$2"} | wc -l; fi
}
storage_setup "$work/dist"

# --- reg ---------------------------------------------------------------------------------------
reg_port=$(free_port)
env "${reg_env[@]}" REG_REGISTRY_GC_INTERVAL=0s "$REG" registry serve --addr "127.0.0.1:$reg_port" \
    --data "$work/reg" 2>"$work/reg.log" &
pids+=("$!")
wait_up "127.0.0.1:$reg_port"
t0=$(now_ms)
python3 bench/gc_fill.py fill "127.0.0.1:$reg_port" "$MANIFESTS" "$BLOBS" reg >/dev/null
fill_reg=$(( $(now_ms) - t0 ))
reg_before=$(objects "$work/reg/registry/blobs")
sleep 1.1
# Alone, like distribution's offline run below.
t0=$(now_ms)
env "${reg_env[@]}" "$REG" registry gc --data "$work/reg" --grace 1s > "$work/reg-gc.out"
gc_reg=$(( $(now_ms) - t0 ))
reg_after=$(objects "$work/reg/registry/blobs")
tail -1 "$work/reg-gc.out" >&2
# Online: more garbage, then a collection while pushes go on (their blobs are within the grace
# window, so they stay). Pushes/s inside the collection's window vs before it.
python3 bench/gc_fill.py fill "127.0.0.1:$reg_port" "$MANIFESTS" "$BLOBS" reg2 >/dev/null
base_rate=$(python3 bench/gc_fill.py push "127.0.0.1:$reg_port" 5 base)
sleep 1.1
python3 bench/gc_fill.py push "127.0.0.1:$reg_port" 600 during "$work/stamps" > /dev/null &
load=$!
sleep 2
t0=$(now_ms)
env "${reg_env[@]}" "$REG" registry gc --data "$work/reg" --grace 1s > "$work/reg-gc2.out"
t1=$(now_ms)
gc_reg_online=$(( t1 - t0 ))
touch "$work/stamps.stop"
wait "$load"
during_rate=$(python3 bench/gc_fill.py rate - "$work/stamps" "$t0" "$t1")
tail -1 "$work/reg-gc2.out" >&2

# --- distribution ------------------------------------------------------------------------------
dist_port=$(free_port)
start_dist "127.0.0.1:$dist_port" "$dist_storage"
wait_up "127.0.0.1:$dist_port"
t0=$(now_ms)
python3 bench/gc_fill.py fill "127.0.0.1:$dist_port" "$MANIFESTS" "$BLOBS" dist >/dev/null
fill_dist=$(( $(now_ms) - t0 ))
dist_before=$(objects "$work/dist/docker/registry/v2/blobs" data)
# distribution collects offline only: stop it first.
kill "$dist_pid"; wait "$dist_pid" 2>/dev/null || true
t0=$(now_ms)
env -u AWS_CA_BUNDLE docker-registry garbage-collect "$work/dist.yml" > "$work/dist-gc.out" 2>&1
gc_dist=$(( $(now_ms) - t0 ))
dist_after=$(objects "$work/dist/docker/registry/v2/blobs" data)
reg_removed=$(tail -1 "$work/reg-gc.out" | grep -o '[0-9]* blobs' | cut -d' ' -f1)
dist_removed=$(grep -o '[0-9]* blobs and' "$work/dist-gc.out" | tail -1 | cut -d' ' -f1)

printf '\n%s manifests x %s blobs, every other manifest deleted; storage %s, reg metadata %s\n' \
    "$MANIFESTS" "$BLOBS" "${STORAGE:-filesystem}" "${METADATA:-sqlite}"
printf '%-14s %10s %14s %12s %14s %10s\n' "" "fill s" "objects before" "after gc" "blobs removed" "gc ms"
printf '%-14s %10.1f %14s %12s %14s %10s\n' reg "$(echo "$fill_reg/1000" | bc -l)" "$reg_before" "$reg_after" "$reg_removed" "$gc_reg"
printf '%-14s %10.1f %14s %12s %14s %10s\n' distribution "$(echo "$fill_dist/1000" | bc -l)" "$dist_before" "$dist_after" "$dist_removed" "$gc_dist"
printf 'gc time reg/distribution: %.2fx (distribution: registry stopped; reg: serving, idle)\n' "$(echo "$gc_reg/$gc_dist" | bc -l)"
printf 'reg gc under push load: %s ms; pushes/s %s before, %s during (%.0f%%)\n' "$gc_reg_online" \
    "$base_rate" "$during_rate" "$(echo "100*$during_rate/$base_rate" | bc -l)"
