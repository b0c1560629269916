"""Folding over several hosts: placement, VXLAN tunnels between the hosts' bridges, the g5k dry run,
and (root) a real two-host share over the SSH lab: ping and iperf3 across hosts within the link's
parameters. Root part under the shared lock:
``flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_multihost.py``.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time

import pytest

from edgelab.plan import make_plan
from edgelab.remote import multihost as mh
from edgelab.topology import parse_topology

LAN = """\
name: {name}
networks:
  - {{name: lan, kind: ethernet, link: {{rate_mbit: 20, delay_ms: 2}}}}
nodes:
  - {{group: server, role: k3s-server, networks: [lan]}}
  - {{group: phone, role: phone, count: 3, networks: [lan]}}
"""

WIFI = """\
name: wf
networks:
  - {name: wlan, profile: wifi-80211n-2.4ghz}
nodes:
  - {group: server, role: k3s-server, networks: [{name: wlan, uplink: true}]}
  - {group: phone, role: phone, count: 4, networks: [wlan]}
"""


def plan_of(text):
    return make_plan(parse_topology(textwrap.dedent(text)))


def test_a_network_spanning_hosts_gets_one_vni_and_a_tunnel_per_host_to_every_other():
    plan = plan_of(LAN.format(name="mh"))
    where = {"server-1": "a", "phone-1": "a", "phone-2": "b", "phone-3": "c"}
    mp = mh.plan_hosts(plan, where, {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"})
    assert [s.nodes for s in mp.shares] == [("server-1", "phone-1"), ("phone-2",), ("phone-3",)]
    assert len({t.vni for t in mp.tunnels}) == 1 and len(mp.tunnels) == 3
    a = next(t for t in mp.tunnels if t.host == "a")
    assert a.local == "10.0.0.1" and set(a.peers) == {"10.0.0.2", "10.0.0.3"}
    cmds = mh.tunnel_cmds(mp, "a")
    assert sum("bridge fdb append" in c for c in cmds) == 2 and "mtu 1450" in " ".join(cmds)
    # every interface of a spanned network leaves room for the 50-byte VXLAN header
    assert all("mtu 1450" in c for c in mh.share_cmds(mp, plan, "b") if "type veth" in c)
    # one host: no tunnel, full MTU
    one = mh.plan_hosts(plan, {n: "a" for n in where}, {"a": "10.0.0.1"})
    assert one.tunnels == [] and "mtu 1500" in " ".join(mh.share_cmds(one, plan, "a"))
    # names differ per testbed and per host index, so shares on one kernel never collide
    assert mh.node_ns("mh", 1, "phone-1") != mh.node_ns("mh", 2, "phone-1")
    assert mh.vni("mh", "lan") != mh.vni("other", "lan")
    assert all(len(t.dev) <= 15 for t in mp.tunnels)


def test_a_wifi_cell_crosses_the_ap_host_and_the_placement_comes_from_folding():
    from edgelab.folding import fold
    from edgelab.model import Host

    plan = plan_of(WIFI)
    pl = fold(plan.nodes, [Host("h1", 4.0, 4096), Host("h2", 4.0, 4096)], max_per_host=3)
    mp = mh.plan_hosts(plan, pl.assignment, {"h1": "192.0.2.1", "h2": "192.0.2.2"})
    assert mp.ap_hosts == {"wlan": pl.assignment["server-1"]}
    far = [n for n in plan.network("wlan").segments[0].stations if pl.assignment[n] != mp.ap_hosts["wlan"]]
    assert far and mp.remote_stations["wlan"] == far
    text = "\n".join(mh.describe(mp))
    assert "Wi-Fi cell wlan: AP on" in text and "cross the tunnel" in text


def test_g5k_dry_run_of_a_folded_wifi_topology_shows_placement_tunnels_and_the_ap_shaping():
    from edgelab.backends.g5k import dry_run

    plan = plan_of(WIFI)
    out = dry_run(plan, {"max_per_host": 3})
    assert "Multi-host folding" in out, out
    assert re.search(r"tunnel wlan on \S+: vx[0-9a-f]{6} vxlan id \d+", out), out
    assert "Wi-Fi cell wlan: AP on" in out and "airtime budget" in out, out
    assert "not emulated" not in out


# ------------------------------------------------------------------ real hosts (root)
root = pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/sbin/sshd", os.X_OK),
                          reason="needs root and Debian openssh-server (the SSH lab)")


@root
def test_two_lab_hosts_share_a_network_through_vxlan_within_the_link_parameters():
    from edgelab.remote import Transport, load_inventory
    from edgelab.remote import lab as labmod

    plan = plan_of(LAN.format(name=f"mh{os.getpid() % 10000}"))
    lb = labmod.up([labmod.DeviceSpec(node="h1"), labmod.DeviceSpec(node="h2")], python=sys.executable)
    tr = Transport(load_inventory(lb.inventory))
    where = {"server-1": "h1", "phone-1": "h1", "phone-2": "h2", "phone-3": "h2"}
    addrs = {h: tr.device(h).data_address for h in ("h1", "h2")}
    mp = mh.plan_hosts(plan, where, addrs)
    try:
        tr.install_edgelab(["h1", "h2"])
        py = tr.device("h1").python
        for h in ("h1", "h2"):
            tr.run(h, " && ".join(mh.share_cmds(mp, plan, h) + mh.link_cmds(mp, plan, h, python=py)), sudo=True)
        srv = plan.node("server-1").address("lan")
        ns3 = mh.node_ns(plan.topology.name, 2, "phone-3")
        ping = tr.run("h2", f"ip netns exec {ns3} ping -c 5 -i 0.2 -W 2 {srv}", sudo=True).stdout
        rtt = float(re.search(r"= [\d.]+/([\d.]+)/", ping).group(1))
        # at least each end's 2 ms once per direction (the fallback delayer splits a link's delay between sides)
        assert 4 <= rtt <= 40, ping
        ns_s = mh.node_ns(plan.topology.name, 1, "server-1")
        server = tr.popen("h1", ["ip", "netns", "exec", ns_s, "iperf3", "-s", "-1", "-p", "5301"], sudo=True)
        time.sleep(1.0)
        out = tr.run("h2", f"ip netns exec {ns3} iperf3 -c {srv} -p 5301 -t 3 -J", sudo=True, timeout=30).stdout
        import json

        mbit = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
        assert 0.6 * 20 <= mbit <= 20 * 1.02, mbit
        server.wait(timeout=10)
    finally:
        try:
            for h in ("h1", "h2"):
                tr.run(h, "; ".join(mh.teardown_cmds(mp, h)), sudo=True, check=False)
        finally:
            tr.close()
            labmod.down(lb.lab_id)
    leftovers = [n for n in os.listdir("/run/netns") if n.startswith(f"el-{plan.topology.name}.")]
    assert leftovers == []
