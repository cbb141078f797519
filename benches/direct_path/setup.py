#!/usr/bin/env python3
"""How soon a direct call's media leaves the relays: the time from the
caller's `answered by` line to each party's `direct path to ... up` line.

Real relays and two real clients on loopback (release builds): Bob listens
`--accept trusted`, Alice calls him, each run in a fresh directory with
fresh identities. Two set-ups:

- one relay: both register at it; it hands each the other's address.
- across relays: Alice at r1, Bob at r3, r1 linked to r3; the two seal
  their addresses for each other (`call_path`), one relay round trip more.

With `--nats` (root: network namespaces and iptables, as the NAT tests in
client-graph/tests/direct_call.rs, whose `nats.sh` it runs), one relay on
a public network and each party behind its own NAT instead: two home
routers (hole punching), then the caller's NAT symmetric, then the
callee's (the birthday search, which starts once the plain path failed),
then the caller behind a carrier-grade NAT that moves ports but keeps one
mapping per socket and the callee's symmetric (the caller sprays, known to
keep its mapping by the relay's mapping test).

    python3 benches/direct_path/setup.py            # 5 calls each
    python3 benches/direct_path/setup.py --runs 11
    sudo python3 benches/direct_path/setup.py --nats --runs 5

Not a test and not run in CI (timings are measured, not asserted; the
figures are in docs/PERFORMANCE.md). Needs
`cargo build --release -p wzp-client -p wzp-relay`. Exits non-zero when a
process does not print what it should within 30 s.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release")
NATS_SH = os.path.join(ROOT, "client-graph", "tests", "nats.sh")
WAIT = 30.0


class Proc:
    """A process whose output lines are kept with the time they came."""

    def __init__(self, name, args):
        self.name = name
        self.p = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines = []
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip()))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, needle):
        """(time, line) of the first line holding `needle`."""
        deadline = time.monotonic() + WAIT
        with self.cond:
            while True:
                for t, line in self.lines:
                    if needle in line:
                        return t, line
                left = deadline - time.monotonic()
                if left <= 0:
                    tail = "\n".join(l for _, l in self.lines[-8:])
                    sys.exit(f"{self.name} printed no {needle!r}:\n{tail}")
                self.cond.wait(min(left, 0.5))

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


def http_until(addr, path, ok):
    """Polls the relay's HTTP `path` until `ok(body)`: what a relay knows is
    read, not pushed."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr}{path}", timeout=2) as r:
                if ok(r.read().decode()):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"GET {path} on {addr} never satisfied the wait")


def in_ns(ns, args):
    return ["ip", "netns", "exec", ns] + args if ns else args


def relay(d, name, config, ns=None, listen="127.0.0.1:0"):
    cfg = os.path.join(d, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(config)
    p = Proc(
        name,
        in_ns(ns, [os.path.join(BIN, "wzp-relay"), "-c", cfg, "-i", os.path.join(d, f"{name}.seed"),
                   "--listen", listen, "--metrics-addr", "127.0.0.1:0", "--label", name]),
    )
    _, line = p.wait_line("listening ")
    f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
    return p, f["quic"], f["fingerprint"], f["metrics"]


def client(d, user, at, sub, extra, ns=None):
    addr, fp = at
    return Proc(
        user,
        in_ns(ns, [os.path.join(BIN, "wzp-client")] + sub
              + ["--relay", addr, "--relay-fingerprint", fp,
                 "--identity", os.path.join(d, f"{user}.seed"),
                 "--known-relays", os.path.join(d, f"{user}.known"), "--no-realtime"]
              + extra),
    )


def one_call(across):
    """(caller, callee): ms from the answer to each one's path up."""
    d = tempfile.mkdtemp(prefix="wzp-path-setup-")
    procs = []
    try:
        if across:
            seed1 = os.path.join(d, "r1.seed")
            fp1 = subprocess.check_output(
                [os.path.join(BIN, "wzp-relay"), "fingerprint", "-i", seed1],
                text=True, stderr=subprocess.DEVNULL,
            ).strip()
            r3, a3, f3, m3 = relay(d, "r3", f'[[trusted]]\nfingerprint = "{fp1}"\nlabel = "r1"\n')
            procs.append(r3)
            r1, a1, f1, m1 = relay(
                d, "r1", f'[[peers]]\naddress = "{a3}"\nfingerprint = "{f3}"\nlabel = "r3"\n'
            )
            procs.append(r1)
            http_until(m1, "/metrics", lambda b: 'wzp_federation_peer_status{peer="r3"} 2' in b)
        else:
            r1, a1, f1, m1 = relay(d, "r1", "")
            procs.append(r1)
            a3, f3 = a1, f1
        bob = client(d, "bob", (a3, f3), ["listen"],
                     ["--accept", "trusted", "--once", "--duration", "6s",
                      "--input", "tone", "--output", "null"])
        procs.append(bob)
        _, reg = bob.wait_line("registered as ")
        bob_fp = reg.split()[2]
        if across:
            http_until(m1, f"/route/{bob_fp}", lambda b: '"route":"peer"' in b)
        alice = client(d, "alice", (a1, f1), ["call", bob_fp],
                       ["--duration", "3s", "--input", "tone", "--output", "null"])
        procs.append(alice)
        t0, _ = alice.wait_line("answered by")
        ta, up_a = alice.wait_line("direct path to ")
        tb, up_b = bob.wait_line("direct path to ")
        if " up " not in up_a or " up " not in up_b:
            sys.exit(f"no direct path: {up_a!r} / {up_b!r}")
        alice.p.wait(timeout=WAIT)
        return (ta - t0) * 1000, (tb - t0) * 1000
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(d, ignore_errors=True)


def one_nat_call(kind):
    """(caller, callee): ms from the answer to each one's path up, each
    party behind its own NAT of `kind` (nats.sh), the relay between."""
    tag = f"wb{os.getpid() % 100000}"
    d = tempfile.mkdtemp(prefix="wzp-path-setup-")
    procs = []
    subprocess.run(["bash", NATS_SH, tag, kind], check=True)
    try:
        r, listen, fp, _ = relay(d, "r1", "", ns=f"{tag}pub", listen="0.0.0.0:0")
        procs.append(r)
        port = listen.rsplit(":", 1)[1]
        bob = client(d, "bob", (f"10.0.2.1:{port}", fp), ["listen"],
                     ["--accept", "trusted", "--once", "--duration", "12s",
                      "--input", "tone", "--output", "null"], ns=f"{tag}b")
        procs.append(bob)
        _, reg = bob.wait_line("registered as ")
        alice = client(d, "alice", (f"10.0.1.1:{port}", fp), ["call", reg.split()[2]],
                       ["--duration", "10s", "--input", "tone", "--output", "null"],
                       ns=f"{tag}a")
        procs.append(alice)
        t0, _ = alice.wait_line("answered by")
        ta, _ = alice.wait_line(" up (local port ")
        tb, _ = bob.wait_line(" up (local port ")
        return (ta - t0) * 1000, (tb - t0) * 1000
    finally:
        for p in procs:
            p.stop()
        for n in ("pub", "na", "nb", "a", "b"):
            subprocess.run(["ip", "netns", "del", f"{tag}{n}"], stderr=subprocess.DEVNULL)
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="calls per set-up (default 5)")
    ap.add_argument("--nats", action="store_true",
                    help="each party behind its own NAT in network namespaces (root)")
    args = ap.parse_args()
    for exe in ("wzp-client", "wzp-relay"):
        if not os.path.exists(os.path.join(BIN, exe)):
            sys.exit(f"{exe} is missing: cargo build --release -p wzp-client -p wzp-relay")
    print("set-up          caller: path up after the answer (ms)    callee")
    if args.nats:
        if os.geteuid() != 0:
            sys.exit("--nats needs root (network namespaces, iptables)")
        for kind, name in (("home", "two home NATs"), ("a-symmetric", "caller symm."),
                           ("b-symmetric", "callee symm."),
                           ("a-cgn-b-symmetric", "CGN to symm.")):
            runs = [one_nat_call(kind) for _ in range(args.runs)]
            a = [round(r[0]) for r in runs]
            b = [round(r[1]) for r in runs]
            print(f"{name:15} median {statistics.median(a):5.0f} {a}    "
                  f"median {statistics.median(b):5.0f} {b}")
        return
    for across in (False, True):
        runs = [one_call(across) for _ in range(args.runs)]
        a = [round(r[0]) for r in runs]
        b = [round(r[1]) for r in runs]
        name = "across relays" if across else "one relay"
        print(f"{name:15} median {statistics.median(a):5.0f} {a}    "
              f"median {statistics.median(b):5.0f} {b}")


if __name__ == "__main__":
    main()
