#!/usr/bin/env bash
# Pull-through mirror benchmark (issue #23): one upstream (distribution's registry), and the
# same image pulled from it three ways, side by side: directly, through reg's mirror, and
# through distribution's proxy mode. Cold = the mirror's cache emptied (a fresh server on a
# fresh data dir) before each pull; warm = pulled again from the same mirror. The client is
# `skopeo copy docker://… oci:DIR` (a fresh target each time), timed as a user would.
#
#   bench/mirror.sh                     # 20 x 5 MiB layers, best of 3
#   LAYERS=4 LAYER_MIB=64 bench/mirror.sh
#
# Needs: skopeo, curl, hey, python3, docker-registry (apt-get install docker-registry skopeo hey).
# Only 127.0.0.1 is ever contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
LAYERS=${LAYERS:-20}
LAYER_MIB=${LAYER_MIB:-5}
ROUNDS=${ROUNDS:-3}

. bench/lib.sh
need curl skopeo python3 docker-registry hey
cargo build --release --locked --bin reg >&2
REG=$PWD/target/release/reg
bench_work reg-mirror-bench

# --- the upstream and its image ---------------------------------------------------------------
up_port=$(free_port)
start_dist "127.0.0.1:$up_port" "filesystem: { rootdirectory: $work/up-data }"
wait_up "127.0.0.1:$up_port"
python3 bench/oci_layout.py random "$work/layout" "$LAYERS" "$LAYER_MIB"
skopeo copy -q --dest-tls-verify=false "oci:$work/layout:v1" "docker://127.0.0.1:$up_port/library/bench:v1"

# --- the mirrors -------------------------------------------------------------------------------
cat > "$work/reg.toml" <<TOML
[[registry.mirror]]
upstream = "http://127.0.0.1:$up_port"
prefix = ""
repositories = "**"
TOML
mirror_pid=""
# A fresh mirror on a fresh data dir: reg or dist. Sets mirror_addr.
fresh_mirror() {
    if [ -n "$mirror_pid" ]; then kill "$mirror_pid"; wait "$mirror_pid" 2>/dev/null || true; fi
    rm -rf "$work/mirror-data"
    local port; port=$(free_port); mirror_addr="127.0.0.1:$port"
    if [ "$1" = reg ]; then
        REG_CONFIG="$work/reg.toml" REG_LOG=warn "$REG" registry serve --addr "$mirror_addr" --data "$work/mirror-data" 2>>"$work/reg.log" &
    else
        cat > "$work/proxy.yml" <<YML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage:
  filesystem: { rootdirectory: $work/mirror-data }
  delete: { enabled: true }
  cache: { blobdescriptor: inmemory }
http: { addr: $mirror_addr }
proxy: { remoteurl: "http://127.0.0.1:$up_port" }
YML
        docker-registry serve "$work/proxy.yml" 2>>"$work/proxy.log" &
    fi
    mirror_pid=$!; pids+=("$mirror_pid")
    wait_up "$mirror_addr"
}
# Seconds for one pull from HOST into a fresh OCI layout.
pull() {
    rm -rf "$work/out"
    local t0 t1
    t0=$(date +%s.%N)
    skopeo copy -q --src-tls-verify=false "docker://$1/library/bench:v1" "oci:$work/out:v1" >/dev/null
    t1=$(date +%s.%N)
    python3 -c "print($t1-$t0)"
}
best() { sort -g | head -1; }
# CPU seconds a process has used (user + system).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

direct=$(for _ in $(seq "$ROUNDS"); do pull "127.0.0.1:$up_port"; done | best)
declare -A R
for name in reg dist; do
    cold=(); warm=()
    cpu=()
    for _ in $(seq "$ROUNDS"); do
        fresh_mirror "$name"
        c0=$(cpu_of "$mirror_pid")
        cold+=("$(pull "$mirror_addr")")
        cpu+=("$(python3 -c "print($(cpu_of "$mirror_pid") - $c0)")")
        warm+=("$(pull "$mirror_addr")")
    done
    # The mirror's own CPU during its cold pulls (receive, store, sha256, send every byte).
    R[$name.cpu]=$(printf '%s\n' "${cpu[@]}" | best)
    R[$name.cold]=$(printf '%s\n' "${cold[@]}" | best)
    R[$name.warm]=$(printf '%s\n' "${warm[@]}" | best)
    # The mirror's own share of a warm pull, without the client's disk and hashing: the
    # manifest by tag (what every pull asks first) under load, and the whole image's blobs
    # fetched by 8 clients at once to /dev/null.
    R[$name.rps]=$(hey -n "${REQS:-20000}" -c 32 -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$mirror_addr/v2/library/bench/manifests/v1" | awk '/Requests\/sec/{printf "%d", $2}')
    # (skopeo may have re-encoded the layers on the way up: the upstream's manifest names them.)
    digests=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://127.0.0.1:$up_port/v2/library/bench/manifests/v1" |
        python3 -c "import json,sys; m=json.load(sys.stdin); print(' '.join([m['config']['digest']]+[l['digest'] for l in m['layers']]))")
    t0=$(date +%s.%N)
    clients=()
    for _ in $(seq 8); do
        (for d in $digests; do c=$(curl -s -o /dev/null -w "%{http_code}" "http://$mirror_addr/v2/library/bench/blobs/$d"); [ "$c" = 200 ] || { echo "bench: blob $d answered $c" >&2; exit 1; }; done) &
        clients+=("$!")
    done
    wait "${clients[@]}"
    t1=$(date +%s.%N)
    R[$name.mbps]=$(python3 -c "print(int(8*$LAYERS*$LAYER_MIB/($t1-$t0)))")
done

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
sec() { python3 -c "print(f'{$1:.3f}')"; }
echo
echo "pull-through mirror: one upstream (distribution $(docker-registry --version | awk '{print $3}')), image ${LAYERS} x ${LAYER_MIB} MiB, skopeo copy to an OCI layout, best of $ROUNDS, $(nproc) cores"
echo
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "pull (seconds)" "reg mirror" "dist proxy" "direct" "reg vs"
printf '|%s|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..36})" "$(printf -- '-%.0s' {1..12})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..20})"
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "cold (cache empty)" "$(sec "${R[reg.cold]}")" "$(sec "${R[dist.cold]}")" "$(sec "$direct")" "$(ratio "${R[reg.cold]}" "$direct") of direct"
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "mirror CPU during a cold pull" "$(sec "${R[reg.cpu]}")" "$(sec "${R[dist.cpu]}")" "-" "-"
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "warm (cached)" "$(sec "${R[reg.warm]}")" "$(sec "${R[dist.warm]}")" "-" "$(ratio "${R[dist.warm]}" "${R[reg.warm]}") faster"
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "warm manifest GET by tag, req/s" "${R[reg.rps]}" "${R[dist.rps]}" "-" "$(ratio "${R[reg.rps]}" "${R[dist.rps]}") faster"
printf '| %-34s | %10s | %12s | %12s | %18s |\n' "warm blobs, 8 clients, MiB/s" "${R[reg.mbps]}" "${R[dist.mbps]}" "-" "$(ratio "${R[reg.mbps]}" "${R[dist.mbps]}") faster"
echo
echo "targets (#23): warm >= 3x distribution's proxy; cold <= 1.2x a direct pull from the upstream"
