#!/usr/bin/env python3
"""libopus's own loop with the receiver's wait bounded, beside the aligned
bench's anchor (docs/QUALITY.md finding 29).

`opus_demo` decodes a lost frame from the next packet that arrives, however
far ahead it is: with `-dred 100` a 400 ms outage is rebuilt from the packet
after it, as by a receiver holding 400 ms back. A call holds its budget
(`jb_burst_hold`, 60 ms). This scores, on the aligned bench's traces and
shifts, the anchor's three settings as `aligned.py` does, with DRED decoded
also by `opus_bounded_wait` (benches/examples), which lets a lost frame use
only a packet at most WAIT frames after it (`inf`: `opus_demo`'s own
decoding, which it reproduces sample for sample). Per condition: the best
setting's mean with the wait unbounded and at each WAIT, and, given TAG,
wzp's mean from the aligned runs `TAG-sSEED.json` and its margin over each.

Usage (after `cargo build --release -p wzp-benches --example opus_bounded_wait`
and an aligned run of the same seeds, or without --tag):

  target/quality-venv/bin/python benches/quality/bounded_anchor.py \\
      --work target/quality-live --opus-demo target/opus-anchor/build/opus_demo \\
      --seeds "11 12 15 13 14 16" --conditions "ge60 ge160 outage" --waits "3 4" --tag b19
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor

import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score  # noqa: E402


def fail(msg):
    print(f"bounded_anchor: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the live bench's work folder (speech)")
    ap.add_argument("--opus-demo", required=True)
    ap.add_argument("--decoder", default="target/release/examples/opus_bounded_wait")
    ap.add_argument("--seeds", default="13")
    ap.add_argument("--conditions", default="ge60")
    ap.add_argument("--shifts", default="0 3 6 9 12 15 18")
    ap.add_argument("--waits", default="3", help="frames a lost frame may wait for a packet")
    ap.add_argument("--tag", default="", help="aligned runs to compare (WORK/aligned/TAG-sSEED.json)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    for tool in (a.opus_demo, a.decoder):
        if not os.access(tool, os.X_OK):
            fail(f"{tool} is not an executable (build it; see the usage above)")
    seeds = [int(s) for s in a.seeds.split()]
    conds = a.conditions.split()
    shifts = [int(s) for s in a.shifts.split()]
    waits = a.waits.split() + ["inf"]
    ref = os.path.join(a.work, "speech", "speech.wav")
    raw_speech = os.path.join(a.work, "speech.raw")
    segs = score.speech_segments(a.work)
    frames = (sf.info(ref).frames + 319) // 320
    hints = {}

    def traces(seed):
        d = os.path.join(tmp, f"traces-{seed}")
        subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), "traces.py"),
                        "--out", d, "--packets", str(frames), "--seed", str(seed)],
                       check=True, capture_output=True)
        for line in open(os.path.join(d, "conditions.tsv")):
            f = line.rstrip("\n").split("\t")
            hints[f[0]] = f[2]
        return d

    wzp = {}
    if a.tag:
        for seed in seeds:
            path = os.path.join(a.work, "aligned", f"{a.tag}-s{seed}.json")
            try:
                rows = json.load(open(path))
            except OSError as e:
                fail(f"{path}: {e} (run the aligned bench with TAG={a.tag} SEEDS=\"{a.seeds}\")")
            ran = rows.get("shifts") if isinstance(rows, dict) else None
            if ran is not None and list(ran) != shifts:
                fail(f"{path} scored shifts {ran}, not --shifts \"{a.shifts}\": the margins would compare other runs")
            for row in rows.get("rows", rows) if isinstance(rows, dict) else rows:
                wzp[(seed, row["cond"])] = row["wzp"]

    tmp = tempfile.mkdtemp(prefix="bounded-anchor-")
    tdirs = {s: traces(s) for s in seeds}
    for c in conds:
        if c not in hints:
            fail(f"unknown condition {c!r}")

    def to_wav(raw):
        wav = raw[:-4] + ".wav"
        subprocess.run(["sox", "-q", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                        raw, wav], check=True)
        return score.score_run((wav, wav, ref, segs))[1]

    streams = {}
    for c in conds:
        hint = hints[c]
        bit = os.path.join(tmp, f"dred-{hint}.bit")
        if hint not in streams:
            subprocess.run([a.opus_demo, "-e", "voip", "16000", "1", "24000", "-framesize", "20",
                            "-dred", "100", "-loss", hint, raw_speech, bit], check=True, capture_output=True)
            streams[hint] = bit

    def one(job):
        seed, c, s = job
        t = open(os.path.join(tdirs[seed], f"{c}.txt")).read().split()
        t = t[s:] + ["0"] * min(s, len(t))
        base = os.path.join(tmp, f"{seed}-{c}-{s}")
        lf = base + ".lossfile"
        with open(lf, "w") as f:
            f.write("\n".join(t) + "\n")
        res = {}
        hint = hints[c]
        for name, opts in (("dc6", ["-dec_complexity", "6"]), ("lbrr", ["-inbandfec", "-loss", hint])):
            raw = f"{base}-{name}.raw"
            subprocess.run([a.opus_demo, "voip", "16000", "1", "24000", "-framesize", "20"] + opts
                           + ["-lossfile", lf, raw_speech, raw], check=True, capture_output=True)
            res[name] = to_wav(raw)
        for w in waits:
            raw = f"{base}-dred{w}.raw"
            r = subprocess.run([a.decoder, streams[hint], lf, w, raw], capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"{a.decoder} exited {r.returncode}: {r.stderr.strip()}")
            res[f"dred@{w}"] = to_wav(raw)
        return job, res

    jobs = [(seed, c, s) for seed in seeds for c in conds for s in shifts]
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        results = dict(ex.map(one, jobs))

    head = "| condition | anchor, unbounded wait | " + " | ".join(f"anchor, wait {w} frames" for w in waits[:-1])
    if a.tag:
        head += " | wzp | margin, unbounded | " + " | ".join(f"margin, wait {w}" for w in waits[:-1])
    print(head + " |")
    print("|---" * head.count("|") + "|")
    out = {}
    for c in conds:
        per_wait = {}
        for w in waits:
            # Each seed's best setting over its shifts, as aligned.py picks
            # it (one run per seed), then the mean over the seeds; the
            # setting named is the one most seeds picked.
            settings = ("dc6", "lbrr", f"dred@{w}")
            picks = []
            for seed in seeds:
                means = {k: sum(results[(seed, c, s)][k] for s in shifts) / len(shifts) for k in settings}
                best = max(means, key=means.get)
                picks.append((means[best], best))
            named = max(settings, key=lambda k: sum(b == k for _, b in picks))
            per_wait[w] = (sum(v for v, _ in picks) / len(picks), named)
        line = f"| {c} | {per_wait['inf'][0]:.2f} ({per_wait['inf'][1]}) | " + " | ".join(
            f"{per_wait[w][0]:.2f} ({per_wait[w][1]})" for w in waits[:-1])
        if a.tag:
            got = [wzp[(seed, c)] for seed in seeds if (seed, c) in wzp]
            if len(got) != len(seeds):
                fail(f"{a.tag}: no aligned score for {c} on every seed")
            mw = sum(got) / len(got)
            line += f" | {mw:.2f} | {mw - per_wait['inf'][0]:+.2f} | " + " | ".join(
                f"{mw - per_wait[w][0]:+.2f}" for w in waits[:-1])
        print(line + " |")
        out[c] = {w: {"score": v[0], "best": v[1]} for w, v in per_wait.items()}
    shutil.rmtree(tmp, ignore_errors=True)
    json.dump({"seeds": seeds, "shifts": shifts, "per_run": {f"{k[0]}-{k[1]}-{k[2]}": v for k, v in results.items()},
               "best": out}, open(os.path.join(a.work, "bounded_anchor.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
