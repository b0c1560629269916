"""The per-phone anomaly table and figure from tidy measurements (no testbed needed)."""

import pandas as pd
import pytest

from analysis.anomaly import TCP_PER_FRAME, anomaly_table
from analysis.load import ResultsError
from analysis.plots import anomaly_figure


def _df(points: dict) -> pd.DataFrame:
    """points: n -> list of (node, mcs, phy, model share, measured per rep...); all-fast share per n."""
    rows = []
    for n, (phones, all_fast) in points.items():
        for rep in (0, 1):
            pt = f"n_phones={n},rep={rep}"

            def add(metric, value, node=""):
                rows.append({"point": pt, "n_phones": n, "rep": rep, "metric": metric, "value": value,
                             "unit": "", "node": node, "time": 0.0})
            add("model_share_all_fast_mbit", all_fast)
            for node, mcs, phy, share, measured in phones:
                add("station_mcs", mcs, node)
                add("station_phy_mbit", phy, node)
                add("model_share_mbit", share, node)
                add("iperf_goodput_mbit", measured[rep], node)
            add("iperf_goodput_mbit", 99.0)   # the aggregate row must not count as a phone
    return pd.DataFrame(rows)


def test_fast_and_slow_phones_are_told_apart_and_averaged_over_reps():
    df = _df({1: ([("phone-1", 0, 6.5, 5.7, (5.5, 5.6))], 53.0),
              2: ([("phone-1", -1, 65, 15.0, (14.0, 15.0)), ("phone-2", 0, 6.5, 3.7, (3.5, 3.7))], 26.0),
              4: ([("phone-1", -1, 65, 9.0, (8.0, 8.6)), ("phone-2", -1, 65, 9.0, (8.4, 8.4)),
                   ("phone-3", -1, 65, 9.0, (8.2, 8.4)), ("phone-4", 0, 6.5, 2.2, (2.0, 2.2))], 12.5)})
    res = anomaly_table(df)
    # N = 1 holds only the slow phone: it is slow, though the fastest of its point.
    assert res.mixed and list(res.phones["slow"]) == [True, False, True, False, False, False, True]
    s = res.summary.set_index("n_phones")
    assert s.loc[4, "fast_measured_mbit"] == pytest.approx((8.3 + 8.4 + 8.3) / 3)
    assert s.loc[4, "fast_model_mbit"] == pytest.approx(9.0 * TCP_PER_FRAME)
    assert s.loc[2, "slow_measured_mbit"] == pytest.approx(3.6)
    assert s.loc[4, "all_fast_model_mbit"] == pytest.approx(12.5 * TCP_PER_FRAME)
    assert "N = 4" in res.describe() and "anomaly" in res.describe()
    fig = anomaly_figure(res, {"experiment": "wifi_scaling", "run_id": "x"})
    assert len(fig.axes) == 2


def test_run_without_per_phone_rates_is_refused_clearly():
    df = _df({2: ([("phone-1", -1, 65, 15.0, (14.0, 15.0))], 26.0)})
    with pytest.raises(ResultsError, match="station_mcs"):
        anomaly_table(df[df["metric"] != "station_mcs"])
    assert not anomaly_table(df).mixed
