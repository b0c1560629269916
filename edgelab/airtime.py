"""Shared-medium capacity: Bianchi's 802.11 DCF saturation-throughput model,
with OFDM frame times, A-MPDU aggregation and stations at different rates.

Why a model and not a fixed rate: the point of the Wi-Fi experiments is that
usable capacity *shrinks* as stations contend (collisions and back-off waste
airtime). The local backend cannot emulate the MAC itself, so it enforces the
capacity this model predicts for N saturated stations as one shared budget.

References:

* G. Bianchi, "Performance analysis of the IEEE 802.11 distributed
  coordination function", IEEE JSAC 18(3), 2000 — eq. (7) for tau(p), eq. (9)
  for p(tau), eq. (13) for S, basic access times Ts/Tc as in Section IV.
* M. Heusse, F. Rousseau, G. Berger-Sabbatel, A. Duda, "Performance anomaly of
  802.11b", INFOCOM 2003: DCF gives every saturated station the same long-run
  chance to transmit, so a station at a low rate holds the air longer per
  frame and drags every station's throughput down towards its own. Here that
  follows from the same fixed point: every station has the same tau, and the
  expected slot is charged each station's own frame *duration*
  (:func:`mixed_saturation`).
* Frame durations as ns-3 computes them (nsnam/ns-3-dev-git @ 14064644):
  OFDM data field ``ceil((16 + 8*L + 6) / N_DBPS)`` symbols,
  src/wifi/model/non-ht/ofdm-phy.cc:263 and src/wifi/model/ht/ht-phy.cc:338
  (IEEE 802.11-2016 eq. 19-32); SERVICE = 16 bits, ofdm-phy.cc:274; 6 µs
  signal extension at 2.4 GHz, ofdm-phy.cc:280; A-MPDU subframes: 4-byte
  delimiter and padding to 4 bytes, src/wifi/model/mpdu-aggregator.cc:116 and
  :197; the HT PPDU limit aPPDUMaxTime = 5484 µs,
  src/wifi/model/wifi-phy-common.cc:167, and A-MPDU length 65535 B,
  src/wifi/model/wifi-standard-constants.h:95.

A collision lasts as long as the longest of the colliding frames (with one
rate this is Bianchi's T_c). Like the paper, the model charges AIFS/DIFS, not
EIFS, after a collision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

from .model import AirtimeParams

#: A-MPDU subframe delimiter (ns-3 mpdu-aggregator.cc:116; 802.11-2016 9.7.1).
MPDU_DELIMITER_BYTES = 4


@dataclass(frozen=True)
class Saturation:
    stations: int
    tau: float  # probability a station transmits in a random slot
    p: float  # conditional collision probability
    throughput_mbit: float  # aggregate payload throughput of the medium

    @property
    def per_station_mbit(self) -> float:
        return self.throughput_mbit / self.stations


@dataclass(frozen=True)
class FrameExchange:
    """One station's successful exchange and collision, at its own PHY rate."""

    rate_mbit: float
    frames: int          # MPDUs per exchange (A-MPDU length, 1 without aggregation)
    data_us: float       # the data PPDU
    ack_us: float        # its ACK or BlockAck
    success_us: float    # T_s: data + SIFS + delta + ack + AIFS + delta
    collision_us: float  # T_c: data + AIFS + delta
    payload_bits: int    # payload delivered by one success


@dataclass(frozen=True)
class MixedSaturation:
    """Saturated stations at possibly different rates: the cell and each station's share."""

    tau: float
    p: float
    exchanges: tuple[FrameExchange, ...]
    per_station_mbit: tuple[float, ...]

    @property
    def stations(self) -> int:
        return len(self.exchanges)

    @property
    def throughput_mbit(self) -> float:
        return sum(self.per_station_mbit)


def _tau(p: float, w: int, m: int) -> float:
    """Bianchi eq. (7)."""
    if abs(1 - 2 * p) < 1e-12:  # removable singularity at p = 1/2
        p = 0.5 - 1e-9
    num = 2 * (1 - 2 * p)
    den = (1 - 2 * p) * (w + 1) + p * w * (1 - (2 * p) ** m)
    return num / den


def solve_fixed_point(n: int, w: int, m: int) -> tuple[float, float]:
    """Solve tau = tau(p), p = 1 - (1 - tau)^(n-1) by bisection on p.

    g(p) = 1 - (1 - tau(p))^(n-1) - p is decreasing in p, positive at 0 and
    negative at 1, so bisection always converges to the unique root.
    """
    if n < 1:
        raise ValueError("need at least one station")
    if n == 1:
        return _tau(0.0, w, m), 0.0
    lo, hi = 0.0, 1.0 - 1e-12
    for _ in range(200):
        mid = (lo + hi) / 2
        g = 1 - (1 - _tau(mid, w, m)) ** (n - 1) - mid
        if g > 0:
            lo = mid
        else:
            hi = mid
    p = (lo + hi) / 2
    return _tau(p, w, m), p


def _bits_per_symbol(rate_mbit: float, symbol_us: float) -> float:
    """N_DBPS; rates in profiles are rounded (433.3 for 1560/3.6), so snap to the integer."""
    n = rate_mbit * symbol_us
    return float(round(n)) if abs(n - round(n)) < 0.05 else n


def ppdu_us(params: AirtimeParams, psdu_bytes: float, rate_mbit: float, *, header_us: float,
            symbol_us: float) -> float:
    """Air time of one PPDU carrying ``psdu_bytes`` at ``rate_mbit``.

    ``symbol_us`` 0: Bianchi's bit-continuous time (header + bits / rate).
    Otherwise whole OFDM symbols of SERVICE + PSDU + tail bits, then the
    signal extension (ns-3 ofdm-phy.cc:263-267, ht-phy.cc:338-349).
    """
    if symbol_us <= 0:
        return header_us + psdu_bytes * 8 / rate_mbit
    bits = params.service_bits + 8 * psdu_bytes + params.tail_bits
    symbols = math.ceil(bits / _bits_per_symbol(rate_mbit, symbol_us) - 1e-9)
    return header_us + symbols * symbol_us + params.signal_extension_us


def ack_rate(params: AirtimeParams, rate_mbit: float) -> float:
    """Rate of the ACK/BlockAck answering a frame at ``rate_mbit``: the highest
    basic rate not above it (802.11-2016 10.6.6.5.2), the lowest if none is."""
    if not params.basic_rates_mbit:
        return params.basic_rate_mbit
    below = [r for r in params.basic_rates_mbit if r <= rate_mbit + 1e-9]
    return max(below) if below else min(params.basic_rates_mbit)


def _mpdu_bytes(params: AirtimeParams) -> int:
    return params.mac_header_bytes + params.payload_bytes


def ampdu_bytes(params: AirtimeParams, frames: int) -> int:
    """PSDU length of an A-MPDU of ``frames`` MPDUs (one plain MPDU when 1 and no aggregation)."""
    mpdu = _mpdu_bytes(params)
    if frames == 1 and params.ampdu_frames == 1:
        return mpdu
    sub = MPDU_DELIMITER_BYTES + mpdu
    pad = (4 - sub % 4) % 4
    return frames * sub + (frames - 1) * pad


def frames_per_exchange(params: AirtimeParams, rate_mbit: float) -> int:
    """MPDUs a station at ``rate_mbit`` puts in one A-MPDU: ``ampdu_frames``, fewer if the
    A-MPDU would exceed ``max_ampdu_bytes`` or its PPDU ``max_ppdu_us`` (a slow station
    aggregates less: at HT MCS0 only 2 x 1500 B fit in aPPDUMaxTime)."""
    k = max(1, params.ampdu_frames)
    while k > 1:
        too_long = params.max_ampdu_bytes and ampdu_bytes(params, k) > params.max_ampdu_bytes
        too_slow = params.max_ppdu_us and _data_us(params, k, rate_mbit) > params.max_ppdu_us
        if not (too_long or too_slow):
            break
        k -= 1
    return k


def _data_us(params: AirtimeParams, frames: int, rate_mbit: float) -> float:
    return ppdu_us(params, ampdu_bytes(params, frames), rate_mbit, header_us=params.phy_header_us,
                   symbol_us=params.symbol_us)


def exchange(params: AirtimeParams, rate_mbit: Optional[float] = None) -> FrameExchange:
    """Success and collision durations of one station at ``rate_mbit`` (default: the profile's)."""
    rate = params.phy_rate_mbit if rate_mbit is None else rate_mbit
    if not rate > 0:
        raise ValueError(f"PHY rate must be > 0 (got {rate!r})")
    frames = frames_per_exchange(params, rate)
    data = _data_us(params, frames, rate)
    ack_bytes = params.block_ack_bytes if params.block_ack else params.ack_bytes
    ack_hdr = params.phy_header_us if params.ack_phy_header_us is None else params.ack_phy_header_us
    ack_sym = params.symbol_us if params.ack_symbol_us is None else params.ack_symbol_us
    ack = ppdu_us(params, ack_bytes, ack_rate(params, rate), header_us=ack_hdr, symbol_us=ack_sym)
    delta = params.prop_delay_us
    ifs = params.ifs_us
    return FrameExchange(rate_mbit=rate, frames=frames, data_us=data, ack_us=ack,
                         success_us=data + params.sifs_us + delta + ack + ifs + delta,
                         collision_us=data + ifs + delta,
                         payload_bits=frames * params.payload_bytes * 8)


def mixed_saturation(params: AirtimeParams, rates: Sequence[Optional[float]]) -> MixedSaturation:
    """Saturation throughput of stations at ``rates`` (None: the profile's rate).

    Every station runs the same back-off, so all have the same tau and p
    (Bianchi's fixed point for n stations). In a random slot: idle with
    (1-tau)^n, a success of station i with tau(1-tau)^(n-1) lasting its own
    T_s,i, else a collision lasting the longest colliding frame. Station i
    delivers its exchange's payload per success:
    S_i = tau(1-tau)^(n-1) * payload_i / E[slot]. With equal payloads every
    station gets the same throughput, whatever its rate (Heusse et al.).
    """
    n = len(rates)
    if n < 1:
        raise ValueError("need at least one station")
    ex = tuple(exchange(params, r) for r in rates)
    tau, p = solve_fixed_point(n, params.cw_min, params.max_stage)
    q = 1 - tau
    p_one = tau * q ** (n - 1)           # a given station transmits alone
    # E[T_c; collision] = sum_k t_(k) * (C_k - C_{k-1}), stations sorted by T_c, where
    # C_k = P(>= 2 transmit and all of them among the k shortest).
    tcs = sorted(e.collision_us for e in ex)
    coll, prev = 0.0, 0.0
    for k, t in enumerate(tcs, start=1):
        c_k = q ** (n - k) * (1 - q ** k - k * tau * q ** (k - 1))
        coll += t * (c_k - prev)
        prev = c_k
    slot = q ** n * params.slot_us + p_one * sum(e.success_us for e in ex) + coll
    shares = tuple(p_one * e.payload_bits / slot for e in ex)  # bits per µs == Mbit/s
    return MixedSaturation(tau=tau, p=p, exchanges=ex, per_station_mbit=shares)


def saturation(params: AirtimeParams, n: int) -> Saturation:
    """Aggregate saturation throughput of ``n`` stations at the profile's rate (basic access)."""
    mixed = mixed_saturation(params, [None] * n)
    return Saturation(stations=n, tau=mixed.tau, p=mixed.p, throughput_mbit=mixed.throughput_mbit)


def capacity_mbit(params: AirtimeParams, n: int) -> float:
    """Convenience: the airtime budget (Mbit/s) for ``n`` contending stations."""
    return saturation(params, max(1, n)).throughput_mbit


def solo_mbit(params: AirtimeParams, rate_mbit: Optional[float] = None) -> float:
    """What one station at ``rate_mbit`` reaches alone on the medium: the most its share can
    borrow up to when the others are idle."""
    return mixed_saturation(params, [rate_mbit]).throughput_mbit
