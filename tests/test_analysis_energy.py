import pytest

from analysis.energy import ENERGY, energy_per_invocation, energy_samples
from analysis.load import ResultsError, load_run
from analysis_fixtures import ENERGY as ENERGY_RUN


def test_recorded_run_lowest_energy_at_4_workers():
    res = energy_per_invocation(load_run(ENERGY_RUN).df)
    t = res.table.set_index("n_workers")
    assert res.best_workers == 4
    assert t.loc[4, "energy_j_mean"] == pytest.approx(5.6 / 30.0, rel=1e-4)
    assert t.loc[1, "energy_j_ci_low"] < t.loc[1, "energy_j_mean"] < t.loc[1, "energy_j_ci_high"]
    assert list(t.index) == [1, 2, 4, 8]


def test_derived_from_power_and_rate_when_not_recorded():
    df = load_run(ENERGY_RUN).df
    recorded = energy_samples(df).set_index("point")["value"]
    derived = energy_samples(df[df["metric"] != ENERGY]).set_index("point")["value"]
    assert derived.sort_index().to_numpy() == pytest.approx(recorded.sort_index().to_numpy(), rel=1e-4)


def test_missing_metrics_are_named():
    df = load_run(ENERGY_RUN).df
    with pytest.raises(ResultsError, match="power_w"):
        energy_samples(df[df["metric"] == "latency_ms_p95"])
