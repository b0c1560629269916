"""Folding over several hosts: N virtual nodes on M hosts, networks spanning hosts through VXLAN.

Each host runs its share of the plan as network namespaces (the local
backend's model: one namespace per node, one bridge namespace per network);
a network whose members sit on more than one host gets, on each of those
hosts, a kernel VXLAN device (one VNI per network and testbed) enslaved to
that network's bridge, with a flooding FDB entry per peer host — unicast
head-end replication, no multicast needed on the underlay (Grid'5000
clusters and the SSH lab alike). The tunnel costs 50 bytes, so every
interface on a spanned network gets MTU 1450 (an underlay of 1500).

A Wi-Fi cell stays on one host or crosses the *AP host*: the host of the
network's first uplink (where the cell's bridge and airtime budget live, as
on the local backend). Stations folded onto other hosts reach the AP bridge
through the tunnel; their frames enter the budget at the AP host's VXLAN
port, classified by their MACs (``linkemu shared``'s station-only form). As in
802.11 infrastructure mode, they never reach each other directly: a cell's
tunnels are a star around the AP host, their bridge ports are isolated and the
AP host's VXLAN port reflects (hairpin), see ``wiring._make_spokes``.

Placement comes from :func:`edgelab.folding.fold`. Everything here is a pure
function from the plan and the placement to names, tunnels and share specs;
each host builds its share with the local backend itself
(:mod:`edgelab.backends.local.share`, ``python3 -m edgelab share-up``), and
:mod:`edgelab.remote.folded` drives the hosts. The g5k ``--dry-run`` prints
:func:`describe`. Each share is a local testbed named ``<testbed>-h<index>``
(namespaces ``el-<testbed>-h<index>.<element>``), so several shares on one
kernel (lab devices are namespaces of one machine) never collide.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from ..errors import BackendError
from ..plan import Plan

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
UNDERLAY_MTU = 1500


def vni(testbed: str, network: str) -> int:
    """A 24-bit VXLAN id per testbed and network (deterministic: every host computes the same)."""
    return int(hashlib.sha256(f"{testbed}/{network}".encode()).hexdigest()[:6], 16) or 1


def short(testbed: str, *parts: str) -> str:
    """A 6-hex tag for kernel names that must fit IFNAMSIZ."""
    return hashlib.sha256("/".join((testbed, *parts)).encode()).hexdigest()[:6]


@dataclass(frozen=True)
class Tunnel:
    """One network's VXLAN endpoint on one host."""

    network: str
    host: str
    vni: int
    dev: str                 # VXLAN device name (created in the host's namespace, moved to the bridge's)
    local: str               # this host's underlay address
    peers: tuple[str, ...]   # the other hosts' underlay addresses


@dataclass(frozen=True)
class HostShare:
    host: str
    index: int
    address: str             # underlay address of the host
    nodes: tuple[str, ...]
    bridges: tuple[str, ...]  # networks with a bridge on this host


@dataclass
class MultiHostPlan:
    testbed: str
    shares: list[HostShare]
    tunnels: list[Tunnel]
    ap_hosts: dict[str, str] = field(default_factory=dict)        # wifi network -> AP host
    remote_stations: dict[str, list[str]] = field(default_factory=dict)  # wifi network -> stations off the AP host
    infra: dict[str, str] = field(default_factory=dict)  # network -> its infrastructure element (bridge namespace)

    def share(self, host: str) -> HostShare:
        return next(s for s in self.shares if s.host == host)

    def host_of(self, node: str) -> str:
        return next(s.host for s in self.shares if node in s.nodes)

    def spanned(self, network: str) -> bool:
        return any(t.network == network for t in self.tunnels)


def bridge_ns(mp: "MultiHostPlan", index: int, network: str) -> str:
    """The namespace of ``network``'s bridge on host ``index`` (the share's local testbed's)."""
    from ..backends.local.naming import netns_name
    from ..backends.local.share import share_name

    return netns_name(share_name(mp.testbed, index), mp.infra[network])


def node_ns(testbed: str, index: int, node: str) -> str:
    from ..backends.local.naming import netns_name
    from ..backends.local.share import share_name

    return netns_name(share_name(testbed, index), node)


def plan_hosts(plan: Plan, assignment: Mapping[str, str], addresses: Mapping[str, str]) -> MultiHostPlan:
    """Shares, tunnels and AP hosts for ``assignment`` (node -> host) over hosts at ``addresses``."""
    missing = [n.name for n in plan.nodes if n.name not in assignment]
    private = [g.name for g in plan.topology.groups if g.private is not None]
    if private and len(set(assignment.values())) > 1:
        raise BackendError(f"group(s) {', '.join(private)} have private directories, which folding over several "
                           "hosts does not set up yet: fold onto one host, or drop 'private:'")
    for net in plan.networks:
        if net.kind == "batman-mesh" and len({assignment.get(m) for m in net.members}) > 1:
            raise BackendError(f"mesh network {net.name!r} would span hosts: its links are veth pairs between "
                               "nodes, so place all its members on one host")
    if missing:
        raise BackendError(f"placement leaves node(s) {', '.join(missing[:5])} without a host")
    hosts = list(dict.fromkeys(assignment[n.name] for n in plan.nodes))
    unknown = [h for h in hosts if h not in addresses]
    if unknown:
        raise BackendError(f"no underlay address for host(s) {', '.join(unknown)}")
    tb = plan.topology.name
    tunnels: list[Tunnel] = []
    bridges: dict[str, list[str]] = {h: [] for h in hosts}
    ap_hosts: dict[str, str] = {}
    remote: dict[str, list[str]] = {}
    for net in plan.networks:
        on = list(dict.fromkeys(assignment[m] for m in net.members))
        for h in on:
            bridges[h].append(net.name)
        if any(s.capacity_mbit for s in net.segments):
            ap = assignment[net.uplinks[0]] if net.uplinks else on[0]
            ap_hosts[net.name] = ap
            remote[net.name] = [s for seg in net.segments for s in seg.stations if assignment[s] != ap]
        if len(on) > 1:
            v = vni(tb, net.name)
            hub = ap_hosts.get(net.name)
            for h in on:
                # A Wi-Fi cell is a star around its AP host (infrastructure mode): the other hosts
                # peer with the AP host only, so no frame of the cell goes host to host around it.
                peers = [p for p in on if p != h] if hub is None or h == hub else [hub]
                tunnels.append(Tunnel(net.name, h, v, f"vx{short(tb, net.name, h)}", addresses[h],
                                      tuple(addresses[p] for p in peers)))
    shares = [HostShare(h, i, addresses[h], tuple(n.name for n in plan.nodes if assignment[n.name] == h),
                        tuple(bridges[h])) for i, h in enumerate(hosts, 1)]
    from ..backends.local.share import share_name

    for s in shares:
        share_name(tb, s.index)   # fits a testbed name, else a clear error now
    return MultiHostPlan(tb, shares, tunnels, ap_hosts, remote, {n.name: n.infra for n in plan.networks})


def mtu(mp: MultiHostPlan, network: str) -> int:
    return UNDERLAY_MTU - VXLAN_OVERHEAD if mp.spanned(network) else UNDERLAY_MTU


def share_spec(mp: MultiHostPlan, host: str, run: str = ""):
    """What ``host`` builds with the local backend (:class:`~edgelab.backends.local.share.ShareSpec`);
    ``run``: the folded run's id, recorded in the share's state file (``share-down`` checks it)."""
    from ..backends.local.blueprint import TunnelSpec
    from ..backends.local.share import ShareSpec

    s = mp.share(host)
    return ShareSpec(testbed=mp.testbed, index=s.index, nodes=s.nodes,
                     tunnels=tuple(TunnelSpec(t.network, "", t.dev, t.vni, t.local, t.peers,
                                              UNDERLAY_MTU - VXLAN_OVERHEAD, VXLAN_PORT)
                                   for t in mp.tunnels if t.host == host),
                     ap_networks=tuple(n for n, h in mp.ap_hosts.items() if h == host), run=run)


def tunnel_cmds(mp: MultiHostPlan, host: str) -> list[str]:
    """The iproute2 equivalent of what the local backend does over netlink for ``host``'s tunnels
    (``wiring.create_tunnels``), for dry runs and for a human debugging a share."""
    share = mp.share(host)
    out = []
    for t in (t for t in mp.tunnels if t.host == host):
        ns = shlex.quote(bridge_ns(mp, share.index, t.network))
        out += [f"ip link add {t.dev} netns {ns} mtu {UNDERLAY_MTU - VXLAN_OVERHEAD} type vxlan id {t.vni} "
                f"local {t.local} dstport {VXLAN_PORT}",
                *(f"ip netns exec {ns} bridge fdb append 00:00:00:00:00:00 dev {t.dev} dst {p}" for p in t.peers),
                f"ip -n {ns} link set {t.dev} master br0 up"]
        if mp.ap_hosts.get(t.network) == host:     # the cell's AP host reflects remote stations' frames
            out.append(f"ip netns exec {ns} bridge link set dev {t.dev} hairpin on")
        elif t.network in mp.ap_hosts:             # another host of the cell: members talk via the AP host
            out += [f"ip netns exec {ns} bridge link set dev {t.dev} learning off",
                    f"ip netns exec {ns} bridge link set dev <each member port of {t.network}> isolated on learning off",
                    f"ip netns exec {ns} nft -f - <<< 'table bridge el_spokes {{ ... oifname <port> unicast not to "
                    "its member drop }}'"]
    return out


def describe(mp: MultiHostPlan, plan: Optional[Plan] = None) -> list[str]:
    """Dry-run lines: the placement per host, the tunnels, the Wi-Fi cells' AP host."""
    from ..backends.local.share import share_name

    lines = [f"Multi-host folding: {sum(len(s.nodes) for s in mp.shares)} virtual nodes on {len(mp.shares)} hosts "
             "(each host: `python3 -m edgelab share-up` builds its share with the local backend — a namespace "
             "and cgroup per node, a bridge namespace per network, link emulation — and VXLAN joins the "
             "hosts' bridges)"]
    for s in mp.shares:
        lines.append(f"  host {s.index} {s.host} ({s.address}): local testbed {share_name(mp.testbed, s.index)}: "
                     f"{', '.join(s.nodes)}")
    for t in mp.tunnels:
        lines.append(f"  tunnel {t.network} on {t.host}: {t.dev} vxlan id {t.vni} local {t.local} "
                     f"dstport {VXLAN_PORT} -> {', '.join(t.peers)} (mtu {UNDERLAY_MTU - VXLAN_OVERHEAD})")
    for net, ap in mp.ap_hosts.items():
        far = mp.remote_stations.get(net, [])
        lines.append(f"  Wi-Fi cell {net}: AP on {ap}" + (
            f"; stations {', '.join(far[:6])}{'…' if len(far) > 6 else ''} cross the tunnel and are charged "
            "at the AP's VXLAN port by MAC; on their hosts their bridge ports are isolated, so they reach "
            "each other only through the AP host (its VXLAN port in hairpin mode)" if far
            else "; the whole cell is on that host"))
    return lines


def check_underlay(addresses: Sequence[str]) -> None:
    if len(set(addresses)) != len(addresses):
        raise BackendError(f"two hosts share an underlay address ({', '.join(addresses)})")
