"""Userspace packet delayer for kernels without sch_netem (the 'fallback' engine).

iptables ``NFQUEUE --queue-num N`` rules hand packets to this process, which
holds each one until ``now + delay + U(-jitter, +jitter)`` and then accepts
it. Release times on one queue never go backwards (``max(previous release,
drawn time)``), so jitter does not reorder packets (unlike netem's default).

One process serves a whole testbed: every queue of every network namespace.
An NFQUEUE socket belongs to the namespace it was *created* in, so the
delayer enters each namespace (``setns``) only to open that namespace's
queues, and returns; afterwards all sockets sit in one epoll set. One process
instead of one per namespace: at 100 stations ~7 MiB instead of ~1 GB, no
per-namespace interpreter start during bring-up, one process to stop at
teardown, and one cgroup that accounts for the whole link emulation's CPU.

NetfilterQueue 1.1.0 allows the verdict to be given *after* the callback has
returned: ``Packet.accept()`` only needs the packet id and the still-bound
queue handle (``drop_refs`` merely forgets the payload pointer). So the
callback just timestamps and appends the packet to its queue's FIFO. Release
times on one queue are monotonic, so a heap of *queue heads* orders all
queues; one absolute ``timerfd`` (CLOCK_MONOTONIC, the clock of
``time.monotonic``) wakes the loop for the earliest head, with no timer
slack and no millisecond rounding (epoll's timeout has both; ``select`` also
stops at 1024 descriptors). Queues are bound in COPY_META mode: no payload is
copied to userspace.

It is driven by a JSON config file::

    {"generation": g,
     "namespaces": {"<key>": {"netns": "/run/netns/X" | null,
                              "queues": {"N": {"delay_ms": d, "jitter_ms": j}}}}}

(the older ``{"generation": g, "queues": {...}}`` means the current namespace)
and re-reads it on SIGHUP, binding/unbinding/re-parametrising queues, then
writes ``g pid`` to ``<config>.ready`` so the controller knows the queues are
bound before it installs the iptables rules. SIGTERM/SIGINT: release all held
packets at once, unbind, exit 0.

Import path: stdlib only (plus netfilterqueue), and ``edgelab.linkemu``'s
package ``__init__`` imports nothing eagerly, so the interpreter is ready to
bind ~10 ms after exec instead of ~100 ms.

Known limit: a packet held on the egress (POSTROUTING) queue is still charged
to its sending socket (netem orphans skbs, NFQUEUE cannot), so a UDP sender
gets at most ``SO_SNDBUF / (delay)`` through (default 208 KiB: ~50 Mbit/s at
10 ms). TCP is bounded by tcp_limit_output_bytes (4 MiB) instead. Senders
that need more raise SO_SNDBUF (iperf3 -w 8M); the benchmark does.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import heapq
import json
import os
import random
import select
import signal
import struct
import sys
import time
import warnings

from ..safefs import write_atomic

#: Packets the kernel may hold for one queue before dropping (200 Mbit/s x 100 ms
#: is ~1700 full frames per direction; leave a wide margin).
MAX_QUEUE_LEN = 65536
SOCK_RCVBUF = 16 * 1024 * 1024
CLONE_NEWNET = 0x40000000
CLOCK_MONOTONIC = 1
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = os.O_CLOEXEC
TFD_TIMER_ABSTIME = 1
PR_SET_TIMERSLACK = 29


class QueueState:
    """One bound queue: its parameters and the FIFO of (release time, packet) it holds.
    (A plain class, not a dataclass: ``dataclasses`` imports ``inspect``, ~10 ms of start-up.)"""

    __slots__ = ("key", "num", "delay_s", "jitter_s", "index", "nfq", "last_release", "pending")

    def __init__(self, key: str, num: int, delay_s: float, jitter_s: float, index: int = 0) -> None:
        self.key, self.num, self.delay_s, self.jitter_s, self.index = key, num, delay_s, jitter_s, index
        self.nfq: object = None
        self.last_release = 0.0
        self.pending: collections.deque = collections.deque()


def release_time(now: float, delay_s: float, jitter_s: float, last: float,
                 rng: random.Random) -> float:
    """Release instant of a packet arriving at ``now``: uniform jitter, never before ``last``."""
    t = now + delay_s
    if jitter_s > 0:
        t += rng.uniform(-jitter_s, jitter_s)
    return t if t > last else last


def parse_config(cfg: dict) -> tuple[int, dict[str, tuple[str | None, dict[int, tuple[float, float]]]]]:
    """``(generation, {key: (netns path or None, {queue: (delay_s, jitter_s)})})`` of a config dict."""
    def queues(d: dict) -> dict[int, tuple[float, float]]:
        return {int(k): (float(v.get("delay_ms", 0)) / 1000, float(v.get("jitter_ms", 0)) / 1000)
                for k, v in d.items()}
    spaces = {k: (v.get("netns"), queues(v.get("queues", {}))) for k, v in cfg.get("namespaces", {}).items()}
    if "queues" in cfg:
        spaces.setdefault("_root", (None, {}))[1].update(queues(cfg["queues"]))
    return int(cfg.get("generation", 0)), spaces


class _Libc:
    """setns and timerfd through libc (os.setns / os.timerfd_* need Python >= 3.12 / 3.13)."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._setns = libc.setns
        self._tfd_create = libc.timerfd_create
        self._tfd_settime = libc.timerfd_settime
        self._tfd_settime.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
        libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0)   # 1 ns instead of 50 us for any other sleep

    def setns(self, fd: int) -> None:
        if self._setns(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"setns: {os.strerror(e)}")

    def timerfd(self) -> int:
        fd = self._tfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"timerfd_create: {os.strerror(e)}")
        return fd

    def arm(self, fd: int, at: float) -> None:
        """Fire once at monotonic instant ``at`` (0: disarm)."""
        sec = int(at)
        nsec = int((at - sec) * 1e9)
        if at > 0 and sec == 0 and nsec == 0:
            nsec = 1
        if self._tfd_settime(fd, TFD_TIMER_ABSTIME, struct.pack("qqqq", 0, 0, sec, nsec), None) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"timerfd_settime: {os.strerror(e)}")


class Delayer:
    def __init__(self, config_path: str, *, seed: int | None = None) -> None:
        self.config_path = config_path
        self.queues: dict[tuple[str, int], QueueState] = {}
        self.rng = random.Random(seed)
        self.stop = False
        self.reload = True
        self.heap: list[tuple[float, int, QueueState]] = []
        self._index = 0
        self._libc = _Libc()
        self._epoll = select.epoll()
        self._fdmap: dict[int, object] = {}

    # ------------------------------------------------------------ config
    def _make_callback(self, q: QueueState):
        mono = time.monotonic
        rng = self.rng
        pending = q.pending
        append = pending.append
        heap = self.heap
        push = heapq.heappush
        index = q.index

        def cb(pkt) -> None:
            # Inlined release_time(): this runs once per packet.
            t = mono() + q.delay_s
            j = q.jitter_s
            if j:
                t += rng.uniform(-j, j)
            if t < q.last_release:
                t = q.last_release
            q.last_release = t
            if not pending:
                push(heap, (t, index, q))
            append((t, pkt))
        return cb

    def _bind(self, key: str, netns: str | None, nums: dict[int, tuple[float, float]]) -> None:
        """Open and bind ``nums`` in ``netns``: the sockets are created inside it (setns), then back home."""
        from netfilterqueue import COPY_META, NetfilterQueue

        home = None
        if netns:
            home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                self._libc.setns(target)
            finally:
                os.close(target)
        try:
            for num, (d, j) in nums.items():
                self._index += 1
                q = QueueState(key, num, d, j, index=self._index)
                nfq = NetfilterQueue()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nfq.bind(num, self._make_callback(q), max_len=MAX_QUEUE_LEN, mode=COPY_META,
                             sock_len=SOCK_RCVBUF)
                q.nfq = nfq
                fd = nfq.get_fd()
                self._fdmap[fd] = nfq
                self._epoll.register(fd, select.EPOLLIN)
                self.queues[(key, num)] = q
        finally:
            if home is not None:
                self._libc.setns(home)
                os.close(home)

    def apply_config(self) -> None:
        with open(self.config_path) as f:
            gen, spaces = parse_config(json.load(f))
        for qk in list(self.queues):
            key, num = qk
            if num not in spaces.get(qk[0], (None, {}))[1]:
                self._unbind(self.queues.pop(qk))
        for key, (netns, nums) in spaces.items():
            new = {}
            for num, (d, j) in nums.items():
                q = self.queues.get((key, num))
                if q is None:
                    new[num] = (d, j)
                else:
                    q.delay_s, q.jitter_s = d, j
            if new:
                self._bind(key, netns, new)
        # O_EXCL/O_NOFOLLOW temporary file: root writes here (see edgelab.safefs)
        write_atomic(self.config_path + ".ready", f"{gen} {os.getpid()}\n")

    def _unbind(self, q: QueueState) -> None:
        while q.pending:
            q.pending.popleft()[1].accept()
        fd = q.nfq.get_fd()
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        self._fdmap.pop(fd, None)
        q.nfq.unbind()
        q.nfq = None   # its socket closes when the object goes (nfq_close in __dealloc__)

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
        tfd = self._libc.timerfd()
        ep = self._epoll
        ep.register(rfd, select.EPOLLIN)
        ep.register(tfd, select.EPOLLIN)
        mono = time.monotonic
        heap = self.heap
        pop = heapq.heappop
        push = heapq.heappush
        fdmap = self._fdmap
        armed = 0.0
        try:
            while not self.stop:
                if self.reload:
                    self.reload = False
                    self.apply_config()
                # Release everything due: pop queue heads in release order.
                now = mono()
                while heap and heap[0][0] <= now:
                    _, _, q = pop(heap)
                    pending = q.pending
                    while pending and pending[0][0] <= now:
                        pending.popleft()[1].accept()
                    if pending and q.nfq is not None:
                        push(heap, (pending[0][0], q.index, q))
                nxt = heap[0][0] if heap else 0.0
                if nxt != armed:
                    self._libc.arm(tfd, nxt)
                    armed = nxt
                for fd, _ in ep.poll(-1):
                    if fd == rfd or fd == tfd:
                        try:
                            os.read(fd, 512)
                        except BlockingIOError:
                            pass
                        if fd == tfd:
                            armed = 0.0
                    else:
                        nfq = fdmap.get(fd)
                        if nfq is not None:
                            nfq.run(False)
        finally:
            for q in list(self.queues.values()):
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
