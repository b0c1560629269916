"""The pre-packed netlink messages of bring-up (``edgelab.linkemu.nlbatch``) are byte for byte
what pyroute2's message classes encode (no root: nothing is sent)."""

from __future__ import annotations

import struct

import pytest

from edgelab.linkemu import commands as C
from edgelab.linkemu import nlbatch as N

CASES = [
    ("link_up", (1,), {}),
    ("link_set", (5,), {"up": True, "master": 2}),
    ("link_set", (7,), {"up": False}),
    ("bridge_add", ("br0", 2), {}),
    ("ifb_add", ("el-x-1a2b3c", 9), {}),
    ("veth_add", ("wlan0", 3, "p-phone-1.0", 7, 9, "02:ed:00:00:00:01"), {}),
    ("veth_add", ("eth0", 4, "p12345", 11, 12), {}),
    ("veth_add", ("wlan0", 4, "p-a.1", 11, 12, "02:ed:00:00:00:02"), {"mtu": 1450, "peer_mtu": 1450}),
    ("addr_add", (3, "10.77.0.5", 24), {}),
    ("addr_add", (3, "10.77.0.6", 32), {}),
    ("addr_add", (3, "10.96.1.7", 19), {}),
    ("route_add", ("10.1.2.3/32", "10.77.0.1", 3), {}),
    ("route_add", ("default", "10.77.0.1", 3), {}),
]


@pytest.mark.parametrize("kind,args,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_packers_match_pyroute2(kind, args, kw):
    assert getattr(N, kind)(*args, **kw) == N.reference(kind, *args, **kw)


def test_tc_template_is_pyroute2s_request_with_the_index_patched_in():
    from pyroute2 import IPBatch

    rate = 65.0
    r = f"{C._fmt(rate)}mbit"
    kw = dict(parent=0x10000, rate=r, ceil=r, burst=C.htb_burst_bytes(rate), cburst=C.htb_burst_bytes(rate),
              quantum=C.htb_quantum_bytes(rate))
    tpl = N.tc_template("replace-class", "htb", 0x10010, **kw)
    ipb = IPBatch()
    ipb.tc("replace-class", "htb", 42, 0x10010, **kw)
    ref = bytes(ipb.batch)
    got = N.with_index(tpl, 42)
    # everything but the sequence number (pyroute2 counts its own)
    assert got[:8] == ref[:8] and got[12:] == ref[12:]
    assert struct.unpack_from("i", got, 20)[0] == 42
    assert N.tc_template("replace-class", "htb", 0x10010, **kw) is tpl   # compiled once
