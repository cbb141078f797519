# Process helpers shared by the live benches (live.sh, room.sh); sourced.
# The sourcing script defines log() first.

# Every process a bench starts is recorded in PIDS and ended on exit.
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  PIDS=()
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_for FILE REGEX SECONDS WHAT: the first line of FILE matching REGEX.
wait_for() {
  local file=$1 re=$2 secs=$3 what=$4 deadline line
  deadline=$(( $(date +%s) + secs ))
  while :; do
    line=$(grep -m1 -E "$re" "$file" 2>/dev/null || true)
    [ -n "$line" ] && { echo "$line"; return 0; }
    [ "$(date +%s)" -ge "$deadline" ] && {
      log "error: no $what within $secs s; $file holds:"
      sed 's/^/    /' "$file" >&2 || true
      return 1
    }
    sleep 0.1
  done
}
# field LINE KEY: the value of KEY=VALUE in LINE.
field() { tr ' ' '\n' <<< "$1" | sed -n "s/^$2=//p" | head -1; }
# recorded WAV: samples written so far (16-bit mono, 44-byte header).
recorded() { local n; n=$(stat -c %s "$1" 2>/dev/null || echo 44); echo $(( (n - 44) / 2 )); }
