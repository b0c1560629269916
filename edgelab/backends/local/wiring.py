"""Build a Blueprint in the kernel: namespaces, bridges, veths, addresses, routes.

All over netlink, with one socket per namespace opened once and the requests of a
step sent in bulk (``linkemu.nlbatch``: pyroute2's encoders, one ``sendto`` per
namespace and step), so a 100-node testbed costs a few hundred netlink messages,
a few hundred system calls and no ``ip`` process.
Veths are created with their peer directly in the other namespace, so no
interface ever exists in the root namespace.
"""

from __future__ import annotations

import os
import socket
from typing import Iterable

from pyroute2 import IPRoute

from ...errors import BackendError
from ...linkemu import nlbatch
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
    """Per namespace: a pyroute2 IPRoute (opened on first use), a raw netlink socket and a
    batch of pre-packed requests (``linkemu.nlbatch``), and the interface indexes we chose.

    The sockets are opened by this thread while it has entered the namespace (a socket
    stays bound to the namespace it was created in). ``IPRoute(netns=...)`` is avoided:
    its helper process, in pyroute2 0.9.7, made other namespaces' mounts disappear from
    /run/netns when several testbeds were built in one process.

    Bring-up queues requests with :meth:`batch` and sends them with :meth:`commit`: one
    ``sendto`` per namespace and step instead of ~1 ms of pyroute2 per request. Interfaces
    are created with indexes chosen here (:meth:`new_index`), so no request has to wait
    for a lookup of the index the kernel picked.
    """

    def __init__(self) -> None:
        self._h: dict[str, IPRoute] = {}
        self._raw: dict[str, socket.socket] = {}
        self._batches: dict[str, nlbatch.Batch] = {}
        self._index: dict[str, dict[str, int]] = {}
        self._next: dict[str, int] = {}
        self._fds: dict[str, int] = {}

    def __getitem__(self, ns: str) -> IPRoute:
        h = self._h.get(ns)
        if h is None:
            with netns.entered(ns):
                h = self._h[ns] = IPRoute()
        return h

    def open_raw(self, ns: str) -> None:
        """Open ``ns``'s raw socket and learn its interfaces; the caller has entered ``ns``."""
        if ns not in self._raw:
            self._raw[ns] = nlbatch.above_select_range(nlbatch.open_socket())
            known = dict((n, i) for i, n in socket.if_nameindex())
            self._index[ns] = known
            self._next[ns] = max(known.values(), default=1) + 1

    def _ensure_raw(self, ns: str) -> None:
        if ns not in self._raw:
            with netns.entered(ns):
                self.open_raw(ns)

    def batch(self, ns: str) -> nlbatch.Batch:
        b = self._batches.get(ns)
        if b is None:
            self._ensure_raw(ns)
            b = self._batches[ns] = nlbatch.Batch(f"namespace {ns}")
        return b

    def new_index(self, ns: str, ifname: str) -> int:
        """The index ``ifname`` will be created with in ``ns`` (the next free one)."""
        self._ensure_raw(ns)
        if ifname in self._index[ns]:
            raise BackendError(f"interface {ifname} already exists in namespace {ns}")
        used = set(self._index[ns].values())
        while self._next[ns] in used:   # taken by a device the kernel numbered (a VXLAN port)
            self._next[ns] += 1
        i = self._index[ns][ifname] = self._next[ns]
        self._next[ns] += 1
        return i

    def index(self, ns: str, ifname: str) -> int:
        """Index of ``ifname`` in ``ns``: one we chose, else asked of the kernel."""
        i = self._index.get(ns, {}).get(ifname)
        if i is None:
            i = _ifindex(self[ns], ifname)
            self._index.setdefault(ns, {})[ifname] = i
        return i

    def ns_fd(self, ns: str) -> int:
        """An open descriptor of ``ns`` (a veth's peer is created in it), kept until close()."""
        fd = self._fds.get(ns)
        if fd is None:
            fd = self._fds[ns] = os.open(netns.path(ns), os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def commit(self) -> None:
        """Send every queued request, namespace by namespace in the order first queued."""
        for ns, b in list(self._batches.items()):
            if len(b):
                b.send(self._raw[ns])

    def close(self) -> None:
        for h in self._h.values():
            try:
                h.close()
            except Exception:  # noqa: BLE001 - closing a socket must not mask the real error
                pass
        self._h.clear()
        for s in self._raw.values():
            s.close()
        self._raw.clear()
        self._batches.clear()
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _ifindex(h: IPRoute, ifname: str) -> int:
    idx = h.link_lookup(ifname=ifname)
    if not idx:
        raise BackendError(f"interface {ifname} vanished while building the testbed")
    return idx[0]


def create_namespaces(bp: Blueprint, handles: Handles) -> None:
    """Each namespace created in-process, its sysctls written, its netlink socket opened and
    ``lo`` set up, all during one visit of this thread (no process, one setns pair each)."""
    has_v6 = os.path.exists("/proc/sys/net/ipv6")
    for ns in bp.namespaces:
        netns.create(ns)
        sysctls = dict(BASE_SYSCTLS) if has_v6 else {}
        if ns in bp.forwarding:
            sysctls.update(FORWARD_SYSCTLS)
        with netns.entered(ns):
            for key, val in sysctls.items():
                with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                    f.write(val)
            handles.open_raw(ns)
        handles.batch(ns).add(nlbatch.link_up(handles.index(ns, "lo")), f"set lo up in {ns}")
    handles.commit()


def create_bridges(bp: Blueprint, handles: Handles) -> None:
    for ns, br in bp.bridges:
        handles.batch(ns).add(nlbatch.bridge_add(br, handles.new_index(ns, br)), f"create bridge {br} in {ns}")
    handles.commit()


def create_veths(bp: Blueprint, handles: Handles) -> None:
    """Veths with their far end made directly in the other namespace (never in the root one),
    node ends addressed and up; then, per far namespace, its ends enslaved, addressed and up."""
    for v in bp.veths:
        b = handles.batch(v.a.ns)
        ia = handles.new_index(v.a.ns, v.a.ifname)
        ib = handles.new_index(v.b.ns, v.b.ifname)
        # a network spanning hosts: both ends leave room for the VXLAN header
        mtu, peer_mtu = (v.a.mtu, v.b.mtu or v.a.mtu) if v.a.mtu else (None, None)
        b.add(nlbatch.veth_add(v.a.ifname, ia, v.b.ifname, handles.ns_fd(v.b.ns), ib, v.a.mac,
                               mtu=mtu, peer_mtu=peer_mtu),
              f"create veth {v.a.ns}/{v.a.ifname} <-> {v.b.ns}/{v.b.ifname} ({v.label})")
        if v.a.address:
            ip, plen = v.a.address.split("/")
            b.add(nlbatch.addr_add(ia, ip, int(plen)), f"address {v.a.address} on {v.a.ns}/{v.a.ifname}")
    handles.commit()
    for v in bp.veths:
        e = v.b
        b = handles.batch(e.ns)
        ib = handles.index(e.ns, e.ifname)
        if e.address:
            ip, plen = e.address.split("/")
            b.add(nlbatch.addr_add(ib, ip, int(plen)), f"address {e.address} on {e.ns}/{e.ifname}")
        master = handles.index(e.ns, e.master) if e.master else None
        b.add(nlbatch.link_set(ib, up=True, master=master),
              f"set {e.ns}/{e.ifname} up" + (f" in bridge {e.master}" if e.master else ""))
    handles.commit()


def install_routes(bp: Blueprint, handles: Handles) -> None:
    for r in bp.routes:
        handles.batch(r.ns).add(nlbatch.route_add(r.destination, r.via, handles.index(r.ns, r.dev)),
                                f"route {r.destination} via {r.via} dev {r.dev} in {r.ns}")
    handles.commit()


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
        idx = handles.index(t.ns, t.dev)   # recorded: no later new_index() takes it
        for peer in t.peers:
            try:
                h.fdb("append", ifindex=idx, lladdr="00:00:00:00:00:00", dst=peer)
            except Exception as e:
                raise BackendError(f"cannot add peer {peer} to VXLAN {t.dev} of network {t.network}: {e}") from e
        h.link("set", index=idx, master=handles.index(t.ns, BRIDGE), state="up")
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
