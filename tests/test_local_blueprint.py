"""Pure tests of the local backend's naming and blueprint (no root needed)."""

from edgelab.backends.local import blueprint, cgroups
from edgelab.backends.local.naming import IFNAMSIZ, port_name

from local_helpers import plan_of

WIFI = """
name: lbbp
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
nodes:
  - group: server
    role: k3s-server
    networks: [{name: wlan, uplink: true}]
  - group: averyverylon
    role: phone
    count: 3
    resources: {cpu: 0.25, memory_mib: 128}
    networks: [wlan]
"""

MESH = """
name: lbbpm
networks:
  - name: mesh
    profile: batman-hop-80211n
nodes:
  - group: m
    role: phone
    count: 4
    networks: [mesh]
"""


def test_wifi_blueprint_names_shared_budget_and_uplink():
    bp = blueprint.build(plan_of(WIFI))
    assert bp.infra_ns == {"wlan-ap": "el-lbbp.wlan-ap"}
    assert set(bp.node_ns.values()) == {"el-lbbp.server-1"} | {f"el-lbbp.averyverylon-{i}" for i in (1, 2, 3)}
    assert all(len(v.b.ifname) <= IFNAMSIZ and v.b.master == "br0" for v in bp.veths)
    ports = [v.b.ifname for v in bp.veths]
    assert len(set(ports)) == len(ports) == 4
    # one budget for the 3 stations; the uplink is outside it
    (shared,) = bp.shared
    assert len(shared.ports) == 3 and "server-1" not in shared.ports
    assert 0 < shared.capacity_mbit < 65
    assert {c.rel: c.host_cpu for c in bp.cgroups}["edgelab/lbbp/averyverylon-1"] == 0.25
    # Each station is known to its budget by the fixed MAC of its own (node-side) veth end.
    mac_of_port = {v.b.ifname: v.a.mac for v in bp.veths}
    assert list(shared.station_macs) == [mac_of_port[p] for p in shared.ports]
    assert len(set(mac_of_port.values())) == 4
    assert blueprint.build(plan_of(WIFI)).veths == bp.veths  # same plan, same MACs


def test_node_macs_are_unicast_locally_administered_and_distinct():
    macs = [blueprint.node_mac(i) for i in (0, 1, 255, 256, 65536, 2**32 - 1)]
    assert macs[0] == "02:ed:00:00:00:00" and macs[3] == "02:ed:00:00:01:00"
    assert macs[-1] == "02:ed:ff:ff:ff:ff"
    assert len(set(macs)) == len(macs)
    assert all(int(m[:2], 16) & 0b11 == 0b10 for m in macs)  # locally administered, not multicast


def test_port_name_falls_back_to_position_when_too_long():
    assert port_name("phone-12", 3) == "phone-12"
    assert port_name("abcdefghijkl-100", 7) == "p7"


def test_mesh_blueprint_is_point_to_point_with_routes_and_forwarding():
    bp = blueprint.build(plan_of(MESH))
    assert not bp.bridges and not bp.infra_ns
    assert [(v.a.ns[-3:], v.b.ns[-3:]) for v in bp.veths] == [("m-1", "m-2"), ("m-2", "m-3"), ("m-3", "m-4")]
    assert all(v.a.address.endswith("/32") and v.b.address.endswith("/32") for v in bp.veths)
    assert bp.forwarding == set(bp.node_ns.values())
    # m-1 reaches m-4 through m-2
    r = [r for r in bp.routes if r.ns == "el-lbbpm.m-1" and r.destination.startswith(bp.veths[2].b.address.split("/")[0])]
    assert r and r[0].via == bp.veths[0].b.address.split("/")[0]


def test_quota_is_host_cpu_times_period():
    assert cgroups.quota_us(0.25) == 25_000
    assert cgroups.quota_us(2.0) == 200_000
    assert cgroups.quota_us(0.001) == cgroups.MIN_QUOTA_US


HYBRID = """
name: lbbph
networks:
  - name: mix
    kind: hybrid
    segments:
      - {profile: wifi-80211n-2.4ghz, share: 0.5}
      - {profile: fast-ethernet, share: 0.25}
      - {profile: wifi-80211ac-5ghz, share: 0.25}
nodes:
  - group: gw
    role: k3s-server
    networks: [{name: mix, uplink: true}]
  - group: d
    role: phone
    count: 8
    networks: [mix]
"""


def test_hybrid_one_bridge_one_budget_per_wifi_segment():
    bp = blueprint.build(plan_of(HYBRID))
    assert bp.bridges == [("el-lbbph.mix-ap", "br0")]
    assert len(bp.veths) == 9
    budgets = {s.segment: s for s in bp.shared}
    assert set(budgets) == {0, 2}  # the ethernet segment has no airtime budget
    assert len(budgets[0].ports) == 4 and len(budgets[2].ports) == 2
    assert budgets[0].name != budgets[2].name
    assert not set(budgets[0].ports) & set(budgets[2].ports)
    assert "gw-1" not in budgets[0].ports + budgets[2].ports
    assert not set(budgets[0].station_macs) & set(budgets[2].station_macs)
