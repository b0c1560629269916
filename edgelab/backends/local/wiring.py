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
        try:
            if t.hairpin:
                h.brport("set", index=idx, mode=1)   # IFLA_BRPORT_MODE = BRIDGE_MODE_HAIRPIN
            if t.spokes:
                _make_spokes(h, t, idx)
        except BackendError:
            raise
        except Exception as e:
            raise BackendError(f"cannot set the Wi-Fi cell's bridge ports for VXLAN {t.dev} of network "
                               f"{t.network} in {t.ns}: {e}") from e


#: ndmsg state and flag bits (include/uapi/linux/neighbour.h).
NUD_PERMANENT, NTF_SELF, NTF_MASTER = 0x80, 0x02, 0x04


def spoke_ruleset(t) -> str:
    """The nft ruleset of :func:`_make_spokes`: on each member's port, drop unicast frames that are
    not addressed to that member (flood copies), before they reach the port's queue."""
    rules = "".join(f'    oifname "{port}" ether daddr & 01:00:00:00:00:00 == 00:00:00:00:00:00 '
                    f"ether daddr != {mac} drop\n" for port, mac in t.spokes)
    return ("table bridge el_spokes {\n  chain forward {\n    type filter hook forward priority -300; policy accept;\n"
            + rules + "  }\n}\n")


def _make_spokes(h: IPRoute, t, vx: int) -> None:
    """A Wi-Fi cell's bridge on a host other than its AP's: members reach each other only through
    the AP host, as 802.11 stations in infrastructure mode do, so the cell's budget there sees
    every frame between two of them.

    Kernel semantics relied on (net/bridge/br_forward.c, ``should_deliver``/``br_skb_isolated``,
    Linux >= 4.18): a frame that came in on an isolated port (``IFLA_BRPORT_ISOLATED``) is never
    delivered to another isolated port, only to non-isolated ones, here the VXLAN port. But a
    unicast frame whose FDB entry names an isolated port is *dropped* (``br_forward`` does not fall
    back to flooding), so the members' ports must never be in the FDB: learning is off on them and
    on the VXLAN port (else the AP host's reflection of a member's broadcast would move that
    member's entry onto the tunnel), and what was learned before is flushed. Every unicast frame is
    therefore flooded: from a member only to the tunnel; from the tunnel to every member's port,
    where one nftables bridge rule per port drops the copies not addressed to that member
    (``spoke_ruleset``), before the port's queue, so no member's link carries another's frames.
    (Bridge VLAN filtering could split the FDB per direction instead, but kernels without
    CONFIG_BRIDGE_VLAN_FILTERING, like this project's CI, refuse it.)
    """
    import subprocess

    from ...linkemu.nsexec import in_ns

    ports = {_ifindex(h, port) for port, _ in t.spokes}
    h.brport("set", index=vx, learning=0)
    for idx in ports:
        h.brport("set", index=idx, learning=0, isolated=1)
    for e in h.fdb("dump"):
        if (e["ifindex"] in ports | {vx} and not e["state"] & NUD_PERMANENT and not e["flags"] & NTF_SELF):
            try:
                h.fdb("del", ifindex=e["ifindex"], lladdr=e.get_attr("NDA_LLADDR"), flags=NTF_MASTER,
                      state=e["state"])
            except Exception:  # noqa: BLE001 - aged out in between
                pass
    r = subprocess.run(in_ns(t.ns, ["nft", "-f", "-"]), input=spoke_ruleset(t), capture_output=True, text=True,
                       timeout=30)
    if r.returncode != 0:
        raise BackendError(f"cannot install the Wi-Fi cell's port rules in {t.ns}: {r.stderr.strip()}")
