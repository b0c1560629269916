"""The adaptive rounds of folding sweeps (edgelab.adaptive), on verdicts computed from data."""

import pandas as pd

from analysis.folding import folding_verdict
from edgelab.adaptive import PointTimer, more_points, planned


def folded(values: dict[int, list[float]], metric="latency_ms_p50") -> pd.DataFrame:
    return pd.DataFrame([{"point": f"factor={f},rep={r}", "factor": f, "rep": r, "metric": metric, "value": x,
                          "unit": "ms", "node": "", "time": 0.0}
                         for f, xs in values.items() for r, x in enumerate(xs)])


def test_planned_counts_repetitions_per_factor_including_gaps():
    assert planned([{"factor": 1, "rep": 0}, {"factor": 1, "rep": 2}, {"factor": 4, "rep": 0}]) == {1: 3, 4: 1}


def test_a_round_repeats_undecided_factors_up_to_the_break_with_the_baseline():
    # factor 2: noisy (inconclusive); factor 4: clearly worse (the break); factor 8: noisy but beyond the break
    v = folding_verdict(folded({1: [10, 9, 11], 2: [10, 8, 12], 4: [20, 20.1, 19.9], 8: [30, 20, 40]}))
    assert v.breaking_point == 4 and v.verdicts[2] == "inconclusive"
    assert more_points(v, {1: 3, 2: 3, 4: 3, 8: 3}, max_reps=6) == [{"factor": 1, "rep": 3}, {"factor": 2, "rep": 3}]
    # at the repetition cap the undecided factor gets no more; a decided verdict needs none
    assert more_points(v, {1: 6, 2: 6, 4: 3, 8: 3}, max_reps=6) == []
    decided = folding_verdict(folded({1: [10, 10.01, 9.99], 2: [10, 10.02, 9.98]}))
    assert more_points(decided, {1: 3, 2: 3}, max_reps=6) == []


def test_rounds_are_planned_from_each_factors_own_duration():
    t = PointTimer()
    measure = t.wrap(lambda point, run: point["factor"])
    assert measure({"factor": 2, "rep": 0}, None) == 2
    t.took = {1: [2.0, 4.0], 32: [30.0]}
    assert t.estimate([{"factor": 1}, {"factor": 32}]) == 3.0 + 30.0
    assert t.estimate([{"factor": 8}]) == (2.0 + 4.0 + 30.0) / 3   # unseen factor: the overall mean
