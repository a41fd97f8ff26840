#!/usr/bin/env bash
# Hostile-client benchmark: reg and distribution (Debian's docker-registry) side by side, each
# serving a legitimate mix (bench/hostile.py: 90 % manifest GETs, 5 % blob pulls, 5 % blob
# pushes, CONNS keep-alive connections) first alone, then while a hostile client holds SLOW slow
# connections (headers trickled a byte every 5 s, reconnected when cut) and floods bogus logins
# on FLOOD connections. Prints each server's success rate, p99 latency (and its ratio to the
# unloaded p99) and peak RSS. reg runs with auth on (a user; the legitimate clients use a bearer
# token, as docker does); distribution has no auth configured, so the bogus logins cost it
# nothing — reg's side is the harder one.
#
#   bench/hostile.sh                 # SECONDS=60 CONNS=64 SLOW=500 FLOOD=16
# Goal (issue 18): reg 100 % success, p99 under attack <= 2x unloaded, peak RSS <= 256 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
need python3 curl docker-registry
SECONDS_LOADED=${SECONDS_LOADED:-60}
CONNS=${CONNS:-64}
SLOW=${SLOW:-500}
FLOOD=${FLOOD:-16}
cargo build --release --locked --bin reg >&2
REG=$PWD/target/release/reg
bench_work reg-hostile
# 500 slow connections + 64 legitimate ones + the flood, on both sides of each socket.
ulimit -n "$(ulimit -Hn)"

run_side() { # name url pid token
    local name=$1 url=$2 pid=$3 token=${4:-}
    echo "::: $name: unloaded ($((SECONDS_LOADED / 3)) s)" >&2
    python3 bench/hostile.py legit "$url" "$pid" $((SECONDS_LOADED / 3)) "$CONNS" "$token" > "$work/$name.base"
    echo "::: $name: under attack ($SECONDS_LOADED s, $SLOW slow connections, $FLOOD login floods)" >&2
    python3 bench/hostile.py attack "$url" "$((SECONDS_LOADED + 5))" "$SLOW" "$FLOOD" > "$work/$name.attack" &
    local attacker=$!
    sleep 3 # let the slow connections pile up first
    python3 bench/hostile.py legit "$url" "$pid" "$SECONDS_LOADED" "$CONNS" "$token" > "$work/$name.loaded"
    wait "$attacker" || true
    grep -h VmHWM "/proc/$pid/status" | awk '{print int($2/1024)}' > "$work/$name.hwm"
}

# reg: auth on (one admin), its token for the legitimate clients.
mkdir -p "$work/reg"
echo "bench-password" | "$REG" admin --data "$work/reg" user add bench --admin --password-stdin >/dev/null
reg_port=$(free_port)
REG_LOG=warn "$REG" registry serve --addr "127.0.0.1:$reg_port" --data "$work/reg" 2>"$work/reg.log" &
reg_pid=$!; pids+=("$reg_pid")
wait_up "127.0.0.1:$reg_port" 401
token=$(curl -sf -u bench:bench-password "http://127.0.0.1:$reg_port/auth/token?service=reg&scope=repository:bench/app:pull,push" |
    python3 -c 'import json,sys;print(json.load(sys.stdin)["token"])')
run_side reg "http://127.0.0.1:$reg_port" "$reg_pid" "$token"

dist_port=$(free_port)
start_dist "127.0.0.1:$dist_port" "filesystem: { rootdirectory: $work/dist }"
wait_up "127.0.0.1:$dist_port"
run_side distribution "http://127.0.0.1:$dist_port" "$dist_pid"

cp "$work"/*.base "$work"/*.loaded "$work"/*.attack /tmp/ 2>/dev/null || true
python3 - "$work" <<'PY'
import json, sys
w = sys.argv[1]
print(f"legitimate traffic with and without a hostile client ({sys.argv[0] and ''}see bench/hostile.sh)")
print(f"| {'server':<13} | {'requests':>8} | {'success':>8} | {'p99 alone ms':>12} | {'p99 attacked ms':>15} | {'ratio':>6} | {'peak RSS MiB':>12} | attacker's logins (answers) |")
print(f"|{'-'*15}|{'-'*10}|{'-'*10}|{'-'*14}|{'-'*17}|{'-'*8}|{'-'*14}|{'-'*29}|")
for name in ("reg", "distribution"):
    base = json.load(open(f"{w}/{name}.base"))
    loaded = json.load(open(f"{w}/{name}.loaded"))
    attack = json.load(open(f"{w}/{name}.attack"))
    hwm = open(f"{w}/{name}.hwm").read().strip()
    ok = 100.0 * (loaded["requests"] - loaded["failures"]) / max(1, loaded["requests"])
    ratio = loaded["p99"] / base["p99"] if base["p99"] else float("nan")
    print(f"| {name:<13} | {loaded['requests']:>8} | {ok:>7.2f}% | {base['p99']:>12} | {loaded['p99']:>15} | {ratio:>5.2f}x | {hwm:>12} | {attack['logins']} {attack['answers']} |")
    if loaded["failures"]:
        print(f"  {name} failures, e.g.: {loaded['examples']}")
PY
