#!/usr/bin/env python3
"""Scores the room bench (benches/quality/room.sh): each listener's recording
of the talker's speech, per loop, PESQ-WB and STOI as the live bench scores
(score.py's alignment and per-utterance scoring), and the talker's decisions.

    room_score.py --work DIR --ref SPEECH.wav
                  --lead S --period S --loops N --loss PCT --seed N --out ROOM.md
"""

import argparse
import datetime
import json
import os
import sys
import tempfile

import live_score
import score

RATE = score.RATE
RUNS = {
    "reports": "both listeners report",
    "unheard": "the clean listener sends no reports",
}
LISTENERS = {"clean": "clean path", "lossy": "behind the proxy"}


def figures(path):
    """(counters, gauges) per stage id of a --stats-json file."""
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"room_score: {path}: {e}")
    return (
        {s["id"]: s.get("counters", {}) for s in st["stages"]},
        {s["id"]: s.get("gauges", {}) for s in st["stages"]},
    )


def loops_of(a, run, who, ref, segments, tmpdir):
    """One score per loop of the talker's input in `who`'s recording."""
    d = os.path.join(a.work, "runs", run)
    rec = score.read_pcm(os.path.join(d, f"{who}.wav"))
    with open(os.path.join(d, f"{who}.start")) as f:
        s0 = int(f.read().split()[0])
    cuts = live_score.speech_cuts(rec, s0, ref, a.lead, a.period, a.loops, f"room_score: {run}/{who}")
    return [live_score.score_pcm(f"room-{run}-{who}-{k}", cut, a.ref, segments, tmpdir) for k, (_, cut) in enumerate(cuts)]


def main():
    ap = argparse.ArgumentParser()
    for k in ("--work", "--ref", "--out"):
        ap.add_argument(k, required=True)
    ap.add_argument("--lead", type=float, required=True)
    ap.add_argument("--period", type=float, required=True)
    ap.add_argument("--loops", type=int, required=True)
    ap.add_argument("--loss", type=int, required=True)
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--seconds", type=int, default=0)
    a = ap.parse_args()
    if a.loops < 1:
        sys.exit("room_score: --loops must be 1 or more")
    segments = score.speech_segments(a.work)
    ref = score.read_pcm(a.ref)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for run in RUNS:
            c, _ = figures(os.path.join(a.work, "runs", run, "talker.json"))
            adapt, fec = c.get("adapt", {}), c.get("fec_enc", {})
            talker = dict(
                fec_loss=adapt.get("decisions_fec_loss", 0),
                random_loss=adapt.get("decisions_random_loss", 0),
                room=adapt.get("decisions_random_loss_room", 0),
                repair=fec.get("repair_sent", 0),
            )
            for who in LISTENERS:
                rows.append((run, who, loops_of(a, run, who, ref, segments, tmp), talker))
    head = " | ".join(f"loop {k + 1} PESQ-WB / STOI" for k in range(a.loops))
    lines = [
        f"Room bench ({datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
        f"`bash benches/quality/room.sh`, LOSS={a.loss} SEED={a.seed}, {a.seconds} s): a talker, "
        f"a listener on a clean path and one behind `wzp-netem --loss {a.loss}`, each recording; "
        "the talker's controller hears reports from both (`reports`) or from the lossy one alone "
        "(`unheard`).",
        "",
        f"| run | listener | {head} | talker: decisions `random_loss` / `random_loss_room` / `fec_loss`, repair sent |",
        "|---|---|" + "---:|" * a.loops + "---|",
    ]
    for run, who, loops, t in rows:
        cells = " | ".join(f"{r['pesq']:.2f} / {r['stoi']:.3f}" for r in loops)
        lines.append(
            f"| {run} ({RUNS[run]}) | {who} ({LISTENERS[who]}) | {cells} | "
            f"{t['random_loss']} / {t['room']} / {t['fec_loss']}, {t['repair']} |"
        )
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
