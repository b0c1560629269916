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
#: A flow carries data once its port has seen more than this: an iperf3 control
#: connection alone exchanges a few hundred bytes.
FLOW_STARTED_BYTES = 64 * 1024
#: Extra seconds each iperf3 flow runs beyond settle + window: on a loaded machine the flows may
#: take a while to all carry data, and the window must close before any of them ends.
FLOW_START_ALLOWANCE_S = 3.0


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


def tcp_bytes_by_local_port(ss_text: str, field: str = "bytes_received") -> dict[int, int]:
    """Sum of ``field`` (``bytes_received``, ``bytes_acked``...) per local port, from
    ``ss -tinH state established`` output: a socket line, then its indented info line."""
    out: dict[int, int] = {}
    port: Optional[int] = None
    pat = re.compile(rf"\b{re.escape(field)}:(\d+)")
    for line in ss_text.splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():  # "Recv-Q Send-Q local:port peer:port"
            cols = line.split()
            port = int(cols[-2].rsplit(":", 1)[1]) if len(cols) >= 2 and ":" in cols[-2] else None
            continue
        m = pat.search(line)
        if port is not None and m:
            out[port] = out.get(port, 0) + int(m.group(1))
    return out


def _server_bytes(tb: Testbed, server: str, field: str) -> tuple[float, dict[int, int]]:
    """(time of the snapshot, ``field`` bytes per local port) of ``server``'s TCP sockets."""
    t = time.monotonic()
    out = tb.run(server, ["ss", "-tinH", "state", "established"], check=False).stdout
    return (t + time.monotonic()) / 2, tcp_bytes_by_local_port(out, field)


def _iperf3_failure(p: subprocess.Popen) -> str:
    """What an iperf3 client that exited early said: its JSON error, else its output's tail."""
    stdout, stderr = p.communicate()
    try:
        run = parse_iperf3(stdout or "")
    except BackendError as exc:
        return str(exc) if stdout else f"exited {p.returncode}: {(stderr or '')[-300:]!r}"
    except (KeyError, TypeError):   # JSON, but not a finished run's
        return f"exited {p.returncode} without a result"
    # A run that finished: what it says it moved, not its whole JSON.
    return (f"iperf3 ended (exit {p.returncode}) after {run['seconds']:.1f} s having moved {run['bytes']} bytes "
            f"({run['goodput_mbit']:.2f} Mbit/s) without its flow reaching {FLOW_STARTED_BYTES} bytes at the server")


def concurrent_goodput(tb: Testbed, clients: Sequence[str], server: str, seconds: float = 5.0,
                       network: Optional[str] = None, reverse: bool = False,
                       settle: float = 1.0) -> dict[str, dict]:
    """All ``clients`` send TCP to ``server`` at once (one iperf3 server per client);
    each client's goodput over one window common to all of them.

    The window opens ``settle`` s after every flow carries data (past slow
    start) and lasts ``seconds``. Each flow's payload bytes in it are read
    from the server's own sockets (``ss -ti``: ``bytes_received``, or
    ``bytes_acked`` with ``reverse``, where the server sends). Not iperf3's
    per-run averages: the runs start and end a little apart, a flow alone at
    either end has the whole medium, and on a shared medium their sum came out
    up to 15 % above its capacity. Returns per client: goodput_mbit,
    seconds, bytes, and iperf3's own retransmits and goodput_mbit (as
    ``iperf3_goodput_mbit``) for reference.
    """
    addr = tb.address(server, network)
    ports = {c: IPERF_BASE_PORT + i for i, c in enumerate(clients)}
    field = "bytes_acked" if reverse else "bytes_received"
    # the last snapshot is taken well before any flow ends, even if the flows were slow to start
    duration = settle + seconds + 1.0 + FLOW_START_ALLOWANCE_S
    servers: list[subprocess.Popen] = []
    procs: dict[str, subprocess.Popen] = {}
    try:
        for port in ports.values():
            servers.append(tb.popen(server, ["iperf3", "-s", "-1", "-p", str(port)],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_listening(tb, server, ports.values())
        for c, port in ports.items():
            argv = ["iperf3", "-c", addr, "-p", str(port), "-t", f"{duration:g}", "--json"]
            if reverse:
                argv.append("-R")
            procs[c] = tb.popen(c, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        launched = time.monotonic()
        _wait_flows_carry_data(tb, server, ports, procs, field)
        if time.monotonic() - launched + settle + seconds > duration - 0.5:
            raise BackendError(f"iperf3 flows to {server} took {time.monotonic() - launched:.1f} s to all carry "
                               f"data: a {seconds:g} s window would outlast them (machine overloaded?)")
        time.sleep(settle)
        t0, b0 = _server_bytes(tb, server, field)
        time.sleep(seconds)
        t1, b1 = _server_bytes(tb, server, field)
        gone = [c for c, port in ports.items() if port not in b1 or b1[port] < b0.get(port, 0)]
        if gone:  # a flow ended (or its socket vanished) inside the window: its count would be wrong
            raise BackendError(f"iperf3 flows from {', '.join(gone)} to {server} ended before the "
                               f"{seconds:g} s measurement window closed")
        out = {}
        for c, p in procs.items():
            stdout, stderr = p.communicate(timeout=duration + 30)
            run = parse_iperf3(stdout or stderr)
            n = b1.get(ports[c], 0) - b0.get(ports[c], 0)
            out[c] = {"goodput_mbit": n * 8 / (t1 - t0) / 1e6, "seconds": t1 - t0, "bytes": n,
                      "retransmits": run.get("retransmits", 0), "iperf3_goodput_mbit": run["goodput_mbit"]}
        return out
    finally:
        for p in [*procs.values(), *servers]:
            if p.poll() is None:
                p.kill()
                p.wait()


def _wait_flows_carry_data(tb: Testbed, server: str, ports: dict[str, int], procs: dict[str, subprocess.Popen],
                           field: str, timeout: float = 10.0) -> None:
    """Wait until every client's flow (``ports``: client -> server port) has carried data
    to ``server``; fail at once, with iperf3's own error, if a client's iperf3 ends first."""
    deadline = time.monotonic() + timeout
    started: set[str] = set()   # flows seen carrying data (a finished flow's socket leaves ss)
    while True:
        _, counts = _server_bytes(tb, server, field)
        started |= {c for c, port in ports.items() if counts.get(port, 0) > FLOW_STARTED_BYTES}
        slow = [c for c in ports if c not in started]
        if not slow:
            return
        ended = [c for c, p in procs.items() if p.poll() is not None]
        # Blame the flows that carried nothing, not a client that merely ran to its end.
        dead = [c for c in ended if c in slow]
        if dead:
            why = "; ".join(f"{c}: {_iperf3_failure(procs[c])}" for c in dead)
            raise BackendError(f"iperf3 to {server} ended before every flow carried data: {why}")
        if ended:
            raise BackendError(f"iperf3 flows from {', '.join(slow)} to {server} carried no data while "
                               f"{', '.join(ended)} ran to its end")
        if time.monotonic() > deadline:
            raise BackendError(f"iperf3 flows from {', '.join(slow)} to {server} carried no data "
                               f"within {timeout:g} s")
        time.sleep(0.05)


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
