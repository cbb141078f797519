#!/usr/bin/env bash
# The room bench: what each listener of a room hears while one of them loses
# packets. A real relay, a talker (the bench's speech, looped), a listener on
# a clean path and one behind `wzp-netem --loss LOSS`, each recording; PESQ-WB
# and STOI of both recordings, per loop of the speech. Two runs:
#
#   reports  both listeners send feedback reports (graphs/call.toml, silent
#            input): the talker's controller hears of the clean listener too
#   unheard  the clean listener sends none (the send chain removed:
#            listen_only.py), so the talker adapts to the lossy one alone, as
#            a talker did before the room rule (docs/QUALITY.md finding 30)
#
# Usage:
#   bash benches/quality/room.sh              # LOSS=20 SEED=11 LOOPS=2
#   LOSS=30 BUILD=0 bash benches/quality/room.sh
#   REL=DIR BUILD=0 ...                        # the binaries in DIR
#
# Not a test and not run in CI: about three minutes, the release binaries,
# espeak-ng, sox and the scoring venv (target/quality-venv; see
# benches/quality/run.sh). Results: target/quality-room/room.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=target/quality-room
VENV=${VENV:-target/quality-venv}
PY="$VENV/bin/python"
REL=${REL:-./target/release}
LOSS=${LOSS:-20}
SEED=${SEED:-11}
LOOPS=${LOOPS:-2}
LEAD_S=3
TAIL_S=2

log() { echo "quality-room: $*" >&2; }
fail() {
  log "error: $*"
  exit 1
}

for tool in espeak-ng sox soxi python3; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: apt-get install espeak-ng sox python3"
done
[[ "$LOSS" =~ ^[0-9]+$ ]] && [ "$LOSS" -le 100 ] || fail "LOSS=$LOSS: a whole percentage, 0..100"
[[ "$SEED" =~ ^[0-9]+$ ]] || fail "SEED=$SEED: a whole number"
[[ "$LOOPS" =~ ^[1-9][0-9]*$ ]] || fail "LOOPS=$LOOPS: a whole number of 1 or more"
if ! "$PY" -c "import pesq, pystoi, numpy, scipy, soundfile" >/dev/null 2>&1; then
  fail "no scoring venv at $VENV: python3 -m venv $VENV && $VENV/bin/pip install pesq pystoi numpy scipy soundfile"
fi
if [ "${BUILD:-1}" = 1 ]; then
  log "building the release binaries"
  cargo build --release -q -p wzp-client -p wzp-relay || fail "cargo build --release failed (see above)"
fi
for b in wzp-client wzp-relay wzp-netem; do
  [ -x "$REL/$b" ] || fail "$REL/$b is missing: cargo build --release -p wzp-client -p wzp-relay"
done

rm -rf "$WORK/runs"
mkdir -p "$WORK/runs"
bash benches/quality/speech.sh "$WORK/speech"
REF="$WORK/speech/speech.wav"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/lead.wav" trim 0 "$LEAD_S"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/tail.wav" trim 0 "$TAIL_S"
sox -q -D "$WORK/lead.wav" "$REF" "$WORK/tail.wav" "$WORK/talk.wav"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/silence.wav" trim 0 1
period_s=$(soxi -D "$WORK/talk.wav")
python3 benches/quality/listen_only.py graphs/call.toml "$WORK/listen.toml" 2>/dev/null \
  || fail "could not make a listen-only graph from graphs/call.toml"

# shellcheck source=benches/quality/procs.sh
source benches/quality/procs.sh

# run NAME: one room; the clean listener reports unless NAME is "unheard".
run() {
  local name=$1 dir="$WORK/runs/$1"
  mkdir -p "$dir"
  "$REL/wzp-relay" -i "$dir/relay.seed" --listen 127.0.0.1:0 >"$dir/relay.out" 2>"$dir/relay.err" &
  PIDS+=($!)
  local line relay fp proxy
  line=$(wait_for "$dir/relay.out" '^listening ' 20 "'listening' line from wzp-relay") || return 1
  relay=$(field "$line" quic)
  fp=$(field "$line" fingerprint)
  "$REL/wzp-netem" --listen 127.0.0.1:0 --to "$relay" --loss "$LOSS" --seed "$SEED" >"$dir/netem.out" 2>"$dir/netem.err" &
  PIDS+=($!)
  line=$(wait_for "$dir/netem.out" '^listening ' 20 "'listening' line from wzp-netem") || return 1
  proxy=$(field "$line" udp)
  local common=(--room room --room-secret "a secret only the members hold" --relay-fingerprint "$fp" --quiet)
  local clean_graph=()
  [ "$name" = unheard ] && clean_graph=(--graph "$WORK/listen.toml")
  local who via listeners=()
  for who in clean lossy; do
    via=$relay
    [ "$who" = lossy ] && via=$proxy
    local g=()
    [ "$who" = clean ] && g=("${clean_graph[@]}")
    "$REL/wzp-client" join --relay "$via" "${common[@]}" "${g[@]}" --alias "$who" \
      --identity "$dir/$who.seed" --known-relays "$dir/$who.known" \
      --input "$WORK/silence.wav" --output "$dir/$who.wav" --stats-json "$dir/$who.json" \
      >"$dir/$who.out" 2>"$dir/$who.err" &
    PIDS+=($!)
    listeners+=($!)
    wait_for "$dir/$who.out" 'in the room\)$|^room room: ' 30 "sign that the $who listener joined" >/dev/null || return 1
  done
  local dur
  dur=$(python3 -c "print(f'{$period_s * $LOOPS + 1.0:.2f}s')")
  "$REL/wzp-client" join --relay "$relay" "${common[@]}" --alias talker \
    --identity "$dir/talker.seed" --known-relays "$dir/talker.known" \
    --input "$WORK/talk.wav" --output null --duration "$dur" --stats-json "$dir/talker.json" \
    >"$dir/talker.out" 2>"$dir/talker.err" &
  local talker=$!
  PIDS+=($talker)
  for who in clean lossy; do recorded "$dir/$who.wav" > "$dir/$who.start"; done
  wait "$talker" || { log "error: the talker failed in $name:"; sed 's/^/    /' "$dir/talker.err" >&2; return 1; }
  # A second more of recording at each listener, then hang up.
  for who in clean lossy; do
    local have deadline
    have=$(recorded "$dir/$who.wav")
    deadline=$(( $(date +%s) + 20 ))
    while [ "$(recorded "$dir/$who.wav")" -lt $(( have + 32000 )) ]; do
      [ "$(date +%s)" -ge "$deadline" ] && { log "error: the $who listener stopped recording in $name"; return 1; }
      sleep 0.2
    done
  done
  kill -INT "${listeners[@]}"
  for p in "${listeners[@]}"; do wait "$p" || { log "error: a listener failed in $name (see $dir)"; return 1; }; done
  cleanup
}

started=$(date +%s)
for name in reports unheard; do
  log "room $name: a talker, a clean listener, one behind --loss $LOSS (seed $SEED), $LOOPS loops of ${period_s} s"
  run "$name" || fail "the room '$name' failed (its files are in $WORK/runs/$name)"
done
"$PY" benches/quality/room_score.py --work "$WORK" --ref "$REF" \
  --lead "$LEAD_S" --period "$period_s" --loops "$LOOPS" --loss "$LOSS" --seed "$SEED" \
  --seconds $(( $(date +%s) - started )) --out "$WORK/room.md"
cat "$WORK/room.md"
