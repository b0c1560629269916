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
        seg = tb.plan.network("wlan").segments[0]
        assert seg.station_rates == (65, 65, 65)
        got = {p: r["goodput_mbit"] for p, r in concurrent_goodput(tb, phones, "server-1", seconds=3,
                                                                   network="wlan").items()}
        want = _expected(seg)
        for p in phones:
            assert got[p] == pytest.approx(want[p], rel=0.10), (got, want)
        assert tb.facts()["station_rate_changes"][0]["node"] == "phone-3"
    assert leftovers("wrates") == {}
