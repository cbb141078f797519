#!/usr/bin/env bash
# The main job: `wzp-client demo` starts a relay and two clients on this
# machine; one plays the built-in speech sample to the other through the
# relay (real QUIC, end-to-end encrypted). It writes what the receiver
# heard to out/demo-received.wav and prints per-stage timing and the
# loss-recovery counters.
#
# `bash scripts/main.sh loopback` runs the loopback graph instead (the
# whole media chain with a simulated network, file to file); further
# arguments go to `wzp-client run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
cargo build --release -q -p wzp-client
if [ "${1:-}" = "loopback" ]; then
  shift
  exec ./target/release/wzp-client run graphs/loopback.toml "$@"
fi
exec ./target/release/wzp-client demo "$@"
