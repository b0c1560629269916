import pandas as pd

from analysis.load import load_run
from analysis.topologies import topology_capacity
from analysis_fixtures import TOPOLOGIES

EXPECTED = {  # (network, hops, rate): max phones (None: not even one phone fits)
    ("ethernet", 1, 2): 8, ("ethernet", 1, 8): 8, ("wifi", 1, 2): 8, ("wifi", 1, 8): 4,
    ("usb", 1, 2): 8, ("usb", 1, 8): 2,  # usb fails at 4 (3 % errors): 8 fitting again does not count
    ("batman-mesh", 1, 2): 4, ("batman-mesh", 1, 8): 2, ("batman-mesh", 3, 2): 2, ("batman-mesh", 3, 8): None,
}


def test_recorded_capacities():
    run = load_run(TOPOLOGIES)
    res = topology_capacity(run.df, threshold_ms=run.params["latency_threshold_ms"])
    got = {(r.network, r.hops, r.rate_rps): (None if pd.isna(r.max_phones) else int(r.max_phones))
           for r in res.capacity.itertuples()}
    assert got == EXPECTED
    rates = res.rates.set_index(["network", "hops", "n_phones"])["fitting_rates_rps"]
    assert rates[("wifi", 1, 8)] == "2" and rates[("ethernet", 1, 8)] == "2, 8" and rates[("batman-mesh", 3, 4)] == "none"
    assert "batman-mesh (3 hops) at 8 req/s: no phone count" in res.describe()


def test_threshold_matters_and_percent_error_rates_are_converted():
    df = load_run(TOPOLOGIES).df
    tight = topology_capacity(df, threshold_ms=100.0).capacity.set_index(["network", "hops", "rate_rps"])
    assert tight.loc[("wifi", 1, 8), "max_phones"] == 2  # p95 180 ms at 4 phones
    pct = df.copy()
    sel = pct["metric"] == "error_rate"
    pct.loc[sel, "value"] *= 100
    pct.loc[sel, "unit"] = "%"
    res = topology_capacity(pct, threshold_ms=500.0)
    assert res.capacity.set_index(["network", "hops", "rate_rps"]).loc[("usb", 1, 8), "max_phones"] == 2
