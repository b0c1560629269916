"""Small-sample statistics: Student-t quantiles and confidence intervals.

Why hand-written: scipy is not a dependency of edgelab (it is heavy and
nix-packaging it for ARM boards is slow), and all the analysis needs is the
Student-t quantile. It is computed from the regularised incomplete beta
function (continued fraction, Lentz's method) and inverted by bisection, which
is accurate to ~1e-10, far below what a 3-repetition experiment can resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import numpy as np

_TINY = 1e-300
_EPS = 1e-15


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function, modified Lentz evaluation."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        # even step
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        h *= d * c
        # odd step
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > _TINY else _TINY)
        c = 1.0 + aa / c
        c = c if abs(c) > _TINY else _TINY
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < _EPS:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must lie in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(log_front)
    # The continued fraction converges fast only for x < (a+1)/(a+b+2); use symmetry otherwise.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _beta_continued_fraction(a, b, x) / a
    return 1.0 - front * _beta_continued_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Cumulative distribution function of Student's t with ``df`` (real, > 0) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


@lru_cache(maxsize=256)
def t_ppf(q: float, df: float) -> float:
    """Quantile of Student's t: the ``t`` with ``t_cdf(t, df) == q``."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"quantile level must lie in (0, 1), got {q}")
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if q == 0.5:
        return 0.0
    if q < 0.5:
        return -t_ppf(1.0 - q, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < q:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval (bounds are NaN when undefined)."""

    estimate: float
    low: float
    high: float
    n: int

    @property
    def defined(self) -> bool:
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[~np.isnan(arr)]


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of independent repetitions with a Student-t interval (undefined with fewer than 2)."""
    x = _clean(values)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n < 2:
        return Interval(m, math.nan, math.nan, n)
    half = t_ppf(0.5 + confidence / 2.0, n - 1) * float(x.std(ddof=1)) / math.sqrt(n)
    return Interval(m, m - half, m + half, n)


def welch_df(var_a: float, n_a: int, var_b: float, n_b: int) -> float:
    """Welch–Satterthwaite degrees of freedom for a difference of two means."""
    sa, sb = var_a / n_a, var_b / n_b
    denom = sa * sa / (n_a - 1) + sb * sb / (n_b - 1)
    if denom == 0.0:
        return float(n_a + n_b - 2)  # both samples constant: any df gives a zero-width interval
    return (sa + sb) ** 2 / denom


def diff_ci(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Interval:
    """mean(a) - mean(b) with a Welch interval (unequal variances, independent repetitions)."""
    xa, xb = _clean(a), _clean(b)
    na, nb = len(xa), len(xb)
    if na == 0 or nb == 0:
        return Interval(math.nan, math.nan, math.nan, min(na, nb))
    d = float(xa.mean() - xb.mean())
    if na < 2 or nb < 2:
        return Interval(d, math.nan, math.nan, min(na, nb))
    va, vb = float(xa.var(ddof=1)), float(xb.var(ddof=1))
    se = math.sqrt(va / na + vb / nb)
    half = t_ppf(0.5 + confidence / 2.0, welch_df(va, na, vb, nb)) * se
    return Interval(d, d - half, d + half, min(na, nb))
