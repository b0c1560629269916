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
port, classified by their MACs (``linkemu shared``'s station-only form).

Placement comes from :func:`edgelab.folding.fold`. Everything here is a pure
function from the plan and the placement to names and commands, so the g5k
``--dry-run`` prints exactly what would run on each machine. Names carry the
testbed and the host index, so several shares sharing one kernel (lab
devices are namespaces of one machine) never collide.
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

    def share(self, host: str) -> HostShare:
        return next(s for s in self.shares if s.host == host)

    def host_of(self, node: str) -> str:
        return next(s.host for s in self.shares if node in s.nodes)

    def spanned(self, network: str) -> bool:
        return any(t.network == network for t in self.tunnels)


def bridge_ns(testbed: str, index: int, network: str) -> str:
    return f"el-{testbed}.h{index}-{network}"


def node_ns(testbed: str, index: int, node: str) -> str:
    return f"el-{testbed}.h{index}-{node}"


def plan_hosts(plan: Plan, assignment: Mapping[str, str], addresses: Mapping[str, str]) -> MultiHostPlan:
    """Shares, tunnels and AP hosts for ``assignment`` (node -> host) over hosts at ``addresses``."""
    missing = [n.name for n in plan.nodes if n.name not in assignment]
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
            for h in on:
                tunnels.append(Tunnel(net.name, h, v, f"vx{short(tb, net.name, h)}", addresses[h],
                                      tuple(addresses[p] for p in on if p != h)))
    shares = [HostShare(h, i, addresses[h], tuple(n.name for n in plan.nodes if assignment[n.name] == h),
                        tuple(bridges[h])) for i, h in enumerate(hosts, 1)]
    return MultiHostPlan(tb, shares, tunnels, ap_hosts, remote)


def mtu(mp: MultiHostPlan, network: str) -> int:
    return UNDERLAY_MTU - VXLAN_OVERHEAD if mp.spanned(network) else UNDERLAY_MTU


def tunnel_cmds(mp: MultiHostPlan, host: str, underlay_dev: str = "eth0") -> list[str]:
    """Shell commands (run as root on ``host``, in its own namespace) creating its tunnels."""
    share = mp.share(host)
    out = []
    for t in (t for t in mp.tunnels if t.host == host):
        ns = bridge_ns(mp.testbed, share.index, t.network)
        out += [f"ip link add {t.dev} type vxlan id {t.vni} local {t.local} dstport {VXLAN_PORT} "
                f"dev {shlex.quote(underlay_dev)}",
                *(f"bridge fdb append 00:00:00:00:00:00 dev {t.dev} dst {p}" for p in t.peers),
                f"ip link set {t.dev} mtu {UNDERLAY_MTU - VXLAN_OVERHEAD} netns {shlex.quote(ns)}",
                f"ip -n {shlex.quote(ns)} link set {t.dev} master br0 up"]
    return out


def share_cmds(mp: MultiHostPlan, plan: Plan, host: str) -> list[str]:
    """Shell commands building ``host``'s share: a bridge namespace per network it touches, a
    namespace per node with its plan address on a veth into that bridge, then the tunnels.

    This is the local backend's wiring (without cgroups and link emulation, which
    :func:`link_cmds` adds) for one host of a folded testbed.
    """
    share = mp.share(host)
    cmds = []
    for net in share.bridges:
        ns = shlex.quote(bridge_ns(mp.testbed, share.index, net))
        cmds += [f"ip netns add {ns}", f"ip -n {ns} link add br0 type bridge",
                 f"ip -n {ns} link set br0 up", f"ip -n {ns} link set lo up"]
    for name in share.nodes:
        node = plan.node(name)
        ns = shlex.quote(node_ns(mp.testbed, share.index, name))
        cmds += [f"ip netns add {ns}", f"ip -n {ns} link set lo up"]
        for i, itf in enumerate(node.interfaces):
            bns = shlex.quote(bridge_ns(mp.testbed, share.index, itf.network))
            port = f"p{short(mp.testbed, name, itf.ifname)}"
            m = mtu(mp, itf.network)
            cmds += [f"ip -n {ns} link add {itf.ifname} mtu {m} type veth peer name {port} mtu {m} netns {bns}",
                     f"ip -n {ns} addr add {itf.address} dev {itf.ifname}",
                     f"ip -n {ns} link set {itf.ifname} up",
                     f"ip -n {bns} link set {port} master br0 up"]
    return cmds + tunnel_cmds(mp, host)


def link_cmds(mp: MultiHostPlan, plan: Plan, host: str, python: str = "python3",
              engine: str = "fallback") -> list[str]:
    """``edgelab.linkemu apply`` inside each node namespace of the share (the same code every
    backend runs), for every impaired interface."""
    share = mp.share(host)
    out = []
    for name in share.nodes:
        for itf in plan.node(name).interfaces:
            lk = itf.link
            if not any((lk.rate_mbit, lk.delay_ms, lk.jitter_ms, lk.loss_pct)):
                continue
            ns = shlex.quote(node_ns(mp.testbed, share.index, name))
            out.append(f"ip netns exec {ns} {python} -m edgelab.linkemu apply --dev {itf.ifname} "
                       f"--tag el{short(mp.testbed, name)} --engine {engine} --rate-mbit {lk.rate_mbit:g} "
                       f"--delay-ms {lk.delay_ms:g} --jitter-ms {lk.jitter_ms:g} --loss-pct {lk.loss_pct:g}")
    return out


def teardown_cmds(mp: MultiHostPlan, host: str) -> list[str]:
    """Remove exactly what :func:`share_cmds` made on ``host`` (deleting a namespace deletes its
    veths, bridge and the VXLAN moved into it); never fails on what is already gone."""
    share = mp.share(host)
    names = [node_ns(mp.testbed, share.index, n) for n in share.nodes]
    names += [bridge_ns(mp.testbed, share.index, b) for b in share.bridges]
    out = [f"ip netns pids {shlex.quote(n)} 2>/dev/null | xargs -r kill -9" for n in names]
    out += [f"ip netns del {shlex.quote(n)} 2>/dev/null" for n in names]
    out += [f"ip link del {t.dev} 2>/dev/null" for t in mp.tunnels if t.host == host]
    return [c + " || true" for c in out]


def describe(mp: MultiHostPlan, plan: Optional[Plan] = None) -> list[str]:
    """Dry-run lines: the placement per host, the tunnels, the Wi-Fi cells' AP host."""
    lines = [f"Multi-host folding: {sum(len(s.nodes) for s in mp.shares)} virtual nodes on {len(mp.shares)} hosts "
             "(namespaces per node, a bridge namespace per network, VXLAN between the hosts' bridges)"]
    for s in mp.shares:
        lines.append(f"  host {s.index} {s.host} ({s.address}): {', '.join(s.nodes)}")
    for t in mp.tunnels:
        lines.append(f"  tunnel {t.network} on {t.host}: {t.dev} vxlan id {t.vni} local {t.local} "
                     f"dstport {VXLAN_PORT} -> {', '.join(t.peers)} (mtu {UNDERLAY_MTU - VXLAN_OVERHEAD})")
    for net, ap in mp.ap_hosts.items():
        far = mp.remote_stations.get(net, [])
        lines.append(f"  Wi-Fi cell {net}: AP on {ap}" + (
            f"; stations {', '.join(far[:6])}{'…' if len(far) > 6 else ''} cross the tunnel and are charged "
            "at the AP's VXLAN port by MAC" if far else "; the whole cell is on that host"))
    return lines


def check_underlay(addresses: Sequence[str]) -> None:
    if len(set(addresses)) != len(addresses):
        raise BackendError(f"two hosts share an underlay address ({', '.join(addresses)})")
