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

With `--live`, the same for the live calls of the last `live.sh` run
(`runs/NAME`, `runs/NAME.r2`, ...): each call's far end, cut where the
scorer cuts it, against the `opus_demo` output over the trace as that call
met it (`anchor/KEY-SETTING.raw`, which live.sh wrote), a row per call and
their mean. The schedule's calls are scored in their first phase.

    target/quality-venv/bin/python benches/quality/windows.py --live --condition ge60 --runs 3
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
    ap.add_argument("--tag", help="the aligned run's TAG")
    ap.add_argument("--condition", required=True, help="a condition of the run (ge60, r20, ...)")
    ap.add_argument("--seeds", help='the run\'s trace seeds, e.g. "11 12 15"')
    ap.add_argument("--live", action="store_true", help="the live calls of the last live.sh run instead")
    ap.add_argument("--runs", type=int, default=3, help="with --live: calls of the condition (default 3)")
    ap.add_argument("--shifts", default="0 3 6 9 12 15 18", help="the run's shifts (frames)")
    ap.add_argument("--anchor", default="dred", choices=sorted(ANCHORS))
    ap.add_argument("--hint", default=None, help="the anchor's -loss (default: the condition's)")
    ap.add_argument("--window", type=float, default=2.0, help="window length, s (default 2)")
    ap.add_argument("--lead", type=int, default=3, help="the clean lead before the trace, s")
    a = ap.parse_args()

    if a.live:
        live(a)
        return
    if not a.tag or not a.seeds:
        fail("--tag and --seeds name the aligned run to read (or --live for the live calls)")
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
    windows = windows_of(sf.info(ref).frames, a)
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
    print_table(windows, [(a.tag, np.mean(margins, axis=0))])


def windows_of(n, a):
    """The speech's windows [(start, length)] of `a.window` seconds."""
    if not a.window > 0.5:
        fail(f"--window {a.window}: PESQ needs windows above 0.5 s")
    w = int(a.window * RATE)
    return [(start, min(w, n - start)) for start in range(0, n - w // 2, w)]


def print_table(windows, rows):
    """A markdown table: one row per (label, margins), then their mean."""
    print("| speech s | " + " | ".join(f"{s / RATE:.0f}-{(s + l) / RATE:.0f}" for s, l in windows) + " |")
    print("|---|" + "---:|" * len(windows))
    for label, m in rows:
        print(f"| {label} | " + " | ".join(f"{x:+.2f}" for x in m) + " |")
    if len(rows) > 1:
        mean = np.mean([m for _, m in rows], axis=0)
        print("| mean | " + " | ".join(f"{x:+.2f}" for x in mean) + " |")


def live(a):
    """Window margins of the live calls of condition `a.condition`."""
    import live_score  # noqa: E402 (the scorer's cuts, so both read the same speech)

    ref = os.path.join(a.work, "speech", "speech.wav")
    talk = os.path.join(a.work, "talk.wav")
    for f in (ref, talk):
        if not os.path.exists(f):
            fail(f"{f} is missing: run the live bench first (bash benches/quality/live.sh)")
    if a.runs < 1:
        fail(f"--runs {a.runs}: at least one call")
    ref_pcm = score.read_pcm(ref)
    n = len(ref_pcm)
    windows = windows_of(n, a)
    period = sf.info(talk).duration
    cache = os.path.join(a.work, "windows")
    os.makedirs(cache, exist_ok=True)
    rows = []
    for key in live_score.run_keys({"name": a.condition}, a.runs):
        d = os.path.join(a.work, "runs", key)
        raw = os.path.join(a.work, "anchor", f"{key}-{a.anchor}.raw")
        for f in (os.path.join(d, "far.wav"), os.path.join(d, "talker_start.txt"), raw):
            if not os.path.exists(f):
                fail(f"{f} is missing: was {key} called in the last live run (CONDITIONS, RUNS)?")
        rec = score.read_pcm(os.path.join(d, "far.wav"))
        with open(os.path.join(d, "talker_start.txt")) as f:
            s0 = int(f.read().split()[0])
        (_, cut), *_ = live_score.speech_cuts(rec, s0, ref_pcm, a.lead, period, 1, f"windows: {key}: the far end")
        ours = os.path.join(cache, f"live-{key}.wav")
        sf.write(ours, cut, RATE, subtype="PCM_16")
        # As live_score.anchor pads it: the speech 0.5 s in, 1 s after.
        x = np.fromfile(raw, dtype="<i2").astype(np.float64) / 32768.0
        theirs = os.path.join(cache, f"live-{key}-{a.anchor}.wav")
        pcm = np.concatenate([np.zeros(RATE // 2), x[: n + RATE // 2], np.zeros(RATE)])
        sf.write(theirs, pcm, RATE, subtype="PCM_16")
        m_ours = score.score_run((ours, ours, ref, windows))[4]
        m_theirs = score.score_run((theirs, theirs, ref, windows))[4]
        rows.append((key, [x - y for x, y in zip(m_ours, m_theirs)]))
    print_table(windows, rows)


if __name__ == "__main__":
    main()
