import math

import numpy as np
import pandas as pd
import pytest

from analysis.folding import decide, degradation_table, folding_verdict, max_faithful_factor
from analysis.stats import t_ppf, welch_df
from analysis.load import load_run
from analysis_fixtures import FOLDING


def folded(values: dict[int, list[float]], metric="latency_ms_p95") -> pd.DataFrame:
    rows = []
    for f, xs in values.items():
        for r, x in enumerate(xs):
            rows.append({"point": f"factor={f},rep={r}", "factor": f, "rep": r, "metric": metric, "value": x,
                         "unit": "ms", "node": "", "time": 0.0})
    return pd.DataFrame(rows)


def test_recorded_run_breaks_at_16_on_cpu_and_p95():
    run = load_run(FOLDING)
    res = folding_verdict(run.df, tolerance=run.params["tolerance"])
    assert res.max_factor == 8 and res.breaking_point == 16 and not res.judged_on_mean
    assert res.verdicts == {2: "faithful", 4: "faithful", 8: "faithful", 16: "unfaithful"}
    assert {m for m, _, _ in res.violations} == {"latency_ms_p95", "cpu_time_ms_per_request"}
    assert res.decided_up_to_break() and res.needs_more() == []
    assert "Breaking point: factor 16" in res.describe() and "between 8 and 16" in res.describe()


def test_tolerance_and_metric_choice_change_the_answer():
    df = load_run(FOLDING).df
    assert max_faithful_factor(df, tolerance=0.02) <= max_faithful_factor(df, tolerance=0.05)
    # goodput and median latency stay within 5 % at every factor of that run
    res = folding_verdict(df, ["goodput_mbit", "latency_ms_p50"], tolerance=0.05)
    assert res.max_factor == 16 and res.breaking_point is None


def test_deviation_interval_is_the_tost_interval_on_the_log_scale():
    base, x = np.array([10.0, 10.2, 9.8]), np.array([10.5, 10.7, 10.3])
    t = degradation_table(folded({1: list(base), 2: list(x)}), alpha=0.05)
    row = t[t["factor"] == 2].iloc[0]
    lb, lx = np.log(base), np.log(x)
    d, vb, vx = lx.mean() - lb.mean(), lb.var(ddof=1), lx.var(ddof=1)
    half = t_ppf(0.95, welch_df(vx, 3, vb, 3)) * math.sqrt(vx / 3 + vb / 3)  # the 90 % interval of TOST at 5 %
    assert row["log_scale"] and row["degradation"] == pytest.approx(math.expm1(d))   # ratio of geometric means
    assert (row["degradation_ci_low"], row["degradation_ci_high"]) == pytest.approx(
        (math.expm1(d - half), math.expm1(d + half)))
    assert row["decision"] == "inconclusive"  # straddles +5 % (the worse side)


def test_a_metric_with_zeros_is_compared_on_its_own_scale():
    t = degradation_table(folded({1: [10.0, 10.2, 9.8], 2: [0.0, 1.0, 2.0]}, metric="error_count"), alpha=0.05)
    row = t[t["factor"] == 2].iloc[0]
    half = t_ppf(0.95, welch_df(1.0, 3, 0.04, 3)) * math.sqrt(1.0 / 3 + 0.04 / 3) / 10.0
    assert not row["log_scale"] and row["degradation"] == pytest.approx(-0.9)
    assert (row["degradation_ci_low"], row["degradation_ci_high"]) == pytest.approx((-0.9 - half, -0.9 + half))


def test_an_interval_clear_of_the_worse_bound_only_is_not_worse_and_decided():
    # folded runs 6-10 % faster than a noisy baseline: not shown equivalent, but no degradation
    df = folded({1: [100.0, 108.0, 96.0, 104.0], 2: [93.0, 95.0, 91.0, 94.0], 4: [103.0, 104.0, 102.0, 103.5]},
                metric="latency_ms_p50")
    res = folding_verdict(df, tolerance=0.10)
    row = res.table[res.table["factor"] == 2].iloc[0]
    assert row["degradation_ci_low"] < -0.10 < row["degradation_ci_high"] < 0.10
    assert res.verdicts[2] == "not worse" and res.verdicts[4] == "faithful"
    assert res.max_factor == 1 and res.max_without_degradation == 4
    assert res.decided_up_to_break() and res.needs_more() == []
    assert "No degradation beyond the tolerance up to factor 4" in res.describe()
    # the same interval on the other side (a higher-is-better metric) is "not worse" too
    assert decide(-0.05, 0.15, 0.05, True, 0.10, "requests_per_s_per_node") == "not worse"
    assert decide(-0.15, 0.05, -0.05, True, 0.10, "requests_per_s_per_node") == "inconclusive"


def test_noisy_small_shift_is_inconclusive_and_asks_for_repetitions():
    # mean shift +3 % (inside 5 %) but so noisy that neither "within 5 %" nor "beyond 5 %" is shown
    res = folding_verdict(folded({1: [100, 90, 110], 2: [103, 93, 113]}), tolerance=0.05)
    assert res.verdicts == {2: "inconclusive"} and res.max_factor == 1 and res.breaking_point is None
    assert res.needs_more() == [1, 2] and not res.decided_up_to_break()
    assert "Inconclusive" in res.describe()


def test_precise_small_shift_is_faithful():
    res = folding_verdict(folded({1: [100.0, 100.2, 99.8, 100.1], 2: [103.0, 103.2, 102.8, 103.1]}))
    assert res.verdicts == {2: "faithful"} and res.max_factor == 2


def test_faster_than_baseline_is_not_faithful_but_not_a_breaking_point():
    df = folded({1: [100.0, 100.1, 99.9], 2: [92.0, 92.1, 91.9]})  # 8 % *faster*
    res = folding_verdict(df, tolerance=0.05)
    assert res.verdicts == {2: "better"} and res.max_factor == 1 and res.breaking_point is None
    assert "baseline looks unrepresentative" in res.baseline_suspect()


def test_direction_depends_on_the_metric():
    assert decide(-0.2, -0.1, -0.15, True, 0.05, "requests_per_s_per_node") == "worse"
    assert decide(-0.2, -0.1, -0.15, True, 0.05, "latency_ms_p50") == "better"
    assert decide(0.1, 0.2, 0.15, True, 0.05, "cpu_time_ms_per_request") == "worse"


def test_later_faithful_factor_does_not_count_after_a_failure():
    df = folded({1: [10.0, 10.01, 9.99], 2: [11.0, 11.01, 10.99], 4: [10.0, 10.01, 9.99]})
    res = folding_verdict(df, tolerance=0.05)
    assert res.max_factor == 1 and res.breaking_point == 2 and res.verdicts[4] == "faithful"


def test_single_repetition_falls_back_to_the_mean_and_says_so():
    res = folding_verdict(folded({1: [10.0], 2: [10.2], 4: [10.9]}), tolerance=0.05)
    assert res.max_factor == 2 and res.breaking_point == 4 and res.judged_on_mean
    assert "one repetition" in res.describe()


def test_host_signals_name_the_cause_of_the_break():
    df = folded({1: [10.0, 10.01, 9.99], 2: [10.0, 10.02, 9.98], 4: [20.0, 20.1, 19.9]})
    busy = folded({1: [0.2, 0.21, 0.19], 2: [0.3, 0.3, 0.3], 4: [0.98, 0.99, 0.97]}, metric="host_cpu_busy")
    rq = folded({1: [0.1, 0.1, 0.1], 2: [0.5, 0.5, 0.5], 4: [6.0, 6.5, 5.5]}, metric="host_runqueue")
    res = folding_verdict(pd.concat([df, busy, rq]), ["latency_ms_p95"], tolerance=0.05, cpus=2)
    assert res.breaking_point == 4
    text = res.describe()
    assert "host CPU 98% busy" in text and "run queue 6.0 on 2 CPUs" in text
    # the link delayer falling behind is named too, and its signals are not judged as metrics
    late = folded({1: [0.02] * 3, 2: [0.03] * 3, 4: [2.5, 2.6, 2.4]}, metric="host_delayer_late_ms")
    share = folded({1: [0.0] * 3, 2: [0.0] * 3, 4: [0.4] * 3}, metric="host_delayer_late_share")
    res = folding_verdict(pd.concat([df, late, share]), tolerance=0.05)
    assert set(res.table["metric"]) == {"latency_ms_p95"}
    assert "the link delayer released packets 2.5 ms late on average (40% more than 1 ms late)" in res.describe()
    # without overload at the break, the verdict says that no signal explains it
    calm = folded({1: [0.2] * 3, 2: [0.2] * 3, 4: [0.25] * 3}, metric="host_cpu_busy")
    assert "no host overload signal" in folding_verdict(pd.concat([df, calm]), ["latency_ms_p95"]).describe()


def test_other_work_on_the_host_is_named_and_the_touched_factors_are_flagged():
    df = folded({1: [10.0, 10.01, 9.99], 2: [10.0, 10.02, 9.98], 4: [20.0, 20.1, 19.9], 8: [40.0, 41.0, 39.0]})
    foreign = folded({1: [0.02] * 3, 2: [0.30, 0.35, 0.40], 4: [0.5] * 3, 8: [0.6] * 3}, metric="host_foreign_cpu")
    res = folding_verdict(pd.concat([df, foreign]), ["latency_ms_p95"], tolerance=0.05, cpus=2)
    assert res.breaking_point == 4
    assert res.shared_host() == {2: pytest.approx(0.35), 4: pytest.approx(0.5)}   # not 8: past the break
    text = res.describe()
    assert "other work (not the testbed) used 50% of the host's CPU" in text
    assert "Caution: the host was shared with other work during factor(s) 2 (35% of its CPU), 4 (50%" in text
    quiet = folded({f: [0.01] * 3 for f in (1, 2, 4, 8)}, metric="host_foreign_cpu")
    assert "Caution" not in folding_verdict(pd.concat([df, quiet]), ["latency_ms_p95"]).describe()


def test_an_inconclusive_verdict_names_the_hosts_own_speed_when_it_varied():
    noisy = {1: [10.0, 11.5, 9.0, 10.4], 2: [10.6, 12.0, 9.4, 11.2]}   # straddles +10 %
    speed = [18.0, 22.0, 16.5, 20.0]   # the warmer's CPU µs per reference unit, per repetition

    def with_speed(units):
        df = folded(noisy, metric="cpu_time_ms_per_request")
        extra = df.drop_duplicates("point").assign(metric="host_cpu_unit_us", unit="us")
        extra["value"] = [units[r] for r in extra["rep"]]
        return pd.concat([df, extra], ignore_index=True)

    varied = folding_verdict(with_speed(speed), ["cpu_time_ms_per_request"], tolerance=0.10)
    assert varied.inconclusive == [2]
    assert varied.host_speed_sd == pytest.approx(np.std(np.log(speed * 2), ddof=1))
    assert "CPU speed varied by ±" in varied.describe()
    steady = folding_verdict(with_speed([20.0] * 4), ["cpu_time_ms_per_request"], tolerance=0.10)
    assert steady.inconclusive == [2] and steady.host_speed_sd == 0.0
    assert "CPU speed" not in steady.describe()
    # the speed is a host signal, not a judged metric
    assert "host_cpu_unit_us" not in set(folding_verdict(with_speed(speed), tolerance=0.10).table["metric"])
