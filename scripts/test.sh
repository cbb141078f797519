#!/usr/bin/env bash
# The test command: every unit, integration and end-to-end test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Benches are compiled by clippy in CI and run with `cargo bench`; tests
# cover libraries, binaries, integration tests and examples.
cargo test --workspace --lib --bins --tests --examples --locked
cargo test --workspace --doc --locked
