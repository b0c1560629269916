"""Userspace packet delayer for kernels without sch_netem (the 'fallback' engine).

This is the reference implementation; ``nfq_delayer.c`` is the same engine in C, run instead
where scripts/bootstrap built it (``emulator.delayer_program``): same config (read as the line
table :func:`config_table` writes), same counters, same signals, ~2 us of user time per queue
pass instead of 10-12. A change to the semantics below goes into both.

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

Bridge queues: a bridge's ports are delayed in two stages, the frames arriving on a
port (its ``from-peer`` delay) and the frames the bridge sends out of a port (its
``to-peer`` delay). Both stages lie back to back on a bridged frame's path (nothing
queues between the bridge's PREROUTING and POSTROUTING), so one NFQUEUE pass
carries both: a single ``POSTROUTING -m physdev --physdev-is-bridged`` rule sends
every bridged frame to the bridge queue, and the delayer looks its in- and out-port
(``physindev``/``physoutdev``, in the packet's metadata) up in the ports' delays.
The ports' stages are *virtual* queues (``"via": <bridge queue>``): not bound,
same FIFO, jitter and no-reordering rules as a bound queue; a frame leaving its
in-port's stage enters its out-port's stage at the instant it was due there (not
when the loop got to it). Per echo through an access point that is 2 queue passes
instead of 4, and 1 rule per hook instead of one per port walked linearly.

It is driven by a JSON config file::

    {"generation": g,
     "namespaces": {"<key>": {"netns": "/run/netns/X" | null,
                              "queues": {"N": {"delay_ms": d, "jitter_ms": j},
                                         "B": {"delay_ms": 0, "jitter_ms": 0, "bridge": true},
                                         "M": {"delay_ms": d, "jitter_ms": j, "via": B,
                                               "dev": "<port>", "dir": "from-peer" | "to-peer"}}}}}

(the older ``{"generation": g, "queues": {...}}`` means the current namespace)
and re-reads it on SIGHUP, binding/unbinding/re-parametrising queues, then
writes ``g pid`` to ``<config>.ready`` so the controller knows the queues are
bound before it installs the iptables rules. SIGTERM/SIGINT: release all held
packets at once, unbind, exit 0.

Scheduling: its controller (``LinkEmulator``, ``delayer_rt``) makes it SCHED_FIFO at the lowest
real-time priority, so a due packet does not wait behind a normal task holding the core;
nothing in its loop may block (no fsync, no file created per dump: see ``dump_lateness``),
since a stalled loop releases nothing and stamps arrivals late.

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
import socket
import struct
import sys
import time
import warnings
import zlib

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
#: Release-lateness counters beside the config, as edgelab.linkemu.lateness reads them (its
#: STATS_FILE and LATE_S; not imported: that module's dataclasses import costs ~10 ms of start-up).
STATS_FILE = "delayer-stats.json"
LATE_S = 0.001
#: How often (at most) the counters are written while packets flow.
STATS_EVERY_S = 0.25
#: Size of the counters' record, rewritten in place: ``<json>\n<crc32 of json, hex>\n`` padded with
#: spaces (edgelab.linkemu.lateness.read checks the CRC: a read racing the write is retried).
STATS_RECORD = 512


class QueueState:
    """One queue: its parameters and the FIFO of (release time, packet, next stage) it holds.
    Bound (``nfq`` set) or virtual (a bridge port's stage: ``via`` names its bridge queue).
    (A plain class, not a dataclass: ``dataclasses`` imports ``inspect``, ~10 ms of start-up.)"""

    __slots__ = ("key", "num", "delay_s", "jitter_s", "index", "nfq", "last_release", "pending",
                 "via", "dev", "dir", "live")

    def __init__(self, key: str, num: int, delay_s: float, jitter_s: float, index: int = 0) -> None:
        self.key, self.num, self.delay_s, self.jitter_s, self.index = key, num, delay_s, jitter_s, index
        self.nfq: object = None
        self.last_release = 0.0
        self.pending: collections.deque = collections.deque()
        self.via: int | None = None
        self.dev = self.dir = ""
        self.live = True


class BridgePorts:
    """A bridge queue's port stages, rebuilt on every reload (in place: the queue's callback
    holds these dicts): in-stages by the mark the ports table gives their frames (the stage's
    own queue number; POSTROUTING reports no in-port), out-stages by interface index."""

    __slots__ = ("ins", "outs")

    def __init__(self) -> None:
        self.ins: dict[int, QueueState] = {}
        self.outs: dict[int, QueueState] = {}


def release_time(now: float, delay_s: float, jitter_s: float, last: float,
                 rng: random.Random) -> float:
    """Release instant of a packet arriving at ``now``: uniform jitter, never before ``last``."""
    t = now + delay_s
    if jitter_s > 0:
        t += rng.uniform(-jitter_s, jitter_s)
    return t if t > last else last


def parse_config(cfg: dict) -> tuple[int, dict[str, tuple[str | None, dict[int, tuple]]]]:
    """``(generation, {key: (netns path or None, {queue: (delay_s, jitter_s, via, dev, dir)})})`` of a
    config dict: ``via`` is the bridge queue of a port's stage (None: a bound queue), ``dir`` is
    ``"bridge"`` for a bridge queue."""
    def queues(d: dict) -> dict[int, tuple]:
        out = {}
        for k, v in d.items():
            via = v.get("via")
            kind = "bridge" if v.get("bridge") else str(v.get("dir", ""))
            if via is not None and kind not in ("from-peer", "to-peer"):
                raise ValueError(f"queue {k}: a port stage (via {via}) needs dir from-peer or to-peer, not {kind!r}")
            out[int(k)] = (float(v.get("delay_ms", 0)) / 1000, float(v.get("jitter_ms", 0)) / 1000,
                           None if via is None else int(via), str(v.get("dev", "")), kind)
        return out
    spaces = {k: (v.get("netns"), queues(v.get("queues", {}))) for k, v in cfg.get("namespaces", {}).items()}
    if "queues" in cfg:
        spaces.setdefault("_root", (None, {}))[1].update(queues(cfg["queues"]))
    return int(cfg.get("generation", 0)), spaces


#: First line of the table the C delayer (nfq_delayer.c) reads beside the JSON config.
TABLE_HEADER = "edgelab-delayer-tab 1"
_KINDS = {"": "plain", "bridge": "bridge", "from-peer": "from-peer", "to-peer": "to-peer"}


def config_table(cfg: dict) -> str:
    """The config dict as the C delayer's line table (``<config>.tab``, see nfq_delayer.c): the
    same :func:`parse_config` reading, so both engines serve exactly the same queues. Delays in
    integer nanoseconds; a field with whitespace (it would shift the columns) is refused."""
    gen, spaces = parse_config(cfg)
    lines = [TABLE_HEADER, f"generation {gen}"]

    def word(x: object, what: str) -> str:
        w = str(x)
        if not w or any(c.isspace() for c in w):
            raise ValueError(f"delayer config: {what} {w!r} is empty or has whitespace")
        return w

    for key, (netns, nums) in spaces.items():
        lines.append(f"ns {word(key, 'namespace key')} {word(netns, 'netns path') if netns else '-'}")
        for num, (d, j, via, dev, kind) in sorted(nums.items()):
            if d < 0 or j < 0:
                raise ValueError(f"delayer config: queue {num}: negative delay or jitter")
            lines.append(f"q {num} {round(d * 1e9)} {round(j * 1e9)} {_KINDS[kind]} "
                         f"{-1 if via is None else via} {word(dev, 'port') if dev else '-'}")
    return "\n".join(lines) + "\n"


class Libc:
    """setns and timerfd through libc (os.setns / os.timerfd_* need Python >= 3.12 / 3.13).
    benchmarks/prober.py uses it too."""

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

    def timerfd(self, blocking: bool = False) -> int:
        """A CLOCK_MONOTONIC timerfd: non-blocking for an epoll loop, or ``blocking`` to sleep in read()."""
        fd = self._tfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | (0 if blocking else TFD_NONBLOCK))
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
    def __init__(self, config_path: str, *, seed: int | None = None, clock=time.monotonic) -> None:
        self.config_path = config_path
        #: CLOCK_MONOTONIC (the timerfd's clock); a test drives its own.
        self.clock = clock
        self.queues: dict[tuple[str, int], QueueState] = {}
        self.bridges: dict[tuple[str, int], BridgePorts] = {}
        self.rng = random.Random(seed)
        self.stop = False
        self.reload = True
        self.heap: list[tuple[float, int, QueueState]] = []
        self._index = 0
        self._libc = Libc()
        self._epoll = select.epoll()
        self._fdmap: dict[int, object] = {}
        self._enter = self._make_enter()
        #: Cumulative release lateness (now - due, per packet released): [released, late_sum_s,
        #: late (> LATE_S), late_max_s]. Written to STATS_FILE (edgelab.linkemu.lateness).
        self.lateness = [0, 0.0, 0, 0.0]
        self.stats_path = os.path.join(os.path.dirname(os.path.abspath(config_path)), STATS_FILE)
        self._stats_fd: int | None = None

    # ------------------------------------------------------------ config
    def _make_enter(self):
        """``enter(q, t0, pkt, nxt)``: hold ``pkt`` in ``q`` from instant ``t0`` (then in ``nxt``,
        a bridge's out-port stage, or release it). Runs once or twice per packet: locals only."""
        rng = self.rng
        heap = self.heap
        push = heapq.heappush

        def enter(q: QueueState, t0: float, pkt, nxt) -> None:
            t = t0 + q.delay_s
            j = q.jitter_s
            if j:
                t += rng.uniform(-j, j)
            if t < q.last_release:
                t = q.last_release
            q.last_release = t
            pending = q.pending
            if not pending:
                push(heap, (t, q.index, q))
            pending.append((t, pkt, nxt))
        return enter

    def _make_callback(self, q: QueueState):
        mono = self.clock
        enter = self._enter

        def cb(pkt) -> None:
            enter(q, mono(), pkt, None)
        return cb

    def _make_bridge_callback(self, ports: BridgePorts):
        """A bridge queue's callback: the frame's in-port stage, then its out-port stage."""
        mono = self.clock
        enter = self._enter
        ins, outs = ports.ins, ports.outs

        def cb(pkt) -> None:
            qi = ins.get(pkt.mark)
            qo = outs.get(pkt.physoutdev)
            if qi is not None:
                enter(qi, mono(), pkt, qo)
            elif qo is not None:
                enter(qo, mono(), pkt, None)
            else:
                pkt.accept()   # between two undelayed ports
        return cb

    def _enter_ns(self, netns: str | None) -> int | None:
        """setns into ``netns``; returns the home namespace's fd (None: stayed home)."""
        if not netns:
            return None
        home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._libc.setns(target)
        except OSError:
            os.close(home)
            raise
        finally:
            os.close(target)
        return home

    def _leave_ns(self, home: int | None) -> None:
        if home is not None:
            self._libc.setns(home)
            os.close(home)

    def _bind(self, key: str, netns: str | None, nums: dict[int, tuple]) -> None:
        """Open and bind ``nums`` in ``netns``: the sockets are created inside it (setns), then back home."""
        from netfilterqueue import COPY_META, NetfilterQueue

        home = self._enter_ns(netns)
        try:
            for num, (d, j, _via, _dev, kind) in nums.items():
                self._index += 1
                q = QueueState(key, num, d, j, index=self._index)
                if kind == "bridge":
                    ports = self.bridges.setdefault((key, num), BridgePorts())
                    cb = self._make_bridge_callback(ports)
                else:
                    cb = self._make_callback(q)
                nfq = NetfilterQueue()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    nfq.bind(num, cb, max_len=MAX_QUEUE_LEN, mode=COPY_META, sock_len=SOCK_RCVBUF)
                q.nfq = nfq
                fd = nfq.get_fd()
                self._fdmap[fd] = nfq
                self._epoll.register(fd, select.EPOLLIN)
                self.queues[(key, num)] = q
        finally:
            self._leave_ns(home)

    def _map_ports(self, key: str, netns: str | None) -> None:
        """Rebuild the port tables of ``key``'s bridge queues (out-ports' interface names to
        indexes are resolved inside the namespace; in-stages are found by their mark)."""
        stages = [q for (k, _), q in self.queues.items() if k == key and q.via is not None]
        bridges = {num: b for (k, num), b in self.bridges.items() if k == key}
        if not bridges:
            return
        home = self._enter_ns(netns)
        try:
            index = {}
            for q in stages:
                if q.dir != "to-peer":
                    continue
                try:
                    index[q.dev] = socket.if_nametoindex(q.dev)
                except OSError:
                    print(f"delayer: port {q.dev!r} of bridge queue {q.via} not found in {key}",
                          file=sys.stderr, flush=True)
        finally:
            self._leave_ns(home)
        for num, b in bridges.items():
            ins = {q.num: q for q in stages if q.via == num and q.dir == "from-peer"}
            outs = {index[q.dev]: q for q in stages if q.via == num and q.dir == "to-peer" and q.dev in index}
            b.ins.clear()
            b.ins.update(ins)
            b.outs.clear()
            b.outs.update(outs)

    def apply_config(self) -> None:
        with open(self.config_path) as f:
            gen, spaces = parse_config(json.load(f))
        for qk in list(self.queues):
            key, num = qk
            want = spaces.get(key, (None, {}))[1].get(num)
            q = self.queues[qk]
            if want is None or (want[2] is None) != (q.via is None) or (want[4] == "bridge") != (qk in self.bridges):
                self._unbind(self.queues.pop(qk))
        for key, (netns, nums) in spaces.items():
            new = {}
            for num, spec in nums.items():
                d, j, via, dev, kind = spec
                q = self.queues.get((key, num))
                if q is None and via is not None:   # a port stage: nothing to bind
                    self._index += 1
                    q = self.queues[(key, num)] = QueueState(key, num, d, j, index=self._index)
                    q.via, q.dev, q.dir = via, dev, kind
                elif q is None:
                    new[num] = spec
                else:
                    q.delay_s, q.jitter_s = d, j
                    if via is not None:
                        q.dev, q.dir, q.via = dev, kind, via
            if new:
                self._bind(key, netns, new)
            self._map_ports(key, netns)
        # O_EXCL/O_NOFOLLOW temporary file: root writes here (see edgelab.safefs)
        write_atomic(self.config_path + ".ready", f"{gen} {os.getpid()}\n")

    def _flush(self, q: QueueState) -> None:
        """Release what ``q`` holds now (it goes away), next stages skipped."""
        q.live = False
        while q.pending:
            q.pending.popleft()[1].accept()

    def _unbind(self, q: QueueState) -> None:
        if q.nfq is None:   # a port stage
            self._flush(q)
            return
        b = self.bridges.pop((q.key, q.num), None)
        if b is not None:
            # Its frames wait in its ports' stages: their verdicts need this queue still bound.
            for s in list(b.ins.values()) + list(b.outs.values()):
                while s.pending:
                    s.pending.popleft()[1].accept()
            b.ins.clear()
            b.outs.clear()
        self._flush(q)
        fd = q.nfq.get_fd()
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass
        self._fdmap.pop(fd, None)
        q.nfq.unbind()
        q.nfq = None   # its socket closes when the object goes (nfq_close in __dealloc__)

    # -------------------------------------------------------------- loop
    def release_due(self, now: float) -> None:
        """Release everything due at ``now``, one packet at a time in release order (a frame
        leaving a bridge port's in-stage may enter an out-stage due before other queues' heads)."""
        heap = self.heap
        pop = heapq.heappop
        push = heapq.heappush
        enter = self._enter
        n = late_n = 0
        late_sum = late_max = 0.0
        while heap and heap[0][0] <= now:
            _, _, q = pop(heap)
            pending = q.pending
            if not pending:   # flushed (unbound) meanwhile
                continue
            t, pkt, nxt = pending.popleft()
            if nxt is None or not nxt.live:
                pkt.accept()
                n += 1
                late = now - t
                late_sum += late
                if late > LATE_S:
                    late_n += 1
                if late > late_max:
                    late_max = late
            else:
                enter(nxt, t, pkt, None)
            if pending and q.live:
                push(heap, (pending[0][0], q.index, q))
        if n:
            c = self.lateness
            c[0] += n
            c[1] += late_sum
            c[2] += late_n
            if late_max > c[3]:
                c[3] = late_max

    def dump_lateness(self) -> None:
        """Write the lateness counters (edgelab.linkemu.lateness.read's format).

        In place, one ``pwrite`` of a fixed-size record into a file opened once (~10 us), not a
        new file renamed over the old one with an fsync: on this machine's disk-backed /run that
        took 2 ms on average and up to 15 ms (0.5 ms without the fsync), during which the loop
        released nothing and stamped no arrival. At one node's traffic the dump fell inside most
        response bursts (it runs after a release), which was most of the 0.46 ms mean lateness
        and the 9 % of packets > 1 ms late measured at folding factor 1. A reader that races the
        write sees a CRC mismatch and reads again."""
        c = self.lateness
        body = json.dumps({"released": c[0], "late_sum_s": c[1], "late": c[2], "late_max_s": c[3],
                           "pid": os.getpid()})
        rec = f"{body}\n{zlib.crc32(body.encode()):08x}\n".ljust(STATS_RECORD).encode()
        if self._stats_fd is None or len(rec) > STATS_RECORD:
            # O_EXCL/O_NOFOLLOW temporary file renamed into place: root writes here (edgelab.safefs);
            # then that very file (O_NOFOLLOW: not a link put there meanwhile) is kept open.
            write_atomic(self.stats_path, rec, durable=False)
            if self._stats_fd is None and len(rec) <= STATS_RECORD:
                self._stats_fd = os.open(self.stats_path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            return
        os.pwrite(self._stats_fd, rec, 0)

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
        mono = self.clock
        heap = self.heap
        release_due = self.release_due
        fdmap = self._fdmap
        armed = 0.0
        self.dump_lateness()   # the file, made once here: later dumps rewrite it in place
        next_dump, dumped = 0.0, 0
        try:
            while not self.stop:
                if self.reload:
                    self.reload = False
                    self.apply_config()
                now = mono()
                release_due(now)
                if now >= next_dump and self.lateness[0] != dumped:
                    self.dump_lateness()
                    dumped, next_dump = self.lateness[0], now + STATS_EVERY_S
                nxt_t = heap[0][0] if heap else 0.0
                if nxt_t != armed:
                    self._libc.arm(tfd, nxt_t)
                    armed = nxt_t
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
            stages = [q for q in self.queues.values() if q.nfq is None]
            for q in stages + [q for q in self.queues.values() if q.nfq is not None]:
                self._unbind(q)
            try:
                self.dump_lateness()
            except OSError:
                pass


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
