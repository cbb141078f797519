#!/usr/bin/env bash
# Three federated relays in a chain on this machine, A - B - C, and a global
# room with a client at each end: alice on A sends a 440 Hz tone, carol on C
# hears it through B (which has no member of its own). Prints what carol
# heard and exits non-zero if she heard nothing.
#
# Usage:
#   scripts/federation-demo.sh               # debug binaries (built if missing)
#   scripts/federation-demo.sh --release     # target/release
#   WZP_BIN=/opt/wzp/bin scripts/federation-demo.sh   # installed binaries
#   KEEP=1 scripts/federation-demo.sh        # keep the temp folder (configs, logs)
#
# The wiring is what an operator does (docs/FEDERATION.md, "How to set up
# three relays"): `wzp-relay fingerprint` prints each relay's fingerprint,
# B's config lists A and C in [[peers]] (it dials them), A and C list B in
# [[trusted]], and all three list the room in [[global_rooms]].
set -euo pipefail

profile=debug
seconds=6
while [ $# -gt 0 ]; do
    case "$1" in
        --release) profile=release ;;
        --seconds) seconds="$2"; shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "federation-demo: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${WZP_BIN:-$root/target/$profile}
if [ -z "${WZP_BIN:-}" ] && { [ ! -x "$bin/wzp-relay" ] || [ ! -x "$bin/wzp-client" ]; }; then
    echo "building wzp-relay and wzp-client ($profile)..."
    flag=""
    [ "$profile" = release ] && flag=--release
    (cd "$root" && cargo build $flag -p wzp-relay -p wzp-client)
fi
for b in wzp-relay wzp-client; do
    if [ ! -x "$bin/$b" ]; then
        echo "federation-demo: $bin/$b not found; build it (cargo build -p $b) or set WZP_BIN" >&2
        exit 1
    fi
done
relay="$bin/wzp-relay"
client="$bin/wzp-client"

dir=$(mktemp -d -t wzp-federation-demo.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${KEEP:-}" ]; then echo "kept $dir"; else rm -rf "$dir"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits up to $3 seconds for a line matching $2 in file $1; prints it.
wait_line() {
    local file=$1 pattern=$2 secs=$3 i
    for ((i = 0; i < secs * 10; i++)); do
        if grep -m1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "federation-demo: no line matching '$pattern' in $file within ${secs}s:" >&2
    cat "$file" >&2
    return 1
}

# Starts relay $1 from $dir/$1.toml; sets addr_$1 to its QUIC address.
start_relay() {
    local name=$1 line
    "$relay" -c "$dir/$name.toml" -i "$dir/$name.seed" --listen 127.0.0.1:0 \
        --metrics-addr 127.0.0.1:0 --label "$name" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    line=$(wait_line "$dir/$name.log" '^listening ' 20)
    printf -v "addr_$name" '%s' "$(sed -E 's/.*quic=([^ ]+).*/\1/' <<<"$line")"
    printf -v "metrics_$name" '%s' "$(sed -E 's/.*metrics=([^ ]+).*/\1/' <<<"$line")"
}

# GET $2 on relay $1's metrics address (bash's /dev/tcp: no curl needed).
http_get() {
    local addr=$1 path=$2
    exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}"
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$addr" >&3
    sed '1,/^\r$/d' <&3
    exec 3<&-
}

# 1. Identities: each relay's fingerprint, created on first use.
for r in a b c; do
    printf -v "fp_$r" '%s' "$("$relay" fingerprint -i "$dir/$r.seed" 2>/dev/null)"
done
room=federation-demo
global_room=$(printf '[[global_rooms]]\nname = "%s"\n' "$room")

# 2. Configs, and the relays in the order their peers' addresses are known:
#    A and C accept B; B dials both.
cat >"$dir/a.toml" <<TOML
[[trusted]]
fingerprint = "$fp_b"
label = "b"

$global_room
TOML
cp "$dir/a.toml" "$dir/c.toml"
start_relay a
start_relay c
cat >"$dir/b.toml" <<TOML
[[peers]]
address = "$addr_a"
fingerprint = "$fp_a"
label = "a"

[[peers]]
address = "$addr_c"
fingerprint = "$fp_c"
label = "c"

$global_room
TOML
start_relay b
echo "relays: a on $addr_a, b on $addr_b, c on $addr_c (b dials a and c)"

# 3. Two clients, one at each end of the chain.
join() {
    local name=$1 addr=$2 fp=$3 input=$4 secs=$5
    "$client" join --relay "$addr" --relay-fingerprint "$fp" --room "$room" \
        --input "$input" --output null --duration "${secs}s" --alias "$name" \
        --identity "$dir/$name.seed" --known-relays "$dir/known_relays" \
        --no-realtime --quiet --stats-json "$dir/$name.json" >"$dir/$name.out" 2>&1 &
    pids+=($!)
}
join alice "$addr_a" "$fp_a" tone:440 $((seconds + 6))
join carol "$addr_c" "$fp_c" builtin "$seconds"
carol_pid=${pids[-1]}
if ! wait_line "$dir/carol.out" "^room $room: 2 \\(|\\(2 in the room\\)$" 20 >/dev/null; then
    echo "federation-demo: carol never saw alice in the room; relay b says:" >&2
    http_get "$metrics_b" /peers >&2 || true
    exit 1
fi
echo "carol (on c) sees alice (on a) in room $room; b's links:"
http_get "$metrics_b" /metrics | grep '^wzp_federation_peer_status' | sed 's/^/  /'

# 4. What carol heard, from her final per-stage figures.
if ! wait "$carol_pid"; then
    echo "federation-demo: carol's client failed:" >&2
    cat "$dir/carol.out" >&2
    exit 1
fi
# `--stats-json` holds `"id":"STAGE"` objects with `counters` and `gauges`.
figure() {
    local stage=$1 key=$2
    tr -d ' \n' <"$dir/carol.json" |
        grep -oE "\"id\":\"$stage\"[^]]*" |
        grep -oE "\"$key\":-?[0-9]+" | head -1 | cut -d: -f2
}
opened=$(figure open opened)
decoded=$(figure dec0 frames_decoded)
level_x100=$(figure sink level_dbfs_x100)
if [ -z "$opened" ] || [ -z "$decoded" ] || [ -z "$level_x100" ]; then
    echo "federation-demo: could not read carol's figures from $dir/carol.json" >&2
    cat "$dir/carol.json" >&2
    exit 1
fi
level=$(awk "BEGIN { printf \"%.1f\", $level_x100 / 100 }")
echo "carol heard alice through a -> b -> c: $opened packets opened, $decoded frames decoded,"
echo "  level of her last second: $level dBFS (alice's tone is -15 dBFS RMS; silence reads -120)"
if [ "$opened" -eq 0 ] || [ "$level_x100" -lt -4000 ]; then
    echo "federation-demo: carol heard nothing" >&2
    exit 1
fi
