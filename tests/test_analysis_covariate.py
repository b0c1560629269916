"""The speed-adjusted folding comparison (analysis.covariate): ANCOVA on the host's measured speed."""

import numpy as np
import pandas as pd
import pytest

from analysis.covariate import ancova_contrast, speed_is_external
from analysis.folding import folding_verdict

METRIC = "cpu_time_ms_per_request"


def sweep(values: dict[int, list[float]], speed: dict[int, list[float]], busy: dict[int, float] = {}) -> pd.DataFrame:
    """Points of ``values`` with the host's speed (and CPU busy: 10 % unless ``busy`` says) recorded."""
    rows = []
    for f, xs in values.items():
        for r, x in enumerate(xs):
            point = f"factor={f},rep={r}"
            rows.append({"point": point, "factor": f, "rep": r, "metric": METRIC, "value": x, "unit": "ms",
                         "node": "", "time": 0.0})
            if speed.get(f):
                rows.append({"point": point, "factor": f, "rep": r, "metric": "host_cpu_unit_us",
                             "value": speed[f][r], "unit": "us", "node": "", "time": 0.0})
                rows.append({"point": point, "factor": f, "rep": r, "metric": "host_cpu_busy",
                             "value": busy.get(f, 0.1), "unit": "fraction", "node": "", "time": 0.0})
    return pd.DataFrame(rows)


def drifting(seed: int = 3, shift: float = 0.02):
    """Points whose value follows the host's speed (slope 0.8 on the log scale) plus 2 % noise."""
    rng = np.random.default_rng(seed)
    speed = {f: list(20.0 * np.exp(rng.normal(0, 0.13, 6))) for f in (1, 2)}
    values = {f: [2.5 * (1 + shift * (f > 1)) * (u / 20.0) ** 0.8 * np.exp(rng.normal(0, 0.02)) for u in speed[f]]
              for f in (1, 2)}
    return values, speed


def test_adjusting_for_the_hosts_speed_decides_what_the_unadjusted_comparison_cannot():
    values, speed = drifting()
    plain = folding_verdict(sweep(values, speed), [METRIC], tolerance=0.10, design="independent")
    adjusted = folding_verdict(sweep(values, speed), [METRIC], tolerance=0.10, design="speed")
    assert plain.verdicts == {2: "inconclusive"}
    assert adjusted.verdicts == {2: "faithful"}
    row, unadj = (r.table[r.table["factor"] == 2].iloc[0] for r in (adjusted, plain))
    assert row["speed_adjusted"] and -0.10 < row["degradation_ci_low"] < row["degradation_ci_high"] < 0.10
    width = row["degradation_ci_high"] - row["degradation_ci_low"]
    assert width < 0.5 * (unadj["degradation_ci_high"] - unadj["degradation_ci_low"])
    assert "host's measured CPU speed" in adjusted.describe()


def test_the_contrast_is_the_textbook_ancova_adjusted_difference():
    rng = np.random.default_rng(7)
    xb, xf = rng.normal(0, 0.1, 8), rng.normal(0.05, 0.1, 5)
    yb, yf = 0.5 * xb + rng.normal(0, 0.01, 8), 0.1 + 0.5 * xf + rng.normal(0, 0.01, 5)
    a = ancova_contrast(yb, xb, yf, xf)
    # least squares on [group dummies, x]: the same slope and adjusted difference
    X = np.column_stack([np.r_[np.ones(8), np.zeros(5)], np.r_[np.zeros(8), np.ones(5)], np.r_[xb, xf]])
    coef = np.linalg.lstsq(X, np.r_[yb, yf], rcond=None)[0]
    assert a.slope == pytest.approx(coef[2]) and a.estimate == pytest.approx(coef[1] - coef[0])
    assert a.defined and 0 < a.se < 0.05 and a.df >= 1


def test_a_factor_that_changed_the_speed_itself_is_compared_unadjusted():
    values, speed = drifting()
    slow = {1: speed[1], 2: [u * 1.6 for u in speed[2]]}   # the testbed crowded the spinners' cores
    assert not speed_is_external(np.log(slow[1]), np.log(slow[2]))
    adjusted = folding_verdict(sweep(values, slow), [METRIC], tolerance=0.10, design="speed")
    plain = folding_verdict(sweep(values, slow), [METRIC], tolerance=0.10, design="independent")
    a, p = (r.table[r.table["factor"] == 2].iloc[0] for r in (adjusted, plain))
    assert not a["speed_adjusted"]
    assert (a["degradation_ci_low"], a["degradation_ci_high"]) == (p["degradation_ci_low"], p["degradation_ci_high"])


def test_without_the_speed_the_comparison_is_unadjusted():
    values, _ = drifting()
    adjusted = folding_verdict(sweep(values, {}), [METRIC], tolerance=0.10, design="speed")
    plain = folding_verdict(sweep(values, {}), [METRIC], tolerance=0.10, design="independent")
    assert not adjusted.table["speed_adjusted"].any()
    assert adjusted.verdicts == plain.verdicts
    assert list(adjusted.table["degradation_ci_high"]) == list(plain.table["degradation_ci_high"])


def test_the_adjusted_interval_covers_at_its_level():
    rng = np.random.default_rng(11)
    from analysis.stats import t_ppf
    hits, n = 0, 600
    for _ in range(n):
        xb, xf = rng.normal(0, 0.13, 6), rng.normal(0, 0.13, 4)
        yb = 0.6 * xb + rng.normal(0, 0.045, 6)
        yf = 0.05 + 0.6 * xf + rng.normal(0, 0.09, 4)   # the factor scatters twice as much
        a = ancova_contrast(yb, xb, yf, xf)
        h = t_ppf(0.95, a.df) * a.se
        hits += a.estimate - h <= 0.05 <= a.estimate + h
    assert 0.84 <= hits / n <= 0.95


def test_a_factor_that_kept_the_host_half_busy_is_compared_unadjusted():
    """Its spinners shared their cores with the testbed: their speed may measure the factor itself,
    and adjusting for it could hide a degradation (analysis.folding.SPEED_MAX_BUSY)."""
    values, speed = drifting()
    loaded = folding_verdict(sweep(values, speed, busy={2: 0.55}), [METRIC], tolerance=0.10, design="speed")
    plain = folding_verdict(sweep(values, speed), [METRIC], tolerance=0.10, design="independent")
    a, p = (r.table[r.table["factor"] == 2].iloc[0] for r in (loaded, plain))
    assert not a["speed_adjusted"] and loaded.verdicts == plain.verdicts == {2: "inconclusive"}
    assert (a["degradation_ci_low"], a["degradation_ci_high"]) == (p["degradation_ci_low"], p["degradation_ci_high"])
