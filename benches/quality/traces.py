#!/usr/bin/env python3
"""Loss traces for the live quality bench: one 0 (kept) / 1 (lost) per 20 ms packet.

The same file drives both sides of the comparison: `wzp-netem --trace FILE`
on the talking client's path to the relay, and `opus_demo -lossfile FILE`
for libopus's own loop. Every trace is drawn from its own seeded generator,
so a rerun writes the same files.

    traces.py --out DIR --packets N [--seed S]

writes DIR/<condition>.txt for every condition in CONDITIONS and
DIR/conditions.tsv (name, label, loss hint for the encoder, kind, phases).

Models (all per 20 ms packet):
- random P: every packet lost with probability P, independently.
- Gilbert-Elliott P, B ms: a two-state chain; the bad state (every packet
  lost) lasts B ms on average, and the share of time spent in it is P. This
  is what `wzp-netem --loss P --burst B` does in continuous time.
- outage D every T: D ms lost every T ms, the first one T/2 in.
- schedule: phases of equal length, each one of the above (clean, random
  20 %, clean); scored phase by phase.
"""

import argparse
import os
import random
import sys

FRAME_MS = 20

# name, label, encoder loss hint (%), model, parameters
CONDITIONS = [
    ("clean", "no loss", 0, "random", (0.0,)),
    ("r10", "random 10 %", 10, "random", (0.10,)),
    ("r20", "random 20 %", 20, "random", (0.20,)),
    ("r30", "random 30 %", 30, "random", (0.30,)),
    ("ge60", "14 % in 60 ms bursts (Gilbert-Elliott)", 14, "ge", (0.14, 60)),
    ("ge160", "14 % in 160 ms bursts (Gilbert-Elliott)", 14, "ge", (0.14, 160)),
    ("outage", "400 ms outage every 5 s", 8, "outage", (400, 5000)),
    ("sched", "schedule clean -> 20 % -> clean", 20, "schedule", (("random", 0.0), ("random", 0.20), ("random", 0.0))),
    # Heavier random loss, where RaptorQ meets DRED and Codec2 (aligned runs:
    # CONDITIONS="r40 r50 r60 r70 r80"; not in the live table).
    ("r40", "random 40 %", 40, "random", (0.40,)),
    ("r50", "random 50 %", 50, "random", (0.50,)),
    ("r60", "random 60 %", 60, "random", (0.60,)),
    ("r70", "random 70 %", 70, "random", (0.70,)),
    ("r80", "random 80 %", 80, "random", (0.80,)),
    # Lighter random loss, either side of the live table's 10 %, where LBRR
    # and RaptorQ's lighter mode meet (aligned runs: CONDITIONS="r1 r2 r5 r15").
    # Appended: each condition's trace draws from a generator seeded by its
    # place in this list, so the others keep theirs.
    ("r5", "random 5 %", 5, "random", (0.05,)),
    ("r15", "random 15 %", 15, "random", (0.15,)),
    ("r2", "random 2 %", 2, "random", (0.02,)),
    ("r1", "random 1 %", 1, "random", (0.01,)),
]


def random_loss(rng, n, p):
    return [1 if rng.random() < p else 0 for _ in range(n)]


def gilbert_elliott(rng, n, p, burst_ms):
    """Bad state: all lost, mean length burst_ms; time share of bad = p."""
    if p <= 0:
        return [0] * n
    leave_bad = min(1.0, FRAME_MS / burst_ms)
    enter_bad = leave_bad * p / (1.0 - p)
    bad = rng.random() < p
    out = []
    for _ in range(n):
        out.append(1 if bad else 0)
        if bad:
            bad = rng.random() >= leave_bad
        else:
            bad = rng.random() < enter_bad
    return out


def outages(n, dur_ms, every_ms):
    d, t = dur_ms // FRAME_MS, every_ms // FRAME_MS
    first = t // 2
    return [1 if i >= first and (i - first) % t < d else 0 for i in range(n)]


def make(model, params, rng, n):
    if model == "random":
        return random_loss(rng, n, params[0])
    if model == "ge":
        return gilbert_elliott(rng, n, params[0], params[1])
    if model == "outage":
        return outages(n, params[0], params[1])
    raise ValueError(f"unknown model {model}")


def schedule_of(trace, lead_ms):
    """A `wzp-netem --schedule`: the trace's runs as phases of 20 ms per entry.

    Kept runs are phases with the flags' settings (no loss), lost runs
    `loss=100`; a clean phase first (lead_ms) and last (holds to the end).
    """
    phases = [f"{lead_ms}ms"] if lead_ms > 0 else []
    i = 0
    while i < len(trace):
        j = i
        while j < len(trace) and trace[j] == trace[i]:
            j += 1
        ms = (j - i) * FRAME_MS
        phases.append(f"{ms}ms:loss=100" if trace[i] else f"{ms}ms")
        i = j
    phases.append("1s")
    return ";".join(phases)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="directory for the trace files")
    ap.add_argument("--packets", type=int, help="20 ms packets per trace (per phase for the schedule)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--schedule-of", metavar="TRACE", help="print TRACE as a wzp-netem --schedule (20 ms per entry) instead")
    ap.add_argument("--lead-ms", type=int, default=0, help="with --schedule-of: clean time before the trace")
    a = ap.parse_args()
    if a.schedule_of:
        with open(a.schedule_of) as f:
            print(schedule_of([int(x) for x in f.read().split()], a.lead_ms))
        return
    if not a.out or a.packets is None:
        sys.exit("traces: give --out DIR and --packets N (or --schedule-of TRACE)")
    if a.packets <= 0:
        sys.exit(f"traces: --packets {a.packets}: must be positive")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "conditions.tsv"), "w") as meta:
        for i, (name, label, hint, model, params) in enumerate(CONDITIONS):
            # One generator per condition: adding a condition changes no other trace.
            rng = random.Random(a.seed * 1000 + i)
            if model == "schedule":
                trace = []
                for m, *p in params:
                    trace += make(m, p, rng, a.packets)
                phases = len(params)
            else:
                trace = make(model, params, rng, a.packets)
                phases = 1
            with open(os.path.join(a.out, f"{name}.txt"), "w") as f:
                for k in range(0, len(trace), 50):
                    f.write(" ".join(str(x) for x in trace[k : k + 50]) + "\n")
            lost = sum(trace)
            meta.write(f"{name}\t{label}\t{hint}\t{model}\t{phases}\t{lost}\t{len(trace)}\n")
            print(f"traces: {name:<7} {lost:5d} / {len(trace)} lost ({100.0 * lost / len(trace):.1f} %)", file=sys.stderr)


if __name__ == "__main__":
    main()
