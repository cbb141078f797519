#!/usr/bin/env bash
# The quality benches' test speech: Harvard sentences (IEEE 1969, public
# domain), four talkers (espeak-ng voices and variants), each segment padded
# with silence so a chain's delay and tail never cut speech. Segments are
# scored one by one (P.862 is meant for 8-20 s samples), so their paths are
# kept in segments.txt. Used by run.sh (loopback) and live.sh (live calls).
#
#   bash benches/quality/speech.sh DIR    # -> DIR/speech.wav, DIR/segments.txt
set -euo pipefail
DIR=${1:?usage: speech.sh DIR}
for tool in espeak-ng sox soxi; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "quality: $tool is missing: apt-get install espeak-ng sox (or run scripts/setup.sh)" >&2
    exit 1
  }
done
mkdir -p "$DIR"
voices=("en-us" "en-gb+f3" "en-gb-x-rp+m3" "en-us+f4")
texts=(
  "The birch canoe slid on the smooth planks. Glue the sheet to the dark blue background. It's easy to tell the depth of a well."
  "These days a chicken leg is a rare dish. Rice is often served in round bowls. The juice of lemons makes fine punch."
  "The box was thrown beside the parked truck. The hogs were fed chopped corn and garbage. Four hours of steady work faced us."
  "A large size in stockings is hard to sell. The boy was there when the sun rose. A rod is used to catch pink salmon."
)
: > "$DIR/segments.txt"
segs=()
for i in "${!texts[@]}"; do
  raw="$DIR/raw$i.wav"
  seg="$DIR/seg$i.wav"
  espeak-ng -v "${voices[$i]}" -s 160 -w "$raw" "${texts[$i]}"
  # 16 kHz mono 16-bit, -3 dBFS peak, silence either side; no dither (-D),
  # which sox otherwise draws at random: the input must be the same each run.
  sox -q -D "$raw" -r 16000 -c 1 -b 16 "$seg" gain -n -3 pad 0.3 0.4
  echo "$seg ${voices[$i]}" >> "$DIR/segments.txt"
  segs+=("$seg")
done
sox -q -D "${segs[@]}" "$DIR/speech.wav"
