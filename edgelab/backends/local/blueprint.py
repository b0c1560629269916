"""What to build for a plan, as plain data (pure: no kernel calls).

Separating the *what* (this module) from the *how* (``wiring``) keeps the
mapping from a Plan to namespaces, veths, bridges and impairments testable
without root, and gives the state file its list of objects before any of
them exists.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Optional

from ...errors import BackendError
from ...model import LinkParams
from ...plan import Plan, SegmentPlan
from .naming import BRIDGE, cgroup_rel, netns_name, port_name, shared_medium_name


@dataclass(frozen=True)
class End:
    ns: str
    ifname: str
    address: Optional[str] = None  # "10.77.0.5/24"
    master: Optional[str] = None   # bridge to enslave to (infra side)
    mac: Optional[str] = None      # fixed MAC (node side), see ``node_mac``
    mtu: Optional[int] = None      # set on a network that spans hosts (room for the VXLAN header)


@dataclass(frozen=True)
class Veth:
    a: End  # the node side: link emulation's delay/loss live here (fallback engine)
    b: End
    link: Optional[LinkParams]
    label: str  # "<network>:<node>" for error messages and calibration


@dataclass(frozen=True)
class Shared:
    ns: str
    name: str
    ports: tuple[str, ...]
    capacity_mbit: float
    network: str
    segment: int
    station_macs: tuple[str, ...] = ()  # aligned with ports: who gets which fair share
    #: aligned with ports: each station's node and its (share, ceil) Mbit/s from the airtime model
    stations: tuple[str, ...] = ()
    station_rates: tuple[tuple[float, float], ...] = ()
    #: One of ``ports`` (a VXLAN port to other hosts) also carries frames that are no station's:
    #: only frames from or to ``station_macs`` are charged (``apply_shared_medium``'s station-only form).
    station_only: bool = False


@dataclass(frozen=True)
class RouteSpec:
    ns: str
    destination: str
    via: str
    dev: str


@dataclass(frozen=True)
class TunnelSpec:
    """A VXLAN port of a spanned network's bridge: its UDP socket in the namespace that builds
    the testbed (the host's, where ``local`` is an address), the device itself in ``ns``."""

    network: str
    ns: str
    dev: str
    vni: int
    local: str
    peers: tuple[str, ...]
    mtu: int
    port: int = 4789
    #: A Wi-Fi cell's AP host: the VXLAN port reflects frames between two remote stations
    #: (hairpin mode), after the cell's budget charged them (``wiring.create_tunnels``).
    hairpin: bool = False
    #: Another host of a Wi-Fi cell: (bridge port, MAC of the member behind it) of every member
    #: here; they talk to each other only through the AP host (``wiring.create_tunnels``).
    spokes: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class CgroupSpec:
    node: str
    rel: str
    host_cpu: float
    memory_mib: int


@dataclass
class Blueprint:
    testbed: str
    node_ns: dict[str, str] = field(default_factory=dict)    # node -> netns
    infra_ns: dict[str, str] = field(default_factory=dict)   # infra element -> netns
    bridges: list[tuple[str, str]] = field(default_factory=list)  # (ns, bridge)
    veths: list[Veth] = field(default_factory=list)
    shared: list[Shared] = field(default_factory=list)
    routes: list[RouteSpec] = field(default_factory=list)
    forwarding: set[str] = field(default_factory=set)  # namespaces that route (mesh nodes)
    cgroups: list[CgroupSpec] = field(default_factory=list)
    tunnels: list[TunnelSpec] = field(default_factory=list)

    @property
    def namespaces(self) -> list[str]:
        return list(self.node_ns.values()) + list(self.infra_ns.values())


def node_mac(index: int) -> str:
    """MAC of the ``index``-th node-side veth of a testbed: locally administered, unicast.

    Fixed rather than random so that a re-run builds the same frames, and so
    the shared medium can tell stations apart by MAC before any of them has
    sent a frame.
    """
    if not 0 <= index < 1 << 32:
        raise ValueError(f"veth index {index} out of range")
    return "02:ed:" + ":".join(f"{(index >> s) & 0xFF:02x}" for s in (24, 16, 8, 0))


def _impairs(link: Optional[LinkParams]) -> bool:
    return link is not None and (link.rate_mbit > 0 or link.delay_ms > 0 or link.jitter_ms > 0
                                 or link.loss_pct > 0)


def build(plan: Plan) -> Blueprint:
    tb = plan.topology.name
    bp = Blueprint(testbed=tb)
    for n in plan.nodes:
        bp.node_ns[n.name] = netns_name(tb, n.name)
        bp.cgroups.append(CgroupSpec(n.name, cgroup_rel(tb, n.name), n.resources.host_cpu, n.resources.memory_mib))
    for net in plan.networks:
        if net.kind == "batman-mesh":
            _mesh(plan, net, bp)
            continue
        ns = netns_name(tb, net.infra)
        bp.infra_ns[net.infra] = ns
        bp.bridges.append((ns, BRIDGE))
        position = 0
        ports_by_seg: dict[int, list[str]] = {}
        macs_by_seg: dict[int, list[str]] = {}
        nodes_by_seg: dict[int, list[str]] = {}
        for member in net.members:
            node = plan.node(member)
            for itf in node.interfaces:
                if itf.network != net.name:
                    continue
                port = port_name(member, position)
                position += 1
                mac = node_mac(len(bp.veths))
                bp.veths.append(Veth(
                    a=End(bp.node_ns[member], itf.ifname, itf.address, mac=mac),
                    b=End(ns, port, master=BRIDGE),
                    link=itf.link if _impairs(itf.link) else None,
                    label=f"{net.name}:{member}",
                ))
                if not itf.uplink:
                    ports_by_seg.setdefault(itf.segment, []).append(port)
                    macs_by_seg.setdefault(itf.segment, []).append(mac)
                    nodes_by_seg.setdefault(itf.segment, []).append(member)
        for seg in net.segments:
            cap = seg.capacity_mbit
            if cap is not None and ports_by_seg.get(seg.index):
                bp.shared.append(Shared(ns, shared_medium_name(seg.index), tuple(ports_by_seg[seg.index]),
                                        cap, net.name, seg.index, tuple(macs_by_seg[seg.index]),
                                        tuple(nodes_by_seg[seg.index]), station_rates_of(seg, nodes_by_seg[seg.index])))
    for n in plan.nodes:
        for r in n.routes:
            bp.routes.append(RouteSpec(bp.node_ns[n.name], r.destination, r.via, r.dev))
    return bp


def station_rates_of(seg: SegmentPlan, nodes: list[str]) -> tuple[tuple[float, float], ...]:
    """(share, ceil) of each of ``nodes`` (stations of ``seg``, in port order) from the airtime model."""
    by_node = dict(zip(seg.stations, zip(seg.station_shares_mbit, seg.station_ceils_mbit)))
    return tuple(by_node[n] for n in nodes)


def _mesh(plan: Plan, net, bp: Blueprint) -> None:
    """One veth pair per neighbour pair, both ends in node namespaces."""
    for a, b in net.mesh_links:
        ia = next(i for i in plan.node(a).interfaces if i.network == net.name and i.peer == b)
        ib = next(i for i in plan.node(b).interfaces if i.network == net.name and i.peer == a)
        bp.veths.append(Veth(a=End(bp.node_ns[a], ia.ifname, ia.address, mac=node_mac(len(bp.veths))),
                             b=End(bp.node_ns[b], ib.ifname, ib.address),
                             link=ia.link if _impairs(ia.link) else None,
                             label=f"{net.name}:{a}-{b}"))
        bp.forwarding.update({bp.node_ns[a], bp.node_ns[b]})


def restrict(full: Blueprint, plan: Plan, nodes: Iterable[str], tunnels: Iterable[TunnelSpec] = (),
             ap_networks: Iterable[str] = ()) -> Blueprint:
    """The share of ``full`` (built from the WHOLE plan) that one host of a folded testbed builds.

    Only ``nodes`` get namespaces, cgroups and veths, but their addresses and MACs are the whole
    plan's (``node_mac`` counts every veth of the plan), so frames stay distinct across hosts.
    A network gets a bridge namespace here when one of its members is here; ``tunnels`` add a
    VXLAN port to a spanned network's bridge and MTU ``tunnel.mtu`` on its veths. A Wi-Fi
    segment's airtime budget is built only where its network is in ``ap_networks``; stations on
    other hosts reach it through the VXLAN port and are charged there by MAC (station-only form).
    """
    local = set(nodes)
    unknown = local - set(full.node_ns)
    if unknown:
        raise BackendError(f"share names node(s) {sorted(unknown)[:5]} the plan does not have")
    tunnels = list(tunnels)
    ap_networks = set(ap_networks)
    infra_of = {net.name: net.infra for net in plan.networks}
    mtu_of = {t.network: t.mtu for t in tunnels}
    local_ns = {full.node_ns[n] for n in local}
    bp = Blueprint(testbed=full.testbed, node_ns={n: ns for n, ns in full.node_ns.items() if n in local},
                   cgroups=[c for c in full.cgroups if c.node in local],
                   forwarding={ns for ns in full.forwarding if ns in local_ns},
                   routes=[r for r in full.routes if r.ns in local_ns])
    for v in full.veths:
        a_here, b_here = v.a.ns in local_ns, v.b.ns in local_ns
        if a_here and v.b.ns in full.node_ns.values() and not b_here:
            raise BackendError(f"link {v.label} joins two nodes placed on different hosts; a mesh link cannot "
                               "span hosts (place both ends on one host)")
        if not a_here:
            continue
        mtu = mtu_of.get(v.label.split(":", 1)[0])
        bp.veths.append(replace(v, a=replace(v.a, mtu=mtu), b=replace(v.b, mtu=mtu)) if mtu else v)
    used_infra = {v.b.ns for v in bp.veths} & set(full.infra_ns.values())
    bp.infra_ns = {k: ns for k, ns in full.infra_ns.items() if ns in used_infra}
    bp.bridges = [(ns, br) for ns, br in full.bridges if ns in used_infra]
    cells = {net.name for net in plan.networks if any(s.capacity_mbit for s in net.segments)}
    for t in tunnels:
        ns = full.infra_ns.get(infra_of.get(t.network, ""))
        if ns is None or ns not in used_infra:
            raise BackendError(f"tunnel for network {t.network!r}: no member of it is on this host")
        if t.network in cells and t.network in ap_networks:
            t = replace(t, hairpin=True)
        elif t.network in cells:
            t = replace(t, spokes=tuple((v.b.ifname, v.a.mac) for v in bp.veths
                                        if v.label.split(":", 1)[0] == t.network))
        bp.tunnels.append(replace(t, ns=ns))
    dev_of = {t.network: t.dev for t in bp.tunnels}
    for s in full.shared:
        if s.ns not in used_infra or s.network not in ap_networks:
            continue
        here = [p for p, st in zip(s.ports, s.stations) if st in local]
        if len(here) == len(s.stations):
            bp.shared.append(s)
            continue
        if s.network not in dev_of:
            raise BackendError(f"Wi-Fi cell {s.network}: stations on other hosts but no tunnel to them")
        bp.shared.append(replace(s, ports=tuple(here) + (dev_of[s.network],), station_only=True))
    return bp
