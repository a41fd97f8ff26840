#!/usr/bin/env bash
# Registry benchmark: reg against distribution (Debian's docker-registry) side by side, on the
# same machine, same clients, same data, in the same run. Prints a table of ratios.
#
#   bench/registry.sh            # full run (512 MiB blob, 20 x 5 MiB image, 32-connection load)
#   BLOB_MIB=64 REQS=5000 bench/registry.sh   # quicker
#   STORAGE=s3 bench/registry.sh # both on one S3 bucket (Garage, started here unless
#                                # REG_TEST_S3_* name one): reg's S3 backend against
#                                # distribution's S3 driver; METADATA=postgres adds reg's
#                                # metadata in a throwaway PostgreSQL (scripts/postgres)
#
# Needs: curl, hey, skopeo, openssl, python3, docker-registry (apt-get install docker-registry hey skopeo).
# Only 127.0.0.1 is ever contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
BLOB_MIB=${BLOB_MIB:-512}
LAYERS=${LAYERS:-20}
LAYER_MIB=${LAYER_MIB:-5}
REQS=${REQS:-50000}
CONC=${CONC:-32}
ROUNDS=${ROUNDS:-3}
STORAGE=${STORAGE:-filesystem}
METADATA=${METADATA:-sqlite}

. bench/lib.sh
need curl hey skopeo openssl python3 docker-registry
cargo build --release --locked --bin reg >&2
REG=target/release/reg

bench_work reg-bench

# --- storage (STORAGE, METADATA: see bench/lib.sh) ------------------------------------------
storage_setup "$work/dist-data"

# --- servers -------------------------------------------------------------------------------
reg_port=$(free_port)
env "${reg_env[@]}" "$REG" registry serve --addr "127.0.0.1:$reg_port" --data "$work/reg-data" 2>"$work/reg.log" &
reg_pid=$!; pids+=("$reg_pid")

dist_port=$(free_port)
start_dist "127.0.0.1:$dist_port" "$dist_storage"
wait_up "127.0.0.1:$reg_port"; wait_up "127.0.0.1:$dist_port"

# --- data ----------------------------------------------------------------------------------
head -c $((BLOB_MIB * 1024 * 1024)) /dev/urandom > "$work/blob"
blob_digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"
python3 - "$work/layout" "$LAYERS" "$LAYER_MIB" <<'PY'
import hashlib, json, os, sys
root, n, mib = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(f"{root}/blobs/sha256")
def put(b):
    d = hashlib.sha256(b).hexdigest()
    open(f"{root}/blobs/sha256/{d}", "wb").write(b)
    return {"digest": "sha256:" + d, "size": len(b)}
layers = [dict(put(os.urandom(mib << 20)), mediaType="application/vnd.oci.image.layer.v1.tar+gzip") for _ in range(n)]
cfg = dict(put(json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()), mediaType="application/vnd.oci.image.config.v1+json")
m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": cfg, "layers": layers}).encode()
md = dict(put(m), mediaType="application/vnd.oci.image.manifest.v1+json", annotations={"org.opencontainers.image.ref.name": "v1"})
json.dump({"schemaVersion": 2, "manifests": [md]}, open(f"{root}/index.json", "w"))
open(f"{root}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY

# --- measurements --------------------------------------------------------------------------
# Push the way docker does: POST, one streamed PATCH, PUT ?digest=. Prints seconds.
push_blob() {
    local host=$1 repo=$2
    local loc
    loc=$(curl -s -D - -o /dev/null -X POST "http://$host/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case "$loc" in http*) ;; *) loc="http://$host$loc" ;; esac
    local t0 t1
    t0=$(date +%s.%N)
    loc2=$(curl -s -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' -T "$work/blob" "$loc" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case "$loc2" in http*) ;; *) loc2="http://$host$loc2" ;; esac
    case "$loc2" in *\?*) sep='&' ;; *) sep='?' ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$loc2${sep}digest=$blob_digest")
    t1=$(date +%s.%N)
    [ "$code" = 201 ] || { echo "bench: push to $host answered $code" >&2; exit 1; }
    python3 -c "print($t1-$t0)"
}
# The outsider's push (issue #26): POST, then the whole blob in one monolithic `PUT ?digest=`
# with `curl --data-binary @file`; both requests timed, as a script typing them would be.
push_mono() {
    local host=$1 repo=$2 t0 t1 loc sep code
    t0=$(date +%s.%N)
    loc=$(curl -s -D - -o /dev/null -X POST "http://$host/v2/$repo/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
    case "$loc" in http*) ;; *) loc="http://$host$loc" ;; esac
    case "$loc" in *\?*) sep='&' ;; *) sep='?' ;; esac
    code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$work/blob" "$loc${sep}digest=$blob_digest")
    t1=$(date +%s.%N)
    [ "$code" = 201 ] || { echo "bench: monolithic push to $host answered $code" >&2; exit 1; }
    python3 -c "print($t1-$t0)"
}
# -L: distribution on S3 answers with a redirect to the bucket by default; the time includes it.
pull_blob() { curl -sfL -o /dev/null -w "%{time_total}" "http://$1/v2/$2/blobs/$blob_digest"; }
best() { sort -g | head -1; }
mbps() { python3 -c "print(f'{$BLOB_MIB/$1:.0f}')"; }

# skopeo with an empty blob-info cache: otherwise a second push of the same layers to another
# repository becomes a cross-repository mount and moves no data. (Root's cache is at a fixed
# path, so it gets a private tmpfs there; other users a fresh XDG_DATA_HOME.)
fresh_skopeo() {
    if [ "$(id -u)" = 0 ]; then
        mkdir -p /var/lib/containers/cache
        unshare -m sh -c 'mount -t tmpfs tmpfs /var/lib/containers/cache && exec skopeo "$@"' sh "$@"
    else
        local d; d=$(mktemp -d "$work/xdg.XXXXXX")
        XDG_DATA_HOME=$d skopeo "$@"
    fi
}
skopeo_push() {
    local t0 t1
    t0=$(date +%s.%N)
    fresh_skopeo copy -q --dest-tls-verify=false "oci:$work/layout:v1" "docker://$1/bench/img$2:v1" >/dev/null
    t1=$(date +%s.%N); python3 -c "print($t1-$t0)"
}
skopeo_pull() {
    local t0 t1
    rm -rf "$work/pulled"
    t0=$(date +%s.%N)
    fresh_skopeo copy -q --src-tls-verify=false "docker://$1/bench/img$2:v1" "oci:$work/pulled:v1" >/dev/null
    t1=$(date +%s.%N); python3 -c "print($t1-$t0)"
}

declare -A R
for name in reg dist; do
    if [ $name = reg ]; then host="127.0.0.1:$reg_port"; else host="127.0.0.1:$dist_port"; fi
    R[$name.push]=$(for i in $(seq "$ROUNDS"); do push_blob "$host" "bench/blob$i"; done | best)
    R[$name.mono]=$(for i in $(seq "$ROUNDS"); do push_mono "$host" "bench/mono$i"; done | best)
    R[$name.pull]=$(for i in $(seq "$ROUNDS"); do pull_blob "$host" "bench/blob$i"; echo; done | best)
    R[$name.ipush]=$(for i in $(seq "$ROUNDS"); do skopeo_push "$host" "$i"; done | best)
    R[$name.ipull]=$(for i in $(seq "$ROUNDS"); do skopeo_pull "$host" "$i"; done | best)
    out=$(hey -n "$REQS" -c "$CONC" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$host/v2/bench/img1/manifests/v1")
    R[$name.rps]=$(echo "$out" | awk '/Requests\/sec/{print $2}')
    R[$name.p99]=$(echo "$out" | awk '/99% in/{print $3*1000}')
    R[$name.non200]=$(echo "$out" | awk '/Status code distribution/{f=1;next} f&&/\[/{gsub(/[\[\]]/,"",$1); if($1!=200) n+=$2} END{print n+0}')
    if [ $name = reg ]; then pid=$reg_pid; else pid=$dist_pid; fi
    R[$name.rss]=$(awk '/VmHWM/{print $2/1024}' "/proc/$pid/status")
done

# --- auth cost: the same manifest GETs with a bearer token vs anonymous, on a registry with auth on
auth_port=$(free_port)
echo "bench-password" | "$REG" admin --data "$work/auth-data" user add bench --password-stdin >/dev/null
"$REG" admin --data "$work/auth-data" repo visibility bench/img public >/dev/null
REG_LOG=warn "$REG" registry serve --addr "127.0.0.1:$auth_port" --data "$work/auth-data" 2>"$work/auth.log" &
pids+=("$!")
wait_up "127.0.0.1:$auth_port" 401
skopeo copy -q --dest-tls-verify=false --dest-creds bench:bench-password "oci:$work/layout:v1" "docker://127.0.0.1:$auth_port/bench/img:v1" >/dev/null
auth_url="http://127.0.0.1:$auth_port/v2/bench/img/manifests/v1"
token=$(curl -s -u bench:bench-password "http://127.0.0.1:$auth_port/auth/token?service=reg&scope=repository:bench/img:pull" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
rps() { awk '/Requests\/sec/{print $2}'; }
anon_rps=$(hey -n "$REQS" -c "$CONC" -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$auth_url" | rps)
token_rps=$(hey -n "$REQS" -c "$CONC" -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H "Authorization: Bearer $token" "$auth_url" | rps)

t0=$(date +%s.%N); openssl dgst -sha256 "$work/blob" >/dev/null; t1=$(date +%s.%N)
sha_mbps=$(python3 -c "print(f'{$BLOB_MIB/($t1-$t0):.0f}')")

ratio() { python3 -c "print(f'{$1/$2:.2f}x')"; }
img_mib=$((LAYERS * LAYER_MIB))
echo
where="local filesystem"
[ "${STORAGE:-filesystem}" = s3 ] && where="one S3 bucket (Garage), blob GETs redirected: ${REDIRECT:-true}"
echo "reg vs distribution $(docker-registry --version | awk '{print $3}'), $(nproc) cores, best of $ROUNDS; blob ${BLOB_MIB} MiB, image ${LAYERS}x${LAYER_MIB} MiB, $REQS manifest GETs at $CONC connections"
echo "storage: $where; reg metadata: ${METADATA:-sqlite}"
echo
printf '| %-38s | %12s | %12s | %10s |\n' "measure" "reg" "distribution" "reg/dist"
printf '|%s|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..40})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..14})" "$(printf -- '-%.0s' {1..12})"
row() { printf '| %-38s | %12s | %12s | %10s |\n' "$1" "$2" "$3" "$4"; }
rp=$(mbps "${R[reg.push]}"); dp=$(mbps "${R[dist.push]}")
row "blob push MB/s (PATCH stream + PUT)" "$rp" "$dp" "$(ratio "$rp" "$dp")"
rm_=$(mbps "${R[reg.mono]}"); dm=$(mbps "${R[dist.mono]}")
row "blob push MB/s (POST + monolithic PUT)" "$rm_" "$dm" "$(ratio "$rm_" "$dm")"
rg=$(mbps "${R[reg.pull]}"); dg=$(mbps "${R[dist.pull]}")
row "blob pull MB/s" "$rg" "$dg" "$(ratio "$rg" "$dg")"
ri=$(python3 -c "print(f'{$img_mib/${R[reg.ipush]}:.0f}')"); di=$(python3 -c "print(f'{$img_mib/${R[dist.ipush]}:.0f}')")
row "skopeo image push MB/s" "$ri" "$di" "$(ratio "$ri" "$di")"
ri=$(python3 -c "print(f'{$img_mib/${R[reg.ipull]}:.0f}')"); di=$(python3 -c "print(f'{$img_mib/${R[dist.ipull]}:.0f}')")
row "skopeo image pull MB/s" "$ri" "$di" "$(ratio "$ri" "$di")"
row "manifest GET req/s" "${R[reg.rps]}" "${R[dist.rps]}" "$(ratio "${R[reg.rps]}" "${R[dist.rps]}")"
row "manifest GET p99 ms" "${R[reg.p99]}" "${R[dist.p99]}" "$(ratio "${R[reg.p99]}" "${R[dist.p99]}")"
row "server peak RSS MiB" "${R[reg.rss]}" "${R[dist.rss]}" "$(ratio "${R[reg.rss]}" "${R[dist.rss]}")"
row "non-200 answers under load" "${R[reg.non200]}" "${R[dist.non200]}" "-"
echo
printf '| %-38s | %12s | %12s | %10s |\n' "reg with auth on" "bearer" "anonymous" "bearer/anon"
row "manifest GET req/s (public repo)" "$token_rps" "$anon_rps" "$(ratio "$token_rps" "$anon_rps")"
echo
evp=$(openssl speed -evp sha256 -bytes 16384 -seconds 1 2>/dev/null | awk '/^sha256/{print int($NF/1000)}' | tail -1)
echo "reference: openssl dgst -sha256 of the blob file on one core: $sha_mbps MB/s; openssl speed -evp sha256 (16 KiB): ${evp:-?} MB/s"
echo "targets (#26): monolithic push >= 2.5x distribution and >= half of openssl speed's sha256"
