"""Why the fallback delayer released packets late on an idle host, and what its policy changes.

    sudo .venv/bin/python benchmarks/delayer_wake.py [--wakes 2000] [--seconds 6] [--reps 2]

Two parts, every variant alternated with the others ``--reps`` times (other work on the
machine drifts; one variant after the other would measure the drift):

1. ``wake``: a bare loop that arms an absolute ``timerfd`` (CLOCK_MONOTONIC, as the delayer does)
   1-5 ms ahead, waits for it and records ``now - due``: the delayer's wake-up without its packets.
   Variants: normal task (SCHED_OTHER) or SCHED_FIFO 1; with or without the host warmer's
   SCHED_IDLE spinners (edgelab.hostload.HostWarmer, one per CPU); epoll (the delayer's) or a
   blocking read; the default 50 us timer slack or 1 ns; and a busy-wait on the clock instead of a
   sleep, the floor that Python's own per-wake overhead sets.
2. ``delayer``: the real delayer (edgelab.linkemu) on a veth pair with 2 ms each way, a ping
   at 50/s through it, and its own lateness counters (edgelab.linkemu.lateness: mean ``now -
   due`` per released packet, share > 1 ms): normal vs SCHED_FIFO (LinkEmulator's ``delayer_rt``),
   idle, with the warmer, and beside ``--load`` normal busy processes (50 % duty: a folded host).

Prints one line per variant and repetition, then the medians. Timing figures only: no assert.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PR_SET_TIMERSLACK = 29


# ------------------------------------------------------------------ part 1: the bare wake-up
def wake_loop(n: int, mode: str, slack_ns: int | None) -> list[float]:
    """Lateness (s) of ``n`` timerfd wake-ups 1-5 ms apart (``mode``: epoll, read or spin)."""
    import random

    libc = ctypes.CDLL(None, use_errno=True)
    libc.timerfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
    if slack_ns is not None:
        libc.prctl(PR_SET_TIMERSLACK, slack_ns, 0, 0, 0)
    fd = libc.timerfd_create(1, os.O_CLOEXEC | (os.O_NONBLOCK if mode == "epoll" else 0))
    ep = select.epoll()
    ep.register(fd, select.EPOLLIN)
    mono = time.monotonic
    out = []
    for _ in range(n):
        due = mono() + random.uniform(0.001, 0.005)
        sec = int(due)
        libc.timerfd_settime(fd, 1, struct.pack("qqqq", 0, 0, sec, int((due - sec) * 1e9)), None)
        if mode == "epoll":
            ep.poll(-1)
            now = mono()
            os.read(fd, 8)
        elif mode == "read":
            os.read(fd, 8)
            now = mono()
        else:
            while mono() < due:
                pass
            now = mono()
        out.append(now - due)
    return out


def _child_wake(n: int, mode: str, slack: str, fifo: bool) -> None:
    if fifo:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    late = wake_loop(n, mode, None if slack == "default" else int(slack))
    print(" ".join(f"{x:.7f}" for x in late))


def run_wake(n: int, mode: str, slack: str, fifo: bool) -> list[float]:
    cp = subprocess.run([sys.executable, __file__, "--_child", str(n), mode, slack, "1" if fifo else "0"],
                        capture_output=True, text=True, timeout=120, check=True)
    return [float(x) for x in cp.stdout.split()]


# ------------------------------------------------------------------ load helpers
@contextlib.contextmanager
def warmer(on: bool):
    if not on:
        yield "off"
        return
    from edgelab.hostload import HostWarmer

    with HostWarmer() as w:
        time.sleep(0.2)
        yield w.description


BUSY = ("import time\nm=time.monotonic\nwhile True:\n t=m()\n while m()-t<0.003: pass\n time.sleep(0.003)")


@contextlib.contextmanager
def busy(k: int):
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(k)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def summary(late: list[float]) -> str:
    s = sorted(late)
    n = len(s)
    return (f"mean {1e3 * statistics.fmean(s):6.3f} ms  p50 {1e3 * s[n // 2]:6.3f}  p99 {1e3 * s[int(n * .99)]:6.3f}"
            f"  > 1 ms {sum(x > 0.001 for x in s) / n:6.1%}")


# ------------------------------------------------------------------ part 2: the delayer
def run_delayer(rt: bool, seconds: float, pps: int) -> tuple[float, float, int, str]:
    """(mean lateness ms, share > 1 ms, packets, policy) of the real delayer under a ping."""
    from edgelab.linkemu import LinkEmulator, LinkParams, lateness
    from edgelab.linkemu.fidelity import veth_pair, ping

    state = f"/run/dlwk-{os.getpid()}"
    with veth_pair("dlwk", subnet=93) as p:
        em = LinkEmulator("fallback", tag="dlwk", state_dir=state, delayer_rt=rt)
        try:
            em.apply_link(p.a, p.dev_a, p.b, p.dev_b, LinkParams(rate_mbit=100, delay_ms=2))
            policy = em.delayer_info()["sched"]["live"]
            ping(p.b, p.addr_a, count=10, interval=0.02)   # the delayer's first packets: warm
            time.sleep(0.3)   # its counters are written every 0.25 s
            before = lateness.read(state)
            ping(p.b, p.addr_a, count=int(seconds * pps), interval=1.0 / pps)
            time.sleep(0.3)
            w = lateness.window(before, lateness.read(state))
        finally:
            em.close()
    if w is None:
        raise RuntimeError("the delayer released nothing")
    return w[0], w[1], w[2], policy or "?"


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _child_wake(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1")
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wakes", type=int, default=2000, help="wake-ups per bare-loop variant")
    ap.add_argument("--seconds", type=float, default=6.0, help="ping time per delayer variant")
    ap.add_argument("--pps", type=int, default=50, help="pings per second through the delayer")
    ap.add_argument("--load", type=int, default=2, help="busy processes in the 'load' variants")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--part", choices=("wake", "delayer", "both"), default="both")
    a = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S')} load average {os.getloadavg()}", flush=True)
    results: dict[str, list] = {}
    if a.part in ("wake", "both"):
        variants = [(f"{pol:5} {'warmer' if w else 'idle':6} {mode:5} slack {slack}", pol == "FIFO", w, mode, slack)
                    for pol in ("OTHER", "FIFO") for w in (False, True)
                    for mode, slack in (("epoll", "1"), ("read", "1"), ("epoll", "default"))]
        variants += [("OTHER idle   spin  (Python floor)", False, False, "spin", "1")]
        for rep in range(a.reps):
            for name, fifo, w, mode, slack in variants:
                with warmer(w):
                    late = run_wake(a.wakes, mode, slack, fifo)
                results.setdefault(name, []).append(late)
                print(f"wake    {name:34} rep {rep}: {summary(late)}", flush=True)
    if a.part in ("delayer", "both"):
        if os.geteuid() != 0:
            print("delayer part skipped: needs root (namespaces, NFQUEUE)")
        else:
            for rep in range(a.reps):
                for rt in (False, True):
                    for cond in ("idle", "warmer", "load"):
                        with warmer(cond == "warmer"), busy(a.load if cond == "load" else 0):
                            mean, share, n, pol = run_delayer(rt, a.seconds, a.pps)
                        name = f"{'FIFO' if rt else 'OTHER':5} {cond:6}"
                        results.setdefault("delayer " + name, []).append((mean, share))
                        print(f"delayer {name} rep {rep}: mean {mean:6.3f} ms  > 1 ms {share:6.1%}  "
                              f"({n} packets, policy {pol})", flush=True)
    print(f"# medians over repetitions (load average now {os.getloadavg()}):")
    for name, runs in results.items():
        if name.startswith("delayer "):
            print(f"{name:42} mean {statistics.median(r[0] for r in runs):6.3f} ms  "
                  f"> 1 ms {statistics.median(r[1] for r in runs):6.1%}")
        else:
            print(f"wake    {name:34} mean {1e3 * statistics.median(statistics.fmean(r) for r in runs):6.3f} ms  "
                  f"> 1 ms {statistics.median(sum(x > 0.001 for x in r) / len(r) for r in runs):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
