import pytest

from edgelab.airtime import saturation, solve_fixed_point, _tau
from edgelab.profiles import get_profile


def test_fixed_point_is_consistent():
    for n in (2, 5, 10, 50):
        tau, p = solve_fixed_point(n, 32, 5)
        assert p == pytest.approx(1 - (1 - tau) ** (n - 1), abs=1e-9)
        assert tau == pytest.approx(_tau(p, 32, 5), rel=1e-6)


def test_single_station_has_no_collisions_and_closed_form_tau():
    tau, p = solve_fixed_point(1, 16, 6)
    assert p == 0 and tau == pytest.approx(2 / 17)


def test_collision_probability_rises_and_capacity_falls_with_stations():
    air = get_profile("wifi-80211n-2.4ghz").airtime
    caps = [saturation(air, n).throughput_mbit for n in (2, 4, 8, 16, 32, 64)]
    ps = [saturation(air, n).p for n in (2, 4, 8, 16, 32, 64)]
    assert all(a > b for a, b in zip(caps, caps[1:]))
    assert all(a < b for a, b in zip(ps, ps[1:]))
    assert caps[0] < air.phy_rate_mbit


def test_efficiency_with_aggregation_is_higher():
    ac = get_profile("wifi-80211ac-5ghz").airtime
    n = get_profile("wifi-80211n-2.4ghz").airtime
    assert saturation(ac, 4).throughput_mbit / ac.phy_rate_mbit > saturation(n, 4).throughput_mbit / n.phy_rate_mbit
