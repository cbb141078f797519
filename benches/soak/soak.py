#!/usr/bin/env python3
"""The soak bench: one long call through changing network conditions.

A real relay and two real clients on loopback; Alice reaches the relay
through `wzp-netem`, whose schedule cycles through conditions (clean, random
loss, bursts, a rate cap, delay with jitter, heavy loss), each followed by a
clean phase. Both talk (the built-in speech, looped); Bob records what he
hears. Every few seconds the bench samples each process's resident memory
and both clients' per-stage figures (`--stats-json`). At the end it writes a
report (target/soak/soak.md): per phase, what Alice's controller had chosen
at the phase's end, what Bob's jitter buffer did with Alice's stream
(played, concealed, late, resets, its delay at the phase's end) and the
level of Bob's recording; and the memory of every process over the call.

It answers the questions a short test cannot: does a call that lasts an
hour stay healthy? Does every clean phase return to the clean settings
and delay, the last as the first? Does memory stay flat?

    python3 benches/soak/soak.py                 # 30 minutes: two cycles of 90 s phases
    python3 benches/soak/soak.py --minutes 60 --phase 120
    python3 benches/soak/soak.py --minutes 5 --phase 30 --build   # quick look, builds first
    python3 benches/soak/soak.py --minutes 6 --cycle jitter       # clean and jitter, in turn

Not a test and not run in CI (it takes as long as it is told to). Needs the
release binaries (`cargo build --release -p wzp-client -p wzp-relay`, or
`--build`). Exits non-zero when a process dies, a client stops early, or
the call goes silent (Bob's recording stops growing).
"""

import argparse
import array
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import wave

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The conditions a cycle goes through (netem KEY=VALUE changes), each
# followed by a clean phase; `--cycle` picks some of them.
CONDITIONS = {
    "r20": ("random 20 %", "loss=20"),
    "ge60": ("60 ms bursts, 14 %", "loss=14,burst=60"),
    "cap16": ("rate cap 16 kb/s", "rate=16"),
    "cap12": ("rate cap 12 kb/s", "rate=12"),
    "jitter": ("delay 80 ms, jitter 30 ms", "delay=80,jitter=30"),
    "r30": ("random 30 %", "loss=30"),
    # A route 60 ms longer each way, with loss on it: the reports read the
    # rise as a standing queue until their floor follows it (10-20 s).
    "route": ("random 10 % on a route 60 ms longer", "loss=10,delay=60"),
}
DEFAULT_CYCLE = "r20,ge60,cap16,jitter,r30"

def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    log(f"error: {msg}")
    sys.exit(1)


def wait_line(path, pattern, secs, what, proc=None):
    """The first line of `path` matching `pattern`, waiting up to `secs`."""
    deadline = time.monotonic() + secs
    rx = re.compile(pattern)
    while True:
        try:
            with open(path) as f:
                for line in f:
                    if rx.search(line):
                        return line.strip()
        except FileNotFoundError:
            pass
        if proc is not None and proc.poll() is not None:
            fail(f"{what}: the process exited ({proc.returncode}); see {path} and its .err")
        if time.monotonic() > deadline:
            fail(f"no {what} within {secs} s (see {path})")
        time.sleep(0.1)


def field(line, key):
    m = re.search(rf"\b{key}=(\S+)", line)
    return m.group(1) if m else None


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def relay_heap_kib(addr):
    """The relay's heap in use (`wzp_relay_heap_bytes` on /metrics), KiB."""
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=2) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("wzp_relay_heap_bytes "):
                    return int(float(line.split()[1])) // 1024
    except (OSError, ValueError):
        return None
    return None


def stats(path):
    """{stage id: stage} of a client's --stats-json, or None mid-rewrite."""
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError):
        return None
    out = {s["id"]: s for s in d.get("stages", [])}
    out["_domains"] = d.get("domains", [])
    return out


def talker_jb(st):
    """Bob's jitter buffer that plays Alice: the one that played most."""
    best = None
    for sid, s in st.items():
        if sid.startswith("jb") and isinstance(s, dict):
            played = s["counters"].get("played", 0)
            if best is None or played > best[1]["counters"].get("played", 0):
                best = (sid, s)
    return best[1] if best else None


def wav_samples(path):
    try:
        return max(0, (os.path.getsize(path) - 44) // 2)
    except OSError:
        return 0


def level_dbfs(path, start, end, rate):
    """RMS level of samples start..end of a 16-bit mono WAV, dBFS."""
    if end <= start:
        return None
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2 or w.getnchannels() != 1:
            return None
        rate_w = w.getframerate()
        s0 = int(start * rate_w / rate)
        s1 = min(int(end * rate_w / rate), w.getnframes())
        if s1 <= s0:
            return None
        w.setpos(s0)
        a = array.array("h")
        a.frombytes(w.readframes(s1 - s0))
    if not a:
        return None
    ms = sum(x * x for x in a) / len(a)
    if ms <= 0:
        return -120.0
    import math

    return 10 * math.log10(ms / (32768.0 * 32768.0))


def main():
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the call (default 30)")
    ap.add_argument("--phase", type=float, default=90.0, help="seconds per phase (default 90)")
    ap.add_argument("--sample", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--cycle", default=DEFAULT_CYCLE,
                    help=f"conditions of a cycle, each followed by a clean phase (default {DEFAULT_CYCLE}; "
                    f"any of {', '.join(CONDITIONS)})")
    ap.add_argument("--seed", type=int, default=1, help="wzp-netem's seed (default 1)")
    ap.add_argument("--rel", default=os.path.join(ROOT, "target", "release"), help="the binaries' directory")
    ap.add_argument("--work", default=os.path.join(ROOT, "target", "soak"), help="where files go")
    ap.add_argument("--build", action="store_true", help="cargo build --release first")
    a = ap.parse_args()
    if a.minutes <= 0 or a.phase < 10 or a.sample <= 0:
        fail("--minutes above 0, --phase of 10 s or more, --sample above 0")
    if a.build:
        log("building the release binaries")
        r = subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "wzp-client", "-p", "wzp-relay"], cwd=ROOT
        )
        if r.returncode != 0:
            fail("cargo build --release failed (see above)")
    for b in ("wzp-client", "wzp-relay", "wzp-netem"):
        if not os.access(os.path.join(a.rel, b), os.X_OK):
            fail(f"{a.rel}/{b} is missing: cargo build --release -p wzp-client -p wzp-relay (or --build)")

    names = [c.strip() for c in a.cycle.split(",") if c.strip()]
    bad = [c for c in names if c not in CONDITIONS]
    if not names or bad:
        fail(f"--cycle {a.cycle!r}: conditions are {', '.join(CONDITIONS)}")
    cycle = []
    for c in names:
        cycle += [("clean", ""), CONDITIONS[c]]
    total_s = a.minutes * 60.0
    nphases = max(1, int(total_s // a.phase))
    phases = [cycle[i % len(cycle)] for i in range(nphases)]
    schedule = ";".join(f"{a.phase:g}s" + (f":{ch}" if ch else "") for _, ch in phases)
    os.makedirs(a.work, exist_ok=True)
    for f in os.listdir(a.work):
        p = os.path.join(a.work, f)
        if os.path.isfile(p):
            os.remove(p)
    W = lambda name: os.path.join(a.work, name)  # noqa: E731
    procs = {}

    def start(name, argv):
        out = open(W(f"{name}.out"), "w")
        err = open(W(f"{name}.err"), "w")
        procs[name] = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
        return procs[name]

    def stop_all():
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    try:
        relay = start("relay", [f"{a.rel}/wzp-relay", "-i", W("relay.seed"), "--listen", "127.0.0.1:0",
                                "--metrics-addr", "127.0.0.1:0"])
        line = wait_line(W("relay.out"), r"^listening ", 20, "'listening' line from wzp-relay", relay)
        quic, fp, metrics = field(line, "quic"), field(line, "fingerprint"), field(line, "metrics")
        netem = start(
            "netem",
            [f"{a.rel}/wzp-netem", "--listen", "127.0.0.1:0", "--to", quic, "--seed", str(a.seed),
             "--schedule", schedule],
        )
        line = wait_line(W("netem.out"), r"^listening ", 20, "'listening' line from wzp-netem", netem)
        proxy = field(line, "udp")
        t0 = int(field(line, "t0_unix_ms")) / 1000.0
        common = ["--room", "soak", "--room-secret", "a soak test's secret", "--relay-fingerprint", fp,
                  "--quiet", "--input", "builtin", "--duration", f"{total_s + 5:.0f}s"]
        bob = start("bob", [f"{a.rel}/wzp-client", "join", "--relay", quic, *common, "--alias", "bob",
                            "--identity", W("bob.seed"), "--known-relays", W("bob.known"),
                            "--output", W("bob.wav"), "--stats-json", W("bob.json")])
        wait_line(W("bob.out"), r"in the room\)$", 30, "sign that Bob joined", bob)
        alice = start("alice", [f"{a.rel}/wzp-client", "join", "--relay", proxy, *common, "--alias", "alice",
                                "--identity", W("alice.seed"), "--known-relays", W("alice.known"),
                                "--output", "null", "--stats-json", W("alice.json")])
        wait_line(W("alice.out"), r"in the room\)$", 30, "sign that Alice joined", alice)
        log(f"{nphases} phases of {a.phase:g} s ({a.minutes:g} min); files in {a.work}")

        samples = []  # (t since t0, {name: rss}, bob wav samples, alice stats, bob stats)
        ends = {}  # phase index -> sample at its end
        last_growth = time.monotonic()
        last_wav = 0
        end_t = nphases * a.phase
        while True:
            now = time.time() - t0
            for name, p in procs.items():
                if p.poll() is not None:
                    fail(f"{name} exited ({p.returncode}) at {now:.0f} s; see {W(name + '.err')}")
            wav = wav_samples(W("bob.wav"))
            if wav > last_wav:
                last_wav, last_growth = wav, time.monotonic()
            elif time.monotonic() - last_growth > 10:
                fail(f"Bob's recording stopped growing at {now:.0f} s")
            mem = {n: rss_kib(p.pid) for n, p in procs.items()}
            mem["relay heap"] = relay_heap_kib(metrics)
            sample = (now, mem, wav, stats(W("alice.json")), stats(W("bob.json")))
            samples.append(sample)
            ph = int(now // a.phase)
            # The last sample of each phase (overwritten until it ends).
            if 0 <= ph < nphases:
                ends[ph] = sample
            if now >= end_t:
                break
            nxt = min(a.sample, a.phase - (now % a.phase) - 0.5)
            time.sleep(max(0.2, nxt))
    finally:
        stop_all()

    report(a, phases, samples, ends)


def counters(s, key):
    return s["counters"].get(key, 0) if s else 0


def report(a, phases, samples, ends):
    rate = 16000
    try:
        with wave.open(os.path.join(a.work, "bob.wav"), "rb") as w:
            rate = w.getframerate()
    except (OSError, wave.Error, EOFError):
        pass
    lines = [
        "# Soak: one call through changing conditions",
        "",
        f"{len(phases)} phases of {a.phase:g} s ({a.minutes:g} min), wzp-netem seed {a.seed}, "
        f"sampled every {a.sample:g} s, release build; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "Alice's path to the relay runs through the proxy; Bob hears her. Per phase, at its end:",
        "Alice's controller (tier's bit rate, LBRR, DRED, RaptorQ ratio), Bob's jitter buffer on",
        "Alice's stream over the phase (frames played, concealed, late, resets) and its delay at",
        "the end, the level of Bob's recording over the phase.",
        "",
        "| # | phase | bit rate | LBRR | DRED ms | RaptorQ % | played | concealed | late | resets | delay ms | target ms | level dBFS |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    prev = None
    prev_wav = 0
    for i, (name, _) in enumerate(phases):
        s = ends.get(i)
        if s is None:
            lines.append(f"| {i + 1} | {name} | (no sample) |||||||||||")
            continue
        _, _, wav, ast, bst = s
        ad = (ast or {}).get("adapt", {}).get("gauges", {})
        jb = talker_jb(bst or {}) or {"counters": {}, "gauges": {}}
        pjb = talker_jb(prev[4] or {}) if prev else None
        d = {k: counters(jb, k) - counters(pjb, k) for k in ("played", "concealed", "late", "resets")}
        lvl = level_dbfs(os.path.join(a.work, "bob.wav"), prev_wav, wav, rate)
        lines.append(
            f"| {i + 1} | {name} | {ad.get('bitrate', '')} | {ad.get('lbrr', '')} | {ad.get('dred_ms', '')} "
            f"| {ad.get('fec_ratio', '')} | {d['played']} | {d['concealed']} | {d['late']} | {d['resets']} "
            f"| {jb['gauges'].get('current_delay_ms', '')} | {jb['gauges'].get('target_delay_ms', '')} "
            f"| {'' if lvl is None else f'{lvl:.1f}'} |"
        )
        prev, prev_wav = s, wav
    lines += ["", "Memory (MiB) over the call: each process's resident set, and the heap the relay's",
              "allocator counts in use (`wzp_relay_heap_bytes`):", "",
              "| process | at 1 min | at the middle | at the end | end - 1 min |",
              "|---|---:|---:|---:|---:|"]
    first = next((s for s in samples if s[0] >= 60), samples[0])
    mid = samples[len(samples) // 2]
    last = samples[-1]
    for n in ("relay", "relay heap", "netem", "alice", "bob"):
        v = [x[1].get(n) for x in (first, mid, last)]
        if None in v:
            continue
        lines.append(f"| {n} | {v[0] / 1024:.1f} | {v[1] / 1024:.1f} | {v[2] / 1024:.1f} | {(v[2] - v[0]) / 1024:+.1f} |")
    xr = []
    for who, idx in (("alice", 3), ("bob", 4)):
        st = last[idx] or {}
        for dmn in st.get("_domains", []):
            xr.append(f"{who} {dmn.get('domain')}: {dmn.get('xruns', 0)} xruns in {dmn.get('cycles', 0)} cycles")
    if xr:
        lines += ["", "Scheduler: " + "; ".join(xr) + "."]
    out = os.path.join(a.work, "soak.md")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    log(f"report: {out}")


if __name__ == "__main__":
    main()
