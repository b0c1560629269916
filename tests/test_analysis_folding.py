import pandas as pd
import pytest

from analysis.folding import degradation_table, folding_verdict, max_faithful_factor
from analysis.load import load_run
from analysis_fixtures import FOLDING


def folded(values: dict[int, list[float]], metric="latency_ms_p95") -> pd.DataFrame:
    rows = []
    for f, xs in values.items():
        for r, x in enumerate(xs):
            rows.append({"point": f"factor={f},rep={r}", "factor": f, "rep": r, "metric": metric, "value": x,
                         "unit": "ms", "node": "", "time": 0.0})
    return pd.DataFrame(rows)


def test_recorded_run_max_faithful_factor_is_8():
    run = load_run(FOLDING)
    assert max_faithful_factor(run.df, tolerance=run.params["tolerance"]) == 8
    res = folding_verdict(run.df, tolerance=0.05)
    assert res.first_unfaithful == 16 and not res.judged_on_mean
    assert {m for m, _, _ in res.violations} == {"latency_ms_p95", "cpu_time_ms_per_request"}


def test_tolerance_and_metric_choice_change_the_answer():
    df = load_run(FOLDING).df
    assert max_faithful_factor(df, tolerance=0.03) == 4  # p95 CI reaches +3.09 % at factor 8
    assert max_faithful_factor(df, ["goodput_mbit", "latency_ms_p50"], tolerance=0.05) == 16


def test_degradation_ci_known_value():
    t = degradation_table(folded({1: [10.0, 10.2, 9.8], 2: [10.5, 10.7, 10.3]}))
    row = t[t["factor"] == 2].iloc[0]
    half = 2.776445105 * (2 * 0.04 / 3) ** 0.5 / 10.0  # Welch df = 4, divided by the baseline mean
    assert row["degradation"] == pytest.approx(0.05)
    assert (row["degradation_ci_low"], row["degradation_ci_high"]) == pytest.approx((0.05 - half, 0.05 + half))
    assert row["worst"] == pytest.approx(0.05 + half)


def test_noisy_small_mean_shift_is_not_called_faithful():
    # mean shift +3 % (inside 5 %) but so noisy that +5 % cannot be ruled out: conservative answer is no
    df = folded({1: [100, 90, 110], 2: [103, 93, 113]})
    res = folding_verdict(df, tolerance=0.05)
    assert res.max_factor == 1 and res.first_unfaithful == 2


def test_deviation_is_two_sided():
    df = folded({1: [100.0, 100.1, 99.9], 2: [92.0, 92.1, 91.9]})  # 8 % *faster* is still wrong
    assert max_faithful_factor(df, tolerance=0.05) == 1


def test_later_faithful_factor_does_not_count_after_a_failure():
    df = folded({1: [10.0, 10.01, 9.99], 2: [11.0, 11.01, 10.99], 4: [10.0, 10.01, 9.99]})
    assert max_faithful_factor(df, tolerance=0.05) == 1


def test_single_repetition_falls_back_to_the_mean_and_says_so():
    df = folded({1: [10.0], 2: [10.2], 4: [10.9]})
    res = folding_verdict(df, tolerance=0.05)
    assert res.max_factor == 2 and res.judged_on_mean and "no CI" in res.describe()
