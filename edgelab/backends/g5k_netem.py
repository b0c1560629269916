"""The plan's link parameters as EnOSlib netem constraints.

On Grid'5000 each virtual node is a real machine on a wired network, so every
plan interface becomes netem on that machine's NIC, on egress *and* ingress
(EnOSlib's ``NetemOutConstraint``/``NetemInConstraint``; ingress goes through
an IFB). That reproduces the local backend's star: traffic from a phone to the
server is delayed once by the phone's Wi-Fi link (phone egress) and once by
the server's uplink (server ingress), as it is when it crosses the access
point namespace locally.

What this cannot reproduce is a *shared* airtime budget (one cell capacity
for all stations): constraints are per machine. :func:`unemulated` lists
those segments so the results manifest says so.
"""

from __future__ import annotations

from typing import Collection, Mapping, Optional

from ..model import LinkParams
from ..plan import Plan


def _num(x: float) -> str:
    return f"{x:g}"


def netem_options(link: LinkParams) -> str:
    """tc-netem option string, e.g. ``delay 2ms 0.5ms loss 0.5% rate 65mbit``.

    Delay and jitter are one-way per direction in the plan, as netem applies
    them per egress; zero values are left out.
    """
    parts = []
    if link.delay_ms > 0 or link.jitter_ms > 0:
        parts.append(f"delay {_num(link.delay_ms)}ms" + (f" {_num(link.jitter_ms)}ms" if link.jitter_ms > 0 else ""))
    if link.loss_pct > 0:
        parts.append(f"loss {_num(link.loss_pct)}%")
    if link.rate_mbit > 0:
        parts.append(f"rate {_num(link.rate_mbit)}mbit")
    return " ".join(parts)


def netem_constraints(plan: Plan, devices: Mapping[str, str] | None = None,
                      per_node: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, list]:
    """Plan node -> EnOSlib constraints (out, in) for each of its interfaces.

    ``devices`` maps a plan interface name (``wlan0``) to the NIC that carries
    it on the machine (by default the plan's name); ``per_node`` does so for
    one node (NIC names found on each machine) and wins over ``devices``.
    """
    from enoslib import NetemInConstraint, NetemOutConstraint

    devices = devices or {}
    per_node = per_node or {}
    out: dict[str, list] = {}
    for node in plan.nodes:
        cons = []
        mine = {**devices, **per_node.get(node.name, {})}
        for itf in node.interfaces:
            opts = netem_options(itf.link)
            if not opts:
                continue
            dev = mine.get(itf.ifname, itf.ifname)
            cons += [NetemOutConstraint(device=dev, options=opts), NetemInConstraint(device=dev, options=opts)]
        out[node.name] = cons
    return out


def build_netem(plan: Plan, hosts: Mapping[str, object], devices: Optional[Mapping[str, str]] = None,
                per_node: Optional[Mapping[str, Mapping[str, str]]] = None, egress_only: Collection[str] = ()):
    """An ``enoslib.Netem`` service holding the plan's constraints for ``hosts``
    (plan node -> ``enoslib.Host``); ``.deploy()`` applies them, ``.destroy()``
    removes them. ``egress_only``: nodes without ingress constraints -- a Wi-Fi
    access point, whose station filters need the clsact hook that EnOSlib's
    ``tc qdisc add dev X ingress`` (service/emul/netem.py NetemInConstraint) would take."""
    from enoslib import Netem, NetemInOutSource

    netem = Netem()
    for name, cons in netem_constraints(plan, devices, per_node).items():
        if name in egress_only:
            cons = [c for c in cons if type(c).__name__ != "NetemInConstraint"]
        if cons and name in hosts:
            source = NetemInOutSource(hosts[name])
            source.add_constraints(cons)
            netem.sources[hosts[name]] = source
    return netem


def unemulated(plan: Plan) -> list[str]:
    """Shared Wi-Fi segments whose aggregate airtime budget per-machine netem cannot enforce."""
    return [f"{net.name}/segment{s.index} (capacity {s.capacity_mbit:.1f} Mbit/s shared by {len(s.stations)})"
            for net in plan.networks for s in net.segments if s.capacity_mbit is not None]
