#!/usr/bin/env python3
"""How much of a live row's STOI margin is the far end's playout moving.

The live bench scores STOI per speech segment (8-9 s) aligned once, as the
loopback bench does. A jitter buffer that stretches or skips a frame (its
hold rising for a burst, coming down in a pause) shifts the rest of the
segment by 20 ms; STOI, which compares 384 ms windows sample-aligned, reads
that shift as lost intelligibility though nothing was lost to hear. This
rescores each row of the last live run (`results.json`: the median call
and its best anchor setting) with every `--chunk` seconds of each segment
aligned on its own (within +-100 ms of the segment's lag), both sides
alike, beside the bench's own figure.

    target/quality-venv/bin/python benches/quality/stoi_realigned.py [--work target/quality-live]
"""

import argparse
import json
import os
import sys

import numpy as np
import soundfile as sf
from pystoi import stoi

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score  # noqa: E402

RATE = score.RATE
SLACK = RATE // 10  # 100 ms either way of the segment's lag


def segments_of(path):
    out, pos = [], 0
    with open(path) as f:
        for line in f:
            wav = line.split()[0]
            n = sf.info(wav).frames
            out.append((pos, n))
            pos += n
    return out


def realigned(ref, deg, segments, lags, chunk):
    """Mean over segments of the length-weighted STOI of `chunk`-sample
    pieces, each aligned on its own near its segment's lag."""
    per = []
    for (start, length), lag in zip(segments, lags):
        vals = []
        for k in range(start, start + length - chunk // 2, chunk):
            r = ref[k : min(k + chunk, start + length)]
            lo = k + lag - SLACK
            if lo < 0 or lo + len(r) + 2 * SLACK > len(deg):
                local = 0
            else:
                local = score.align(r, deg[lo : lo + len(r) + 2 * SLACK], 0, 2 * SLACK) - SLACK
            b = k + lag + local
            d = deg[max(0, b) : b + len(r)]
            if b < 0:
                d = np.concatenate([np.zeros(-b), d])
            if len(d) < len(r):
                d = np.concatenate([d, np.zeros(len(r) - len(d))])
            vals.append((stoi(r, d, RATE, extended=False), len(r)))
        per.append(sum(v * w for v, w in vals) / sum(w for _, w in vals))
    return float(np.mean(per))


def both(name, work, ref_path, ref, segments, chunk):
    path = os.path.join(work, "scored", name + ".wav")
    if not os.path.exists(path):
        sys.exit(f"stoi_realigned: {path} is missing: run benches/quality/live.sh first (it writes WORK/scored)")
    _, _, s, lags, _ = score.score_run((name, path, ref_path, segments))
    return s, realigned(ref, score.read_pcm(path), segments, lags, chunk)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="target/quality-live", help="the live bench's work folder")
    ap.add_argument("--chunk", type=float, default=2.0, help="seconds aligned on their own (at least 1)")
    a = ap.parse_args()
    if a.chunk < 1.0:
        ap.error("--chunk: at least 1 s (STOI compares 384 ms windows; a piece needs several)")
    try:
        with open(os.path.join(a.work, "results.json")) as f:
            rows = json.load(f)["rows"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"stoi_realigned: no results in {a.work}/results.json ({e}): run benches/quality/live.sh first")
    if any("key" not in r for r in rows):
        sys.exit(f"stoi_realigned: {a.work}/results.json names no call (written before live.sh's RUNS): run benches/quality/live.sh again")
    ref_path = os.path.join(a.work, "speech", "speech.wav")
    ref = score.read_pcm(ref_path)
    segments = segments_of(os.path.join(a.work, "speech", "segments.txt"))
    chunk = int(a.chunk * RATE)
    print(f"| condition | wzp STOI | anchor STOI | margin | wzp, {a.chunk:g} s realigned | anchor, realigned | margin, realigned |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        key = r["key"]
        w, wr = both(f"live-{key}-{r['phase']}", a.work, ref_path, ref, segments, chunk)
        an, ar = both(f"anchor-{key}-{r['best']}-{r['phase']}", a.work, ref_path, ref, segments, chunk)
        print(f"| {r['label']} | {w:.3f} | {an:.3f} | {w - an:+.3f} | {wr:.3f} | {ar:.3f} | {wr - ar:+.3f} |")


if __name__ == "__main__":
    main()
