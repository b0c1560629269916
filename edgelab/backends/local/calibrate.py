"""Calibration: configured vs measured, for each link class of a running testbed.

Why: emulation is only trustworthy if it is checked on the machine that runs
it (kernel, engine, CPU load all matter). For each network segment one
representative path is measured with real traffic: ping for RTT, jitter
(RTT standard deviation) and loss, iperf3 UDP for the bottleneck rate. The
*expected* value of each metric is derived from the configured links the
path crosses, so a row is directly a verdict on the emulation.

Paths: a station to the first uplink of its network (or to another member
when there is no uplink), and for a mesh the first neighbour pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from ...model import LinkParams
from . import probes

PING_COUNT = 200
PING_INTERVAL = 0.01
IPERF_SECONDS = 2.0


@dataclass(frozen=True)
class Path:
    network: str
    segment: str  # "0", "uplink", "mesh"
    kind: str
    src: str
    dst: str
    dst_ip: str
    links: tuple[LinkParams, ...]  # every link crossed (each both ways for a round trip)
    capacity_mbit: Optional[float] = None  # shared airtime budget crossed, if any


def expected(path: Path) -> dict[str, float]:
    """What the configuration promises for this path (pure)."""
    rtt = sum(2 * l.delay_ms for l in path.links)
    # Uniform jitter +-j has variance j^2/3; four independent draws per round trip on two links.
    jitter = math.sqrt(sum(2 * l.jitter_ms ** 2 / 3 for l in path.links))
    keep = 1.0
    for l in path.links:
        keep *= (1 - l.loss_pct / 100) ** 2
    rates = [l.rate_mbit for l in path.links if l.rate_mbit > 0]
    if path.capacity_mbit:
        rates.append(path.capacity_mbit)
    rate = min(rates) if rates else float("nan")
    one_way_keep = 1.0
    for l in path.links:
        one_way_keep *= 1 - l.loss_pct / 100
    return {
        "rtt_ms": rtt,
        "rtt_sd_ms": jitter,
        "loss_pct": 100 * (1 - keep),
        "rate_mbit": rate,
        # UDP payload goodput: L2 rate minus headers, minus one-way loss.
        "udp_goodput_mbit": rate * probes.UDP_PAYLOAD / probes.UDP_FRAME * one_way_keep,
    }


def paths(testbed: Any) -> list[Path]:
    plan = testbed.plan
    caps = {(s.network, s.segment): s.capacity_mbit for s in getattr(testbed, "blueprint").shared} \
        if hasattr(testbed, "blueprint") else {}
    out: list[Path] = []
    for net in plan.networks:
        if net.kind == "batman-mesh":
            if net.mesh_links:
                a, b = net.mesh_links[0]
                link = next(i.link for i in plan.node(a).interfaces if i.network == net.name)
                out.append(Path(net.name, "mesh", net.kind, a, b, plan.node(b).address(net.name), (link,)))
            continue
        for seg in net.segments:
            if not seg.stations:
                continue
            src = seg.stations[0]
            if net.uplinks:
                dst, dst_link = net.uplinks[0], net.uplink_link
            else:
                others = [m for m in net.members if m != src]
                if not others:
                    continue
                dst = others[0]
                dst_link = next(i.link for i in plan.node(dst).interfaces if i.network == net.name)
            out.append(Path(net.name, str(seg.index), seg.kind, src, dst, plan.node(dst).address(net.name),
                            (seg.link, dst_link), caps.get((net.name, seg.index))))
    return out


def measure(testbed: Any, path: Path) -> dict[str, Any]:
    p = probes.ping(testbed, path.src, path.dst_ip, count=PING_COUNT, interval=PING_INTERVAL)
    exp = expected(path)
    # UDP rate, sent from the end whose egress has no loss when there is one:
    # a netfilter drop on the sender's own egress is reported to the sender as
    # EPERM, which makes iperf3 abort (a real lossy link never tells the sender).
    src_link, dst_link = path.links[0], path.links[-1]
    reverse = src_link.loss_pct > 0 and dst_link.loss_pct == 0
    note = "iperf3 UDP" + (" (reverse: sender egress loss)" if reverse else "")
    offered = min(exp["rate_mbit"] * 1.3, 2000) if math.isfinite(exp["rate_mbit"]) else 1000
    goodput: float = float("nan")
    if src_link.loss_pct > 0 and dst_link.loss_pct > 0:
        note = "rate not measured: both ends have egress loss (UDP sender would get EPERM)"
    else:
        end = probes.iperf3(testbed, path.src, path.dst, path.dst_ip, seconds=IPERF_SECONDS,
                            udp_mbit=offered, reverse=reverse)
        goodput = probes.udp_received_mbit(end)
    return {
        "rtt_ms": p.rtt_avg, "rtt_sd_ms": p.rtt_mdev, "loss_pct": p.loss_pct,
        "udp_goodput_mbit": goodput, "note": note,
    }


def calibrate(testbed: Any) -> list[dict]:
    """One row per (path, metric): configured/expected value, measured value, relative error."""
    rows: list[dict] = []
    for path in paths(testbed):
        exp = expected(path)
        got = measure(testbed, path)
        label = f"{path.network}/{path.segment} ({path.kind}) {path.src}->{path.dst}"
        for metric in ("rtt_ms", "rtt_sd_ms", "loss_pct", "udp_goodput_mbit"):
            e, m = exp[metric], got[metric]
            err = (m - e) / e * 100 if e and math.isfinite(m) and math.isfinite(e) else None
            rows.append({"path": label, "network": path.network, "segment": path.segment, "kind": path.kind,
                         "metric": metric, "expected": round(e, 3), "measured": round(m, 3),
                         "error_pct": None if err is None else round(err, 1),
                         "note": got["note"] if metric == "udp_goodput_mbit" else "",
                         "capacity_mbit": path.capacity_mbit})
    return rows
