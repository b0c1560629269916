"""Shared-medium capacity: Bianchi's 802.11 DCF saturation-throughput model.

Why a model and not a fixed rate: the point of the Wi-Fi experiments is that
usable capacity *shrinks* as stations contend (collisions and back-off waste
airtime). The local backend cannot emulate the MAC itself, so it enforces the
capacity this model predicts for N saturated stations as one shared budget.

Reference: G. Bianchi, "Performance analysis of the IEEE 802.11 distributed
coordination function", IEEE JSAC 18(3), 2000 — eq. (7) for tau(p), eq. (9) for
p(tau), eq. (13) for S, basic access times Ts/Tc as in Section IV.
"""

from __future__ import annotations

from dataclasses import dataclass

from .model import AirtimeParams


@dataclass(frozen=True)
class Saturation:
    stations: int
    tau: float  # probability a station transmits in a random slot
    p: float  # conditional collision probability
    throughput_mbit: float  # aggregate payload throughput of the medium

    @property
    def per_station_mbit(self) -> float:
        return self.throughput_mbit / self.stations


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


def saturation(params: AirtimeParams, n: int) -> Saturation:
    """Aggregate saturation throughput of ``n`` stations (basic access)."""
    tau, p = solve_fixed_point(n, params.cw_min, params.max_stage)
    p_tr = 1 - (1 - tau) ** n
    p_s = n * tau * (1 - tau) ** (n - 1) / p_tr
    payload_us = params.payload_bytes * 8 / params.phy_rate_mbit
    header_us = params.phy_header_us + params.mac_header_bytes * 8 / params.phy_rate_mbit
    ack_us = params.phy_header_us + params.ack_bytes * 8 / params.basic_rate_mbit
    delta = params.prop_delay_us
    t_s = header_us + payload_us + params.sifs_us + delta + ack_us + params.difs_us + delta
    t_c = header_us + payload_us + params.difs_us + delta
    slot_expect = (1 - p_tr) * params.slot_us + p_tr * p_s * t_s + p_tr * (1 - p_s) * t_c
    s = p_s * p_tr * params.payload_bytes * 8 / slot_expect  # bits per microsecond == Mbit/s
    return Saturation(stations=n, tau=tau, p=p, throughput_mbit=s)


def capacity_mbit(params: AirtimeParams, n: int) -> float:
    """Convenience: the airtime budget (Mbit/s) for ``n`` contending stations."""
    return saturation(params, max(1, n)).throughput_mbit
