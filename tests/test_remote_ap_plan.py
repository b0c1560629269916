"""Planning of the access point as a node (edgelab/remote/ap.py), pure parts: which node is the
AP, who routes through it, what a crash-time down runs, the dry-run lines. No root, no devices."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgelab.errors import BackendError
from edgelab.plan import make_plan
from edgelab.remote import ap as apmod
from edgelab.topology import parse_topology

from remote_helpers import wifi_plan

REPO = Path(__file__).resolve().parents[1]


def test_the_ap_is_the_infra_device_when_placed_else_the_uplink():
    plan = wifi_plan(3)
    (dedicated,) = apmod.ap_plan(plan, lambda n: n == "wlan-ap")
    assert (dedicated.ap, dedicated.ap_is_node, dedicated.uplinks) == ("wlan-ap", False, ("server-1",))
    (uplink,) = apmod.ap_plan(plan, lambda n: False)
    assert (uplink.ap, uplink.ap_is_node, uplink.uplinks) == ("server-1", True, ())
    assert uplink.capacity_mbit == pytest.approx(plan.network("wlan").segments[0].capacity_mbit)
    assert apmod.cells_for(plan, lambda n: False, enabled=False) == []


def test_a_cell_without_uplink_or_ap_device_is_a_clear_error():
    topo = parse_topology("name: lone\nnetworks: [{name: wlan, profile: wifi-80211n-2.4ghz}]\n"
                          "nodes: [{group: phone, role: phone, count: 2, networks: [wlan]}]\n")
    with pytest.raises(BackendError, match="network 'wlan'.*needs an access point.*wlan-ap"):
        apmod.ap_plan(make_plan(topo), lambda n: False)


def test_routes_go_through_the_ap_both_ways():
    (c,) = apmod.ap_plan(wifi_plan(3), lambda n: n == "wlan-ap")
    ip = {"wlan-ap": "10.0.0.9", "server-1": "10.0.0.1", "phone-1": "10.0.0.2", "phone-2": "10.0.0.3",
          "phone-3": "10.0.0.4"}
    routes = apmod.route_cmds(c, ip.__getitem__, lambda n: "eth0")
    # each station: the two other stations and the server; the server: every station; the AP: nothing
    assert routes["phone-1"] == ["10.0.0.3/32 via 10.0.0.9 dev eth0", "10.0.0.4/32 via 10.0.0.9 dev eth0",
                                 "10.0.0.1/32 via 10.0.0.9 dev eth0"]
    assert len(routes["server-1"]) == 3 and "wlan-ap" not in routes


def test_undo_script_guard_and_crash_time_command(tmp_path):
    """The guard makes an undo script a no-op in a namespace without the device's address."""
    assert apmod._guard("phone1.local") == []
    script = tmp_path / "undo.sh"
    script.write_text("\n".join(apmod._guard("192.0.2.77") + ["echo RAN"]) + "\n")
    out = subprocess.run(["sh", str(script)], capture_output=True, text=True)
    assert out.returncode == 0 and "RAN" not in out.stdout   # no such address here
    script.write_text("\n".join(apmod._guard("127.0.0.1") + ["echo RAN"]) + "\n")
    assert "RAN" in subprocess.run(["sh", str(script)], capture_output=True, text=True).stdout
    cmd = apmod.undo_crashed_cmd("/tmp/edgelab", "elabc123")
    assert cmd == ("if [ -f /tmp/edgelab/ap-undo-elabc123.sh ]; then sh /tmp/edgelab/ap-undo-elabc123.sh "
                   ">/dev/null 2>&1; rm -f /tmp/edgelab/ap-undo-elabc123.sh; fi")


def test_write_file_cmd_writes_exact_lines(tmp_path):
    path = tmp_path / "d" / "ap-undo-x.sh"
    lines = ["ip route del 10.0.0.3/32 via 10.0.0.1 dev eth0 2>/dev/null", "sysctl -qw 'a.b=1'", "it's"]
    subprocess.run(["sh", "-c", apmod._write_file_cmd(str(path), lines)], check=True)
    assert path.read_text() == "".join(line + "\n" for line in lines)
