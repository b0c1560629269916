"""Per-station Wi-Fi rates and aggregation: topology input, plan, tc commands (no root needed)."""

import json
import textwrap

import pytest

from edgelab.airtime import mixed_saturation, saturation
from edgelab.backends.local.blueprint import build
from edgelab.errors import PlanError, TopologyError
from edgelab.linkemu import commands as C
from edgelab.plan import make_plan, plan_with_station_mcs
from edgelab.profiles import get_profile
from edgelab.topology import parse_topology

AIR = get_profile("wifi-80211n-2.4ghz").airtime


def topo(phone_net: str = "wlan", net_extra: str = "", count: int = 4):
    return parse_topology(textwrap.dedent(f"""\
        name: tb
        networks:
          - name: wlan
            profile: wifi-80211n-2.4ghz
        {net_extra}
        nodes:
          - {{group: server, role: k3s-server, networks: [{{name: wlan, uplink: true}}]}}
          - {{group: phone, role: phone, count: {count}, networks: [{phone_net}]}}
        """), file="t.yaml")


def test_default_profile_aggregates_and_is_qos_timed():
    seg = make_plan(topo()).network("wlan").segments[0]
    assert seg.airtime.ampdu_frames == 8 and seg.airtime.block_ack and seg.airtime.ifs_us == 37
    assert seg.capacity_mbit == pytest.approx(saturation(AIR, 4).throughput_mbit)
    assert len(set(seg.station_shares_mbit)) == 1


def test_per_node_mcs_gives_the_anomaly_in_the_plan():
    p = make_plan(topo("{name: wlan, mcs: [7, 7, 7, 0]}"))
    seg = p.network("wlan").segments[0]
    assert seg.station_rates == (65, 65, 65, 6.5)
    assert seg.capacity_mbit == pytest.approx(mixed_saturation(AIR, [65, 65, 65, 6.5]).throughput_mbit)
    assert seg.capacity_mbit < 0.7 * saturation(AIR, 4).throughput_mbit
    # The slow phone's own link is capped at its PHY rate; the others keep the profile's.
    assert p.node("phone-4").interfaces[0].link.rate_mbit == 6.5
    assert p.node("phone-1").interfaces[0].link.rate_mbit == 65
    d = p.to_dict()["networks"][0]["segments"][0]
    assert d["aggregation"] == {"ampdu_frames": 8, "block_ack": True}
    assert [s["mcs"] for s in d["stations_airtime"]] == [7, 7, 7, 0]
    assert [s["ampdu_frames"] for s in d["stations_airtime"]] == [8, 8, 8, 2]


def test_rssi_class_picks_the_highest_mcs_it_can_decode():
    seg = make_plan(topo("{name: wlan, rssi_dbm: -75}")).network("wlan").segments[0]
    assert seg.station_mcs == (2,) * 4          # -77 dBm (MCS2) <= -75 < -74 dBm (MCS3), Table 19-23
    seg = make_plan(topo("{name: wlan, rssi_dbm: -95}")).network("wlan").segments[0]
    assert seg.station_mcs == (0,) * 4


def test_aggregation_can_be_turned_off_or_resized():
    off = make_plan(topo(net_extra="    aggregation: off")).network("wlan").segments[0]
    assert off.airtime.ampdu_frames == 1 and not off.airtime.block_ack
    four = make_plan(topo(net_extra="    aggregation: {ampdu_frames: 4}")).network("wlan").segments[0]
    assert four.airtime.ampdu_frames == 4 and four.airtime.block_ack
    on = make_plan(topo()).network("wlan").segments[0]
    assert off.capacity_mbit < four.capacity_mbit < on.capacity_mbit


def test_long_slot_override_moves_aifs():
    seg = make_plan(topo(net_extra="    airtime: {slot_us: 20}")).network("wlan").segments[0]
    assert seg.airtime.ifs_us == 70
    seg = make_plan(topo(net_extra="    airtime: {difs_us: 50}")).network("wlan").segments[0]
    assert seg.airtime.ifs_us == 50 and seg.airtime.aifsn is None


@pytest.mark.parametrize("phone_net,extra,fragment", [
    ("{name: wlan, mcs: 8}", "", "must be <= 7"),
    ("{name: wlan, mcs: [7, 0]}", "", "one per node (4), not 2"),
    ("{name: wlan, mcs: 1, rssi_dbm: -60}", "", "not both"),
    ("{name: wlan, rssi_dbm: 5}", "", "must be <= 0"),
    ("wlan", "    aggregation: {ampdu_frames: 8, block_ack: false}", "acknowledged by a BlockAck"),
    ("wlan", "    aggregation: {ampdu_frames: 65}", "at most 64"),
    ("wlan", "    aggregation: {frames: 4}", "unknown key 'frames'"),
    ("wlan", "    airtime: {aifsn: 2, difs_us: 30}", "not both"),
    ("wlan", "    airtime: {max_stage: 1000000}", "must be <= 16"),
    ("wlan", "    airtime: {mcs_rates_mbit: []}", "list of 1-32 numbers"),
])
def test_bad_rate_and_aggregation_input_is_reported(phone_net, extra, fragment):
    with pytest.raises(TopologyError) as info:
        topo(phone_net, extra)
    assert fragment in str(info.value) and "t.yaml" in str(info.value)


def test_rates_on_an_uplink_or_ethernet_are_refused():
    with pytest.raises(TopologyError, match="uplink is wired"):
        parse_topology(textwrap.dedent("""\
            name: tb
            networks: [{name: wlan, profile: wifi-80211n-2.4ghz}]
            nodes:
              - {group: server, role: k3s-server, networks: [{name: wlan, uplink: true, mcs: 3}]}
            """))
    with pytest.raises(TopologyError, match="applies to a wifi network"):
        parse_topology(textwrap.dedent("""\
            name: tb
            networks: [{name: lan, profile: gigabit-ethernet}]
            nodes:
              - {group: a, role: client, networks: [{name: lan, mcs: 3}]}
            """))


def test_scaling_past_a_per_node_list_is_a_plan_error():
    t = topo("{name: wlan, mcs: [7, 7, 7, 0]}")
    with pytest.raises(PlanError, match="one per node"):
        make_plan(t.scaled("phone", 6))


def test_rate_change_recomputes_budget_and_link():
    p = make_plan(topo())
    slow = plan_with_station_mcs(p, "wlan", {"phone-2": 0})
    seg = slow.network("wlan").segments[0]
    assert seg.station_mcs == (None, 0, None, None)
    assert seg.capacity_mbit == pytest.approx(mixed_saturation(AIR, [65, 6.5, 65, 65]).throughput_mbit)
    assert slow.node("phone-2").interfaces[0].link.rate_mbit == 6.5
    back = plan_with_station_mcs(slow, "wlan", {"phone-2": None})
    assert back.network("wlan").segments[0].capacity_mbit == pytest.approx(p.network("wlan").segments[0].capacity_mbit)
    assert back.node("phone-2").interfaces[0].link.rate_mbit == 65
    with pytest.raises(PlanError, match="not Wi-Fi stations"):
        plan_with_station_mcs(p, "wlan", {"server-1": 0})
    with pytest.raises(PlanError, match="MCS 9"):
        plan_with_station_mcs(p, "wlan", {"phone-1": 9})


def test_blueprint_carries_each_station_share_and_ceiling():
    p = make_plan(topo("{name: wlan, mcs: [7, 7, 7, 0]}"))
    sh = build(p).shared[0]
    assert sh.stations == ("phone-1", "phone-2", "phone-3", "phone-4")
    seg = p.network("wlan").segments[0]
    assert [r for r, _ in sh.station_rates] == pytest.approx(list(seg.station_shares_mbit))
    assert sh.station_rates[3][1] < sh.station_rates[0][1]     # a slow phone alone reaches less


def test_budget_classes_follow_the_station_shares():
    cmds = C.shared_medium_cmds("ifb", ["p1", "p2"], 20, ["pfifo"], ["02:00:00:00:00:01", "02:00:00:00:00:02"],
                                [(15.0, 20.0), (5.0, 6.0)])
    rates = {c[c.index("classid") + 1]: (c[c.index("rate") + 1], c[c.index("ceil") + 1])
             for c in cmds if c[:3] == ["tc", "class", "replace"]}
    # 1 % to the default class; the stations' guarantees fill the rest in proportion to their shares.
    assert rates["a:1"] == ("20mbit", "20mbit") and rates["a:10"] == ("0.2mbit", "20mbit")
    assert rates["a:100"] == ("14.85mbit", "20mbit") and rates["a:101"] == ("4.95mbit", "6mbit")
    change = C.budget_class_cmds("ifb", 10, 2, [(5.0, 10.0), (5.0, 10.0)], op="change")
    assert all(c[:3] == ["tc", "class", "change"] for c in change) and len(change) == 4
    with pytest.raises(ValueError):
        C.shared_medium_cmds("ifb", ["p1"], 20, ["pfifo"], None, [(1.0, 1.0)])


def test_edgelab_plan_shows_station_rates_and_the_aggregated_budget(tmp_path):
    from click.testing import CliRunner

    from edgelab.cli import cli

    f = tmp_path / "t.yaml"
    f.write_text(textwrap.dedent("""\
        name: tb
        networks: [{name: wlan, profile: wifi-80211n-2.4ghz}]
        nodes:
          - {group: server, role: k3s-server, resources: {cpu: 0.2}, networks: [{name: wlan, uplink: true}]}
          - {group: phone, role: phone, count: 3, resources: {cpu: 0.1}, networks: [{name: wlan, mcs: [7, 7, 0]}]}
        """))
    r = CliRunner().invoke(cli, ["plan", str(f)], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    cap = mixed_saturation(AIR, [65, 65, 6.5])
    assert f"{cap.throughput_mbit:.1f} Mbit/s (A-MPDU 8 + BlockAck, slot 9 µs, AIFS 37 µs)" in r.output
    row = next(line for line in r.output.splitlines() if "phone-3" in line and "6.5" in line)
    assert f"{cap.per_station_mbit[2]:.2f}" in row and " 2 " in row     # MCS0: 2 MPDUs per A-MPDU
    r = CliRunner().invoke(cli, ["plan", str(f), "--json"])
    seg = json.loads(r.output)["networks"][0]["segments"][0]
    assert [s["rate_mbit"] for s in seg["stations_airtime"]] == [65, 65, 6.5]
