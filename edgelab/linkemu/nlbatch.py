"""Thin adapter: rtnetlink requests packed in advance and sent in bulk, one socket per namespace.

pyroute2's ``IPRoute`` costs ~1 ms of Python (its asyncio request machinery) per
request: 1,200 requests for 100 stations were most of bring-up's network time.
Here the few message shapes bring-up needs are packed with ``struct`` (byte for byte
what pyroute2's ``ifinfmsg``/``ifaddrmsg``/``rtmsg`` encode: :func:`reference` and
tests/test_nlbatch.py compare them) and written many to one ``sendto`` on a plain
``NETLINK_ROUTE`` socket opened inside
the namespace; the kernel processes every message of a buffer in order
(``netlink_rcv_skb``) and acknowledges each one, so one system call carries a whole
namespace's objects and every failure still comes back with its own message.

tc messages whose only variable is the interface (the per-link HTB root and class)
are compiled once per parameter set by pyroute2's ``IPBatch`` (the same code that
``IPRoute.tc`` runs, so the same rate tables) and re-used with the interface index
patched in: the ``ifindex`` of ``ifinfomsg``, ``ifaddrmsg`` and ``tcmsg`` all sit at
byte 20 of the message (16-byte ``nlmsghdr`` + 4).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
import threading
from typing import Callable, Optional

from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import RTM_NEWADDR, RTM_NEWLINK, RTM_NEWROUTE
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from ..errors import BackendError

SOL_NETLINK = 270
NETLINK_EXT_ACK = 11
NETLINK_CAP_ACK = 10
NLMSG_ERROR = 2
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1
IFF_UP = 1
#: Bytes per sendto: well under the default netlink send buffer (212992).
CHUNK_BYTES = 48 * 1024
_INDEX_AT = 20
_NEW = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
_SET = NLM_F_REQUEST | NLM_F_ACK
_REPLACE = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE


def _encode(msg, mtype: int, flags: int) -> bytes:
    """pyroute2's encoding of ``msg`` (the reference :mod:`tests` compare the packers below with)."""
    msg["header"]["type"] = mtype
    msg["header"]["flags"] = flags
    msg.encode()
    return bytes(msg.data)


# The packers: the few message shapes bring-up sends, packed with struct. pyroute2's
# generic encoder costs ~0.5 ms a message (it walks its attribute maps); these give
# byte for byte the same messages (tests/test_nlbatch.py checks them against it) in a
# few microseconds.
def _nla(kind: int, payload: bytes) -> bytes:
    n = 4 + len(payload)
    return struct.pack("HH", n, kind) + payload + b"\0" * (-n % 4)


def _u32(kind: int, v: int) -> bytes:
    return _nla(kind, struct.pack("I", v))


def _str(kind: int, v: str) -> bytes:
    return _nla(kind, v.encode() + b"\0")


def _msg(mtype: int, flags: int, body: bytes) -> bytes:
    return struct.pack("IHHII", 16 + len(body), mtype, flags, 0, 0) + body


def _ifinfo(index: int, up: bool) -> bytes:
    f = IFF_UP if up else 0
    return struct.pack("BBHiII", 0, 0, 0, index, f, f)


def _mac(mac: str) -> bytes:
    return bytes(int(x, 16) for x in mac.split(":"))


IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_BR_FORWARD_DELAY, IFLA_BR_STP_STATE = 1, 5
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST = 1, 2, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_TABLE = 1, 4, 5, 15


# ------------------------------------------------------------------ messages
def link_up(index: int) -> bytes:
    return _msg(RTM_NEWLINK, _SET, _ifinfo(index, True))


def link_set(index: int, *, up: bool = True, master: Optional[int] = None) -> bytes:
    return _msg(RTM_NEWLINK, _SET, _ifinfo(index, up) + (_u32(IFLA_MASTER, master) if master is not None else b""))


def bridge_add(ifname: str, index: int) -> bytes:
    """A bridge, up, STP off and no forward delay (what ``wiring`` asked pyroute2 for)."""
    data = _nla(IFLA_INFO_DATA, _u32(IFLA_BR_STP_STATE, 0) + _u32(IFLA_BR_FORWARD_DELAY, 0))
    return _msg(RTM_NEWLINK, _NEW, _ifinfo(index, True) + _str(IFLA_IFNAME, ifname)
                + _nla(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge") + data))


def ifb_add(ifname: str, index: int) -> bytes:
    """An IFB device, up (``ip link add NAME type ifb; ip link set NAME up``)."""
    return _msg(RTM_NEWLINK, _NEW, _ifinfo(index, True) + _str(IFLA_IFNAME, ifname)
                + _nla(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "ifb")))


def veth_add(ifname: str, index: int, peer: str, peer_ns_fd: int, peer_index: int,
             mac: Optional[str] = None, *, mtu: Optional[int] = None, peer_mtu: Optional[int] = None) -> bytes:
    """A veth pair, this end up with a fixed index (and MAC), the peer created directly in
    the namespace of ``peer_ns_fd`` with index ``peer_index`` (veth_newlink takes the peer's
    ``ifinfomsg``; linux drivers/net/veth.c), left down until it is configured there."""
    peer_msg = (_ifinfo(peer_index, False) + _str(IFLA_IFNAME, peer)
                + (_u32(IFLA_MTU, peer_mtu) if peer_mtu else b"") + _u32(IFLA_NET_NS_FD, peer_ns_fd))
    info = _str(IFLA_INFO_KIND, "veth") + _nla(IFLA_INFO_DATA, _nla(VETH_INFO_PEER, peer_msg))
    return _msg(RTM_NEWLINK, _NEW, _ifinfo(index, True) + _str(IFLA_IFNAME, ifname)
                + (_nla(IFLA_ADDRESS, _mac(mac)) if mac else b"") + (_u32(IFLA_MTU, mtu) if mtu else b"")
                + _nla(IFLA_LINKINFO, info))


def addr_add(index: int, address: str, prefixlen: int) -> bytes:
    a = socket.inet_aton(address)
    attrs = _nla(IFA_LOCAL, a) + _nla(IFA_ADDRESS, a)
    if prefixlen < 31:
        net = struct.unpack("!I", a)[0]
        attrs += _nla(IFA_BROADCAST, struct.pack("!I", net | ((1 << (32 - prefixlen)) - 1)))
    return _msg(RTM_NEWADDR, _NEW, struct.pack("BBBBI", socket.AF_INET, prefixlen, 0, 0, index) + attrs)


def route_add(dst: str, via: str, oif: int) -> bytes:
    """``ip route add DST via VIA dev OIF onlink`` (main table, static, unicast)."""
    net, _, plen = ("0.0.0.0/0" if dst == "default" else dst).partition("/")
    dst_len = int(plen or 32)
    # family, dst_len, src_len, tos, table, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST; RTNH_F_ONLINK
    hdr = struct.pack("BBBBBBBBI", socket.AF_INET, dst_len, 0, 0, 254, 4, 0, 1, 4)
    attrs = _u32(RTA_TABLE, 254) + (_nla(RTA_DST, socket.inet_aton(net)) if dst_len else b"")
    return _msg(RTM_NEWROUTE, _NEW, hdr + attrs + _nla(RTA_GATEWAY, socket.inet_aton(via)) + _u32(RTA_OIF, oif))


def reference(kind: str, *args, **kw) -> bytes:
    """The same message encoded by pyroute2's message classes (for the tests)."""
    if kind in ("link_up", "link_set"):
        index = args[0]
        up = kw.get("up", True)
        m = ifinfmsg()
        m["index"], m["flags"], m["change"] = index, IFF_UP if up else 0, IFF_UP if up else 0
        if kw.get("master") is not None:
            m["attrs"] = [("IFLA_MASTER", kw["master"])]
        return _encode(m, RTM_NEWLINK, _SET)
    if kind == "bridge_add":
        ifname, index = args
        m = ifinfmsg()
        m["index"], m["flags"], m["change"] = index, IFF_UP, IFF_UP
        m["attrs"] = [("IFLA_IFNAME", ifname),
                      ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "bridge"),
                                                   ("IFLA_INFO_DATA", {"attrs": [("IFLA_BR_STP_STATE", 0),
                                                                                 ("IFLA_BR_FORWARD_DELAY", 0)]})]})]
        return _encode(m, RTM_NEWLINK, _NEW)
    if kind == "ifb_add":
        ifname, index = args
        m = ifinfmsg()
        m["index"], m["flags"], m["change"] = index, IFF_UP, IFF_UP
        m["attrs"] = [("IFLA_IFNAME", ifname), ("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", "ifb")]})]
        return _encode(m, RTM_NEWLINK, _NEW)
    if kind == "veth_add":
        ifname, index, peer, fd, pindex = args[:5]
        mac = args[5] if len(args) > 5 else kw.get("mac")
        mtu, peer_mtu = kw.get("mtu"), kw.get("peer_mtu")
        m = ifinfmsg()
        m["index"], m["flags"], m["change"] = index, IFF_UP, IFF_UP
        attrs: list = [("IFLA_IFNAME", ifname)] + ([("IFLA_ADDRESS", mac)] if mac else []) + (
            [("IFLA_MTU", mtu)] if mtu else [])
        attrs.append(("IFLA_LINKINFO", {"attrs": [
            ("IFLA_INFO_KIND", "veth"),
            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", {"index": pindex, "attrs": [
                ("IFLA_IFNAME", peer)] + ([("IFLA_MTU", peer_mtu)] if peer_mtu else []) + [
                ("IFLA_NET_NS_FD", fd)]})]})]}))
        m["attrs"] = attrs
        return _encode(m, RTM_NEWLINK, _NEW)
    if kind == "addr_add":
        index, address, plen = args
        m = ifaddrmsg()
        m["family"], m["prefixlen"], m["index"] = socket.AF_INET, plen, index
        m["attrs"] = [("IFA_LOCAL", address), ("IFA_ADDRESS", address)]
        if plen < 31:
            net = struct.unpack("!I", socket.inet_aton(address))[0]
            m["attrs"].append(("IFA_BROADCAST", socket.inet_ntoa(struct.pack("!I", net | ((1 << (32 - plen)) - 1)))))
        return _encode(m, RTM_NEWADDR, _NEW)
    if kind == "route_add":
        dst, via, oif = args
        net, _, plen = ("0.0.0.0/0" if dst == "default" else dst).partition("/")
        m = rtmsg()
        m["family"], m["dst_len"], m["table"] = socket.AF_INET, int(plen or 32), 254
        m["proto"], m["scope"], m["type"], m["flags"] = 4, 0, 1, 4
        m["attrs"] = [("RTA_TABLE", 254)] + ([("RTA_DST", net)] if m["dst_len"] else []) + [
            ("RTA_GATEWAY", via), ("RTA_OIF", oif)]
        return _encode(m, RTM_NEWROUTE, _NEW)
    raise ValueError(kind)


_templates: dict[tuple, bytes] = {}
_tlock = threading.Lock()
_ipb = None


def tc_template(command: str, kind: str, handle: int, **kw) -> bytes:
    """A tc request for interface index 0, compiled once by pyroute2's ``IPBatch``
    (``IPRoute.tc``'s own encoder) and cached; :func:`with_index` fills the interface in."""
    key = (command, kind, handle, tuple(sorted(kw.items())))
    with _tlock:
        data = _templates.get(key)
        if data is None:
            global _ipb
            if _ipb is None:
                from pyroute2 import IPBatch
                _ipb = IPBatch()
            _ipb.reset()
            _ipb.tc(command, kind, 0, handle, **kw)
            data = _templates[key] = bytes(_ipb.batch)
            _ipb.reset()
    return data


def with_index(data: bytes, index: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("i", b, _INDEX_AT, index)
    return bytes(b)


# -------------------------------------------------------------------- socket
def open_socket() -> socket.socket:
    """A NETLINK_ROUTE socket in the *calling thread's* namespace (enter it first)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)
    try:
        s.setsockopt(SOL_NETLINK, NETLINK_EXT_ACK, 1)   # error strings (extack) in the acks
        s.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)   # acks without a copy of the request
        try:
            s.setsockopt(socket.SOL_SOCKET, 33, 4 << 20)  # SO_RCVBUFFORCE: every ack of a chunk fits
        except OSError:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        s.bind((0, 0))
    except BaseException:
        s.close()
        raise
    return s


#: select()'s limit (glibc FD_SETSIZE): a C library that waits on a descriptor with select()
#: aborts the whole process on one at or above it ("bit out of range 0 - FD_SETSIZE on fd_set");
#: libnftables does (nftables src/mnl.c, mnl_batch_talk), on the socket of every transaction.
FD_SETSIZE = 1024


def above_select_range(s: socket.socket) -> socket.socket:
    """``s`` moved to a descriptor >= FD_SETSIZE, where it stays while a bring-up holds one per
    namespace (a thousand at N = 1000): the descriptors below stay free for libraries that
    select() on theirs (libnftables, in-process, see nftlib). ``s`` itself where the process
    may not open that many (RLIMIT_NOFILE), or on any error."""
    import fcntl

    try:
        fd = fcntl.fcntl(s.fileno(), fcntl.F_DUPFD_CLOEXEC, FD_SETSIZE)
    except OSError:
        return s
    try:
        moved = socket.socket(fileno=fd)
    except OSError:
        os.close(fd)
        return s
    s.close()
    return moved


class Batch:
    """Requests for one namespace, sent in order by :meth:`send` on that namespace's socket."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.msgs: list[tuple[bytes, str]] = []

    def add(self, msg: bytes, what: str) -> None:
        self.msgs.append((msg, what))

    def __len__(self) -> int:
        return len(self.msgs)

    def send(self, sock: socket.socket, ignore: Callable[[int, str], bool] = lambda e, w: False) -> None:
        """Send everything (chunks of CHUNK_BYTES), read every ack; BackendError naming the
        first request the kernel refused (with its extack message)."""
        msgs, self.msgs = self.msgs, []
        seq0 = 1
        errors: list[str] = []
        i = 0
        while i < len(msgs):
            buf = bytearray()
            whats: dict[int, str] = {}
            while i < len(msgs) and (not buf or len(buf) + len(msgs[i][0]) <= CHUNK_BYTES):
                data, what = msgs[i]
                seq = seq0 + i
                b = bytearray(data)
                struct.pack_into("I", b, 8, seq)
                struct.pack_into("I", b, 12, 0)
                buf += b
                buf += b"\0" * (-len(b) % 4)
                whats[seq] = what
                i += 1
            sock.sendto(bytes(buf), (0, 0))
            while whats:
                reply = sock.recv(1 << 20)
                off = 0
                while off + 16 <= len(reply):
                    ln, ty, fl, seq, _ = struct.unpack_from("IHHII", reply, off)
                    if ln < 16:
                        break
                    if ty == NLMSG_ERROR and seq in whats:
                        what = whats.pop(seq)
                        err = -struct.unpack_from("i", reply, off + 16)[0]
                        if err and not ignore(err, what):
                            errors.append(f"{what}: {os.strerror(err)}{_extack(reply[off:off + ln], fl)}")
                    off += (ln + 3) & ~3
        if errors:
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise BackendError(f"netlink in {self.where}: {errors[0]}{more}")


def _extack(msg: bytes, flags: int) -> str:
    """The kernel's error string (NLMSGERR_ATTR_MSG), if it sent one."""
    if not flags & NLM_F_ACK_TLVS:
        return ""
    off = 16 + 4 + 16   # nlmsghdr, error, the request's header (NETLINK_CAP_ACK)
    while off + 4 <= len(msg):
        ln, ty = struct.unpack_from("HH", msg, off)
        if ln < 4:
            break
        if ty == NLMSGERR_ATTR_MSG:
            return " (" + msg[off + 4: off + ln].split(b"\0")[0].decode(errors="replace") + ")"
        off += (ln + 3) & ~3
    return ""


def eexist(err: int, what: str) -> bool:
    return err == errno.EEXIST
