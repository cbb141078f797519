#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (seconds, default 20 each),
# as many at once as the machine has cores (each target is one libFuzzer
# process on one core, so every target still gets its full time; CI's two
# cores finish in half the wall time). Fails if any target finds a crash;
# the input is left in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked -q
fi
cd fuzz
# Build every target first, so the runs below only start them (and a build
# error shows here, whole, rather than in one target's log).
cargo fuzz build -s none
jobs="${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}"

run_one() {
  local t="$1" secs="$2" log
  log="$(mktemp)"
  # A target's dictionary (fuzz/dicts/TARGET.dict: the words of its input
  # format) lets a short run reach past the parser's first byte checks.
  local dict=()
  if [ -f "dicts/$t.dict" ]; then dict=(-dict="$PWD/dicts/$t.dict"); fi
  if ! cargo fuzz run -s none "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 "${dict[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
    rm -f "$log"
    return 1
  fi
  echo "fuzz: $t for ${secs}s: $(tail -n 1 "$log")"
  rm -f "$log"
}
export -f run_one

# xargs exits non-zero when any run did.
if ! cargo fuzz list | xargs -P "$jobs" -I{} bash -c 'run_one "$1" "$2"' _ {} "$secs"; then
  echo "fuzz: a target failed (above)" >&2
  exit 1
fi
