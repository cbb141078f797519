#!/usr/bin/env python3
"""Scores the quality bench's outputs and writes docs/QUALITY.md and docs/quality.svg.

Called by benches/quality/run.sh. For every run in the matrix it reads the
output WAV and the stats JSON, aligns each speech segment of the output with
the input (the chain delays the audio by its jitter buffer, lookahead and
resamplers), scores it with wideband PESQ (ITU-T P.862.2, via `pesq`) and
STOI (`pystoi`), and averages over the segments.
"""

import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata

import numpy as np
import soundfile as sf
from pesq import pesq
from pystoi import stoi
from scipy.signal import correlate

RATE = 16000
# Longest delay the chain may add (jitter buffer up to 400 ms, lookahead,
# codec and resampler delays); the lag search looks this far.
MAX_LAG_S = 1.0
# Slack around a segment when it is realigned on its own: the adaptive
# jitter buffer may move the playout point by whole frames mid-stream.
SEG_SLACK_S = 0.25

# The heading of docs/QUALITY.md's section written by live.sh (live_score.py).
LIVE_HEADING = "## Live calls against libopus's own loop"

MODES = {
    "plc": ("Opus, PLC only", "#7f7f7f", ""),
    "lbrr": ("Opus + LBRR", "#1f77b4", ""),
    "dred": ("Opus + DRED", "#d62728", ""),
    "dred30": ("Opus + DRED, loss hint 30 %", "#ff7f0e", ""),
    "c2fec": ("Codec2 1200 + RaptorQ", "#9467bd", ""),
    "c2plc": ("Codec2 1200, no FEC", "#9467bd", "6,4"),
}


def speech_segments(work):
    """The speech's utterances as (start, length) in samples, from the live
    bench's WORK/speech/segments.txt (one file per utterance, in order)."""
    segs, pos = [], 0
    with open(os.path.join(work, "speech", "segments.txt")) as f:
        for line in f:
            p, _voice = line.split()
            n = sf.info(p).frames
            segs.append((pos, n))
            pos += n
    return segs


def read_pcm(path):
    x, rate = sf.read(path, dtype="float64")
    if rate != RATE:
        sys.exit(f"score: {path} is {rate} Hz, expected {RATE}")
    if x.ndim > 1:
        x = x[:, 0]
    return x


def best_lag(ref, deg, lo, hi):
    """Lag (samples, deg behind ref) in lo..=hi that maximises the cross-correlation."""
    c = correlate(deg, ref, mode="full", method="fft")
    zero = len(ref) - 1
    lo_i, hi_i = max(0, zero + lo), min(len(c) - 1, zero + hi)
    if lo_i > hi_i:
        return lo
    return int(np.argmax(c[lo_i : hi_i + 1])) + lo_i - zero


def envelope(x, hop):
    """Rectified signal smoothed over 2 hops and sampled every hop (1 ms)."""
    n = len(x) // hop
    e = np.abs(x[: n * hop]).reshape(n, hop).mean(axis=1)
    return np.convolve(e, np.ones(2) / 2, mode="same")


def align(ref, deg, lo, hi):
    """Delay of `deg` behind `ref`, in lo..=hi samples.

    Waveform cross-correlation alone is fooled by vocoders (Codec2, DRED,
    PLC): they keep the spectral envelope but not the phase, so its peak can
    land a pitch period or two away. The lag is found on the 1 ms envelopes
    first, then refined on the waveform within +-2 ms.
    """
    hop = RATE // 1000
    coarse = best_lag(envelope(ref, hop), envelope(deg, hop), lo // hop, hi // hop) * hop
    fine = 2 * hop
    return best_lag(ref, deg, max(lo, coarse - fine), min(hi, coarse + fine))


def score_run(args):
    name, out_wav, ref_path, segments = args
    ref = read_pcm(ref_path)
    deg = read_pcm(out_wav)
    max_lag = int(MAX_LAG_S * RATE)
    if len(deg) < len(ref) + max_lag:
        deg = np.concatenate([deg, np.zeros(len(ref) + max_lag - len(deg))])
    lag = align(ref, deg[: len(ref) + max_lag], 0, max_lag)
    slack = int(SEG_SLACK_S * RATE)
    pesqs, stois, lags = [], [], []
    for start, length in segments:
        r = ref[start : start + length]
        lo = start + lag - slack
        win = deg[max(0, lo) : start + lag + length + slack]
        if lo < 0:
            win = np.concatenate([np.zeros(-lo), win])
        local = align(r, win, 0, 2 * slack) - slack
        lags.append(lag + local)
        b = start + lag + local
        d = deg[max(0, b) : b + length]
        if b < 0:
            d = np.concatenate([np.zeros(-b), d])
        if len(d) < length:
            d = np.concatenate([d, np.zeros(length - len(d))])
        try:
            pesqs.append(pesq(RATE, r, d, "wb"))
        except Exception as e:  # silent output: no utterance to score
            print(f"score: {name}: PESQ failed on a segment ({e}); counted as 1.0", file=sys.stderr)
            pesqs.append(1.0)
        stois.append(stoi(r, d, RATE, extended=False))
    return name, float(np.mean(pesqs)), float(np.mean(stois)), lags, pesqs


def counters(stats_path):
    with open(stats_path) as f:
        st = json.load(f)
    return {s["id"]: s.get("counters", {}) for s in st["stages"]}


def latency(binary, graph, sets):
    """Declared longest-path latency from `graph explain`, in ms."""
    cmd = [binary, "graph", "explain", graph]
    for kv in sets:
        cmd += ["--set", kv]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        if line.startswith("longest path:"):
            return float(line.split()[2])
    return None


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def fmt_cond(tag):
    loss, _, burst = tag[1:].partition("b")
    return f"{loss} % in {burst} ms bursts" if burst else f"{loss} %"


def svg_plot(rows, path):
    """PESQ and STOI against random loss, one line per mode, burst point apart."""
    W, H = 980, 450
    panels = [
        ("PESQ (P.862.2 wideband, MOS-LQO)", "pesq", 1.0, 4.6, [1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5]),
        ("STOI", "stoi", 0.4, 1.0, [0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]),
    ]
    randoms = [0, 5, 10, 20, 30]
    pw, ph, top, left0 = 360, 290, 50, 70
    gap = 120
    burst_dx = 48  # distance of the burst column right of the 30 % tick
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    for pi, (title, key, y0, y1, yticks) in enumerate(panels):
        left = left0 + pi * (pw + gap)
        xr = pw - burst_dx - 32

        def X(loss):
            return left + loss / 30.0 * xr

        def Y(v):
            v = min(max(v, y0), y1)
            return top + ph - (v - y0) / (y1 - y0) * ph

        bx = left + xr + burst_dx
        out.append(f'<text x="{left + pw / 2}" y="{top - 18}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>')
        for t in yticks:
            y = Y(t)
            out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#e5e5e5"/>')
            out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
        for l in randoms:
            x = X(l)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#f0f0f0"/>')
            out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{l}</text>')
        sep = left + xr + burst_dx / 2
        out.append(f'<line x1="{sep:.1f}" y1="{top}" x2="{sep:.1f}" y2="{top + ph}" stroke="#999" stroke-dasharray="3,3"/>')
        out.append(f'<text x="{bx:.1f}" y="{top + ph + 16}" text-anchor="middle">10 %</text>')
        out.append(f'<text x="{bx:.1f}" y="{top + ph + 30}" text-anchor="middle">bursts</text>')
        out.append(f'<text x="{left + xr / 2}" y="{top + ph + 36}" text-anchor="middle">random loss (%)</text>')
        for mi, (mode, (label, color, dash)) in enumerate(MODES.items()):
            pts = sorted(
                (int(r["tag"][1:]), r[key]) for r in rows if r["mode"] == mode and "b" not in r["tag"]
            )
            if not pts:
                continue
            d = " ".join(f"{X(l):.1f},{Y(v):.1f}" for l, v in pts)
            da = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{da}/>')
            for l, v in pts:
                out.append(f'<circle cx="{X(l):.1f}" cy="{Y(v):.1f}" r="3.5" fill="{color}"/>')
            for r in rows:
                if r["mode"] == mode and "b" in r["tag"]:
                    # Spread the burst markers sideways so equal scores stay visible.
                    mx = bx + (mi - (len(MODES) - 1) / 2) * 6
                    out.append(
                        f'<rect x="{mx - 4:.1f}" y="{Y(r[key]) - 4:.1f}" width="8" height="8" '
                        f'fill="{color}" fill-opacity="{0.45 if dash else 1}" stroke="{color}"/>'
                    )
    # Legend under the panels, three entries a row.
    shown = [(m, v) for m, v in MODES.items() if any(r["mode"] == m for r in rows)]
    for i, (mode, (label, color, dash)) in enumerate(shown):
        lx = left0 + (i % 3) * 290
        ly = H - 46 + (i // 3) * 22
        da = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{ly}" x2="{lx + 26}" y2="{ly}" stroke="{color}" stroke-width="2"{da}/>')
        out.append(f'<circle cx="{lx + 13}" cy="{ly}" r="3.5" fill="{color}"/>')
        out.append(f'<text x="{lx + 32}" y="{ly + 4}">{label}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref", required=True)
    ap.add_argument("--segments", required=True)
    ap.add_argument("--matrix", required=True)
    ap.add_argument("--outdir", required=True)
    ap.add_argument("--md", required=True)
    ap.add_argument("--svg", required=True)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--command", default="bash benches/quality/run.sh")
    ap.add_argument("--chains-seconds", type=int, default=None, help="wall time of the chain runs")
    ap.add_argument("--bin", default="./target/release/wzp-client")
    a = ap.parse_args()

    segments, voices, pos = [], [], 0
    with open(a.segments) as f:
        for line in f:
            path, voice = line.split()
            n = sf.info(path).frames
            segments.append((pos, n))
            voices.append(voice)
            pos += n

    runs = []
    with open(a.matrix) as f:
        for line in f:
            name, mode, tag, graph, clock, *sets = line.split()
            runs.append(dict(name=name, mode=mode, tag=tag, graph=graph, clock=clock, sets=sets))

    jobs = [(r["name"], os.path.join(a.outdir, r["name"] + ".wav"), a.ref, segments) for r in runs]
    with ProcessPoolExecutor(max_workers=a.jobs) as ex:
        scored = {name: (p, s, lags, segp) for name, p, s, lags, segp in ex.map(score_run, jobs)}

    rows = []
    lat_cache = {}
    for r in runs:
        p, s, lags, segp = scored[r["name"]]
        c = counters(os.path.join(a.outdir, r["name"] + ".json"))
        net, dec, jb, fec = c.get("net", {}), c.get("dec", {}), c.get("jb", {}), c.get("fec_dec", {})
        key = (r["mode"], r["graph"])
        if key not in lat_cache:
            lat_cache[key] = latency(a.bin, r["graph"], [kv for kv in r["sets"] if not kv.startswith(("loss=", "burst=", "seed=", "expected_loss="))])
        rows.append(
            dict(
                r,
                pesq=p,
                stoi=s,
                seg_pesq=segp,
                lag_ms=[round(l / RATE * 1000) for l in lags],
                sent=net.get("passed", 0) + net.get("lost", 0),
                lost=net.get("lost", 0),
                dred=dec.get("dred_reconstructions"),
                lbrr=dec.get("fec_recovered"),
                raptorq=fec.get("recovered", 0),
                plc=dec.get("classical_plc_invocations", 0),
                late=jb.get("late", 0),
                glitches=jb.get("resets", 0) + dec.get("underruns", 0),
                decoded=dec.get("frames_decoded", 0),
                latency=lat_cache[key],
            )
        )
        print(f"{r['name']:<14} PESQ {p:.2f}  STOI {s:.3f}  lags {rows[-1]['lag_ms']} ms  segs {[round(x, 2) for x in segp]}", file=sys.stderr)

    svg_plot(rows, a.svg)
    write_md(a, rows, voices, segments)


def cell(v):
    return "–" if v is None else str(v)


def write_md(a, rows, voices, segments):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    total_s = sum(n for _, n in segments) / RATE
    by = {(r["mode"], r["tag"]): r for r in rows}
    tags = []
    for r in rows:
        if r["tag"] not in tags:
            tags.append(r["tag"])
    L = []
    L.append("# Loss-recovery quality")
    L.append("")
    L.append(
        "How well each recovery mode of the media chain holds up under packet loss, "
        "scored against the input with **wideband PESQ** (ITU-T P.862.2, MOS-LQO 1.04-4.64, "
        "PyPI `pesq`) and **STOI** (0-1, intelligibility, PyPI `pystoi`). Generated by "
        f"`{a.command}` (see `benches/quality/`); regenerate rather than edit."
    )
    L.append("")
    L.append("![PESQ and STOI against loss](quality.svg)")
    L.append("")
    L.append("## Setup")
    L.append("")
    L.append(
        f"- **Speech**: {len(segments)} segments of Harvard sentences synthesised by espeak-ng "
        f"(voices {', '.join('`' + v + '`' for v in voices)}), 16 kHz mono, {total_s:.1f} s in all, "
        "played back to back through one chain per condition. Each segment is realigned on its "
        "own (cross-correlation) and scored alone; the figures are the mean over segments. "
        "Synthetic speech is not a recording, so absolute scores do not carry over to "
        "real talkers; the comparison between modes is the point."
    )
    L.append(
        "- **Chain**: `graphs/loopback.toml` (Opus `good`: 24 kbps, 20 ms frames) and "
        "`graphs/loopback-codec2.toml` (Codec2 1200 bps, 40 ms frames), "
        "16 kHz in, 48 kHz inside, 16 kHz out; netem on encoded frames, seed 7."
    )
    L.append(
        "- **Loss**: independent random loss at 0/5/10/20/30 %, and Gilbert-Elliott bursts "
        "with 10 % mean loss and a mean burst of 5 items (`burst=100ms`: 100 ms of Opus, "
        "but 5 Codec2 frames or repair frames, up to 200 ms of Codec2 audio)."
    )
    L.append("")
    L.append("| mode | settings | declared latency |")
    L.append("|---|---|---|")
    settings = {
        "plc": "`dred_ms=0 inband_fec=false expected_loss=0`: the decoder conceals losses (Opus PLC)",
        "lbrr": "`inband_fec=true dred_ms=0 expected_loss=<loss>`, lookahead 1: each packet carries the previous frame at low rate (SILK LBRR)",
        "dred": "`dred_ms={} expected_loss=<loss> lookahead={}`: each packet carries a low-rate history (Opus 1.5+ DRED, neural); the decoder holds frames to rebuild bursts",
        "dred30": "as above with `expected_loss=max(30, loss)`: the loss hint sizes DRED's bit budget, and so how far back it reaches (see findings)",
        "c2fec": "Codec2 1200, RaptorQ `fec_ratio=100 frames_per_block=4`, jitter buffer 200 ms",
        "c2plc": "Codec2 1200, `fec_ratio=0`, jitter buffer 20-40 ms: repeat-and-fade concealment only",
    }
    for mode, (label, _, _) in MODES.items():
        mrows = [r for r in rows if r["mode"] == mode]
        if not mrows:
            continue
        s = settings[mode]
        if mode in ("dred", "dred30"):
            kv = dict(x.split("=", 1) for x in mrows[0]["sets"])
            s = s.format(kv.get("dred_ms"), kv.get("lookahead"))
        lat = mrows[0]["latency"]
        L.append(f"| {label} | {s} | {cell(None if lat is None else f'{lat:.0f} ms')} |")
    L.append("")
    L.append("## Results")
    L.append("")
    L.append(
        "`sent`/`lost`: items through netem (Codec2+RaptorQ counts repair frames too). "
        "`DRED`, `LBRR`, `RaptorQ`: frames rebuilt by each; `PLC`: frames concealed; "
        "`late`: frames (e.g. RaptorQ-rebuilt) that reached the jitter buffer after their "
        "playout time; `glitches`: jitter-buffer resets plus decoder underruns (each one "
        "silence or a re-sync, not loss recovery). Per-segment PESQ in parentheses."
    )
    L.append("")
    L.append("| mode | loss | PESQ | STOI | lost / sent | DRED | LBRR | RaptorQ | PLC | late | glitches | PESQ per segment |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for mode, (label, _, _) in MODES.items():
        for tag in tags:
            r = by.get((mode, tag))
            if r is None:
                continue
            segs = " ".join(f"{x:.2f}" for x in r["seg_pesq"])
            L.append(
                f"| {label} | {fmt_cond(tag)} | {r['pesq']:.2f} | {r['stoi']:.3f} | "
                f"{r['lost']} / {r['sent']} | {cell(r['dred'])} | {cell(r['lbrr'])} | "
                f"{r['raptorq'] if r['graph'].endswith('codec2.toml') else '–'} | {r['plc']} | {r['late']} | {r['glitches']} | ({segs}) |"
            )
    L.append("")
    L.append("## Reading")
    L.append("")
    L.extend(reading(by, tags))
    L.append("")
    findings = os.path.join(os.path.dirname(os.path.abspath(__file__)), "findings.md")
    if os.path.exists(findings):
        with open(findings) as f:
            L.append(f.read().rstrip())
        L.append("")
    L.append("## Run")
    L.append("")
    L.append(f"- Command: `{a.command}` (parallelism {a.jobs}).")
    L.append(f"- Machine: {machine()}.")
    L.append(f"- Date: {now}.")
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in ("pesq", "pystoi", "numpy", "scipy"))
    L.append(f"- Scoring: Python {platform.python_version()}, {versions}.")
    if a.chains_seconds is not None:
        L.append(f"- Wall time of the {len(rows)} chain runs: {a.chains_seconds} s (scoring adds about half a minute).")
    L.append(
        "- Opus runs use the fast clock; Codec2 runs the real-time clock, because its encoder, "
        "decoder and the RaptorQ stages hand work to threads whose answers land in varying "
        "cycles under the fast clock (outputs then differ from run to run)."
    )
    # The live bench (live.sh) owns the section from its heading to the end:
    # keep it as it is.
    try:
        with open(a.md) as f:
            old = f.read()
    except OSError:
        old = ""
    at = old.find(LIVE_HEADING)
    if at >= 0:
        L.append("")
        L.append(old[at:].rstrip())
    with open(a.md, "w") as f:
        f.write("\n".join(L) + "\n")


def reading(by, tags):
    """A few sentences generated from the numbers, so they cannot drift from the table."""
    out = []

    def g(mode, tag, key="pesq"):
        r = by.get((mode, tag))
        return None if r is None else r[key]

    p0 = g("plc", "l0")
    if p0 is not None:
        c2 = g("c2fec", "l0")
        out.append(
            f"- Without loss Opus scores {p0:.2f} PESQ"
            + (f"; Codec2 1200 scores {c2:.2f}, its ceiling (narrowband, 1.2 kbps)." if c2 is not None else ".")
        )
    for tag in ("l10", "l20", "l30", "l10b100"):
        vals = {m: g(m, tag) for m in MODES if g(m, tag) is not None}
        if not vals:
            continue
        ranked = sorted(vals.items(), key=lambda kv: -kv[1])
        s = "; ".join(f"{MODES[m][0]}: {v:.2f}" for m, v in ranked)
        out.append(f"- At {fmt_cond(tag)}, best first: {s}.")
    return out


if __name__ == "__main__":
    main()
