#!/usr/bin/env bash
# Builds libopus's own `opus_demo` from the source bundled in the opusic-sys
# crate wzp links (libopus 1.6.1), configured the way opusic-sys's build.rs
# configures it for wzp (features "dred" and "osce": cmake OPUS_DRED=ON,
# OPUS_OSCE=ON, Release), plus OPUS_BUILD_PROGRAMS=ON. Nothing is downloaded:
# the neural models (DRED, deep PLC, OSCE) are compiled in from the bundle.
#
#   bash benches/quality/build-opus-demo.sh     # -> target/opus-anchor/build/opus_demo
#
# Prints the path of opus_demo on stdout; exits non-zero, saying why, if it
# cannot build it.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "opus-anchor: $*" >&2; }
fail() { log "$*"; exit 1; }

OUT=target/opus-anchor
DEMO="$OUT/build/opus_demo"

# The opusic-sys version Cargo.lock pins, and its unpacked crate source.
ver=$(awk '/^name = "opusic-sys"$/ { getline; gsub(/[^0-9.]/, "", $0); print; exit }' Cargo.lock)
[ -n "$ver" ] || fail "opusic-sys is not in Cargo.lock; is this the wzp checkout?"
src=""
for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/opusic-sys-"$ver"; do
  [ -f "$d/opus/CMakeLists.txt" ] && src="$d" && break
done
[ -n "$src" ] || fail "no source of opusic-sys $ver under ${CARGO_HOME:-$HOME/.cargo}/registry/src; run 'cargo fetch' (or any cargo build of wzp) first"
opus_ver=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' "$src/opus/package_version")

stamp="$OUT/source.txt"
if [ -x "$DEMO" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$src" ]; then
  echo "$DEMO"
  exit 0
fi

command -v cmake >/dev/null 2>&1 || fail "cmake is missing (apt-get install cmake); it builds opus_demo"
command -v cc >/dev/null 2>&1 || fail "no C compiler (apt-get install build-essential); it builds opus_demo"

log "building opus_demo from libopus $opus_ver in $src (a copy in $OUT/src)"
rm -rf "$OUT/src" "$OUT/build"
mkdir -p "$OUT"
cp -r "$src/opus" "$OUT/src"
# The same definitions as opusic-sys's build.rs for features dred + osce on
# x86_64 (runtime SIMD detection, hardening on), and the programs.
cmake -S "$OUT/src" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release \
  -DOPUS_BUILD_PROGRAMS=ON -DOPUS_BUILD_TESTING=OFF -DBUILD_TESTING=OFF \
  -DOPUS_DRED=ON -DOPUS_OSCE=ON \
  -DOPUS_HARDENING=ON -DOPUS_STACK_PROTECTOR=ON -DOPUS_FORTIFY_SOURCE=ON \
  -DOPUS_DISABLE_INTRINSICS=OFF -DOPUS_FIXED_POINT=OFF \
  -DOPUS_X86_MAY_HAVE_SSE=ON -DOPUS_X86_MAY_HAVE_SSE2=ON \
  -DOPUS_X86_MAY_HAVE_SSE4_1=ON -DOPUS_X86_MAY_HAVE_AVX2=ON \
  -DOPUS_X86_PRESUME_SSE=ON -DOPUS_X86_PRESUME_SSE2=ON \
  >"$OUT/cmake.log" 2>&1 || fail "cmake configure failed; see $OUT/cmake.log"
cmake --build "$OUT/build" --target opus_demo -j "${JOBS:-2}" >"$OUT/build.log" 2>&1 \
  || fail "building opus_demo failed; see $OUT/build.log"
[ -x "$DEMO" ] || fail "the build finished but $DEMO is not there; see $OUT/build.log"
echo "$src" > "$stamp"
log "built $DEMO (libopus $opus_ver, DRED and OSCE on)"
echo "$DEMO"
