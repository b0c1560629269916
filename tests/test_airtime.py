"""The airtime model against published figures and independent computations.

Nothing here compares the model with its own earlier output: Bianchi's paper,
frame durations worked out by hand from the standard's formulas, the
published claims of Heusse et al., and a slot-by-slot simulation of the DCF
back-off that shares no code with ``edgelab.airtime``.
"""

import dataclasses
import math
import random

import pytest

from edgelab.airtime import (_tau, exchange, frames_per_exchange, mixed_saturation, saturation, solo_mbit,
                             solve_fixed_point)
from edgelab.model import AirtimeParams
from edgelab.profiles import get_profile

#: Bianchi (JSAC 2000) Table I, FHSS: 8184-bit payload, 272-bit MAC header, 128-bit PHY header,
#: ACK 112 bits + PHY header, 1 Mbit/s, slot 50 us, SIFS 28 us, DIFS 128 us, delay 1 us.
FHSS = AirtimeParams(phy_rate_mbit=1, basic_rate_mbit=1, slot_us=50, sifs_us=28, difs_us=128, cw_min=32,
                     max_stage=3, phy_header_us=128, mac_header_bytes=34, ack_bytes=14, payload_bytes=1023,
                     prop_delay_us=1)

N24 = get_profile("wifi-80211n-2.4ghz").airtime


def test_fixed_point_is_consistent():
    for n in (2, 5, 10, 50):
        tau, p = solve_fixed_point(n, 32, 5)
        assert p == pytest.approx(1 - (1 - tau) ** (n - 1), abs=1e-9)
        assert tau == pytest.approx(_tau(p, 32, 5), rel=1e-6)


def test_single_station_has_no_collisions_and_closed_form_tau():
    tau, p = solve_fixed_point(1, 16, 6)
    assert p == 0 and tau == pytest.approx(2 / 17)


@pytest.mark.parametrize("n,published", [(5, 0.8097), (10, 0.7532), (20, 0.6788), (50, 0.5529)])
def test_bianchi_paper_fhss_basic_access(n, published):
    """S for W=32, m=3, basic access, as published in Bianchi's paper (normalised to 1 Mbit/s)."""
    assert saturation(FHSS, n).throughput_mbit == pytest.approx(published, abs=1e-4)


def test_80211n_frame_times_worked_out_by_hand():
    """802.11-2016 eq. 19-32 by hand for the default profile (HT MCS7, 20 MHz, 800 ns GI, 2.4 GHz)."""
    assert N24.ifs_us == 37                              # AIFS[BE] = 10 + 3 x 9
    ex = exchange(N24)
    # A-MPDU of 8: subframe 4 + (26 + 8 + 1500 + 4) = 1542 B, padded to 1544 except the last:
    # 7 x 1544 + 1542 = 12350 B; (16 + 8 x 12350 + 6) / 260 bits per symbol = 380.08 -> 381 symbols.
    assert ex.frames == 8
    assert ex.data_us == 36 + 381 * 4 + 6                # HT-mixed preamble, symbols, signal extension
    # BlockAck 32 B at 24 Mbit/s: (16 + 256 + 6) / 96 = 2.9 -> 3 symbols, non-HT preamble 20 us.
    assert ex.ack_us == 20 + 3 * 4 + 6
    assert ex.success_us == ex.data_us + 10 + 1 + ex.ack_us + 37 + 1
    assert ex.collision_us == ex.data_us + 37 + 1
    # Without aggregation: one 1538 B MPDU, (16 + 12304 + 6) / 260 = 47.4 -> 48 symbols; ACK 14 B:
    # (16 + 112 + 6) / 96 = 1.4 -> 2 symbols.
    plain = exchange(dataclasses.replace(N24, ampdu_frames=1, block_ack=False))
    assert plain.data_us == 36 + 48 * 4 + 6 and plain.ack_us == 20 + 2 * 4 + 6


def test_slow_station_aggregates_what_fits_in_a_ppdu():
    """At MCS0 (26 bits per symbol) 3 x 1544 B need 1426 symbols = 5704 us > aPPDUMaxTime 5484 us."""
    assert frames_per_exchange(N24, 6.5) == 2
    # At MCS1 (52 bits): 5 subframes, 7718 B -> 1188 symbols = 4794 us fit; 6, 9262 B -> 1426 symbols do not.
    assert frames_per_exchange(N24, 13.0) == 5
    assert frames_per_exchange(N24, 65.0) == 8


def test_ack_rate_follows_the_data_rate():
    """An MCS0 frame is acknowledged at 6 Mbit/s: (16 + 112 + 6) / 24 = 5.6 -> 6 symbols."""
    plain = dataclasses.replace(N24, ampdu_frames=1, block_ack=False)
    assert exchange(plain, 6.5).ack_us == 20 + 6 * 4 + 6


def test_long_slot_is_a_stated_choice_and_moves_aifs():
    long = dataclasses.replace(N24, slot_us=20)
    assert long.ifs_us == 70
    for n in (1, 4, 16):
        assert saturation(long, n).throughput_mbit < saturation(N24, n).throughput_mbit


def test_aggregation_raises_capacity_and_delays_saturation():
    plain = dataclasses.replace(N24, ampdu_frames=1, block_ack=False)
    for n in (1, 4, 16, 64):
        agg, one = saturation(N24, n).throughput_mbit, saturation(plain, n).throughput_mbit
        assert agg > 1.3 * one
        assert agg < N24.phy_rate_mbit


def test_collision_probability_rises_and_capacity_falls_with_stations():
    caps = [saturation(N24, n).throughput_mbit for n in (2, 4, 8, 16, 32, 64)]
    ps = [saturation(N24, n).p for n in (2, 4, 8, 16, 32, 64)]
    assert all(a > b for a, b in zip(caps, caps[1:]))
    assert all(a < b for a, b in zip(ps, ps[1:]))


# --------------------------------------------------------------------------- the anomaly

#: 802.11b DSSS as in Heusse et al.: slot 20 us, SIFS 10 us, DIFS 50 us, CWmin 31 (W = 32), CWmax 1023,
#: long PLCP preamble + header 192 us, ACK at 1 Mbit/s, 1500 B frames (802.11-2016 Table 16-4).
DSSS = AirtimeParams(phy_rate_mbit=11, basic_rate_mbit=1, slot_us=20, sifs_us=10, difs_us=50, cw_min=32,
                     max_stage=5, phy_header_us=192, mac_header_bytes=34, ack_bytes=14, payload_bytes=1500,
                     prop_delay_us=1)


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_heusse_one_slow_host_drags_every_host_below_its_rate(n):
    """Heusse et al.: "a host transmitting at 1 Mb/s reduces the throughput of all other hosts
    transmitting at 11 Mb/s to a low value below 1 Mb/s", and DCF gives every host the same throughput."""
    mixed = mixed_saturation(DSSS, [11.0] * (n - 1) + [1.0])
    shares = mixed.per_station_mbit
    assert max(shares) == pytest.approx(min(shares), rel=1e-12)
    assert max(shares) < 1.0
    # Heusse et al.'s argument: every host sends one frame per round, so going from N fast hosts to
    # N-1 fast + 1 slow scales each host's throughput by N*T_f / ((N-1)*T_f + T_s), T = the frame's
    # exchange plus the mean back-off of one of N contenders (slot * (W-1)/2 / N).
    t_f, t_s = (exchange(DSSS, r).success_us + DSSS.slot_us * (DSSS.cw_min - 1) / 2 / n for r in (11.0, 1.0))
    heusse = n * t_f / ((n - 1) * t_f + t_s)
    fast = saturation(DSSS, n).per_station_mbit
    assert max(shares) / fast == pytest.approx(heusse, rel=0.1)


def _simulate_dcf(exchanges, w, m, slot_us, slots, seed=1):
    """Slot-by-slot DCF: each station draws a back-off in [0, W*2^stage - 1], counts down one per
    virtual slot (idle slot or busy period), transmits at 0; a lone transmission succeeds and resets
    the stage, several collide (the medium is busy for the longest) and each raises its stage up
    to m. Returns payload Mbit/s per station."""
    rng = random.Random(seed)
    n = len(exchanges)
    stage = [0] * n
    counter = [rng.randrange(w) for _ in range(n)]
    delivered = [0] * n
    t = 0.0
    for _ in range(slots):
        tx = [i for i in range(n) if counter[i] == 0]
        if not tx:
            t += slot_us
        elif len(tx) == 1:
            i = tx[0]
            t += exchanges[i][0]
            delivered[i] += exchanges[i][2]
            stage[i] = 0
        else:
            t += max(exchanges[i][1] for i in tx)
            for i in tx:
                stage[i] = min(stage[i] + 1, m)
        for i in range(n):
            if counter[i] == 0:
                counter[i] = rng.randrange(w * 2 ** stage[i])
            else:
                counter[i] -= 1
    return [b / t for b in delivered]


@pytest.mark.parametrize("params,rates", [
    (DSSS, [11.0, 11.0, 11.0, 1.0]),
    (N24, [65.0] * 5 + [6.5]),
    (N24, [65.0, 39.0, 13.0]),
])
def test_mixed_rates_agree_with_a_simulation_of_the_backoff(params, rates):
    """Per-station throughput of the model within 4 % of a simulated DCF (Bianchi's own
    approximation error is of that order) — durations as the simulator's only input."""
    model = mixed_saturation(params, rates)
    ex = [(e.success_us, e.collision_us, e.payload_bits) for e in model.exchanges]
    sim = _simulate_dcf(ex, params.cw_min, params.max_stage, params.slot_us, slots=150_000)
    for got, want in zip(model.per_station_mbit, sim):
        assert got == pytest.approx(want, rel=0.04)
    assert model.throughput_mbit == pytest.approx(sum(sim), rel=0.03)


def test_one_slow_phone_lowers_every_phone_on_the_80211n_cell():
    fast = saturation(N24, 4)
    mixed = mixed_saturation(N24, [65.0, 65.0, 65.0, 6.5])
    assert all(s < 0.8 * fast.per_station_mbit for s in mixed.per_station_mbit[:3])
    assert mixed.throughput_mbit < 0.7 * fast.throughput_mbit
    # Alone at MCS0 a phone gets less than its 6.5 Mbit/s PHY rate.
    assert 4.0 < solo_mbit(N24, 6.5) < 6.5


def test_homogeneous_mixed_model_is_bianchi():
    for n in (1, 3, 17):
        mixed = mixed_saturation(FHSS, [None] * n)
        assert mixed.throughput_mbit == pytest.approx(saturation(FHSS, n).throughput_mbit, rel=1e-12)
        tau, _ = solve_fixed_point(n, FHSS.cw_min, FHSS.max_stage)
        assert mixed.tau == tau and math.isfinite(mixed.throughput_mbit)
