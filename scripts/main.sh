#!/usr/bin/env bash
# The main job: runs the loopback graph on the built-in speech sample, writes
# out/loopback.wav and prints the per-stage timing table.
# Extra arguments go to `wzp-client run` (e.g. --top, --clock timer, --set input=x.wav).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
cargo build --release -q -p wzp-client
exec ./target/release/wzp-client run graphs/loopback.toml "$@"
