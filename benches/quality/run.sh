#!/usr/bin/env bash
# The loss-recovery quality bench: runs generated speech through the loopback
# chain under random and burst loss, for each recovery mode, and scores the
# output against the input with wideband PESQ (ITU-T P.862.2) and STOI.
# Writes docs/QUALITY.md and docs/quality.svg.
#
#   bash benches/quality/run.sh            # the full matrix (~5 min on 2 cores)
#   JOBS=4 bash benches/quality/run.sh     # more runs at once
#
# Needs root (or sudo) for apt-get the first time (espeak-ng, sox) and PyPI
# for the scoring venv in target/quality-venv. Nothing else is downloaded:
# the speech is synthesised here with espeak-ng.
set -euo pipefail
cd "$(dirname "$0")/../.."

JOBS=${JOBS:-2}
WORK=target/quality
VENV=target/quality-venv
BIN=./target/release/wzp-client
started=$(date +%s)

log() { echo "quality: $*" >&2; }

# --- system packages -------------------------------------------------------
bash scripts/setup.sh
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v sox >/dev/null 2>&1 || need+=(sox)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi

# --- scoring venv ----------------------------------------------------------
PY="$VENV/bin/python"
pydeps=(pesq pystoi numpy scipy soundfile)
if ! "$PY" -c "import pesq, pystoi, numpy, scipy, soundfile" >/dev/null 2>&1; then
  log "creating $VENV with ${pydeps[*]}"
  command -v python3 >/dev/null 2>&1 || { log "python3 is missing (apt-get install python3 python3-venv)"; exit 1; }
  if ! python3 -m venv "$VENV"; then
    log "python3 -m venv failed: install python3-venv (apt-get install python3-venv)"
    exit 1
  fi
  "$PY" -m pip install -q --upgrade pip >/dev/null || true
  # pesq builds a C extension when no wheel fits: it needs a C compiler
  # (build-essential, installed by scripts/setup.sh) and python3-dev.
  if ! "$PY" -m pip install -q "${pydeps[@]}"; then
    log "could not install ${pydeps[*]} from PyPI into $VENV;"
    log "pesq needs a C compiler and the Python headers (apt-get install python3-dev); no scores without them"
    exit 1
  fi
  "$PY" -c "import pesq, pystoi, numpy, scipy, soundfile" || { log "the venv's packages do not import"; exit 1; }
fi

# --- test speech -----------------------------------------------------------
# Harvard sentences read by four espeak-ng voices (benches/quality/speech.sh).
mkdir -p "$WORK/out"
bash benches/quality/speech.sh "$WORK/speech"
REF="$WORK/speech/speech.wav"
log "speech: $(soxi -D "$REF") s at $(soxi -r "$REF") Hz"

# --- the chain -------------------------------------------------------------
cargo build --release -q -p wzp-client

# One line per run: name, mode, loss condition, graph, clock, then --set pairs.
# Opus runs use the fast clock (deterministic: no worker threads in the
# chain). The Codec2 chain's encoder, decoder and RaptorQ stages hand work to
# threads, and under the fast clock their answers land in varying cycles, so
# it runs on the real-time clock to be repeatable.
matrix="$WORK/matrix.txt"
: > "$matrix"
add() { echo "$*" >> "$matrix"; }
conditions=("0 0ms" "5 0ms" "10 0ms" "20 0ms" "30 0ms" "10 100ms")
for cond in "${conditions[@]}"; do
  read -r loss burst <<< "$cond"
  tag="l${loss}"; [ "$burst" != "0ms" ] && tag="${tag}b${burst%ms}"
  net="loss=$loss burst=$burst seed=7"
  # Expected loss as the sender would learn it from receiver reports.
  el=$loss
  # These runs score hand-set knobs: the quality controller (graphs/loopback.toml's
  # feedback loop) would retune the encoder away from them.
  fixed="adapt=false"
  add "plc-$tag plc $tag graphs/loopback.toml fast $net $fixed dred_ms=0 inband_fec=false expected_loss=0 lookahead=1"
  add "lbrr-$tag lbrr $tag graphs/loopback.toml fast $net $fixed dred_ms=0 inband_fec=true expected_loss=$el lookahead=1"
  # DRED asks for the longest history; what the encoder fits is set by its
  # bit budget, which grows with expected_loss (docs/QUALITY.md, findings).
  add "dred-$tag dred $tag graphs/loopback.toml fast $net $fixed dred_ms=1000 inband_fec=false expected_loss=$el lookahead=5"
  add "dred30-$tag dred30 $tag graphs/loopback.toml fast $net $fixed dred_ms=1000 inband_fec=false expected_loss=$(( loss > 30 ? loss : 30 )) lookahead=5"
  add "c2fec-$tag c2fec $tag graphs/loopback-codec2.toml timer $net"
  add "c2plc-$tag c2plc $tag graphs/loopback-codec2.toml timer $net fec_ratio=0 jb_min=20ms jb_initial=40ms"
done

runone() {
  local name=$1 mode=$2 tag=$3 graph=$4 clock=$5
  shift 5
  local sets=()
  for kv in "$@"; do sets+=(--set "$kv"); done
  # The fast clock spins a core: no real-time priority for it. Timer runs
  # keep it, so other work on the machine does not make them miss cycles.
  local rt=()
  [ "$clock" = fast ] && rt=(--no-realtime)
  "$BIN" run "$graph" --clock "$clock" --quiet "${rt[@]}" \
    --set input="$REF" --set output="$WORK/out/$name.wav" "${sets[@]}" \
    --stats-json "$WORK/out/$name.json"
}
export -f runone
export BIN REF WORK
log "running $(wc -l < "$matrix") chains, $JOBS at a time"
chains_started=$(date +%s)
xargs -P "$JOBS" -L 1 bash -c 'runone "$@"' _ < "$matrix"
echo $(( $(date +%s) - chains_started )) > "$WORK/chains_seconds.txt"

# --- scores, table, plot ---------------------------------------------------
log "scoring"
"$PY" benches/quality/score.py \
  --ref "$REF" --segments "$WORK/speech/segments.txt" --matrix "$matrix" --outdir "$WORK/out" \
  --md docs/QUALITY.md --svg docs/quality.svg --jobs "$JOBS" \
  --command "bash benches/quality/run.sh" --chains-seconds "$(cat "$WORK/chains_seconds.txt")"
log "done in $(( $(date +%s) - started )) s: docs/QUALITY.md, docs/quality.svg"
