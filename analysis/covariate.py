"""Comparing a folding factor with the baseline, adjusted for the host's measured speed.

Why: on a shared or virtualised host the CPUs' speed drifts (other tenants,
frequency): the host warmer's spinners measure it in every point as the CPU
time of a fixed unit of Python work (``host_cpu_unit_us``, :mod:`edgelab.hostload`).
Every node of a point runs at that speed, so a point's CPU per request and
latency move with it: in a quick sweep here the speed varied ±13 % (SD)
between points and the points' log CPU per request followed it with a
correlation of 0.86 (p50 latency 0.79), the main source of their scatter.

The comparison is an **analysis of covariance** (Fisher 1932; Montgomery,
*Design and Analysis of Experiments*, ch. 15) on the baseline's and the
factor's points, ``y = μ_group + β·x + ε`` with ``y`` the judged value (log
scale for positive metrics) and ``x`` the log of the point's speed: the
deviation is ``(ȳ_f − ȳ_b) − β̂·(x̄_f − x̄_b)`` with ``β̂`` the pooled
within-group slope. Its variance keeps one residual variance per group (a
factor near the break scatters more, as in :mod:`analysis.blocked`):
``s_f²/n_f + s_b²/n_b + (x̄_f − x̄_b)²·Var(β̂)``, with Welch–Satterthwaite's
degrees of freedom less one for the slope.

It is valid only while the covariate is not itself changed by the factor
(the usual ANCOVA condition): the spinners run in the host's idle time, so
at an overloaded factor they share their cores with the testbed and measure
that too. The caller (``analysis.folding``) therefore adjusts only factors
whose points left the host mostly idle (mean ``host_cpu_busy`` below
``SPEED_MAX_BUSY``, 0.5) and whose mean speed :func:`speed_is_external` finds
within the baseline's spread, and compares the others unadjusted. Why the busy
bound: in one run here the spinners measured 16 % slower at factor 16 (55 %
busy) than at the baseline, and the adjustment turned that factor's p50
deviation of +40 % [+16, +69] into +19 % [+9, +31]: a degradation half hidden.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .stats import welch_df


@dataclass(frozen=True)
class Adjusted:
    """Speed-adjusted deviation of a factor from the baseline (on the judged scale)."""

    estimate: float
    se: float
    df: float
    slope: float
    defined: bool


def ancova_contrast(yb: np.ndarray, xb: np.ndarray, yf: np.ndarray, xf: np.ndarray) -> Adjusted:
    """``μ_f − μ_b`` adjusted to a common ``x`` (see the module docstring)."""
    nb, nf = len(yb), len(yf)
    dxb, dxf = xb - xb.mean(), xf - xf.mean()
    sxx_b, sxx_f = float(dxb @ dxb), float(dxf @ dxf)
    sxx = sxx_b + sxx_f
    beta = float((dxb @ (yb - yb.mean()) + dxf @ (yf - yf.mean())) / sxx) if sxx > 0 else 0.0
    shift = float(xf.mean() - xb.mean())
    est = float(yf.mean() - yb.mean()) - beta * shift
    if nb < 3 or nf < 3 or sxx <= 0:
        return Adjusted(est, math.nan, math.nan, beta, False)
    eb = yb - yb.mean() - beta * dxb
    ef = yf - yf.mean() - beta * dxf
    vb, vf = float(eb @ eb) / (nb - 1), float(ef @ ef) / (nf - 1)
    var_beta = (vb * sxx_b + vf * sxx_f) / sxx ** 2
    se = math.sqrt(vf / nf + vb / nb + shift ** 2 * var_beta)
    df = max(1.0, welch_df(vf, nf, vb, nb) - 1.0)
    return Adjusted(est, se, df, beta, True)


def speed_is_external(xb: np.ndarray, xf: np.ndarray) -> bool:
    """True when the factor's mean speed lies within two standard errors of the baseline's mean
    plus its own: the factor did not measurably change the spinners' speed (ANCOVA's condition)."""
    if len(xb) < 2 or len(xf) < 2:
        return False
    se = math.sqrt(np.var(xb, ddof=1) / len(xb) + np.var(xf, ddof=1) / len(xf))
    return abs(float(xf.mean() - xb.mean())) <= 2.0 * se
