"""One process that probes from many network namespaces at a fixed rate: ICMP echo, kernel timestamps.

    .venv/bin/python benchmarks/prober.py < spec.json     (spec: see ``main``; prints JSON)

Why: iputils ping cannot send 100 echo requests per second on this HZ=250 kernel even alone
(it times its sends in whole milliseconds and jiffies: 50-69/s), and 100 of them spin with
``sched_yield`` between sends, loading the machine whose link emulation they measure. Here one
process holds one ICMP "ping" socket per station (``SOCK_DGRAM``/``IPPROTO_ICMP``, created inside
the station's namespace after ``setns``: a socket belongs to the namespace it was created in; the
kernel fills the identifier and checksum and hands each socket only its own replies) and sends every
station's requests on one absolute ``timerfd`` schedule, station ``i`` offset by ``i / (N * rate)``.

Measured per station: requests sent, replies received, the mean round trip from the send instant
(taken just before ``sendto``) to the reply's **kernel receive timestamp** (``SO_TIMESTAMPNS``, on
arrival in the station's namespace: the network's delay, not the prober's wait for a core), and how
late the prober itself sent (slot to ``sendto``): a request is *never sent* when its slot fell in the
window but the prober had not reached it when the window closed. The prober is one more normal
process on the machine it measures; its own CPU time is printed. Before the window, every station
pings until it has one reply (:func:`warm_up`: its ARP entry resolved).
"""

from __future__ import annotations

import json
import os
import resource
import select
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelab.linkemu.delayer import Libc  # noqa: E402  (setns and timerfd through libc, as the delayer)

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: Echo request: type 8, code 0, checksum and identifier filled by the kernel (ping socket).
_HDR = struct.Struct("!BBHHH")
_PAYLOAD = struct.Struct("!qI")   # send instant (ns, CLOCK_REALTIME), station index


def open_sockets(libc: Libc, netns: list[str]) -> list[socket.socket]:
    """One ping socket per namespace, created inside it (and ping sockets allowed to root there)."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    socks = []
    try:
        for path in netns:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                libc.setns(fd)
            finally:
                os.close(fd)
            # net.ipv4.ping_group_range is per namespace (default "1 0": nobody, root included)
            with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
                f.write("0 0")
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.setblocking(False)
            socks.append(s)
    finally:
        libc.setns(home)
        os.close(home)
    return socks


def warm_up(socks: list[socket.socket], dst: str, *, timeout: float = 5.0, every: float = 0.25) -> dict:
    """Send one echo request per station until each has had a reply (or ``timeout``): the stations'
    neighbour (ARP) entries for ``dst`` are then resolved before the measured window.

    Why: each station resolves the server's address on its first packet. On a lossy link (the
    profile's 0.5 % each way, and the airtime budget's drops when 100 stations start at once) an
    ARP request or reply is sometimes lost; the kernel asks again after 1 s and holds that station's
    packets meanwhile. Measured here without this warm-up: in 6 of 8 runs one or more stations (up to
    24) had mean RTTs of 26-56 ms against ~4.5 ms for the others, up to +8.6 ms on the cell's mean;
    in the 3 of them whose RTTs were recorded over time, those stations' RTTs were 0.4-1 s during the
    first 0.75 s and normal after. That is address resolution, not link delay, so it happens before the window."""
    pending = set(range(len(socks)))
    poller = select.poll()
    by_fd = {s.fileno(): i for i, s in enumerate(socks)}
    for s in socks:
        poller.register(s.fileno(), select.POLLIN)
    rounds = 0
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        rounds += 1
        for i in pending:
            try:
                socks[i].sendto(_HDR.pack(8, 0, 0, 0, 0xFFFF) + _PAYLOAD.pack(0, i), (dst, 0))
            except OSError:
                pass
        until = min(deadline, time.monotonic() + every)
        while pending and time.monotonic() < until:
            for fd, _ in poller.poll(max(0.0, 1000 * (until - time.monotonic()))):
                s = socks[by_fd[fd]]
                while True:
                    try:
                        data = s.recv(256)
                    except BlockingIOError:
                        break
                    if len(data) >= _HDR.size + _PAYLOAD.size and data[0] == 0:
                        pending.discard(_PAYLOAD.unpack_from(data, _HDR.size)[1])
    return {"warm_up_rounds": rounds, "warm_up_unanswered": len(pending)}


def probe(socks: list[socket.socket], dst: str, *, rate: float, seconds: float, size: int = 56,
          start_in: float = 0.05, linger: float = 0.5, tick: float = 0.001) -> dict:
    """Probe ``dst`` from every socket (:func:`open_sockets`) at ``rate`` per second for ``seconds``.
    A request not sent within one interval after the window closed is never sent.

    The loop wakes at most once per ``tick`` (its timerfd alone), sends what is due and reads
    every reply that arrived meanwhile: 10,000 probes per second cost ~1,000 wake-ups, not
    20,000 (one per send and per reply took a whole core here). Replies carry their kernel
    arrival time, so reading them up to a tick later changes no RTT; a send can be up to a
    tick late, which the result reports."""
    libc = Libc()
    n = len(socks)
    pad = b"\0" * max(0, size - _PAYLOAD.size)
    tfd = libc.timerfd(blocking=True)   # the loop sleeps in read()
    ep = select.epoll()   # the sockets only, polled without waiting once per tick
    by_fd = {}
    for i, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        by_fd[s.fileno()] = i
    sent = [0] * n
    recv = [0] * n
    rtt_sum = [0.0] * n
    send_late_sum = 0.0
    send_late_max = 0.0
    slots = int(seconds * rate)
    step = 1.0 / (rate * n)   # one send every step, stations in turn
    total = slots * n
    mono = time.monotonic
    now_ns = time.time_ns
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = mono() + start_in
    k = 0   # next send (slot k // n of station k % n)
    end = t0 + seconds
    stop_at = end + linger
    dst_addr = (dst, 0)

    def drain(fd: int) -> None:
        i = by_fd[fd]
        s = socks[i]
        while True:
            try:
                data, anc, _flags, _a = s.recvmsg(64 + size, 64)
            except BlockingIOError:
                return
            if len(data) < _HDR.size + _PAYLOAD.size or data[0] != 0:   # echo reply only
                continue
            tx, idx = _PAYLOAD.unpack_from(data, _HDR.size)
            if idx != i or tx == 0:   # tx 0: a warm-up reply that came late
                continue
            for lvl, typ, val in anc:
                if lvl == socket.SOL_SOCKET and typ == SO_TIMESTAMPNS:
                    sec, nsec = struct.unpack("qq", val[:16])
                    recv[i] += 1
                    rtt_sum[i] += (sec * 1_000_000_000 + nsec - tx) / 1e6
                    break

    while True:
        t = mono()
        if t >= stop_at:
            break
        # every send due by now (catching up if late), but none after the window closed
        while k < total and t0 + k * step <= t and t < end + 1.0 / rate:
            i = k % n
            late = t - (t0 + k * step)
            send_late_sum += late
            if late > send_late_max:
                send_late_max = late
            seq = (k // n) & 0xFFFF
            try:
                socks[i].sendto(_HDR.pack(8, 0, 0, 0, seq) + _PAYLOAD.pack(now_ns(), i) + pad, dst_addr)
                sent[i] += 1
            except (BlockingIOError, OSError):
                pass   # a full socket buffer: counted as not sent
            k += 1
            t = mono()
        for fd, _ in ep.poll(0):
            drain(fd)
        nxt = t0 + k * step if k < total and t < end + 1.0 / rate else stop_at
        libc.arm(tfd, min(stop_at, max(nxt, t + tick)))
        os.read(tfd, 8)
    for fd, _ in ep.poll(0):   # what came during the last tick
        drain(fd)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    for s in socks:
        s.close()
    return {"stations": n, "asked_per_station": slots, "sent": sent, "received": recv,
            "rtt_ms_mean": [rtt_sum[i] / recv[i] if recv[i] else None for i in range(n)],
            "never_sent": total - k, "send_late_ms_mean": 1e3 * send_late_sum / max(1, k),
            "send_late_ms_max": 1e3 * send_late_max,
            "cpu_s": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)}


def main() -> int:
    """stdin: ``{"netns": [paths], "dst": addr, "rate": r, "seconds": s, "size": b}``; stdout: result
    JSON. Prints ``READY`` first once its sockets are open and waits for a line on stdin (the gate)."""
    spec = json.loads(sys.stdin.readline())
    socks = open_sockets(Libc(), spec["netns"])
    warm = warm_up(socks, spec["dst"])
    print("READY", flush=True)
    sys.stdin.readline()
    res = probe(socks, spec["dst"], rate=float(spec["rate"]), seconds=float(spec["seconds"]),
                size=int(spec.get("size", 56)))
    res.update(warm)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
