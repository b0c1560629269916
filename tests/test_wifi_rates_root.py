"""A mixed-rate Wi-Fi cell on the local backend: measured per-phone shares against the model,
and a station's rate changed while the cell runs (root; run under the shared flock)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from edgelab.linkemu.commands import FRAME_BYTES
from edgelab.measure import concurrent_goodput

from local_helpers import leftovers, running_testbed

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and cgroups"),
]

#: TCP payload per L2 frame that HTB charges (1448 B of a 1514 B frame, timestamps on).
TCP_PER_FRAME = 1448 / FRAME_BYTES

# No loss and little delay: what is measured is the airtime budget, not TCP's loss recovery.
MIXED = """
name: wrates
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
    link: {delay_ms: 0.5, jitter_ms: 0, loss_pct: 0}
nodes:
  - group: server
    role: k3s-server
    resources: {cpu: 0.5}
    networks: [{name: wlan, uplink: true}]
  - group: phone
    role: phone
    count: 3
    resources: {cpu: 0.3}
    networks: [{name: wlan, mcs: [7, 7, 0]}]
"""


def _expected(seg) -> dict[str, float]:
    """TCP goodput each phone should reach: its guaranteed class rate, as TCP payload."""
    cap = seg.capacity_mbit
    total = sum(seg.station_shares_mbit)
    return {n: s / total * cap * 0.99 * TCP_PER_FRAME for n, s in zip(seg.stations, seg.station_shares_mbit)}


def _ifindex(tb, ns_node: str, dev: str) -> int:
    out = subprocess.run(["ip", "-n", tb.netns(ns_node), "-j", "link", "show", "dev", dev],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)[0]["ifindex"]


def test_mixed_rate_cell_shares_follow_the_model_and_change_live():
    with running_testbed(MIXED) as tb:
        phones = ["phone-1", "phone-2", "phone-3"]
        seg = tb.plan.network("wlan").segments[0]
        assert seg.station_rates == (65, 65, 6.5)
        cls = subprocess.run(["tc", "-n", tb.netns("phone-3"), "class", "show", "dev", "wlan0"],
                             capture_output=True, text=True, check=True).stdout
        assert "rate 6500Kbit" in cls, cls
        got = {p: r["goodput_mbit"] for p, r in concurrent_goodput(tb, phones, "server-1", seconds=3,
                                                                   network="wlan").items()}
        want = _expected(seg)
        for p in phones:
            assert got[p] == pytest.approx(want[p], rel=0.10), (got, want)
        # The anomaly: the slow phone's fewer, longer exchanges leave the fast phones far below
        # what three fast phones get (17.3 Mbit/s each in the model).
        assert max(got.values()) < 0.8 * 17.27 * TCP_PER_FRAME

        # The slow phone walks back to the AP: MCS0 -> MCS7, in place.
        shared = tb.blueprint.shared[0]
        ifb = tb.emulator.ifb_name(shared.name)
        before = _ifindex(tb, "wlan-ap", ifb)
        change = tb.set_station_mcs("phone-3", "wlan", 7)
        assert change["rate_mbit"] == 65
        assert _ifindex(tb, "wlan-ap", ifb) == before          # same cell, not rebuilt
        cls = subprocess.run(["tc", "-n", tb.netns("phone-3"), "class", "show", "dev", "wlan0"],
                             capture_output=True, text=True, check=True).stdout
        assert "rate 65Mbit" in cls, cls                          # its own link no longer capped at 6.5
        seg = tb.plan.network("wlan").segments[0]
        assert seg.station_rates == (65, 65, 65)
        got = {p: r["goodput_mbit"] for p, r in concurrent_goodput(tb, phones, "server-1", seconds=3,
                                                                   network="wlan").items()}
        want = _expected(seg)
        for p in phones:
            assert got[p] == pytest.approx(want[p], rel=0.10), (got, want)
        assert tb.facts()["station_rate_changes"][0]["node"] == "phone-3"
    assert leftovers("wrates") == {}


def _budget_rate(ns: str, ifb: str) -> float:
    """Rate of the airtime budget class a:1, in Mbit/s, as the kernel reports it."""
    out = subprocess.run(["tc", "-n", ns, "class", "show", "dev", ifb], capture_output=True, text=True,
                         check=True).stdout
    import re

    m = re.search(r"class htb a:1 root rate (\d+(?:\.\d+)?)([KMG]?)bit", out)
    assert m, out
    return float(m.group(1)) * {"K": 1e-3, "M": 1.0, "G": 1e3, "": 1e-6}[m.group(2)]


def test_cli_wifi_rate_rerates_a_detached_testbed(tmp_path):
    """`edgelab up` leaves the cell running; `edgelab wifi-rate` changes a phone's MCS from another
    process (the rates set before are kept), `edgelab down` removes everything."""
    import sys

    from edgelab.backends.local.naming import netns_name
    from edgelab.plan import make_plan
    from edgelab.topology import parse_topology

    topo = tmp_path / "cell.yaml"
    topo.write_text(MIXED.replace("name: wrates", "name: wratecli"))
    env = dict(os.environ, PYTHONPATH=str(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    def edgelab(*args):
        return subprocess.run([sys.executable, "-m", "edgelab", *args], capture_output=True, text=True, env=env,
                              timeout=120)

    plan = make_plan(parse_topology(topo.read_text()))
    ap = netns_name("wratecli", "wlan-ap")
    try:
        r = edgelab("up", str(topo))
        assert r.returncode == 0, r.stderr
        from edgelab.linkemu import LinkEmulator
        ifb = LinkEmulator("fallback", tag="el-wratecli").ifb_name("air0")
        seg = plan.network("wlan").segments[0]
        assert _budget_rate(ap, ifb) == pytest.approx(seg.capacity_mbit, rel=0.01)
        r = edgelab("wifi-rate", str(topo), "phone-1", "--mcs", "0")
        assert r.returncode == 0, r.stderr
        from edgelab.airtime import mixed_saturation
        want = mixed_saturation(seg.airtime, [6.5, 65, 6.5]).throughput_mbit   # phone-3 stays at MCS0
        assert _budget_rate(ap, ifb) == pytest.approx(want, rel=0.01)
        r = edgelab("wifi-rate", str(topo), "phone-3", "--mcs", "7")
        assert r.returncode == 0, r.stderr
        want = mixed_saturation(seg.airtime, [6.5, 65, 65]).throughput_mbit     # phone-1's MCS0 is kept
        assert _budget_rate(ap, ifb) == pytest.approx(want, rel=0.01)
        r = edgelab("wifi-rate", str(topo), "phone-9", "--mcs", "7")
        assert r.returncode != 0 and "phone-9" in r.stderr + r.stdout
    finally:
        edgelab("down", "wratecli")
    assert leftovers("wratecli") == {}
