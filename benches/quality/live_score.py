#!/usr/bin/env python3
"""Scores the live quality bench (live.sh) and writes its section of docs/QUALITY.md.

For every condition and every call of it (`--runs`): the far end's
recording of the live call (one talker loop per phase) is located against
the speech, cut period by period, and scored with `score.py`'s own
`score_run` (per-segment realignment, wideband PESQ and STOI, mean over
segments); libopus's `opus_demo` outputs for the three anchor settings, over
the trace as that call met it, are scored the same way. A row shows the call
whose margin over the best anchor setting is the median (the lower of the
middle two for an even count) and every call's margin. Writes a table and
an SVG plot; the section replaces any earlier one (from its heading to the
end of the file), so the loopback part written by run.sh stays as it is.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
from importlib import metadata

import numpy as np
import soundfile as sf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import score  # noqa: E402  (the loopback bench's scorer: same alignment and scores)
import stoi_realigned  # noqa: E402  (STOI with every 2 s aligned on its own, finding 39)

RATE = score.RATE
HEADING = score.LIVE_HEADING
SETTINGS = {
    "dc6": "`-dec_complexity 6` (deep PLC, OSCE)",
    "lbrr": "`-inbandfec -loss P` (LBRR)",
    "dred": "`-dred 100 -loss P` (DRED 1 s)",
}
SHORT = {"dc6": "dec. complexity 6", "lbrr": "LBRR", "dred": "DRED"}
PHASE_NAMES = ["clean", "20 %", "clean again"]


def load_conditions(path, wanted):
    out = []
    with open(path) as f:
        for line in f:
            name, label, hint, model, phases, lost, total = line.rstrip("\n").split("\t")
            if name in wanted:
                out.append(dict(name=name, label=label, hint=int(hint), model=model, phases=int(phases), lost=int(lost), total=int(total)))
    return out


def phase_losses(trace_path, phases):
    with open(trace_path) as f:
        t = [int(x) for x in f.read().split()]
    n = len(t) // phases
    return [(sum(t[i * n : (i + 1) * n]), n) for i in range(phases)]


REALIGN_S = 2.0
_refs = {}


def score_pcm(name, pcm, ref_path, segments, tmpdir):
    """Scores 16 kHz mono float samples that hold the reference 0-1 s in:
    PESQ and STOI as the loopback bench does, and STOI with every
    `REALIGN_S` of each segment aligned on its own (`stoi_r`)."""
    path = os.path.join(tmpdir, name + ".wav")
    sf.write(path, pcm, RATE, subtype="PCM_16")
    _, p, s, lags, segp = score.score_run((name, path, ref_path, segments))
    if ref_path not in _refs:
        _refs[ref_path] = score.read_pcm(ref_path)
    sr = stoi_realigned.realigned(_refs[ref_path], score.read_pcm(path), segments, lags, int(REALIGN_S * RATE))
    return dict(pesq=p, stoi=s, stoi_r=sr, seg_pesq=segp, lag_ms=[round(l / RATE * 1000) for l in lags])


def counters(path, kind="counters"):
    """{stage id: its counters} (or its gauges, `kind="gauges"`) from a
    `--stats-json` file; empty when the file is missing or unreadable."""
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return {}
    return {s["id"]: s.get(kind, {}) for s in st["stages"]}


def playout_phase(c, g):
    """The far end's playout phase, ms in [10, 30): the delay its busiest
    jitter buffer played at, from the path's floor, modulo the 20 ms cycle
    (`current_delay_ms` at the end of the call; whole frames of hold, skips
    and stretches leave it as it was). At 20 or more the burst hold reaches
    one frame further back (docs/QUALITY.md finding 38). None without one."""
    chains = [k for k in c if k.startswith("jb") and k[2:].isdigit() and c[k].get("played", 0) > 0]
    if not chains:
        return None
    busiest = max(chains, key=lambda k: c[k]["played"])
    cur = g.get(busiest, {}).get("current_delay_ms")
    return None if cur is None else (cur - 10) % 20 + 10


def sum_chains(c, prefix, key):
    return sum(v.get(key, 0) for k, v in c.items() if k.startswith(prefix) and k[len(prefix) :].isdigit())


def netem_counters(path):
    out = {}
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("counters "):
                    parts = line.split()
                    out[parts[1]] = {k: int(v) for k, v in (kv.split("=", 1) for kv in parts[2:])}
    except OSError:
        pass
    return out


def speech_cuts(rec, s0, ref, lead_s, period_s, count, what):
    """Where each of `count` loops of the talker's input lies in a recording
    that held `s0` samples when the talker started: [(start, cut)], each cut
    holding that loop's speech 0.5 s in. `what` names the recording in
    errors."""
    period = int(round(period_s * RATE))
    n = len(ref)
    # The recording had s0 samples when the talker started (the writer
    # flushes about once a second); the speech starts LEAD s into the
    # talker's input, plus the path's delay.
    guess = s0 + int(lead_s * RATE)
    lo, hi = max(0, guess - 2 * RATE), min(len(rec) - n, guess + 3 * RATE)
    if hi <= lo:
        sys.exit(f"{what}: the recording ({len(rec) / RATE:.1f} s) holds no whole speech period after {guess / RATE:.1f} s")
    first = score.align(ref, rec, lo, hi)
    out = []
    for k in range(count):
        at = first + k * period
        lo, hi = max(0, at - RATE // 2), min(len(rec) - n, at + RATE // 2)
        if hi < lo:
            sys.exit(f"{what}: loop {k + 1} of the talker's input is not in the recording")
        at = score.align(ref, rec, lo, hi) if k else at
        cut = rec[max(0, at - RATE // 2) : at + n + RATE]
        if at < RATE // 2:
            cut = np.concatenate([np.zeros(RATE // 2 - at), cut])
        out.append((at, cut))
    return out


def run_keys(cond, runs):
    """The folders (under runs/) and anchor file names of a condition's calls,
    as live.sh's run_key names them."""
    return [cond["name"] if k == 1 else f"{cond['name']}.r{k}" for k in range(1, runs + 1)]


def live(cond, key, a, ref, segments, tmpdir):
    """Scores the far end's recording of one call (`key`) of a condition, one
    result per phase."""
    d = os.path.join(a.work, "runs", key)
    rec = score.read_pcm(os.path.join(d, "far.wav"))
    with open(os.path.join(d, "talker_start.txt")) as f:
        s0 = int(f.read().split()[0])
    out = []
    cuts = speech_cuts(rec, s0, ref, a.lead, a.period, cond["phases"], f"live_score: {key}: the far end")
    for k, (at, cut) in enumerate(cuts):
        r = score_pcm(f"live-{key}-{k}", cut, a.ref, segments, tmpdir)
        r["start_s"] = round(at / RATE, 2)
        out.append(r)
    c = counters(os.path.join(d, "far.json"))
    g = counters(os.path.join(d, "far.json"), "gauges")
    t = counters(os.path.join(d, "talker.json"))
    net = netem_counters(os.path.join(d, "netem.out"))
    info = dict(
        played=sum_chains(c, "jb", "played"),
        concealed=sum_chains(c, "jb", "concealed"),
        late=sum_chains(c, "jb", "late"),
        resets=sum_chains(c, "jb", "resets"),
        stretched=sum_chains(c, "jb", "stretched"),
        skipped=sum_chains(c, "jb", "skipped"),
        dred=sum_chains(c, "dec", "dred_reconstructions"),
        lbrr=sum_chains(c, "dec", "fec_recovered"),
        plc=sum_chains(c, "dec", "classical_plc_invocations"),
        underruns=sum_chains(c, "dec", "underruns"),
        phase=playout_phase(c, g),
        encoded=t.get("enc", {}).get("frames_encoded"),
        c2s=net.get("c2s", {}),
        s2c=net.get("s2c", {}),
    )
    return out, info


def anchor(cond, key, a, ref, segments, tmpdir):
    """Scores opus_demo's outputs for one call's trace; {setting: [result per phase]}."""
    n = len(ref)
    out = {}
    for setting in SETTINGS:
        raw = os.path.join(a.work, "anchor", f"{key}-{setting}.raw")
        x = np.fromfile(raw, dtype="<i2").astype(np.float64) / 32768.0
        res = []
        for k in range(cond["phases"]):
            seg = x[k * n : (k + 1) * n + RATE // 2]
            pcm = np.concatenate([np.zeros(RATE // 2), seg, np.zeros(RATE)])
            res.append(score_pcm(f"anchor-{key}-{setting}-{k}", pcm, a.ref, segments, tmpdir))
        out[setting] = res
    return out


def median_call(calls):
    """The call whose PESQ margin is the median of `calls` (the lower of the
    middle two for an even count): a real call, so its scores, its anchor and
    its margin stay together."""
    order = sorted(range(len(calls)), key=lambda i: calls[i]["margin"])
    return order[(len(order) - 1) // 2]


def rows_of(conds, lives, anchors, a):
    """One row per condition and phase: the median call of `lives[name]` and
    `anchors[name]` (lists, one entry per call) and every call's margin."""
    rows = []
    for cond in conds:
        name = cond["name"]
        pl = phase_losses(os.path.join(a.work, "traces", f"{name}.txt"), cond["phases"])
        for k in range(cond["phases"]):
            label = cond["label"] if cond["phases"] == 1 else f"schedule, phase {k + 1}: {PHASE_NAMES[k] if k < len(PHASE_NAMES) else k + 1}"
            calls = []
            for (res, _), anc in zip(lives[name], anchors[name]):
                w = res[k]
                per = {s: anc[s][k] for s in SETTINGS}
                best = max(per, key=lambda s: per[s]["pesq"])
                calls.append(dict(wzp=w, anchors=per, best=best, margin=w["pesq"] - per[best]["pesq"], margin_stoi=w["stoi"] - per[best]["stoi"], margin_stoi_r=w["stoi_r"] - per[best]["stoi_r"]))
            m = median_call(calls)
            rows.append(
                dict(
                    cond=name,
                    phase=k,
                    label=label,
                    trace_lost=pl[k][0],
                    trace_total=pl[k][1],
                    call=m + 1,
                    key=run_keys(cond, len(calls))[m],
                    margins=[c["margin"] for c in calls],
                    **calls[m],
                )
            )
    return rows


def svg_plot(rows, path):
    """PESQ and STOI per condition: the live call beside libopus's best setting."""
    groups = len(rows)
    gw = 62
    left, top, ph = 60, 44, 220
    pw = groups * gw
    W = max(left + pw + 30, 480)
    H = top + 2 * (ph + 40) + 150
    panels = [("PESQ-WB (P.862.2, MOS-LQO)", "pesq", 1.0, 4.5, [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]), ("STOI", "stoi", 0.5, 1.0, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])]
    colors = {"wzp": "#d62728", "anchor": "#1f77b4"}
    o = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="DejaVu Sans, Arial, sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    for pi, (title, key, y0, y1, ticks) in enumerate(panels):
        t = top + pi * (ph + 40)

        def Y(v):
            v = min(max(v, y0), y1)
            return t + ph - (v - y0) / (y1 - y0) * ph

        o.append(f'<text x="{left + pw / 2}" y="{t - 10}" text-anchor="middle" font-size="13" font-weight="bold">{title}</text>')
        o.append(f'<rect x="{left}" y="{t}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        for v in ticks:
            o.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{left + pw}" y2="{Y(v):.1f}" stroke="#e5e5e5"/>')
            o.append(f'<text x="{left - 5}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        for i, r in enumerate(rows):
            x0 = left + i * gw + 8
            for j, (who, v) in enumerate((("wzp", r["wzp"][key]), ("anchor", r["anchors"][r["best"]][key]))):
                x = x0 + j * 23
                o.append(f'<rect x="{x}" y="{Y(v):.1f}" width="21" height="{t + ph - Y(v):.1f}" fill="{colors[who]}"/>')
                o.append(f'<text x="{x + 10.5}" y="{Y(v) - 3:.1f}" text-anchor="middle" font-size="9">{v:.2f}</text>')
    bt = top + 2 * (ph + 40) - 26
    for i, r in enumerate(rows):
        x = left + i * gw + gw / 2
        short = r["cond"] if r["phase"] == 0 and r["cond"] != "sched" else f"{r['cond']} {r['phase'] + 1}"
        o.append(f'<text x="{x:.1f}" y="{bt}" text-anchor="end" transform="rotate(-40 {x:.1f} {bt})">{short}</text>')
    ly = H - 40
    o.append(f'<rect x="{left}" y="{ly}" width="14" height="10" fill="{colors["wzp"]}"/>')
    o.append(f'<text x="{left + 20}" y="{ly + 9}">wzp, live call (relay, two clients, wzp-netem)</text>')
    o.append(f'<rect x="{left}" y="{ly + 16}" width="14" height="10" fill="{colors["anchor"]}"/>')
    o.append(f'<text x="{left + 20}" y="{ly + 25}">libopus 1.6.1 opus_demo, best of three settings, same trace</text>')
    o.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(o) + "\n")


def git_rev():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def section(a, conds, rows, infos, voices, segments, svg_name):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total_s = sum(n for _, n in segments) / RATE
    L = [HEADING, ""]
    L.append(
        "A real relay and two real clients on loopback: `wzp-relay`, a far end (`wzp-client join "
        "--output FILE`) and a talker (`wzp-client join --input FILE`) whose path to the relay runs "
        "through `wzp-netem`; the far end's recording is scored against the talker's speech like the "
        "loopback rows above (the same speech, per-segment realignment, PESQ-WB and STOI, mean over "
        "segments). The anchor is libopus's own loop: `opus_demo` of libopus 1.6.1, built from the "
        "source bundled in `opusic-sys` with DRED and OSCE on (`benches/quality/build-opus-demo.sh`), "
        "`voip 16000 1 24000 -framesize 20` on the same speech and the same loss trace file "
        "(`-lossfile`), best of three settings: "
        + ", ".join(SETTINGS.values())
        + ", where P is the condition's loss. Generated by "
        f"`{a.command}`; regenerate rather than edit."
    )
    L.append("")
    L.append(f"![live calls against libopus's own loop]({svg_name})")
    L.append("")
    many = a.runs > 1
    if many:
        L.append(
            f"Each condition was called {a.runs} times, each call with its own anchor (`opus_demo` over the "
            "trace as that call met it); a row shows the call whose PESQ margin is the median"
            + (" (the lower of the middle two)" if a.runs % 2 == 0 else "")
            + ", its scores and its anchor's, and the margins of every call in the order they ran."
        )
        L.append("")
    L.append(
        "| condition | packets lost (trace) | wzp live PESQ | wzp live STOI | anchor best PESQ | anchor setting | anchor STOI | margin PESQ | margin STOI | margin STOI, 2 s realigned | "
        + ("margins of the calls | " if many else "")
        + " | ".join(f"anchor {SHORT[s]}" for s in SETTINGS)
        + " |"
    )
    L.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|" + ("---|" if many else "") + "---:|" * len(SETTINGS))
    for r in rows:
        b = r["anchors"][r["best"]]
        L.append(
            f"| {r['label']} | {r['trace_lost']} / {r['trace_total']} ({100.0 * r['trace_lost'] / r['trace_total']:.1f} %) | "
            f"{r['wzp']['pesq']:.2f} | {r['wzp']['stoi']:.3f} | {b['pesq']:.2f} | {SHORT[r['best']]} | {b['stoi']:.3f} | "
            f"**{r['margin']:+.2f}** | {r['margin_stoi']:+.3f} | {r['margin_stoi_r']:+.3f} | "
            + (" / ".join(f"{m:+.2f}" for m in r["margins"]) + " | " if many else "")
            + " | ".join(f"{r['anchors'][s]['pesq']:.2f}" for s in SETTINGS)
            + " |"
        )
    L.append("")
    worst = min(rows, key=lambda r: r["margin"])
    ahead = [r for r in rows if r["margin"] >= 0]
    L.append(
        f"- The live call{' (the median call)' if many else ''} is ahead of the anchor in {len(ahead)} of {len(rows)} rows; "
        + (f"the widest gap behind is {worst['margin']:+.2f} PESQ" if worst["margin"] < 0 else f"the narrowest lead is {worst['margin']:+.2f} PESQ")
        + f" ({worst['label']})."
        + (
            f" Of the {sum(len(r['margins']) for r in rows)} calls' rows, {sum(m >= 0 for r in rows for m in r['margins'])} are ahead."
            if many
            else ""
        )
        + " The issue's goal is +0.3 in every loss condition and equal on a clean path."
    )
    L.append(
        "- STOI margins twice: as the bench has always scored them (each speech segment aligned once) and "
        f"with every {REALIGN_S:g} s of a segment aligned on its own, both sides alike. A frame the far end "
        "stretches or skips moves the rest of its segment by 20 ms, which the first reads as lost "
        "intelligibility and the second does not; the frame itself counts in both (finding 39)."
    )
    if a.sets:
        L.append(f"- Both clients ran with `--set` {', '.join('`' + s + '`' for s in a.sets.split())}.")
    else:
        L.append(
            "- The talker ran the shipped `graphs/call.toml` with no `--set` (the far end its receive half): "
            "today's defaults, with whatever adaptation they hold."
        )
    L.append("")
    L.append("What the far end saw (its jitter buffers and decoders, summed over its receive chains; whole call, lead-in and tail included) and what the proxy did on the talker's path (`c2s`: talker to relay):")
    L.append("")
    L.append("| condition | played | concealed | late | DRED | LBRR | PLC | resets | underruns | playout phase | talker frames encoded | proxy c2s in / lost | proxy s2c in / lost |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    calls = [(cond["label"] + (f", call {n + 1}" if many else ""), i) for cond in conds for n, i in enumerate(infos[cond["name"]])]
    for label, i in calls:
        c2s, s2c = i["c2s"], i["s2c"]
        L.append(
            f"| {label} | {i['played']} | {i['concealed']} | {i['late']} | {i['dred']} | {i['lbrr']} | {i['plc']} | "
            f"{i['resets']} | {i['underruns']} | {str(i['phase']) + ' ms' if i.get('phase') is not None else '–'} | {i['encoded'] if i['encoded'] is not None else '–'} | {c2s.get('in', '–')} / {c2s.get('lost', '–')} | {s2c.get('in', '–')} / {s2c.get('lost', '–')} |"
        )
    L.append("")
    L.append(
        "The playout phase is the delay the far end played at, from the path's floor, modulo its 20 ms cycle "
        "(its jitter buffer's last `current_delay_ms`): where the talker's packets arrive between the far end's "
        "cycles, fixed for a call. At 20 ms or more the 60 ms burst hold rebuilds a run's fourth frame back too "
        "(finding 38)."
    )
    L.append("")
    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "live_findings.md")
    if os.path.exists(findings):
        with open(findings) as f:
            L.append(f.read().rstrip())
        L.append("")
    L.append("### How it runs")
    L.append("")
    L.append("`benches/quality/live.sh`:")
    L.append("")
    L.append(
        f"- **Speech**: the loopback bench's {len(segments)} espeak-ng segments ({', '.join('`' + v + '`' for v in voices)}), "
        f"{total_s:.1f} s. The talker's input is {a.lead:g} s of silence, the speech, and silence to "
        f"{a.period:.1f} s, looped; the lead-in covers the QUIC handshake and the jitter buffer's start."
    )
    L.append(
        "- **Traces** (`benches/quality/traces.py`, seed "
        f"{a.seed}): one 0/1 per 20 ms packet of the speech: random loss; Gilbert-Elliott (the bad state "
        "loses every packet, lasts the mean burst on average, and fills the given share of time); "
        "400 ms outages every 5 s starting 2.5 s in. The proxy replays the file in time: `--schedule` "
        "with one 20 ms phase per entry (runs merged, `loss=100` for lost ones), after a clean phase as "
        "long as the talker's lead-in. Its clock starts before the talker's graph (by 230-370 ms here), "
        "so the call meets the trace that many slots in; `opus_demo` reads the trace shifted by the same "
        "slots (`-lossfile`, one entry per packet; the shift from wzp-netem's `t0_unix_ms` and the "
        "talker's `graph started unix_ms`, in `anchor/NAME.shift`), so both lose the same frames of "
        "speech. The share lost differs from the nominal loss: it is what this seed drew."
    )
    L.append(
        "- **Schedule**: the proxy runs `--schedule` (time phases of one talker loop each: loss 0, 20, 0; "
        "its own seeded draws), and the far end's recording is cut and scored per loop; the anchor "
        "plays the speech three times over a trace with the same three phases (clean, random 20 %, "
        "clean). The 20 % phase therefore has the same statistics on both sides, not the same packets."
    )
    L.append(
        "- **Same packets, up to an offset**: the proxy's clock starts a moment before the talker's "
        "graph (process start, the first 20 ms tick), so the talker's frames meet the trace a fixed "
        "whole number of slots late, with the odd frame on a slot edge going to its neighbour; the loss "
        "pattern is the anchor's, shifted by that offset (measured from the start times, above), not packet for packet. "
        "A schedule in time, unlike `--trace` (per datagram), is not moved by the handshake, "
        "acknowledgements or telemetry on the path, and takes both directions down together as a real "
        "path does; a per-datagram trace also runs on the relay-to-talker direction, whose few "
        "acknowledgements make each run of losses seconds long there, and the talker's QUIC connection "
        "then timed out (3 s) and rejoined in the 160 ms-burst and outage conditions. "
        + (
            "The far end runs `graphs/call.toml` without its send chain (`benches/quality/listen_only.py`): "
            "it only listens, and sends no feedback reports, so the talker does not adapt."
            if a.far == "listen"
            else "The far end runs the shipped graph and sends its silent input too."
        )
        + " The relay and the proxy run with real-time priority (`chrt -f 10`) when allowed, as the clients do."
    )
    L.append(
        "- **One alignment per call**: which frames of speech a trace takes moves a call by 0.1-0.3 "
        "for both sides alike, and on burst traces calls at one alignment differ by up to ~0.2 with the "
        "far end's playout phase (finding 38), so a margin under ~0.2 in one call is within what those "
        "alone do. "
        + (
            f"Here each row is the median of {a.runs} calls, whose talkers started at alignments of their own. "
            if many
            else "This run made one call per condition (`RUNS=1`); the default, three, shows the median. "
        )
        + "`OFFLINE=1 bash benches/quality/live.sh` scores the same chain on the loopback against "
        "the anchor over seven alignments of each trace (`benches/quality/aligned.py`; finding 16)."
    )
    L.append(
        "- `opus_demo` runs at 16 kHz (the speech's rate; wzp's graph encodes at 48 kHz from the "
        "same 16 kHz input), voip, VBR, encoder complexity 10 (its default), no lookahead beyond the "
        "codec's; wzp's far end adds its jitter buffer and the path."
    )
    L.append("")
    L.append(f"- Command: `{a.command}`.")
    L.append(f"- Machine: {score.machine()}, shared with other work while it ran.")
    L.append(f"- Date: {now}; wzp at {git_rev()}; {a.opus_demo_version}.")
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("pesq", "pystoi", "numpy", "scipy"))
    L.append(f"- Scoring: Python {platform.python_version()}, {versions}.")
    L.append(f"- Wall time: {a.calls_seconds} s of live calls ({a.runs} per condition), {a.anchor_seconds} s of `opus_demo`.")
    return L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--ref", required=True)
    ap.add_argument("--segments", required=True)
    ap.add_argument("--conditions", required=True)
    ap.add_argument("--lead", type=float, required=True)
    ap.add_argument("--period", type=float, required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--command", default="bash benches/quality/live.sh")
    ap.add_argument("--sets", default="")
    ap.add_argument("--far", default="call", choices=["listen", "call"])
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--calls-seconds", type=int, default=0)
    ap.add_argument("--anchor-seconds", type=int, default=0)
    ap.add_argument("--opus-demo", default="opus_demo")
    ap.add_argument("--runs", type=int, default=1, help="calls per condition (live.sh's RUNS)")
    a = ap.parse_args()
    if not 1 <= a.runs <= 99:
        ap.error(f"--runs {a.runs}: calls per condition, from 1 to 99")
    a.opus_demo_version = "libopus 1.6.1 (opus_demo from opusic-sys's bundle)"

    segments, voices, pos = [], [], 0
    with open(a.segments) as f:
        for line in f:
            path, voice = line.split()
            n = sf.info(path).frames
            segments.append((pos, n))
            voices.append(voice)
            pos += n
    ref = score.read_pcm(a.ref)
    conds = load_conditions(os.path.join(a.work, "traces", "conditions.tsv"), a.conditions.split())
    tmpdir = os.path.join(a.work, "scored")
    os.makedirs(tmpdir, exist_ok=True)
    lives, infos, anchors = {}, {}, {}
    for cond in conds:
        name = cond["name"]
        lives[name], infos[name], anchors[name] = [], [], []
        for key in run_keys(cond, a.runs):
            res, info = live(cond, key, a, ref, segments, tmpdir)
            anc = anchor(cond, key, a, ref, segments, tmpdir)
            lives[name].append((res, info))
            infos[name].append(info)
            anchors[name].append(anc)
            for k, r in enumerate(res):
                an = " ".join(f"{s} {anc[s][k]['pesq']:.2f}" for s in SETTINGS)
                print(f"live_score: {key}[{k}] wzp PESQ {r['pesq']:.2f} STOI {r['stoi']:.3f} (segs {[round(x, 2) for x in r['seg_pesq']]}, lags {r['lag_ms']} ms); anchor {an}", file=sys.stderr)
    rows = rows_of(conds, lives, anchors, a)
    with open(os.path.join(a.work, "results.json"), "w") as f:
        json.dump(dict(rows=rows, infos=infos), f, indent=1)
    svg_plot(rows, a.svg)
    svg_name = os.path.relpath(a.svg, os.path.dirname(os.path.abspath(a.md)))
    L = section(a, conds, rows, infos, voices, segments, svg_name)
    try:
        with open(a.md) as f:
            old = f.read()
    except OSError:
        old = ""
    at = old.find(HEADING)
    head = old[:at] if at >= 0 else old
    head = head.rstrip() + "\n\n" if head.strip() else ""
    with open(a.md, "w") as f:
        f.write(head + "\n".join(L) + "\n")


if __name__ == "__main__":
    main()
