#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time (seconds, default 20 each).
# Fails if any target finds a crash; the input is left in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked -q
fi
cd fuzz
for t in $(cargo fuzz list); do
  echo "fuzz: $t for ${secs}s"
  log="$(mktemp)"
  # A target's dictionary (fuzz/dicts/TARGET.dict: the words of its input
  # format) lets a short run reach past the parser's first byte checks.
  dict=()
  if [ -f "dicts/$t.dict" ]; then dict=(-dict="$PWD/dicts/$t.dict"); fi
  if ! cargo fuzz run -s none "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 "${dict[@]}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  tail -n 2 "$log"
  rm -f "$log"
done
