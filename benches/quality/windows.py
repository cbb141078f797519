#!/usr/bin/env python3
"""Where in the speech a condition's margin is made: PESQ-WB of wzp's
far end and of `opus_demo`'s, window by window, from the outputs of an
aligned run (`OFFLINE=1 TAG=... SEEDS=... bash benches/quality/live.sh`).

Each window of a far end is scored against the same window of the speech
(`score.score_run`, which aligns each window on its own) and the margin is
wzp's minus the anchor's, averaged over every seed and shift of the run. The
anchor is one `opus_demo` setting (default `-dred 100 -loss HINT`, the best
on the burst rows) rerun over each trace the aligned run wrote, and cached
under WORK/windows. docs/QUALITY.md finding 27 is one such table.

    target/quality-venv/bin/python benches/quality/windows.py --tag base --condition ge60 \\
        --seeds "11 12 15 13 14 16"
"""

import argparse
import os
import subprocess
import sys

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score  # noqa: E402

RATE = 16000
ANCHORS = {
    "dred": lambda hint: ["-dred", "100", "-loss", hint],
    "lbrr": lambda hint: ["-inbandfec", "-loss", hint],
    "dc6": lambda hint: ["-dec_complexity", "6"],
}


def fail(msg):
    print(f"windows: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="target/quality-live")
    ap.add_argument("--opus-demo", default="target/opus-anchor/build/opus_demo")
    ap.add_argument("--tag", required=True, help="the aligned run's TAG")
    ap.add_argument("--condition", required=True, help="a condition of the run (ge60, r20, ...)")
    ap.add_argument("--seeds", required=True, help='the run\'s trace seeds, e.g. "11 12 15"')
    ap.add_argument("--shifts", default="0 3 6 9 12 15 18", help="the run's shifts (frames)")
    ap.add_argument("--anchor", default="dred", choices=sorted(ANCHORS))
    ap.add_argument("--hint", default=None, help="the anchor's -loss (default: the condition's)")
    ap.add_argument("--window", type=float, default=2.0, help="window length, s (default 2)")
    ap.add_argument("--lead", type=int, default=3, help="the clean lead before the trace, s")
    a = ap.parse_args()

    if not os.access(a.opus_demo, os.X_OK):
        fail(f"no opus_demo at {a.opus_demo}: bash benches/quality/build-opus-demo.sh builds it")
    ref = os.path.join(a.work, "speech", "speech.wav")
    raw_speech = os.path.join(a.work, "speech.raw")
    for f in (ref, raw_speech):
        if not os.path.exists(f):
            fail(f"{f} is missing: run the aligned bench first (OFFLINE=1 bash benches/quality/live.sh)")
    hint = a.hint
    if hint is None:
        for line in open(os.path.join(a.work, "traces", "conditions.tsv")):
            f = line.rstrip("\n").split("\t")
            if f[0] == a.condition:
                hint = f[2]
        if hint is None:
            fail(f"unknown condition {a.condition!r} (see {a.work}/traces/conditions.tsv)")
    if not a.window > 0.5:
        fail(f"--window {a.window}: PESQ needs windows above 0.5 s")
    n = sf.info(ref).frames
    w = int(a.window * RATE)
    windows = [(start, min(w, n - start)) for start in range(0, n - w // 2, w)]
    cache = os.path.join(a.work, "windows")
    os.makedirs(cache, exist_ok=True)
    margins = []
    for seed in a.seeds.split():
        for shift in a.shifts.split():
            base = os.path.join(a.work, "aligned", f"{a.tag}-s{seed}-{a.condition}-{shift}")
            if not os.path.exists(base + ".wav"):
                fail(f"{base}.wav is missing: was the aligned run TAG={a.tag} SEEDS including {seed}?")
            trace = open(base + ".trace").read().split()[a.lead * 50 :]
            anchor = os.path.join(cache, f"{a.condition}-s{seed}-{shift}-{a.anchor}-{hint}")
            if not os.path.exists(anchor + ".wav"):
                with open(anchor + ".lossfile", "w") as f:
                    f.write("\n".join(trace) + "\n")
                r = subprocess.run(
                    [a.opus_demo, "voip", "16000", "1", "24000", "-framesize", "20"]
                    + ANCHORS[a.anchor](hint)
                    + ["-lossfile", anchor + ".lossfile", raw_speech, anchor + ".raw"],
                    capture_output=True,
                    text=True,
                )
                if r.returncode != 0:
                    fail(f"opus_demo exited {r.returncode}: {r.stderr.strip()[-300:]}")
                subprocess.run(["sox", "-q", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                                anchor + ".raw", anchor + ".wav"], check=True)
            ours = score.score_run((base, base + ".wav", ref, windows))[4]
            theirs = score.score_run((anchor, anchor + ".wav", ref, windows))[4]
            margins.append([x - y for x, y in zip(ours, theirs)])
    mean = np.mean(margins, axis=0)
    print(f"| speech s | " + " | ".join(f"{s / RATE:.0f}-{(s + l) / RATE:.0f}" for s, l in windows) + " |")
    print("|---|" + "---:|" * len(windows))
    print(f"| {a.tag} | " + " | ".join(f"{m:+.2f}" for m in mean) + " |")


if __name__ == "__main__":
    main()
