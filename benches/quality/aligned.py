#!/usr/bin/env python3
"""The loopback against libopus's own loop, over several alignments of each
loss trace. Called by `OFFLINE=1 bash benches/quality/live.sh`.

One live run meets each trace at one alignment (where the proxy's schedule
stood when the talker's graph started), and which frames of speech a trace
takes moves a condition's PESQ-WB by 0.1-0.3 between alignments, for both
sides alike. So one live table says little about a margin under ~0.2. This
scores the call chain on the loopback (`graphs/loopback.toml`, fast clock,
the live bench's speech, a clean lead as the call has, decoder look-ahead 0
as in calls) and the anchor (`opus_demo`, best of the same three settings as
the live bench) on the same trace shifted by each of SHIFTS frames, and
reports per condition the mean over the shifts: the anchor setting whose
mean is best, and the margin. The far end is scored as the live bench
scores it (`score.score_run`, per voice).

Anchor scores are cached per trace and shift under WORK/aligned/anchor (the
trace files are part of the key); wzp's are not (they are what changes).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score  # noqa: E402

SETTINGS = ("dc6", "lbrr", "dred")


def fail(msg):
    print(f"aligned: error: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="the live bench's work folder (speech, traces)")
    ap.add_argument("--opus-demo", required=True)
    ap.add_argument("--client", default="target/release/wzp-client")
    ap.add_argument("--graph", default="graphs/loopback.toml")
    ap.add_argument("--conditions", required=True, help="space-separated condition names")
    ap.add_argument("--shifts", default="0 3 6 9 12 15 18", help="trace shifts, frames")
    ap.add_argument("--lead", type=int, default=3, help="clean lead before the trace, s")
    ap.add_argument("--sets", default="", help="space-separated NAME=VALUE for the loopback")
    ap.add_argument("--tag", default="wzp", help="name of this run's outputs")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()

    try:
        shifts = [int(s) for s in a.shifts.split()]
    except ValueError:
        fail(f"--shifts {a.shifts!r}: give whole numbers of frames, e.g. \"0 6 12\"")
    if not shifts or min(shifts) < 0:
        fail(f"--shifts {a.shifts!r}: give one or more shifts >= 0")
    sets = []
    for kv in a.sets.split():
        if "=" not in kv:
            fail(f"--sets: {kv!r} is not NAME=VALUE")
        sets += ["--set", kv]
    conds = {}
    tsv = os.path.join(a.work, "traces", "conditions.tsv")
    try:
        for line in open(tsv):
            f = line.rstrip("\n").split("\t")
            conds[f[0]] = {"label": f[1], "hint": f[2], "phases": int(f[4])}
    except OSError as e:
        fail(f"{tsv}: {e}")
    names = a.conditions.split()
    for c in names:
        if c not in conds:
            fail(f"unknown condition {c!r}; use some of: {' '.join(conds)}")
        if conds[c]["phases"] != 1:
            fail(f"condition {c!r} is a schedule of phases; only single-phase traces are aligned")
    out = os.path.join(a.work, "aligned")
    os.makedirs(os.path.join(out, "anchor"), exist_ok=True)
    ref = os.path.join(a.work, "speech", "speech.wav")
    talk = os.path.join(a.work, "talk.wav")
    raw_speech = os.path.join(a.work, "speech.raw")
    segs = score.speech_segments(a.work)

    def scored(wav):
        return score.score_run((wav, wav, ref, segs))[1]

    def trace(c, s):
        t = open(os.path.join(a.work, "traces", f"{c}.txt")).read().split()
        return t[s:] + ["0"] * min(s, len(t))

    def run_wzp(c, s):
        tr = os.path.join(out, f"{a.tag}-{c}-{s}.trace")
        with open(tr, "w") as f:
            f.write(" ".join(["0"] * (a.lead * 50) + trace(c, s)) + "\n")
        raw = os.path.join(out, f"{a.tag}-{c}-{s}.raw.wav")
        wav = os.path.join(out, f"{a.tag}-{c}-{s}.wav")
        cmd = [a.client, "run", a.graph, "--clock", "fast", "--no-realtime",
               "--set", f"input={talk}", "--set", f"output={raw}", "--set", f"trace={tr}",
               "--set", "lookahead=0"] + sets
        r = subprocess.run(cmd, capture_output=True, text=True)
        with open(os.path.join(out, f"{a.tag}-{c}-{s}.log"), "w") as f:
            f.write(r.stdout + r.stderr)
        if r.returncode != 0:
            fail(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.strip()[-400:]}")
        subprocess.run(["sox", "-q", raw, wav, "trim", str(a.lead)], check=True)
        return scored(wav)

    def run_anchor(c, s):
        t = trace(c, s)
        key = hashlib.sha256(("\n".join(t) + conds[c]["hint"]).encode()).hexdigest()[:16]
        cache = os.path.join(out, "anchor", f"{c}-{s}-{key}.json")
        if os.path.exists(cache):
            return json.load(open(cache))
        lf = os.path.join(out, "anchor", f"{c}-{s}.lossfile")
        with open(lf, "w") as f:
            f.write("\n".join(t) + "\n")
        res = {}
        hint = conds[c]["hint"]
        for name, opts in (("dc6", ["-dec_complexity", "6"]), ("lbrr", ["-inbandfec", "-loss", hint]),
                           ("dred", ["-dred", "100", "-loss", hint])):
            raw = os.path.join(out, "anchor", f"{c}-{s}-{name}.raw")
            wav = raw[:-4] + ".wav"
            r = subprocess.run([a.opus_demo, "voip", "16000", "1", "24000", "-framesize", "20"] + opts
                               + ["-lossfile", lf, raw_speech, raw], capture_output=True, text=True)
            if r.returncode != 0:
                fail(f"opus_demo ({c}, shift {s}, {name}) exited {r.returncode}: {r.stderr.strip()[-300:]}")
            subprocess.run(["sox", "-q", "-t", "raw", "-r", "16000", "-e", "signed", "-b", "16", "-c", "1",
                            raw, wav], check=True)
            res[name] = scored(wav)
        with open(cache, "w") as f:
            json.dump(res, f)
        return res

    jobs = [(c, s) for c in names for s in shifts]
    with ThreadPoolExecutor(max(1, a.jobs)) as ex:
        wz = list(ex.map(lambda j: run_wzp(*j), jobs))
        an = list(ex.map(lambda j: run_anchor(*j), jobs))
    rows = []
    print(f"| condition | wzp | anchor best | margin | per shift (wzp / anchor) |")
    print("|---|---:|---:|---:|---|")
    for c in names:
        per = [(s, w, x) for (cc, s), w, x in zip(jobs, wz, an) if cc == c]
        mw = sum(p[1] for p in per) / len(per)
        best = max(SETTINGS, key=lambda k: sum(p[2][k] for p in per))
        ma = sum(p[2][best] for p in per) / len(per)
        shown = " ".join(f"{s}: {w:.2f}/{x[best]:.2f}" for s, w, x in per)
        print(f"| {conds[c]['label']} | {mw:.2f} | {ma:.2f} ({best}) | {mw - ma:+.2f} | {shown} |")
        rows.append({"cond": c, "wzp": mw, "anchor": ma, "best": best, "margin": mw - ma,
                     "shifts": [{"shift": s, "wzp": w, "anchor": x} for s, w, x in per]})
    res = os.path.join(out, f"{a.tag}.json")
    with open(res, "w") as f:
        json.dump({"tag": a.tag, "sets": a.sets, "shifts": shifts, "rows": rows}, f, indent=1)
    print(f"aligned: results in {res}", file=sys.stderr)


if __name__ == "__main__":
    main()
