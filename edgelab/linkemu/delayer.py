"""Userspace packet delayer for kernels without sch_netem (the 'fallback' engine).

iptables ``NFQUEUE --queue-num N`` rules hand packets to this process, which
holds each one until ``now + delay + U(-jitter, +jitter)`` and then accepts
it. Release times on one queue never go backwards (``max(previous release,
drawn time)``), so jitter does not reorder packets (unlike netem's default).

NetfilterQueue 1.1.0 allows the verdict to be given *after* the callback has
returned: ``Packet.accept()`` only needs the packet id and the still-bound
queue handle (``drop_refs`` merely forgets the payload pointer). So the
callback just timestamps and appends the packet to its queue's FIFO, and one
loop releases due packets, sleeping in ``select`` (microsecond timeout)
until the next release or the next arrival on any queue's netlink socket.
Queues are bound in COPY_META mode: no payload is copied to userspace.

One process serves every queue of its network namespace. It is driven by a
JSON config file ``{"generation": g, "queues": {"N": {"delay_ms", "jitter_ms"}}}``
and re-reads it on SIGHUP, binding/unbinding/re-parametrising queues, then
writes ``g`` to ``<config>.ready`` so the controller knows the queues are
bound before it installs the iptables rules. SIGTERM/SIGINT: release all held
packets at once, unbind, exit 0.

Known limit: a packet held on the egress (POSTROUTING) queue is still charged
to its sending socket (netem orphans skbs, NFQUEUE cannot), so a UDP sender
gets at most ``SO_SNDBUF / (delay)`` through (default 208 KiB: ~50 Mbit/s at
10 ms). TCP is bounded by tcp_limit_output_bytes (4 MiB) instead. Senders
that need more raise SO_SNDBUF (iperf3 -w 8M); the benchmark does.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import select
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

from ..safefs import write_atomic

#: Packets the kernel may hold for one queue before dropping (200 Mbit/s x 100 ms
#: is ~1700 full frames per direction; leave a wide margin).
MAX_QUEUE_LEN = 65536
SOCK_RCVBUF = 16 * 1024 * 1024


@dataclass
class QueueState:
    num: int
    delay_s: float
    jitter_s: float
    nfq: Any = None
    last_release: float = 0.0
    pending: collections.deque = field(default_factory=collections.deque)


def release_time(now: float, delay_s: float, jitter_s: float, last: float,
                 rng: random.Random) -> float:
    """Release instant of a packet arriving at ``now``: uniform jitter, never before ``last``."""
    t = now + delay_s
    if jitter_s > 0:
        t += rng.uniform(-jitter_s, jitter_s)
    return t if t > last else last


class Delayer:
    def __init__(self, config_path: str, *, seed: int | None = None) -> None:
        self.config_path = config_path
        self.queues: dict[int, QueueState] = {}
        self.rng = random.Random(seed)
        self.stop = False
        self.reload = True

    # ------------------------------------------------------------ config
    def _read_config(self) -> tuple[int, dict[int, tuple[float, float]]]:
        with open(self.config_path) as f:
            cfg = json.load(f)
        queues = {int(k): (float(v.get("delay_ms", 0)) / 1000, float(v.get("jitter_ms", 0)) / 1000)
                  for k, v in cfg.get("queues", {}).items()}
        return int(cfg.get("generation", 0)), queues

    def _make_callback(self, q: QueueState):
        mono = time.monotonic
        rng = self.rng
        append = q.pending.append

        def cb(pkt) -> None:
            # Inlined release_time(): this runs once per packet.
            t = mono() + q.delay_s
            j = q.jitter_s
            if j:
                t += rng.uniform(-j, j)
            if t < q.last_release:
                t = q.last_release
            q.last_release = t
            append((t, pkt))
        return cb

    def apply_config(self) -> None:
        from netfilterqueue import COPY_META, NetfilterQueue

        gen, wanted = self._read_config()
        for num in list(self.queues):
            if num not in wanted:
                self._unbind(self.queues.pop(num))
        for num, (d, j) in wanted.items():
            q = self.queues.get(num)
            if q is None:
                q = QueueState(num, d, j)
                nfq = NetfilterQueue()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nfq.bind(num, self._make_callback(q), max_len=MAX_QUEUE_LEN, mode=COPY_META,
                             sock_len=SOCK_RCVBUF)
                q.nfq = nfq
                self.queues[num] = q
            else:
                q.delay_s, q.jitter_s = d, j
        # O_EXCL/O_NOFOLLOW temporary file: root writes here (see edgelab.safefs)
        write_atomic(self.config_path + ".ready", f"{gen} {os.getpid()}\n")

    def _unbind(self, q: QueueState) -> None:
        while q.pending:
            q.pending.popleft()[1].accept()
        q.nfq.unbind()

    # -------------------------------------------------------------- loop
    def run(self) -> None:
        rfd, wfd = os.pipe()
        os.set_blocking(wfd, False)
        os.set_blocking(rfd, False)
        signal.set_wakeup_fd(wfd)

        def on_term(signum, frame):
            self.stop = True

        def on_hup(signum, frame):
            self.reload = True

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGHUP, on_hup)
        mono = time.monotonic
        sel = select.select
        try:
            while not self.stop:
                if self.reload:
                    self.reload = False
                    self.apply_config()
                    qs = list(self.queues.values())
                    fdmap = {q.nfq.get_fd(): q.nfq for q in qs}
                    rlist = [rfd, *fdmap]
                # Release everything due, find the next deadline.
                now = mono()
                nxt = None
                for q in qs:
                    pending = q.pending
                    while pending and pending[0][0] <= now:
                        pending.popleft()[1].accept()
                    if pending and (nxt is None or pending[0][0] < nxt):
                        nxt = pending[0][0]
                if nxt is None:
                    ready = sel(rlist, (), (), None)[0]
                else:
                    timeout = nxt - mono()
                    ready = sel(rlist, (), (), timeout if timeout > 0 else 0)[0]
                for fd in ready:
                    if fd == rfd:
                        try:
                            os.read(rfd, 512)
                        except BlockingIOError:
                            pass
                    else:
                        fdmap[fd].run(False)
        finally:
            for q in self.queues.values():
                self._unbind(q)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgelab.linkemu.delayer", description=__doc__.splitlines()[0])
    ap.add_argument("--config", required=True, help="JSON config file (re-read on SIGHUP)")
    ap.add_argument("--tag", default="edgelab", help="testbed tag, only to make the process findable")
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args(argv)
    Delayer(a.config, seed=a.seed).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
