"""Topology validation: each bad input must say file, line, key path and what is allowed."""

import textwrap

import pytest

from edgelab.errors import TopologyError
from edgelab.topology import load_topology, parse_topology

GOOD = """\
name: tb
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
nodes:
  - group: server
    role: k3s-server
    networks: [{name: wlan, uplink: true}]
  - group: phone
    role: phone
    count: 3
    resources: {cpu: 0.5, memory_mib: 256, speed: 0.8}
    networks: [wlan]
"""


def test_good_topology_loads_with_profile_values():
    t = parse_topology(GOOD, "good.yaml")
    assert t.name == "tb"
    assert [g.count for g in t.groups] == [1, 3]
    seg = t.network("wlan").segments[0]
    assert seg.kind == "wifi" and seg.link.rate_mbit == 65 and seg.link.shared
    assert t.group("phone").resources.host_cpu == pytest.approx(0.4)


def test_link_override_keeps_profile_rest():
    text = GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    link: {delay_ms: 7}")
    seg = parse_topology(text).network("wlan").segments[0]
    assert seg.link.delay_ms == 7 and seg.link.rate_mbit == 65 and seg.link.jitter_ms == 0.5


BAD = [
    # (description, yaml text, expected line, expected fragments of the message)
    ("unknown top-level key", GOOD + "colour: blue\n", 14, ["colour", "unknown key", "allowed keys"]),
    ("misspelt link key", GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    link: {delay: 3}"),
     5, ["networks[0].link.delay", "unknown key 'delay'", "delay_ms"]),
    ("unknown role", GOOD.replace("role: phone", "role: tablet"), 10, ["nodes[1].role", "must be one of", "phone", "'tablet'"]),
    ("negative count", GOOD.replace("count: 3", "count: -2"), 11, ["nodes[1].count", "must be >= 1"]),
    ("string cpu", GOOD.replace("cpu: 0.5", "cpu: two"), 12, ["nodes[1].resources.cpu", "must be a number", "'two'"]),
    ("zero cpu", GOOD.replace("cpu: 0.5", "cpu: 0"), 12, ["nodes[1].resources.cpu", "must be > 0"]),
    ("unknown network reference", GOOD.replace("networks: [wlan]", "networks: [lan]"), 13,
     ["nodes[1].networks[0]", "unknown network 'lan'", "wlan"]),
    ("unknown profile", GOOD.replace("wifi-80211n-2.4ghz", "wifi-7"), 4, ["networks[0].profile", "unknown profile", "gigabit-ethernet"]),
    ("loss of 100%", GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    link: {loss_pct: 100}"),
     5, ["networks[0].link.loss_pct", "must be < 100"]),
    ("jitter above delay", GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    link: {delay_ms: 1, jitter_ms: 5}"),
     5, ["networks[0].link", "jitter_ms (5.0) must not exceed delay_ms (1.0)"]),
    ("profile of wrong kind", GOOD.replace("profile: wifi-80211n-2.4ghz", "kind: ethernet\n    profile: wifi-80211n-2.4ghz"),
     5, ["networks[0].profile", "is for kind 'wifi', not 'ethernet'"]),
    ("duplicate group", GOOD.replace("group: phone", "group: server"), 9, ["nodes[1].group", "used twice"]),
    ("hybrid shares not summing to 1", textwrap.dedent("""\
        name: tb
        networks:
          - name: mix
            kind: hybrid
            segments:
              - {profile: wifi-80211n-2.4ghz, share: 0.5}
              - {profile: gigabit-ethernet, share: 0.2}
        nodes:
          - {group: phone, role: phone, count: 4, networks: [mix]}
        """), 5, ["networks[0].segments", "add up to 1", "0.7"]),
    ("mesh options on a wifi network", GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    mesh: {layout: chain}"),
     5, ["networks[0].mesh", "batman-mesh only"]),
    ("network without members", GOOD.replace("networks:\n  - name: wlan", "networks:\n  - name: spare\n    profile: gigabit-ethernet\n  - name: wlan"),
     3, ["networks[0]", "'spare' has no members"]),
    ("bad YAML", "name: tb\nnetworks: [\n", 3, ["not valid YAML"]),
    ("bad subnet", GOOD.replace("profile: wifi-80211n-2.4ghz", "profile: wifi-80211n-2.4ghz\n    subnet: 10.0.0.1/24"),
     5, ["networks[0].subnet", "IPv4 network"]),
    ("uplink in a mesh", textwrap.dedent("""\
        name: tb
        networks:
          - {name: m, profile: batman-hop-80211n}
        nodes:
          - {group: phone, role: phone, count: 4, networks: [{name: m, uplink: true}]}
        """), 5, ["nodes[0].networks[0].name", "no access point"]),
    ("missing name", GOOD.replace("name: tb\n", ""), 1, ["missing required key 'name'"]),
    ("testbed name with capitals", GOOD.replace("name: tb", "name: MyBed"), 1, ["name", "lowercase letter"]),
]


@pytest.mark.parametrize("desc,text,line,fragments", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_reported_precisely(desc, text, line, fragments):
    with pytest.raises(TopologyError) as info:
        parse_topology(text, "topo.yaml")
    msg = str(info.value)
    assert msg.startswith(f"topo.yaml:{line}:"), msg
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(TopologyError, match="missing.yaml: cannot read"):
        load_topology(tmp_path / "missing.yaml")


def test_shipped_topologies_validate():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = sorted(root.glob("topologies/*.yaml")) + sorted(root.glob("compositions/*/topology.yaml"))
    assert files
    for f in files:
        load_topology(f)
