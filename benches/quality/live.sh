#!/usr/bin/env bash
# The live quality bench: real calls against libopus's own loop.
#
# For each loss condition: a relay, a receiving client and a talking client,
# all real processes on loopback (QUIC, end-to-end encryption, the call
# graph on the real-time clock), the talker's path to the relay going through
# `wzp-netem` replaying the condition's loss trace in time (a --schedule of
# 20 ms slots; for the schedule condition, its phases). The far end's
# recording is scored against the talker's speech with wideband PESQ and
# STOI, as benches/quality/score.py scores the loopback matrix. In the same run, the anchor: libopus 1.6.1's
# own `opus_demo` (built from the source bundled in opusic-sys) on the same
# speech at the same 24 kb/s and 20 ms frames, over the same trace file
# (`-lossfile`), best of `-dec_complexity 6`, `-inbandfec -loss P` and
# `-dred 100 -loss P`. Writes the "Live calls against libopus's own loop"
# section of docs/QUALITY.md and docs/quality-live.svg.
#
#   bash benches/quality/live.sh                      # every condition, three calls each (~25 min)
#   RUNS=1 bash benches/quality/live.sh               # one call per condition (~8 min)
#   CONDITIONS="clean r20" bash benches/quality/live.sh   # some of them (no docs written)
#   SETS="adapt=true" bash benches/quality/live.sh    # --set NAME=VALUE for both clients
#   NO_DOCS=1 bash benches/quality/live.sh            # results in target/quality-live only
#   (then benches/quality/windows.py --live --condition C: where in the speech each call
#   of condition C made its margin, 2 s window by window)
#   FAR=listen bash benches/quality/live.sh           # the far end only listens (see FAR below)
#   BUILD=0 / VENV=DIR / SEED=N                       # no cargo build / another venv / other traces
#   REL=DIR BUILD=0                                   # the binaries in DIR (e.g. a baseline's copy)
#   OFFLINE=1 bash benches/quality/live.sh            # no calls: the loopback against the anchor,
#       averaged over alignments of each trace (benches/quality/aligned.py; ~2 min;
#       SHIFTS="0 6 12", SETS for the loopback, TAG=NAME for its outputs,
#       GRAPH=FILE another loopback graph (default graphs/loopback.toml);
#       SEEDS="11 12 15": the same over several trace seeds, margins per seed and their mean;
#       then benches/quality/windows.py --tag TAG --condition C --seeds "..." shows where in
#       the speech a margin is made, 2 s window by window;
#       the loopback's packets arrive on its cycles, the far end's favourable
#       playout phase: SETS="delay=5ms" puts them 5 ms after a cycle, the
#       phase half the live calls meet, where the burst hold reaches a frame
#       less; docs/QUALITY.md finding 38)
#
# RUNS=N (default 3) calls per condition, every condition once before any is
# called again; each call has its own anchor (opus_demo over the trace as
# that call met it), and a row shows the call whose margin is the median
# (the lower of the middle two for an even N) beside every call's margin:
# one call's margin moves by 0.1-0.2 with the trace's alignment and the far
# end's playout phase (docs/QUALITY.md finding 38), more than most changes it is
# meant to show.
#
# Not a test and not run in CI: it takes minutes and needs the release
# binaries, espeak-ng, sox, cmake and the scoring venv (target/quality-venv,
# made by benches/quality/run.sh). A missing piece stops it with a message
# saying what to install, and a non-zero exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORK=target/quality-live
VENV=${VENV:-target/quality-venv}
PY="$VENV/bin/python"
# The binaries: REL=DIR runs another build's (a copy of a baseline's, say).
REL=${REL:-./target/release}
SEED=${SEED:-11}
RUNS=${RUNS:-3}
CONDITIONS=${CONDITIONS:-}
SETS=${SETS:-}
# The far end: "call" runs the shipped graph (it sends its silent input and
# its feedback reports, so the talker adapts as in a real call); "listen"
# runs graphs/call.toml without its send chain (listen_only.py), which
# carries the feedback reports too: the talker hears no report and keeps its
# start-up settings (the profile's defaults) for the whole call.
FAR=${FAR:-call}
# Silence around the speech in the talker's input: the lead covers the
# connection's start (the graph runs before the relay is reached), the tail
# the far end's jitter buffer and decoder delay.
LEAD_S=3
TAIL_S=2
started=$(date +%s)

log() { echo "quality-live: $*" >&2; }
fail() {
  log "error: $*"
  exit 1
}

[[ "$RUNS" =~ ^[1-9][0-9]?$ ]] || fail "RUNS: \"$RUNS\" is not a count of calls per condition from 1 to 99 (e.g. RUNS=3)"
# run_key NAME K: the K-th call of condition NAME (its folder under runs/,
# its anchor's files): NAME for the first, NAME.rK after.
run_key() { if [ "$2" -eq 1 ]; then echo "$1"; else echo "$1.r$2"; fi; }

# --- what the bench needs --------------------------------------------------
for tool in espeak-ng sox soxi python3; do
  command -v "$tool" >/dev/null 2>&1 \
    || fail "$tool is missing: apt-get install espeak-ng sox python3 (scripts/setup.sh installs them)"
done
if ! "$PY" -c "import pesq, pystoi, numpy, scipy, soundfile" >/dev/null 2>&1; then
  fail "no scoring venv at $VENV (pesq, pystoi, numpy, scipy, soundfile): run 'bash benches/quality/run.sh' once, or: python3 -m venv $VENV && $VENV/bin/pip install pesq pystoi numpy scipy soundfile"
fi
if [ "${BUILD:-1}" = 1 ]; then
  log "building the release binaries (cargo build --release -p wzp-client -p wzp-relay)"
  cargo build --release -q -p wzp-client -p wzp-relay \
    || fail "cargo build --release -p wzp-client -p wzp-relay failed (see above)"
fi
for b in wzp-client wzp-relay wzp-netem; do
  [ -x "$REL/$b" ] || fail "$REL/$b is missing: cargo build --release -p wzp-client -p wzp-relay"
done
OPUS_DEMO=$(bash benches/quality/build-opus-demo.sh) || fail "no opus_demo (see the message above)"
[ -x "$OPUS_DEMO" ] || fail "build-opus-demo.sh named $OPUS_DEMO, which is not an executable"

# --- speech, the talker's input, the traces --------------------------------
mkdir -p "$WORK/runs" "$WORK/anchor"
bash benches/quality/speech.sh "$WORK/speech"
REF="$WORK/speech/speech.wav"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/lead.wav" trim 0 "$LEAD_S"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/tail.wav" trim 0 "$TAIL_S"
sox -q -D "$WORK/lead.wav" "$REF" "$WORK/tail.wav" "$WORK/talk.wav"
sox -q -D -n -r 16000 -c 1 -b 16 "$WORK/silence.wav" trim 0 1
sox -q -D "$REF" -t raw -e signed -b 16 -c 1 -r 16000 "$WORK/speech.raw"
samples=$(soxi -s "$REF")
frames=$(( (samples + 319) / 320 ))
lead_frames=$(( LEAD_S * 50 ))
tail_frames=$(( TAIL_S * 50 ))
period_s=$(soxi -D "$WORK/talk.wav")
"$PY" benches/quality/traces.py --out "$WORK/traces" --packets "$frames" --seed "$SEED"
log "speech: $(soxi -D "$REF") s ($frames frames of 20 ms); talker's input: ${period_s} s, looped"

all=$(cut -f1 "$WORK/traces/conditions.tsv" | tr '\n' ' ')
# Conditions run only when asked for (CONDITIONS="r40 r50 r60 r70 r80",
# "r1 r2 r5 r15"): heavier and lighter random loss, outside the issue's table.
extra="r40 r50 r60 r70 r80 r5 r15 r2 r1"
defaults=$(for c in $all; do case " $extra " in *" $c "*) ;; *) printf '%s ' "$c" ;; esac; done)
asked=$CONDITIONS
if [ -z "$CONDITIONS" ]; then
  CONDITIONS=$defaults
else
  for c in $CONDITIONS; do
    grep -q "^$c	" "$WORK/traces/conditions.tsv" || fail "CONDITIONS: unknown condition \"$c\"; use some of: $all"
  done
fi

# --- offline: the loopback against the anchor over several alignments ------
if [ -n "${OFFLINE:-}" ]; then
  if [ -z "$asked" ]; then
    # The schedule's phases are scored apart live; offline, single traces.
    CONDITIONS=$(for c in $CONDITIONS; do
      awk -F'\t' -v c="$c" '$1 == c && $5 == 1 { printf "%s ", $1 }' "$WORK/traces/conditions.tsv"
    done)
  fi
  aligned() {
    "$PY" benches/quality/aligned.py --work "$WORK" --opus-demo "$OPUS_DEMO" \
      --client "$REL/wzp-client" --graph "${GRAPH:-graphs/loopback.toml}" --conditions "$CONDITIONS" --lead "$LEAD_S" \
      --shifts "${SHIFTS:-0 3 6 9 12 15 18}" --sets "$SETS" --tag "$1"
  }
  if [ -z "${SEEDS:-}" ]; then
    aligned "${TAG:-wzp}"
    exit
  fi
  # Several trace seeds: one alignment set per seed, then each row's margin
  # per seed and their mean (one seed's traces can hide how a row fares on
  # others: QUALITY.md finding 19).
  tags=()
  for s in $SEEDS; do
    [[ "$s" =~ ^[0-9]+$ ]] || fail "SEEDS: \"$s\" is not a whole number (e.g. SEEDS=\"11 12 15\")"
    "$PY" benches/quality/traces.py --out "$WORK/traces" --packets "$frames" --seed "$s" >/dev/null
    log "trace seed $s"
    aligned "${TAG:-wzp}-s$s"
    tags+=("${TAG:-wzp}-s$s")
  done
  # Leave the traces of SEED, as a run without SEEDS would.
  "$PY" benches/quality/traces.py --out "$WORK/traces" --packets "$frames" --seed "$SEED" >/dev/null
  "$PY" - "$WORK/aligned" "${tags[@]}" <<'PY'
import json, os, sys
folder, tags = sys.argv[1], sys.argv[2:]
runs = [json.load(open(os.path.join(folder, f"{t}.json"))) for t in tags]
print("| condition | " + " | ".join(t.rsplit("-s", 1)[-1] for t in tags) + " | mean |")
print("|---|" + "---:|" * (len(tags) + 1))
for row in runs[0]["rows"]:
    c = row["cond"]
    m = [next(r["margin"] for r in run["rows"] if r["cond"] == c) for run in runs]
    print(f"| {c} | " + " | ".join(f"{x:+.2f}" for x in m) + f" | {sum(m) / len(m):+.2f} |")
PY
  exit
fi

# --- processes ---------------------------------------------------------------
# shellcheck source=benches/quality/procs.sh
source benches/quality/procs.sh

sets=()
for kv in $SETS; do sets+=(--set "$kv"); done
# The clients ask for real-time priority themselves; the relay and the proxy
# get it here when this user may (a loaded machine otherwise delays them).
rt=()
if command -v chrt >/dev/null 2>&1 && chrt -f 10 true 2>/dev/null; then
  rt=(chrt -f 10)
else
  log "no real-time priority for the relay and the proxy (chrt -f not permitted): expect more late frames on a loaded machine"
fi
far_graph=()
case $FAR in
  listen)
    python3 benches/quality/listen_only.py graphs/call.toml "$WORK/far.toml" \
      || fail "could not make a listen-only far end from graphs/call.toml (FAR=call runs the shipped graph)"
    far_graph=(--graph "$WORK/far.toml") ;;
  call) ;;
  *) fail "FAR=$FAR: use listen or call" ;;
esac

# live_call NAME TRACE_FILE SCHEDULE LOOPS
live_call() {
  local name=$1 trace=$2 schedule=$3 loops=$4 dir="$WORK/runs/$1"
  # Only this call's folder starts afresh: the calls of conditions not
  # called this time stay, to replay (`replay-adapt`) or score again.
  rm -rf "$dir"
  mkdir -p "$dir"
  "${rt[@]}" "$REL/wzp-relay" -i "$dir/relay.seed" --listen 127.0.0.1:0 >"$dir/relay.out" 2>"$dir/relay.err" &
  PIDS+=($!)
  local line relay fp
  line=$(wait_for "$dir/relay.out" '^listening ' 20 "'listening' line from wzp-relay") || return 1
  relay=$(field "$line" quic)
  fp=$(field "$line" fingerprint)
  local common=(--room live --room-secret "a secret only the members hold" --relay-fingerprint "$fp" --quiet "${sets[@]}")
  "$REL/wzp-client" join --relay "$relay" "${common[@]}" "${far_graph[@]}" --alias far \
    --identity "$dir/far.seed" --known-relays "$dir/far.known" \
    --input "$WORK/silence.wav" --output "$dir/far.wav" --stats-json "$dir/far.json" \
    >"$dir/far.out" 2>"$dir/far.err" &
  local far=$!
  PIDS+=($far)
  wait_for "$dir/far.out" 'in the room\)$|^room live: ' 30 "sign that the far end joined" >/dev/null || return 1
  local impair=(--seed "$SEED")
  if [ -n "$schedule" ]; then impair+=(--schedule "$schedule"); else impair+=(--trace "$trace"); fi
  "${rt[@]}" "$REL/wzp-netem" --listen 127.0.0.1:0 --to "$relay" "${impair[@]}" >"$dir/netem.out" 2>"$dir/netem.err" &
  local netem=$!
  PIDS+=($netem)
  line=$(wait_for "$dir/netem.out" '^listening ' 20 "'listening' line from wzp-netem") || return 1
  local proxy
  proxy=$(field "$line" udp)
  # When the proxy's schedule started (wall clock, ms): with the talker's
  # graph start below, where the loss pattern fell on its frames.
  field "$line" t0_unix_ms > "$dir/proxy_t0.txt"
  # The talker plays its input `loops` times (it loops) and hangs up. It
  # logs its controller's inputs with its decisions (`adapt-input:` lines in
  # talker.out), so any call's decisions can be taken again off line:
  # `wzp-client replay-adapt --check target/quality-live/runs/KEY/talker.out`.
  local dur
  dur=$(python3 -c "print(f'{$period_s * $loops + 1.0:.2f}s')")
  "$REL/wzp-client" join --relay "$proxy" --set adapt_log=true "${common[@]}" --alias talker --log "warn,wzp_client::call=info" \
    --identity "$dir/talker.seed" --known-relays "$dir/talker.known" \
    --input "$WORK/talk.wav" --output null --duration "$dur" --stats-json "$dir/talker.json" \
    >"$dir/talker.out" 2>"$dir/talker.err" &
  local talker=$!
  PIDS+=($talker)
  # Where the far end's recording stood when the talker started: the scorer
  # looks for the speech LEAD_S after it.
  recorded "$dir/far.wav" > "$dir/talker_start.txt"
  if ! wait "$talker"; then
    log "error: the talking client failed in $name:"
    sed 's/^/    /' "$dir/talker.err" >&2
    return 1
  fi
  sed 's/\x1b\[[0-9;]*m//g' "$dir/talker.err" | grep 'graph started' | grep -o 'unix_ms=[0-9]*' | head -1 | cut -d= -f2 > "$dir/talker_t0.txt"
  # Let the far end play out what it holds (a second of recording), then hang up.
  local have
  have=$(recorded "$dir/far.wav")
  local deadline=$(( $(date +%s) + 20 ))
  while [ "$(recorded "$dir/far.wav")" -lt $(( have + 32000 )) ]; do
    [ "$(date +%s)" -ge "$deadline" ] && { log "error: the far end stopped recording in $name"; return 1; }
    sleep 0.2
  done
  kill -INT "$far"
  if ! wait "$far"; then
    log "error: the far end failed in $name:"
    sed 's/^/    /' "$dir/far.err" >&2
    return 1
  fi
  kill -TERM "$netem"
  wait "$netem" || { log "error: wzp-netem failed in $name"; sed 's/^/    /' "$dir/netem.err" >&2; return 1; }
  kill -TERM "${PIDS[0]}" 2>/dev/null || true
  cleanup
  grep '^counters ' "$dir/netem.out" | sed "s/^/quality-live: $name: netem /" >&2
}

# --- the calls ------------------------------------------------------------------
calls_started=$(date +%s)
for run in $(seq "$RUNS"); do
  while IFS=$'\t' read -r name label hint model phases lost total; do
    case " $CONDITIONS " in *" $name "*) ;; *) continue ;; esac
    key=$(run_key "$name" "$run")
    [ "$RUNS" -eq 1 ] || label="$label, call $run of $RUNS"
    if [ "$model" = schedule ]; then
      # Time phases on the proxy, one talker loop each: the talker starts a
      # moment after the proxy, and its speech sits LEAD_S into its loop.
      sched=$(python3 -c "p=$period_s; print(';'.join(f'{p:.3f}s:loss={l}' for l in (0, 20, 0)))")
      log "call $key: $label (--schedule \"$sched\")"
      live_call "$key" "" "$sched" "$phases" || fail "the call for $key failed"
    else
      # The trace as time on the proxy: one 20 ms slot per packet, clean
      # through the talker's lead-in (the handshake, the jitter buffer's
      # start), then the condition's slots, then clean. In time rather than
      # per datagram (`--trace`), so the acknowledgements and telemetry on the
      # path do not move the pattern against the talker's frames, and both
      # directions go down together, as on a real path.
      sched=$(python3 benches/quality/traces.py --schedule-of "$WORK/traces/$name.txt" --lead-ms $(( LEAD_S * 1000 )))
      echo "$sched" > "$WORK/runs/$name.schedule"
      log "call $key: $label ($lost of $total speech packets lost, $(tr ';' '\n' <<< "$sched" | wc -l) proxy phases)"
      live_call "$key" "" "$sched" 1 || fail "the call for $key failed"
    fi
  done < "$WORK/traces/conditions.tsv"
done
calls_s=$(( $(date +%s) - calls_started ))

# --- the anchor: libopus's own loop over the same traces ---------------------
anchor_started=$(date +%s)
rm -f "$WORK/anchor/settings.txt.new"
while IFS=$'\t' read -r name label hint model phases lost total; do
  case " $CONDITIONS " in *" $name "*) ;; *) continue ;; esac
  # The schedule's trace holds its phases back to back: the speech is played
  # once per phase.
  input="$WORK/speech.raw"
  if [ "$phases" -gt 1 ]; then
    input="$WORK/anchor/speech-x$phases.raw"
    for _ in $(seq "$phases"); do cat "$WORK/speech.raw"; done > "$input"
  fi
  # The proxy's schedule started before the talker's graph: its speech
  # frame i met slot i + shift of the trace. The anchor gets the trace as
  # the call met it (shifted, clean after its end), so both lose the same
  # frames of speech (a few frames either way moved a 400 ms outage
  # call's PESQ by 0.15-0.3 on the loopback).
  for run in $(seq "$RUNS"); do
    key=$(run_key "$name" "$run")
    lossfile="$WORK/traces/$name.txt"
    if [ "$phases" -eq 1 ]; then
      d="$WORK/runs/$key"
      t0=$(cat "$d/proxy_t0.txt" 2>/dev/null); g0=$(cat "$d/talker_t0.txt" 2>/dev/null)
      if [ -n "$t0" ] && [ -n "$g0" ]; then
        shift_frames=$(( (g0 - t0 + 10) / 20 ))
        lossfile="$WORK/anchor/$key.lossfile"
        python3 -c "
t = open('$WORK/traces/$name.txt').read().split()
s = max(0, $shift_frames)
open('$lossfile', 'w').write('\\n'.join(t[s:] + ['0'] * s) + '\\n')
"
        echo "$shift_frames" > "$WORK/anchor/$key.shift"
        log "anchor $key: the talker's graph started $(( g0 - t0 )) ms after the proxy's schedule: trace shifted by $shift_frames frames"
      else
        log "warning: anchor $key: no start times (proxy_t0.txt, talker_t0.txt); trace not shifted"
      fi
    fi
    for setting in dc6 lbrr dred; do
      case $setting in
        dc6) opts=(-dec_complexity 6) ;;
        lbrr) opts=(-inbandfec -loss "$hint") ;;
        dred) opts=(-dred 100 -loss "$hint") ;;
      esac
      out="$WORK/anchor/$key-$setting.raw"
      "$OPUS_DEMO" voip 16000 1 24000 -framesize 20 "${opts[@]}" -lossfile "$lossfile" \
        "$input" "$out" >"$WORK/anchor/$key-$setting.log" 2>&1 \
        || fail "opus_demo failed on $key ($setting); see $WORK/anchor/$key-$setting.log"
      echo "$key $setting ${opts[*]}" >> "$WORK/anchor/settings.txt.new"
    done
  done
done < "$WORK/traces/conditions.tsv"
mv "$WORK/anchor/settings.txt.new" "$WORK/anchor/settings.txt"
anchor_s=$(( $(date +%s) - anchor_started ))

# --- scores, table, plot ----------------------------------------------------
docs=(--md docs/QUALITY.md --svg docs/quality-live.svg)
# The docs' table is the default set of conditions, all of it.
if [ -n "${NO_DOCS:-}" ] || [ "$(echo $CONDITIONS)" != "$(echo $defaults)" ]; then
  docs=(--md "$WORK/QUALITY-live.md" --svg "$WORK/quality-live.svg")
fi
cmd="bash benches/quality/live.sh"
[ "$RUNS" != 3 ] && cmd="RUNS=$RUNS $cmd"
[ -n "$SETS" ] && cmd="SETS=\"$SETS\" $cmd"
[ "$FAR" != call ] && cmd="FAR=$FAR $cmd"
"$PY" benches/quality/live_score.py --work "$WORK" --ref "$REF" --segments "$WORK/speech/segments.txt" \
  --conditions "$CONDITIONS" --lead "$LEAD_S" --period "$period_s" "${docs[@]}" \
  --command "$cmd" --sets "$SETS" --far "$FAR" --seed "$SEED" --calls-seconds "$calls_s" --anchor-seconds "$anchor_s" \
  --runs "$RUNS" \
  --opus-demo "$OPUS_DEMO"
log "done in $(( $(date +%s) - started )) s: ${docs[1]}, ${docs[3]}"
