# Shared by the benchmarks (sourced): checks, the release binary, free loopback ports, waiting
# for a registry, and (node benchmarks) `reg serve` with the busybox image pushed into it.

need() {
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "bench: $t is missing (apt-get install it)"; exit 1; }
    done
}

# Root, busybox, the given tools, and a fresh release build of reg (sets REG).
prepare() {
    [ "$(id -u)" = 0 ] || { echo "bench: containers need root"; exit 1; }
    need python3 curl skopeo "$@"
    [ -x /bin/busybox ] || { echo "bench: /bin/busybox missing (apt-get install busybox-static)"; exit 1; }
    cargo build --release --locked --bin reg >&2
    REG=$PWD/target/release/reg
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Waits until the registry at HOST:PORT answers /v2/ (any status, or only status $2 if given).
wait_up() {
    local code
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://$1/v2/" || true)
        if [ -n "${2:-}" ]; then [ "$code" = "$2" ] && return 0; else [ "$code" = 200 ] && return 0; fi
        sleep 0.1
    done
    echo "bench: $1 did not start"
    exit 1
}

# `reg serve` with data in $work/data (its pid goes to `pids`); sets port, exports REG_HOST and
# the default registry, and pushes the busybox image as IMG (pulled into the node's store).
start_reg() {
    port=$(free_port)
    REG_LOG=warn "$REG" serve --addr "127.0.0.1:$port" --data "$work/data" 2>"$work/reg.log" &
    pids+=("$!")
    for _ in $(seq 100); do
        [ -S "$work/data/node.sock" ] && curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
        sleep 0.1
    done
    export REG_HOST="unix://$work/data/node.sock" REG_NODE_DEFAULT_REGISTRY="127.0.0.1:$port" REG_CONFIG_DIR="$work/cfg"
    IMG="127.0.0.1:$port/bench/busybox:v1"
    python3 bench/oci_layout.py busybox "$work/bb"
    skopeo copy -q --dest-tls-verify=false "oci:$work/bb:v1" "docker://$IMG"
    "$REG" pull "$IMG" >/dev/null
}

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

# Where the registries keep their data: STORAGE=filesystem (default: each its own directory under
# $work) or s3 (one bucket for both — Garage started here through scripts/garage unless
# REG_TEST_S3_* name one; reg under the prefix reg-bench-PID/, distribution under
# /dist-bench-PID; blob GETs redirected to the bucket, as distribution does by default, unless
# REDIRECT=false), METADATA=sqlite (default) or postgres (a throwaway server, scripts/postgres).
# Sets reg_env (an array of VAR=value for `env`) and dist_storage (distribution's `storage:`
# entry; on the filesystem, directory $1). storage_teardown stops what storage_setup started.
storage_setup() {
    reg_env=(REG_LOG=warn)
    dist_storage="filesystem: { rootdirectory: $1 }"
    if [ "${STORAGE:-filesystem}" = s3 ]; then
        if [ -z "${REG_TEST_S3_ENDPOINT:-}" ]; then
            eval "$(scripts/garage start "$work/garage")"
        fi
        reg_env+=(REG_REGISTRY_STORAGE_KIND=s3 "REG_REGISTRY_STORAGE_ENDPOINT=$REG_TEST_S3_ENDPOINT"
            "REG_REGISTRY_STORAGE_BUCKET=$REG_TEST_S3_BUCKET" "REG_REGISTRY_STORAGE_ACCESS_KEY_ID=$REG_TEST_S3_KEY_ID"
            "REG_REGISTRY_STORAGE_SECRET_ACCESS_KEY=$REG_TEST_S3_SECRET" "REG_REGISTRY_STORAGE_REGION=$REG_TEST_S3_REGION"
            REG_REGISTRY_STORAGE_PATH_STYLE=true "REG_REGISTRY_STORAGE_PREFIX=reg-bench-$$/"
            "REG_REGISTRY_STORAGE_REDIRECT=${REDIRECT:-true}")
        dist_storage="s3: { accesskey: $REG_TEST_S3_KEY_ID, secretkey: $REG_TEST_S3_SECRET, region: $REG_TEST_S3_REGION, regionendpoint: $REG_TEST_S3_ENDPOINT, bucket: $REG_TEST_S3_BUCKET, secure: false, v4auth: true, rootdirectory: /dist-bench-$$ }"
    fi
    if [ "${METADATA:-sqlite}" = postgres ]; then
        chmod 755 "$work" # the PostgreSQL server runs as user postgres
        reg_env+=("REG_REGISTRY_METADATA_URL=$(scripts/postgres start "$work/pg")")
    fi
}
# A registry benchmark's scratch dir ($work, named after $1) and the servers it starts (their
# pids go to `pids`); everything is stopped and removed at exit, whatever happens.
bench_work() {
    work=$(mktemp -d "/tmp/$1.XXXXXX")
    pids=()
    trap stop_all EXIT
}
stop_all() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    storage_teardown
    rm -rf "$work"
}
storage_teardown() {
    if [ -d "$work/garage" ]; then scripts/garage stop "$work/garage" || true; fi
    if [ -d "$work/pg" ]; then scripts/postgres stop "$work/pg" >/dev/null || true; fi
}

# distribution's registry with storage entry $2 on HOST:PORT $1, config in $work/dist.yml; its
# pid goes to `pids` and dist_pid. (Without AWS_CA_BUNDLE: its SDK refuses a CA bundle it cannot
# apply to its own transport.)
start_dist() {
    cat > "$work/dist.yml" <<YML
version: 0.1
log: { level: error, accesslog: { disabled: true } }
storage:
  $2
  delete: { enabled: true }
  cache: { blobdescriptor: inmemory }
http: { addr: $1 }
YML
    env -u AWS_CA_BUNDLE docker-registry serve "$work/dist.yml" 2>"$work/dist.log" &
    dist_pid=$!; pids+=("$dist_pid")
}
