import ipaddress
import textwrap

import pytest

from edgelab.errors import PlanError
from edgelab.plan import hop_count, make_plan, mesh_neighbours, shortest_next_hops, split_members
from edgelab.topology import parse_topology


def topo(text):
    return parse_topology(textwrap.dedent(text))


WIFI = """\
name: tb
networks:
  - {name: wlan, profile: wifi-80211n-2.4ghz}
  - {name: lan, profile: gigabit-ethernet, subnet: 192.168.5.0/24}
nodes:
  - {group: server, role: k3s-server, networks: [{name: wlan, uplink: true}, lan]}
  - {group: phone, role: phone, count: 5, networks: [wlan]}
"""


def test_node_names_addresses_and_interfaces():
    p = make_plan(topo(WIFI))
    assert [n.name for n in p.nodes] == ["server-1", "phone-1", "phone-2", "phone-3", "phone-4", "phone-5"]
    server = p.node("server-1")
    assert [(i.ifname, i.network, i.uplink) for i in server.interfaces] == [("eth0", "wlan", True), ("eth1", "lan", False)]
    assert server.address("lan") == "192.168.5.1"
    addrs = [p.node(f"phone-{i}").address("wlan") for i in range(1, 6)]
    assert len(set(addrs)) == 5
    net = ipaddress.IPv4Network(p.network("wlan").subnet)
    assert all(ipaddress.IPv4Address(a) in net for a in addrs)
    assert p.network("wlan").infra == "wlan-ap" and p.network("lan").infra == "lan-sw"
    assert p.network("wlan").uplinks == ("server-1",)


def test_wifi_capacity_shrinks_with_stations():
    small = make_plan(topo(WIFI)).network("wlan").segments[0].capacity_mbit
    big = make_plan(topo(WIFI).scaled("phone", 40)).network("wlan").segments[0].capacity_mbit
    assert 0 < big < small < 65


def test_subnets_do_not_overlap_and_grow_with_members():
    p = make_plan(topo(WIFI).scaled("phone", 200))
    wlan = ipaddress.IPv4Network(p.network("wlan").subnet)
    assert wlan.num_addresses - 2 >= 201
    assert not wlan.overlaps(ipaddress.IPv4Network(p.network("lan").subnet))


def test_explicit_subnet_too_small_is_an_error():
    t = topo(WIFI.replace("gigabit-ethernet, subnet: 192.168.5.0/24", "gigabit-ethernet, subnet: 192.168.5.0/30"))
    t = t.scaled("server", 3)
    with pytest.raises(PlanError, match="room for 2 hosts"):
        make_plan(t)


def test_hybrid_split_by_share():
    t = topo("""\
        name: tb
        networks:
          - name: mix
            kind: hybrid
            segments:
              - {profile: wifi-80211n-2.4ghz, share: 0.75}
              - {profile: gigabit-ethernet, share: 0.25}
        nodes:
          - {group: phone, role: phone, count: 8, networks: [mix]}
        """)
    p = make_plan(t)
    segs = p.network("mix").segments
    assert [len(s.stations) for s in segs] == [6, 2]
    assert [i.kind for i in p.node("phone-7").interfaces] == ["ethernet"]
    assert p.node("phone-1").interfaces[0].ifname == "wlan0"


def test_split_members_largest_remainder():
    assert split_members(10, [0.5, 0.5]) == [5, 5]
    assert split_members(7, [0.5, 0.5]) == [4, 3]
    assert split_members(3, [0.9, 0.05, 0.05]) == [1, 1, 1]
    assert sum(split_members(101, [0.3, 0.3, 0.4])) == 101


def test_mesh_chain_routes_go_through_relays():
    t = topo("""\
        name: tb
        networks: [{name: m, profile: batman-hop-80211n}]
        nodes: [{group: ph, role: phone, count: 4, networks: [m]}]
        """)
    p = make_plan(t)
    first = p.node("ph-1")
    assert len(first.interfaces) == 1 and first.interfaces[0].peer == "ph-2"
    assert all(i.address.endswith("/32") for n in p.nodes for i in n.interfaces)
    ph4 = p.node("ph-4").address("m")
    route = next(r for r in first.routes if r.destination == f"{ph4}/32")
    assert route.via == p.node("ph-2").address("m") and route.dev == "mesh0"
    assert len(p.node("ph-2").interfaces) == 2
    assert hop_count(p, "m", "ph-1", "ph-4") == 3


def test_mesh_grid_neighbours():
    assert mesh_neighbours(list("abcdef"), "grid", 3) == [
        ("a", "b"), ("a", "d"), ("b", "c"), ("b", "e"), ("c", "f"), ("d", "e"), ("e", "f")]
    hops = shortest_next_hops(list("abcdef"), mesh_neighbours(list("abcdef"), "grid", 3))
    assert hops["a"]["f"] in ("b", "d")


def test_plan_export_is_json_serialisable():
    import json

    d = make_plan(topo(WIFI)).to_dict()
    back = json.loads(json.dumps(d))
    assert back["nodes"][1]["interfaces"][0]["link"]["rate_mbit"] == 65
    assert back["networks"][0]["segments"][0]["capacity_mbit"] > 0
