#!/usr/bin/env bash
# Wake-ups a second, per thread, of one of two `wzp-client join`s in a room
# through a relay on loopback (tone in, nothing out), over 5 s of the call.
# A thread wakes for each voluntary context switch: what keeps a laptop's
# CPU out of its deep sleep states. docs/PERFORMANCE.md, "Wake-ups".
#
#   cargo build --release -p wzp-client -p wzp-relay && bash benches/wakeups.sh
set -euo pipefail
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
PORT=${PORT:-4499}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
cd "$dir"
"$BIN/wzp-relay" --listen "127.0.0.1:$PORT" -i relay.seed > relay.log 2>&1 &
fp=""
for _ in $(seq 100); do
    fp=$(grep -o "relay tls fingerprint: [0-9a-f:]*" relay.log | awk '{print $4}' || true)
    [ -n "$fp" ] && break
    sleep 0.1
done
[ -n "$fp" ] || { echo "the relay did not start: $(cat relay.log)" >&2; exit 1; }
pids=()
for u in a b; do
    HOME="$dir/$u" "$BIN/wzp-client" join --relay "127.0.0.1:$PORT" --relay-fingerprint "$fp" \
        --room wake --input tone --output null --duration 14s > "$u.log" 2>&1 &
    pids+=($!)
done
# Past the join and the jitter buffer's start.
for _ in $(seq 100); do grep -q "joined" a.log 2>/dev/null && break; sleep 0.1; done
sleep 3
p=${pids[0]}
snap() {
    for t in /proc/"$p"/task/*; do
        echo "$(tr ' ' _ < "$t/comm") $(awk '/^voluntary_ctxt/ {print $2}' "$t/status") $(awk '{print $14+$15}' "$t/stat")"
    done
}
snap > s1
sleep 5
snap > s2
paste s1 s2 | awk '{w=($5-$2)/5; c=$6-$3; tw+=w; tc+=c; printf "%-18s %6.0f wake-ups/s %4d CPU ticks\n",$1,w,c}
    END {printf "%-18s %6.0f wake-ups/s %4d CPU ticks (of 500 in 5 s)\n","total",tw,tc}'
