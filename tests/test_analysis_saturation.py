import pandas as pd
import pytest

from analysis.load import ResultsError, load_run
from analysis.saturation import saturation_for_run, saturation_point
from analysis_fixtures import WIFI


def curve_df(goodput: dict, p95: dict, reps=(0, 1)) -> pd.DataFrame:
    rows = []
    for n in goodput:
        for r in reps:
            pt = f"n_phones={n},rep={r}"
            rows.append({"point": pt, "n_phones": n, "rep": r, "metric": "goodput_mbit", "value": goodput[n],
                         "unit": "Mbit/s", "node": "", "time": 0.0})
            rows.append({"point": pt, "n_phones": n, "rep": r, "metric": "latency_ms_p95", "value": p95[n],
                         "unit": "ms", "node": "", "time": 0.0})
    return pd.DataFrame(rows)


def test_recorded_run_saturates_at_4_phones_by_goodput_plateau():
    res = saturation_for_run(load_run(WIFI))
    assert res.n == 4 and res.criteria == ("goodput_plateau",) and res.threshold_ms == 500.0
    c = res.curve.set_index("n_phones")
    assert c.loc[4, "goodput_gain"] == pytest.approx(25.6 / 24.8 - 1)
    assert list(c.index) == [1, 2, 4, 8, 12] and (c["goodput_mbit_n"] == 3).all()
    assert c.loc[8, "airtime_capacity_mbit_mean"] == pytest.approx(30.98)
    assert "N = 4 phones" in res.describe()


def test_stricter_epsilon_moves_the_point_and_latency_threshold_can_fire_first():
    run = load_run(WIFI)
    assert saturation_point(run.df, epsilon=0.01).n == 8  # +3.2 % counts as still rising
    res = saturation_point(run.df, epsilon=0.01, threshold_ms=55.0)
    assert (res.n, res.criteria) == (2, ("latency",))  # p95 61 ms at N=2
    both = saturation_point(run.df, threshold_ms=200.0)
    assert (both.n, both.criteria) == (4, ("goodput_plateau", "latency"))


def test_per_node_goodput_is_not_double_counted():
    run = load_run(WIFI)
    c = saturation_point(run.df).curve.set_index("n_phones")
    assert c.loc[8, "goodput_mbit_mean"] == pytest.approx(25.6)  # the aggregate row, not sum/mean of phones


def test_not_reached_when_goodput_keeps_rising():
    df = curve_df({1: 10, 2: 20, 4: 38}, {1: 10, 2: 11, 4: 12})
    res = saturation_point(df, threshold_ms=100)
    assert res.n is None and res.criterion == "not_reached" and "No saturation up to 4 phones" in res.describe()


def test_bad_arguments():
    df = curve_df({1: 10, 2: 20}, {1: 10, 2: 11})
    with pytest.raises(ResultsError, match="epsilon"):
        saturation_point(df, epsilon=5)
    with pytest.raises(ResultsError, match="no 'goodput_mbit' measurements"):
        saturation_point(df[df["metric"] != "goodput_mbit"])
