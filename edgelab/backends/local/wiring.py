"""Build a Blueprint in the kernel: namespaces, bridges, veths, addresses, routes.

All over netlink (pyroute2), with one handle per namespace opened once, so a
100-node testbed costs a few hundred netlink messages and no ``ip`` process.
Veths are created with their peer directly in the other namespace, so no
interface ever exists in the root namespace.
"""

from __future__ import annotations

import os
from typing import Iterable

from pyroute2 import IPRoute

from ...errors import BackendError
from . import netns
from .blueprint import Blueprint
from .naming import BRIDGE

BASE_SYSCTLS = {
    # No IPv6: router/neighbour solicitations would be background traffic on
    # every emulated link and count against a shared airtime budget.
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
}
FORWARD_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # Multi-hop mesh paths are asymmetric by construction (a /32 per
    # interface, routes per neighbour): strict reverse-path filtering would drop them.
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
}


class Handles:
    """One pyroute2 IPRoute per namespace, opened on first use, closed together.

    The netlink socket is opened by this thread while it has entered the
    namespace (a socket stays bound to the namespace it was created in).
    ``IPRoute(netns=...)`` is avoided: its helper process, in pyroute2 0.9.7,
    made other namespaces' mounts disappear from /run/netns when several
    testbeds were built in one process.
    """

    def __init__(self) -> None:
        self._h: dict[str, IPRoute] = {}

    def __getitem__(self, ns: str) -> IPRoute:
        h = self._h.get(ns)
        if h is None:
            with netns.entered(ns):
                h = self._h[ns] = IPRoute()
        return h

    def close(self) -> None:
        for h in self._h.values():
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing a socket must not mask the real error
                pass
        self._h.clear()


def _ifindex(h: IPRoute, ifname: str) -> int:
    idx = h.link_lookup(ifname=ifname)
    if not idx:
        raise BackendError(f"interface {ifname} vanished while building the testbed")
    return idx[0]


def create_namespaces(bp: Blueprint, handles: Handles) -> None:
    has_v6 = os.path.exists("/proc/sys/net/ipv6")
    for ns in bp.namespaces:
        netns.create(ns)
        sysctls = dict(BASE_SYSCTLS) if has_v6 else {}
        if ns in bp.forwarding:
            sysctls.update(FORWARD_SYSCTLS)
        if sysctls:
            netns.write_sysctls(ns, sysctls)
        h = handles[ns]
        h.link("set", index=_ifindex(h, "lo"), state="up")


def create_bridges(bp: Blueprint, handles: Handles) -> None:
    for ns, br in bp.bridges:
        h = handles[ns]
        try:
            h.link("add", ifname=br, kind="bridge", br_stp_state=0, br_forward_delay=0)
        except Exception as e:  # pyroute2 raises NetlinkError with errno
            raise BackendError(f"cannot create bridge {br} in namespace {ns}: {e}") from e
        h.link("set", index=_ifindex(h, br), state="up")


def create_veths(bp: Blueprint, handles: Handles) -> None:
    for v in bp.veths:
        ha = handles[v.a.ns]
        try:
            kw = {"address": v.a.mac} if v.a.mac else {}
            peer = {"ifname": v.b.ifname, "net_ns_fd": v.b.ns}
            if v.a.mtu:   # a network spanning hosts: both ends leave room for the VXLAN header
                kw["mtu"] = v.a.mtu
                peer["mtu"] = v.b.mtu or v.a.mtu
            ha.link("add", ifname=v.a.ifname, kind="veth", peer=peer, **kw)
        except Exception as e:
            raise BackendError(f"cannot create veth {v.a.ns}/{v.a.ifname} <-> {v.b.ns}/{v.b.ifname} "
                               f"({v.label}): {e}") from e
        ia = _ifindex(ha, v.a.ifname)
        if v.a.address:
            ip, plen = v.a.address.split("/")
            ha.addr("add", index=ia, address=ip, prefixlen=int(plen))
        ha.link("set", index=ia, state="up")
    # The far ends: one dump per namespace instead of a lookup per port.
    by_ns: dict[str, list] = {}
    for v in bp.veths:
        by_ns.setdefault(v.b.ns, []).append(v.b)
    for ns, ends in by_ns.items():
        h = handles[ns]
        index = {l.get_attr("IFLA_IFNAME"): l["index"] for l in h.get_links()}
        for e in ends:
            kw = {}
            if e.master:
                kw["master"] = index[e.master]
            if e.address:
                ip, plen = e.address.split("/")
                h.addr("add", index=index[e.ifname], address=ip, prefixlen=int(plen))
            h.link("set", index=index[e.ifname], state="up", **kw)


def install_routes(bp: Blueprint, handles: Handles) -> None:
    for r in bp.routes:
        h = handles[r.ns]
        try:
            h.route("add", dst=r.destination, gateway=r.via, oif=_ifindex(h, r.dev), flags=["onlink"])
        except Exception as e:
            raise BackendError(f"cannot add route {r.destination} via {r.via} dev {r.dev} in {r.ns}: {e}") from e


def veth_names(bp: Blueprint) -> Iterable[str]:
    return (f"{v.a.ns}/{v.a.ifname}" for v in bp.veths)


def create_tunnels(bp: Blueprint, handles: Handles) -> None:
    """Each spanned network's VXLAN port, enslaved to its bridge.

    The device is created from this (the host's) namespace straight into the bridge's
    namespace (``IFLA_NET_NS_FD`` on RTM_NEWLINK): the kernel binds its UDP socket in the
    namespace of the netlink request (drivers/net/vxlan: ``vxlan_newlink`` gets the
    requester's ``src_net``), so it talks to the other hosts over the host's own network while
    only the bridge sees it, and it never exists in the host's namespace, where nothing would
    remove it after a crash. One all-zero FDB entry per peer host: head-end replication of
    broadcasts and unknown unicast, no multicast needed on the underlay.
    """
    if not bp.tunnels:
        return
    with IPRoute() as here:
        for t in bp.tunnels:
            try:
                here.link("add", ifname=t.dev, kind="vxlan", vxlan_id=t.vni, vxlan_local=t.local,
                          vxlan_port=t.port, vxlan_learning=1, mtu=t.mtu, net_ns_fd=t.ns)
            except Exception as e:
                raise BackendError(f"cannot create VXLAN {t.dev} (id {t.vni}, local {t.local}) for network "
                                   f"{t.network} in {t.ns}: {e}") from e
    for t in bp.tunnels:
        h = handles[t.ns]
        idx = _ifindex(h, t.dev)
        for peer in t.peers:
            try:
                h.fdb("append", ifindex=idx, lladdr="00:00:00:00:00:00", dst=peer)
            except Exception as e:
                raise BackendError(f"cannot add peer {peer} to VXLAN {t.dev} of network {t.network}: {e}") from e
        h.link("set", index=idx, master=_ifindex(h, BRIDGE), state="up")
