import math

import numpy as np
import pytest

from analysis.stats import diff_ci, mean_ci, t_cdf, t_ppf, welch_df

# Student-t quantiles from standard tables (e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2)
KNOWN = [(0.975, 1, 12.706204736), (0.975, 2, 4.302652730), (0.975, 4, 2.776445105), (0.975, 10, 2.228138852),
         (0.975, 30, 2.042272456), (0.95, 5, 2.015048373), (0.995, 3, 5.840909310), (0.9, 20, 1.325340707)]


@pytest.mark.parametrize("q,df,expected", KNOWN)
def test_t_quantile_matches_tables(q, df, expected):
    assert t_ppf(q, df) == pytest.approx(expected, abs=1e-8)
    assert t_ppf(1 - q, df) == pytest.approx(-expected, abs=1e-8)


def test_t_quantile_tends_to_normal_and_inverts_cdf():
    assert t_ppf(0.975, 1e7) == pytest.approx(1.959964, abs=1e-5)
    for df in (1.5, 3.7, 12.25):
        assert t_cdf(t_ppf(0.9, df), df) == pytest.approx(0.9, abs=1e-10)


def test_mean_ci_known_value():
    # R: t.test(1:5)$conf.int  ->  1.036757 4.963243
    ci = mean_ci([1, 2, 3, 4, 5])
    assert ci.estimate == 3 and ci.n == 5
    assert (ci.low, ci.high) == pytest.approx((1.036757, 4.963243), abs=1e-6)


def test_mean_ci_undefined_with_one_value_and_ignores_nan():
    one = mean_ci([7.0, math.nan])
    assert one.estimate == 7.0 and one.n == 1 and not one.defined


def test_welch_interval_by_hand():
    a, b = [10.5, 10.7, 10.3], [10.0, 10.2, 9.8]
    # equal variances 0.04 and n=3: Welch df = 4 exactly, se = sqrt(2*0.04/3)
    assert welch_df(0.04, 3, 0.04, 3) == pytest.approx(4.0)
    ci = diff_ci(a, b)
    half = 2.776445105 * math.sqrt(2 * 0.04 / 3)
    assert ci.estimate == pytest.approx(0.5)
    assert (ci.low, ci.high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-8)
    # unequal sizes/variances: df from the Welch–Satterthwaite formula
    assert welch_df(2.5, 5, 10.0, 5) == pytest.approx(6.25 / 1.0625)


def test_welch_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    trials, hits = 3000, 0
    for _ in range(trials):
        a = rng.normal(10.0, 1.0, size=3)
        b = rng.normal(12.0, 3.0, size=5)
        ci = diff_ci(a, b)
        hits += ci.low <= -2.0 <= ci.high
    assert 0.935 <= hits / trials <= 0.965
