"""Measure what an emulated link really does (rate, delay, jitter, loss) between namespaces.

Used by the root tests and by ``benchmarks/link_fidelity.py``. Rate is read
from the receiver's interface byte counter (L2 bytes, as HTB counts them;
see ``commands`` for the accounting), so it is independent of TCP's
header overhead; iperf3 only generates the load.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Iterator, Optional


def sh(argv: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({cp.returncode}): {cp.stderr.strip()}")
    return cp


@dataclass
class Pair:
    """Two namespaces joined by a veth: a/dev_a (addr_a) <-> b/dev_b (addr_b)."""
    a: str
    b: str
    dev_a: str
    dev_b: str
    addr_a: str
    addr_b: str


@contextlib.contextmanager
def veth_pair(prefix: str, subnet: int = 77) -> Iterator[Pair]:
    """Create namespaces ``<prefix>a``/``<prefix>b`` joined by a veth; always deleted on exit."""
    p = Pair(f"{prefix}a", f"{prefix}b", f"{prefix}va", f"{prefix}vb",
             f"10.{subnet}.0.1", f"10.{subnet}.0.2")
    try:
        for ns in (p.a, p.b):
            sh(["ip", "netns", "del", ns], check=False)
            sh(["ip", "netns", "add", ns])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        sh(["ip", "-n", p.a, "link", "add", p.dev_a, "type", "veth", "peer", "name", p.dev_b, "netns", p.b])
        sh(["ip", "-n", p.a, "addr", "add", f"{p.addr_a}/24", "dev", p.dev_a])
        sh(["ip", "-n", p.b, "addr", "add", f"{p.addr_b}/24", "dev", p.dev_b])
        sh(["ip", "-n", p.a, "link", "set", p.dev_a, "up"])
        sh(["ip", "-n", p.b, "link", "set", p.dev_b, "up"])
        yield p
    finally:
        for ns in (p.a, p.b):
            sh(["ip", "netns", "del", ns], check=False)


def rx_bytes(ns: str, dev: str) -> int:
    out = sh(["ip", "-n", ns, "-j", "-s", "link", "show", "dev", dev]).stdout
    return int(json.loads(out)[0]["stats64"]["rx"]["bytes"])


@dataclass
class RateResult:
    l2_mbit: float        # receiver's L2 byte counter over the steady-state window
    goodput_mbit: float   # iperf3's TCP payload rate over the whole run


def measure_rate(src_ns: str, dst_ns: str, dst_dev: str, dst_addr: str, *, seconds: float = 3.0,
                 warmup: float = 1.0, port: int = 5201, udp_mbit: Optional[float] = None) -> RateResult:
    """Saturate src->dst with iperf3; L2 rate from dst_dev's rx byte counter after warm-up.

    With ``udp_mbit`` (offered load, set it above the link rate) the load is
    UDP datagrams of 1400 bytes: no GSO, so the veth's rx byte counter is the
    exact L2 byte count. With TCP (default) the sender's GSO super-packets
    are counted with one header each by the receiving veth, so that counter
    under-reports L2 bytes by ~4 %; prefer UDP for accuracy figures.
    """
    srv = subprocess.Popen(["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-p", str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.2)
        total = warmup + seconds + 0.5
        cli = subprocess.Popen(["ip", "netns", "exec", src_ns, "iperf3", "-c", dst_addr, "-p", str(port),
                                "-t", f"{total:.1f}", "-J",
                                *(["-u", "-b", f"{udp_mbit}M", "-l", "1400", "-w", "8M"] if udp_mbit else [])], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        time.sleep(warmup)
        b0, t0 = rx_bytes(dst_ns, dst_dev), time.monotonic()
        time.sleep(seconds)
        b1, t1 = rx_bytes(dst_ns, dst_dev), time.monotonic()
        out, err = cli.communicate(timeout=total + 30)
        good = 0.0
        try:
            end = json.loads(out)["end"]
            good = (end["sum"] if udp_mbit else end["sum_received"])["bits_per_second"] / 1e6
            if udp_mbit:
                good *= 1 - end["sum"].get("lost_percent", 0) / 100
        except (ValueError, KeyError, TypeError):
            pass
        return RateResult(l2_mbit=(b1 - b0) * 8 / (t1 - t0) / 1e6, goodput_mbit=good)
    finally:
        srv.kill()
        srv.wait()


@dataclass
class PingResult:
    sent: int
    received: int
    rtt_min: float
    rtt_avg: float
    rtt_max: float
    rtt_mdev: float

    @property
    def loss_pct(self) -> float:
        """Round-trip loss in percent (0 when nothing was sent)."""
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else 0.0

    @property
    def loss_rt(self) -> float:
        return 1 - self.received / self.sent if self.sent else math.nan

    @property
    def loss_one_way(self) -> float:
        """Per-direction loss from round-trip loss, both directions being impaired alike."""
        return 1 - math.sqrt(max(0.0, 1 - self.loss_rt))


def ping(ns: str, addr: str, *, count: int, interval: float, size: int = 56,
         timeout: Optional[float] = None) -> PingResult:
    """ping with -U (user-to-user RTT): ping's default RTT uses the reply's kernel receive
    timestamp, taken *before* the PREROUTING NFQUEUE delay, so from inside a namespace with
    the fallback engine it would miss the ingress delay that applications do see."""
    wait = 2 if timeout is None else timeout
    cp = sh(["ip", "netns", "exec", ns, "ping", "-U", "-n", "-q", "-c", str(count), "-i", str(interval),
             "-s", str(size), "-W", str(wait), addr], check=False, timeout=count * interval + 30)
    result = parse_ping_summary(cp.stdout)
    if result is None:
        raise RuntimeError(f"ping output not understood: {cp.stdout!r} {cp.stderr!r}")
    return result


def parse_ping_summary(text: str) -> Optional[PingResult]:
    """Counts and RTT statistics of iputils ping's summary (``-q``); None if there is none."""
    m = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    if not m:
        return None
    r = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+) ms", text)
    vals = [float(x) for x in r.groups()] if r else [math.nan] * 4
    return PingResult(int(m.group(1)), int(m.group(2)), *vals)
