#!/usr/bin/env bash
# Network benchmark (as root): TCP throughput container -> container on one reg network and
# host -> container through `-p`, against plain loopback TCP between two host processes (the
# physical limit here); and container start time with a bridge network vs --network none.
#
#   bench/network.sh                  # 2 GiB per transfer, 5 rounds; 20 starts per mode
#   SIZE_MIB=256 ROUNDS=1 RUNS=5 bench/network.sh
#
# Only 127.0.0.1 and the containers this script starts are contacted.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${SIZE_MIB:-2048}
ROUNDS=${ROUNDS:-5}
RUNS=${RUNS:-20}

. bench/lib.sh
prepare nft nsenter

work=$(mktemp -d /tmp/reg-netbench.XXXXXX)
pids=()
cleanup() {
    set +e
    "$REG" ps -aq 2>/dev/null | xargs -r "$REG" rm -f >/dev/null 2>&1
    "$REG" network rm benchnet >/dev/null 2>&1
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for f in /run/reg/subnets/*; do [ "$(cat "$f" 2>/dev/null)" = "$work/data/node" ] && rm -f "$f"; done
    rm -rf "$work"
}
trap cleanup EXIT

start_reg
"$REG" network create benchnet >/dev/null

BB=/bin/busybox
# The traffic tool: python3 with 1 MiB writes, run on the host or inside a container's network
# namespace (`nsenter --net=<container>/netns`): the busybox image has nothing that can fill a
# fast link (busybox nc tops out near 500 MiB/s even on loopback here), and the path measured
# is the container's own (its veth, the bridge, nftables, the -p proxy).
cat > "$work/tp.py" <<'PY'
import socket, sys, time
mode, host, port, mib = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if mode == "recv":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port)); s.listen(1)
    c, _ = s.accept()
    while c.recv(1 << 20):
        pass
    c.close()
else:
    buf = b"\0" * (1 << 20)
    for _ in range(100):
        try:
            s = socket.create_connection((host, port)); break
        except OSError:
            time.sleep(0.05)
    t = time.monotonic()
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR); s.recv(1)
    print(round(mib / (time.monotonic() - t), 1))
PY
tp() { python3 "$work/tp.py" "$@"; }
netns_of() { echo "$work/data/node/containers/$1/netns"; }

loopback() {
    local p; p=$(free_port)
    tp recv 127.0.0.1 "$p" 0 & local r=$!
    tp send 127.0.0.1 "$p" "$SIZE_MIB"; wait "$r"
}
c2c() {
    local rx tx ip
    rx=$("$REG" run -d --network benchnet "$IMG" $BB sleep 600)
    tx=$("$REG" run -d --network benchnet "$IMG" $BB sleep 600)
    ip=$("$REG" inspect "$rx" | python3 -c 'import json,sys;print(json.load(sys.stdin)[0]["NetworkSettings"]["IPAddress"])')
    nsenter --net="$(netns_of "$rx")" python3 "$work/tp.py" recv 0.0.0.0 5001 0 & local r=$!
    nsenter --net="$(netns_of "$tx")" python3 "$work/tp.py" send "$ip" 5001 "$SIZE_MIB"; wait "$r"
    "$REG" rm -f "$rx" "$tx" >/dev/null
}
h2c() {
    local p id; p=$(free_port)
    id=$("$REG" run -d -p "127.0.0.1:$p:5001" "$IMG" $BB sleep 600)
    nsenter --net="$(netns_of "$id")" python3 "$work/tp.py" recv 0.0.0.0 5001 0 & local r=$!
    sleep 0.3   # the proxy drops a client whose container is not listening yet
    tp send 127.0.0.1 "$p" "$SIZE_MIB"; wait "$r"
    "$REG" rm -f "$id" >/dev/null
}

# Interleaved rounds (loopback, container, -p), ratios taken within each round: this machine's
# loopback alone varies by 2x from one transfer to the next.
echo "bench: $SIZE_MIB MiB per transfer, $ROUNDS interleaved rounds" >&2
: > "$work/rounds"
for i in $(seq "$ROUNDS"); do
    echo "$(loopback) $(c2c) $(h2c)" >> "$work/rounds"
done
read -r lo cc hc ccr hcr < <(python3 - "$work/rounds" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1]) if l.strip()]
med = lambda xs: round(statistics.median(xs), 1)
print(med([r[0] for r in rows]), med([r[1] for r in rows]), med([r[2] for r in rows]),
      round(100 * statistics.median([r[1] / r[0] for r in rows])),
      round(100 * statistics.median([r[2] / r[0] for r in rows])))
PY
)

none=$(median_ms "$REG" run --rm --network none "$IMG" $BB true)
bridge=$(median_ms "$REG" run --rm "$IMG" $BB true)
user=$(median_ms "$REG" run --rm --network benchnet "$IMG" $BB true)

echo
echo "reg networking, $(nproc) cores; throughput = median of $ROUNDS interleaved rounds of $SIZE_MIB MiB transfers (python3, 1 MiB writes,"
echo "in the containers' network namespaces); start = median of $RUNS runs of 'reg run --rm [--network N] IMG true'"
echo
printf '| %-44s | %10s | %14s |\n' "TCP throughput" "MiB/s" "of loopback"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "loopback, host process -> host process" "$lo" "100 %"
printf '| %-44s | %10s | %12s %% |\n' "container -> container, one reg network" "$cc" "$ccr"
printf '| %-44s | %10s | %12s %% |\n' "host -> container through -p 127.0.0.1:P" "$hc" "$hcr"
echo
printf '| %-44s | %10s | %14s |\n' "container start" "ms" "network adds"
printf '|%s|%s|%s|\n' "----------------------------------------------" "------------" "----------------"
printf '| %-44s | %10s | %14s |\n' "--network none" "$none" "-"
printf '| %-44s | %10s | %11s ms |\n' "default bridge" "$bridge" "$(python3 -c "print(round($bridge-$none,1))")"
printf '| %-44s | %10s | %11s ms |\n' "user-defined network (with embedded DNS)" "$user" "$(python3 -c "print(round($user-$none,1))")"
