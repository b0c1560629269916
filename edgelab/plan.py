"""Planning: everything a backend needs, derived purely from a topology.

No side effects here. The local backend, the Nix export and the experiments
all consume a :class:`Plan`, so node names, addresses and link parameters are
decided once and agree everywhere.

Conventions
-----------
* Nodes are ``<group>-<i>`` (1-based), e.g. ``phone-1 .. phone-N``.
* Each non-mesh network has one infrastructure element (access point, switch
  or USB hub) named ``<network>-ap``/``-sw``/``-hub``; it is layer 2 only.
* A network's subnet is its ``subnet`` or the next free block of
  ``address_base`` just large enough for its members (declaration order).
* In a ``batman-mesh`` every node has one address (a /32 on each mesh
  interface) and static host routes along shortest paths: traffic between
  non-neighbours is really forwarded by the relay nodes.
"""

from __future__ import annotations

import ipaddress
import math
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Optional

from .airtime import MixedSaturation, frames_per_exchange, mixed_saturation, solo_mbit
from .errors import PlanError
from .model import AirtimeParams, LinkParams, Network, Resources, Topology

IF_PREFIX = {"wifi": "wlan", "ethernet": "eth", "usb": "usb", "batman-mesh": "mesh"}
INFRA_SUFFIX = {"wifi": "ap", "ethernet": "sw", "usb": "hub", "hybrid": "ap"}


@dataclass(frozen=True)
class InterfacePlan:
    node: str
    network: str
    ifname: str
    address: str  # with prefix length, e.g. "10.77.0.5/24"
    kind: str  # kind of the segment this interface is on
    segment: int
    link: LinkParams
    uplink: bool = False
    peer: Optional[str] = None  # mesh neighbour

    @property
    def ip(self) -> str:
        return self.address.split("/")[0]


@dataclass(frozen=True)
class Route:
    destination: str  # "10.77.0.9/32"
    via: str
    dev: str


@dataclass(frozen=True)
class NodePlan:
    name: str
    group: str
    role: str
    index: int
    resources: Resources
    interfaces: tuple[InterfacePlan, ...]
    routes: tuple[Route, ...] = ()

    def address(self, network: str) -> str:
        for itf in self.interfaces:
            if itf.network == network:
                return itf.ip
        raise KeyError(f"{self.name} is not on network {network!r}")


@dataclass(frozen=True)
class SegmentPlan:
    index: int
    kind: str
    link: LinkParams
    stations: tuple[str, ...]
    profile: Optional[str] = None
    airtime: Optional[AirtimeParams] = None
    #: Per station (aligned with ``stations``): its MCS, or None for the profile's rate.
    station_mcs: tuple[Optional[int], ...] = ()

    @property
    def shared_wifi(self) -> bool:
        return self.kind == "wifi" and self.link.shared and self.airtime is not None and bool(self.stations)

    def station_rate(self, i: int) -> float:
        """PHY rate (Mbit/s) of the ``i``-th station (0-based)."""
        mcs = self.station_mcs[i] if i < len(self.station_mcs) else None
        return self.airtime.phy_rate_mbit if mcs is None else self.airtime.mcs_rate(mcs)

    @property
    def station_rates(self) -> tuple[float, ...]:
        return tuple(self.station_rate(i) for i in range(len(self.stations))) if self.airtime else ()

    @property
    def saturation(self) -> Optional[MixedSaturation]:
        """Bianchi's model for every station saturated, each at its own rate, else None."""
        if not self.shared_wifi:
            return None
        return _mixed(self.airtime, self.station_rates)

    @property
    def capacity_mbit(self) -> Optional[float]:
        """Aggregate airtime budget of a shared wifi segment, else None."""
        sat = self.saturation
        return sat.throughput_mbit if sat else None

    @property
    def station_shares_mbit(self) -> tuple[float, ...]:
        """Each station's saturated share of the budget (DCF: equal frames, unequal air time)."""
        sat = self.saturation
        return sat.per_station_mbit if sat else ()

    @property
    def station_ceils_mbit(self) -> tuple[float, ...]:
        """The most each station can borrow up to: what it reaches alone at its rate, within the budget."""
        cap = self.capacity_mbit
        if cap is None:
            return ()
        return tuple(min(cap, _solo(self.airtime, r)) for r in self.station_rates)


@lru_cache(maxsize=4096)
def _mixed(air: AirtimeParams, rates: tuple[float, ...]) -> MixedSaturation:
    return mixed_saturation(air, rates)


@lru_cache(maxsize=4096)
def _solo(air: AirtimeParams, rate: float) -> float:
    return solo_mbit(air, rate)


@dataclass(frozen=True)
class NetworkPlan:
    name: str
    kind: str
    subnet: str
    segments: tuple[SegmentPlan, ...]
    uplinks: tuple[str, ...] = ()
    uplink_link: Optional[LinkParams] = None
    infra: Optional[str] = None
    mesh_links: tuple[tuple[str, str], ...] = ()

    @property
    def members(self) -> tuple[str, ...]:
        return self.uplinks + tuple(n for s in self.segments for n in s.stations)


@dataclass(frozen=True)
class Plan:
    topology: Topology
    nodes: tuple[NodePlan, ...]
    networks: tuple[NetworkPlan, ...]
    _index: dict = field(default_factory=dict, compare=False, repr=False)

    def node(self, name: str) -> NodePlan:
        if not self._index:
            self._index.update({n.name: n for n in self.nodes})
        return self._index[name]

    def network(self, name: str) -> NetworkPlan:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def nodes_of(self, role: Optional[str] = None, group: Optional[str] = None) -> list[NodePlan]:
        return [n for n in self.nodes if (role is None or n.role == role) and (group is None or n.group == group)]

    def to_dict(self) -> dict:
        """JSON-ready form; this is what the Nix side reads (``edgelab export``)."""
        return {
            "name": self.topology.name,
            "nodes": [
                {
                    "name": n.name,
                    "group": n.group,
                    "role": n.role,
                    "index": n.index,
                    "resources": asdict(n.resources),
                    "interfaces": [
                        {
                            "network": i.network,
                            "ifname": i.ifname,
                            "address": i.address,
                            "kind": i.kind,
                            "segment": i.segment,
                            "uplink": i.uplink,
                            "peer": i.peer,
                            "link": i.link.to_dict(),
                        }
                        for i in n.interfaces
                    ],
                    "routes": [asdict(r) for r in n.routes],
                }
                for n in self.nodes
            ],
            "networks": [
                {
                    "name": net.name,
                    "kind": net.kind,
                    "subnet": net.subnet,
                    "infra": net.infra,
                    "uplinks": list(net.uplinks),
                    "uplink_link": net.uplink_link.to_dict() if net.uplink_link else None,
                    "mesh_links": [list(p) for p in net.mesh_links],
                    "segments": [
                        {
                            "index": s.index,
                            "kind": s.kind,
                            "profile": s.profile,
                            "stations": list(s.stations),
                            "link": s.link.to_dict(),
                            "capacity_mbit": s.capacity_mbit,
                            **_airtime_dict(s),
                        }
                        for s in net.segments
                    ],
                }
                for net in self.networks
            ],
        }


def _airtime_dict(s: SegmentPlan) -> dict:
    """Per-station rates and shares, and the aggregation in force, of a shared wifi segment."""
    if not s.shared_wifi:
        return {}
    return {
        "aggregation": {"ampdu_frames": s.airtime.ampdu_frames, "block_ack": s.airtime.block_ack},
        "stations_airtime": [
            {"node": n, "mcs": s.station_mcs[i] if i < len(s.station_mcs) else None, "rate_mbit": r,
             "ampdu_frames": frames_per_exchange(s.airtime, r), "share_mbit": sh, "ceil_mbit": c}
            for i, (n, r, sh, c) in enumerate(zip(s.stations, s.station_rates, s.station_shares_mbit,
                                                  s.station_ceils_mbit))
        ],
    }


def with_station_mcs(segment: SegmentPlan, changes: dict[str, Optional[int]]) -> SegmentPlan:
    """The same segment with some stations' MCS changed (None: back to the profile's rate);
    its budget and shares follow. Used to change a rate while the testbed runs."""
    unknown = sorted(set(changes) - set(segment.stations))
    if unknown:
        raise PlanError(f"not stations of this segment: {', '.join(unknown)}")
    for node, mcs in changes.items():
        if mcs is not None and not 0 <= mcs < len(segment.airtime.mcs_rates_mbit if segment.airtime else ()):
            raise PlanError(f"{node}: MCS {mcs} is not in the profile's table "
                            f"(0-{len(segment.airtime.mcs_rates_mbit) - 1 if segment.airtime else -1})")
    current = list(segment.station_mcs) + [None] * (len(segment.stations) - len(segment.station_mcs))
    mcs = tuple(changes.get(n, current[i]) if n in changes else current[i] for i, n in enumerate(segment.stations))
    return replace(segment, station_mcs=mcs)


def plan_with_station_mcs(plan: "Plan", network: str, changes: dict[str, Optional[int]]) -> "Plan":
    """The plan with some Wi-Fi stations of ``network`` at another MCS (None: the profile's rate):
    their segment's budget and shares and their own links' rate caps follow."""
    net = plan.network(network)
    todo = dict(changes)
    segments = []
    for seg in net.segments:
        mine = {n: m for n, m in todo.items() if n in seg.stations}
        if mine:
            if not seg.shared_wifi:
                raise PlanError(f"{', '.join(sorted(mine))}: segment {seg.index} of {network!r} is not a shared "
                                "Wi-Fi medium with airtime parameters; station rates apply there only")
            seg = with_station_mcs(seg, mine)
            for n in mine:
                del todo[n]
        segments.append(seg)
    if todo:
        raise PlanError(f"not Wi-Fi stations of network {network!r}: {', '.join(sorted(todo))}")
    new_net = replace(net, segments=tuple(segments))
    seg_of = {n: s for s in segments for n in s.stations}
    nodes = []
    for node in plan.nodes:
        if node.name not in changes:
            nodes.append(node)
            continue
        seg = seg_of[node.name]
        i = seg.stations.index(node.name)
        link = station_link(seg.link, seg.station_rate(i))
        itfs = tuple(replace(it, link=link) if it.network == network else it for it in node.interfaces)
        nodes.append(replace(node, interfaces=itfs))
    return Plan(topology=plan.topology, nodes=tuple(nodes),
                networks=tuple(new_net if n.name == network else n for n in plan.networks))


def station_link(link: LinkParams, rate_mbit: Optional[float]) -> LinkParams:
    """A station's own link: capped at its PHY rate when that is below the profile's cap."""
    if rate_mbit is None or rate_mbit >= link.rate_mbit:
        return link
    return replace(link, rate_mbit=rate_mbit)


def _station_mcs(topology: Topology, group: str, index: int, network: str, air: Optional[AirtimeParams]) -> Optional[int]:
    """The MCS a group's ``index``-th node uses on ``network`` (from mcs or rssi_dbm), or None."""
    att = next(a for a in topology.group(group).attachments if a.network == network)
    n = max(len(att.mcs), len(att.rssi_dbm))
    if n > 1 and index > n:
        raise PlanError(f"group {group!r} lists {n} per-node rates on {network!r} but has {index}+ nodes: "
                        "give one value for the whole group or one per node")
    setting = att.station_setting(index)
    if setting is None or air is None:
        return None
    kind, value = setting
    return int(value) if kind == "mcs" else air.mcs_for_rssi(value)


def node_names(topology: Topology) -> list[tuple[str, str, int]]:
    """(node name, group, index) for every virtual node, in declaration order."""
    return [(f"{g.name}-{i}", g.name, i) for g in topology.groups for i in range(1, g.count + 1)]


def split_members(count: int, shares: list[float]) -> list[int]:
    """Split ``count`` members between segments by share (largest remainder).

    Deterministic, and every segment with a positive share gets at least one
    member when there are enough members to go round.
    """
    raw = [count * s for s in shares]
    sizes = [math.floor(r) for r in raw]
    order = sorted(range(len(shares)), key=lambda i: (-(raw[i] - sizes[i]), i))
    for i in order[: count - sum(sizes)]:
        sizes[i] += 1
    if count >= len(shares):
        for i in range(len(sizes)):
            if sizes[i] == 0:
                donor = max(range(len(sizes)), key=lambda j: sizes[j])
                sizes[donor] -= 1
                sizes[i] += 1
    return sizes


def allocate_subnets(topology: Topology, member_counts: dict[str, int]) -> dict[str, ipaddress.IPv4Network]:
    """Explicit subnets are kept; the others get aligned blocks of ``address_base``."""
    base = ipaddress.IPv4Network(topology.address_base)
    taken = [ipaddress.IPv4Network(n.subnet) for n in topology.networks if n.subnet]
    out: dict[str, ipaddress.IPv4Network] = {}
    for net in topology.networks:
        if net.subnet:
            sub = ipaddress.IPv4Network(net.subnet)
            if sub.num_addresses - 2 < member_counts[net.name]:
                raise PlanError(f"network {net.name!r}: subnet {sub} has room for {sub.num_addresses - 2} hosts, "
                                f"but {member_counts[net.name]} nodes are on it; use a larger subnet")
            out[net.name] = sub
            continue
        need = member_counts[net.name] + 2  # network and broadcast addresses
        prefix = min(30, 32 - math.ceil(math.log2(max(need, 4))))
        for cand in base.subnets(new_prefix=max(prefix, base.prefixlen)):
            if cand.num_addresses < need:
                raise PlanError(f"address_base {base} is too small for network {net.name!r} ({need - 2} nodes)")
            if not any(cand.overlaps(t) for t in taken):
                out[net.name] = cand
                taken.append(cand)
                break
        else:
            raise PlanError(f"address_base {base} has no free block for network {net.name!r}; "
                            "give a larger address_base or explicit subnets")
    nets = list(out.items())
    for i, (a, sa) in enumerate(nets):
        for b, sb in nets[i + 1:]:
            if sa.overlaps(sb):
                raise PlanError(f"subnets of networks {a!r} ({sa}) and {b!r} ({sb}) overlap")
    return out


def mesh_neighbours(members: list[str], layout: str, columns: int) -> list[tuple[str, str]]:
    """Neighbour pairs of a chain (i, i+1) or a grid (right and down)."""
    pairs = []
    if layout == "chain":
        pairs = [(members[i], members[i + 1]) for i in range(len(members) - 1)]
    else:
        for i, name in enumerate(members):
            r, c = divmod(i, columns)
            if c + 1 < columns and i + 1 < len(members):
                pairs.append((name, members[i + 1]))
            if i + columns < len(members):
                pairs.append((name, members[i + columns]))
    return pairs


def shortest_next_hops(members: list[str], pairs: list[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """For each source, the first hop towards every reachable destination (BFS,
    ties broken by declaration order so the result is deterministic)."""
    adj: dict[str, list[str]] = {m: [] for m in members}
    for a, b in pairs:
        adj[a].append(b)
        adj[b].append(a)
    order = {m: i for i, m in enumerate(members)}
    for m in adj:
        adj[m].sort(key=order.__getitem__)
    table: dict[str, dict[str, str]] = {}
    for src in members:
        first: dict[str, str] = {}
        seen = {src}
        queue = deque()
        for nb in adj[src]:
            seen.add(nb)
            first[nb] = nb
            queue.append(nb)
        while queue:
            cur = queue.popleft()
            for nb in adj[cur]:
                if nb not in seen:
                    seen.add(nb)
                    first[nb] = first[cur]
                    queue.append(nb)
        table[src] = first
    return table


def hop_count(plan: Plan, network: str, src: str, dst: str) -> int:
    """Number of mesh hops between two nodes (1 for neighbours)."""
    net = plan.network(network)
    members = list(net.members)
    pairs = list(net.mesh_links)
    adj = {m: set() for m in members}
    for a, b in pairs:
        adj[a].add(b)
        adj[b].add(a)
    dist = {src: 0}
    queue = deque([src])
    while queue:
        cur = queue.popleft()
        for nb in adj[cur]:
            if nb not in dist:
                dist[nb] = dist[cur] + 1
                queue.append(nb)
    return dist[dst]


def make_plan(topology: Topology) -> Plan:
    """Derive the full plan. Raises :class:`PlanError` if it cannot be realised."""
    names = node_names(topology)
    by_group: dict[str, list[str]] = {}
    for name, group, _ in names:
        by_group.setdefault(group, []).append(name)
    groups = {g.name: g for g in topology.groups}
    group_of = {name: group for name, group, _ in names}
    index_of = {name: i for name, _, i in names}

    uplinks: dict[str, list[str]] = {n.name: [] for n in topology.networks}
    stations: dict[str, list[str]] = {n.name: [] for n in topology.networks}
    for g in topology.groups:
        for att in g.attachments:
            (uplinks if att.uplink else stations)[att.network].extend(by_group[g.name])
    counts = {n: len(uplinks[n]) + len(stations[n]) for n in uplinks}
    subnets = allocate_subnets(topology, counts)

    ifaces: dict[str, list[InterfacePlan]] = {name: [] for name, _, _ in names}
    routes: dict[str, list[Route]] = {name: [] for name, _, _ in names}
    if_counter: dict[tuple[str, str], int] = {}

    def next_ifname(node: str, kind: str) -> str:
        prefix = IF_PREFIX[kind]
        k = if_counter.get((node, prefix), 0)
        if_counter[(node, prefix)] = k + 1
        return f"{prefix}{k}"

    net_plans: list[NetworkPlan] = []
    for net in topology.networks:
        subnet = subnets[net.name]
        hosts = subnet.hosts()
        addr = {m: f"{next(hosts)}/{subnet.prefixlen}" for m in uplinks[net.name] + stations[net.name]}
        if net.kind == "batman-mesh":
            net_plans.append(_plan_mesh(net, stations[net.name], addr, subnet, ifaces, routes, next_ifname))
            continue
        seg_sizes = split_members(len(stations[net.name]), [s.share for s in net.segments])
        seg_plans = []
        cursor = 0
        for idx, (seg, size) in enumerate(zip(net.segments, seg_sizes)):
            members = stations[net.name][cursor: cursor + size]
            cursor += size
            mcs: tuple[Optional[int], ...] = ()
            if seg.kind == "wifi":
                mcs = tuple(_station_mcs(topology, group_of[m], index_of[m], net.name, seg.airtime) for m in members)
                if all(x is None for x in mcs):
                    mcs = ()
            sp = SegmentPlan(index=idx, kind=seg.kind, link=seg.link, stations=tuple(members),
                             profile=seg.profile, airtime=seg.airtime, station_mcs=mcs)
            seg_plans.append(sp)
            for i, m in enumerate(members):
                link = station_link(seg.link, sp.station_rate(i)) if mcs and mcs[i] is not None else seg.link
                ifaces[m].append(InterfacePlan(node=m, network=net.name, ifname=next_ifname(m, seg.kind),
                                               address=addr[m], kind=seg.kind, segment=idx, link=link))
        for m in uplinks[net.name]:
            ifaces[m].append(InterfacePlan(node=m, network=net.name, ifname=next_ifname(m, "ethernet"),
                                           address=addr[m], kind="ethernet", segment=-1, link=net.uplink_link,
                                           uplink=True))
        net_plans.append(NetworkPlan(
            name=net.name, kind=net.kind, subnet=str(subnet), segments=tuple(seg_plans),
            uplinks=tuple(uplinks[net.name]), uplink_link=net.uplink_link,
            infra=f"{net.name}-{INFRA_SUFFIX[net.kind]}",
        ))

    nodes = tuple(
        NodePlan(name=name, group=group, role=groups[group].role, index=i, resources=groups[group].resources,
                 interfaces=tuple(ifaces[name]), routes=tuple(routes[name]))
        for name, group, i in names
    )
    return Plan(topology=topology, nodes=nodes, networks=tuple(net_plans))


def _plan_mesh(net: Network, members: list[str], addr: dict[str, str], subnet, ifaces, routes, next_ifname) -> NetworkPlan:
    seg = net.segments[0]
    pairs = mesh_neighbours(members, net.mesh_layout, net.mesh_columns)
    my_if: dict[tuple[str, str], str] = {}
    for a, b in pairs:
        for x, y in ((a, b), (b, a)):
            name = next_ifname(x, "batman-mesh")
            my_if[(x, y)] = name
            ifaces[x].append(InterfacePlan(node=x, network=net.name, ifname=name,
                                           address=addr[x].split("/")[0] + "/32", kind="batman-mesh",
                                           segment=0, link=seg.link, peer=y))
    hops = shortest_next_hops(members, pairs)
    for src in members:
        for dst in members:
            if dst == src or dst not in hops[src]:
                continue
            nh = hops[src][dst]
            routes[src].append(Route(destination=addr[dst].split("/")[0] + "/32", via=addr[nh].split("/")[0],
                                     dev=my_if[(src, nh)]))
    unreachable = [m for m in members[1:] if m not in hops[members[0]]] if members else []
    if unreachable:
        raise PlanError(f"mesh {net.name!r}: nodes {unreachable} are not connected to {members[0]}")
    return NetworkPlan(name=net.name, kind=net.kind, subnet=str(subnet),
                       segments=(SegmentPlan(index=0, kind=seg.kind, link=seg.link, stations=tuple(members),
                                             profile=seg.profile),),
                       mesh_links=tuple(pairs))
