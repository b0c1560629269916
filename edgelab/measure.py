"""Measurement helpers shared by experiments, on top of the Testbed interface.

Tools are the ordinary ones (iperf3, ping, the project's load generator), run
*inside* the nodes, so what is measured is what crossed the emulated network.
Parsing is kept in pure functions so it is tested without a testbed.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from .backends.base import Testbed
from .errors import BackendError

IPERF_BASE_PORT = 5201


def parse_iperf3(text: str) -> dict:
    """Goodput and retransmits from ``iperf3 --json`` output (TCP or UDP)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BackendError(f"iperf3 did not print JSON: {text[:200]!r}") from exc
    if "error" in data:
        raise BackendError(f"iperf3 failed: {data['error']}")
    end = data["end"]
    if "sum_received" in end:  # TCP
        recv = end["sum_received"]
        return {"goodput_mbit": recv["bits_per_second"] / 1e6, "seconds": recv["seconds"],
                "bytes": recv["bytes"], "retransmits": end.get("sum_sent", {}).get("retransmits", 0)}
    s = end["sum"]  # UDP
    return {"goodput_mbit": s["bits_per_second"] * (1 - s.get("lost_percent", 0) / 100) / 1e6,
            "seconds": s["seconds"], "bytes": s["bytes"], "lost_percent": s.get("lost_percent", 0.0),
            "jitter_ms": s.get("jitter_ms", 0.0)}


def concurrent_goodput(tb: Testbed, clients: Sequence[str], server: str, seconds: float = 5.0,
                       network: Optional[str] = None, reverse: bool = False) -> dict[str, dict]:
    """All ``clients`` send TCP to ``server`` at once (one iperf3 server per client).

    ``reverse`` makes the server send (downlink). Returns per-client parse_iperf3 dicts.
    """
    addr = tb.address(server, network)
    servers = []
    try:
        for i, _ in enumerate(clients):
            servers.append(tb.popen(server, ["iperf3", "-s", "-1", "-p", str(IPERF_BASE_PORT + i)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_listening(tb, server, [IPERF_BASE_PORT + i for i in range(len(clients))])
        procs = {}
        for i, c in enumerate(clients):
            argv = ["iperf3", "-c", addr, "-p", str(IPERF_BASE_PORT + i), "-t", f"{seconds:g}", "--json",
                    "-O", "1"]
            if reverse:
                argv.append("-R")
            procs[c] = tb.popen(c, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = {}
        for c, p in procs.items():
            stdout, stderr = p.communicate(timeout=seconds + 30)
            out[c] = parse_iperf3(stdout or stderr)
        return out
    finally:
        for s in servers:
            if s.poll() is None:
                s.kill()
                s.wait()


def _wait_listening(tb: Testbed, node: str, ports: Iterable[int], timeout: float = 10.0) -> None:
    """Wait until the TCP ports listen inside ``node`` (ss -ltn)."""
    want = set(ports)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = tb.run(node, ["ss", "-Hltn"], check=False).stdout
        listening = {int(m.group(1)) for m in re.finditer(r":(\d+)\s", out)}
        if want <= listening:
            return
        time.sleep(0.05)
    raise BackendError(f"ports {sorted(want)} did not start listening on {node} within {timeout:g} s")


PING_RE = re.compile(r"time=([\d.]+) ms")
PING_SUMMARY_RE = re.compile(r"(\d+) packets transmitted, (\d+) received")


def parse_ping(text: str) -> dict:
    """RTT samples, loss and summary from iputils ping output."""
    rtts = [float(x) for x in PING_RE.findall(text)]
    m = PING_SUMMARY_RE.search(text)
    sent, received = (int(m.group(1)), int(m.group(2))) if m else (len(rtts), len(rtts))
    return {"rtts_ms": rtts, "sent": sent, "received": received,
            "loss_pct": 100.0 * (sent - received) / sent if sent else math.nan}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100), NaN for no values."""
    if not values:
        return math.nan
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


@dataclass
class CpuSample:
    t: float
    seconds: float


def utilisation(before: CpuSample, after: CpuSample, quota_cores: float) -> float:
    """Fraction of a node's CPU quota used between two cumulative CPU-time samples."""
    wall = after.t - before.t
    if wall <= 0 or quota_cores <= 0:
        return math.nan
    return (after.seconds - before.seconds) / (wall * quota_cores)
