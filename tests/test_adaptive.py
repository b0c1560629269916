"""The adaptive rounds of folding sweeps (edgelab.adaptive), on verdicts computed from data."""

import pandas as pd

from analysis.folding import folding_verdict
from edgelab.adaptive import PointTimer, fitting, more_points, planned, settled


def folded(values: dict[int, list[float]], metric="latency_ms_p50") -> pd.DataFrame:
    return pd.DataFrame([{"point": f"factor={f},rep={r}", "factor": f, "rep": r, "metric": metric, "value": x,
                          "unit": "ms", "node": "", "time": 0.0}
                         for f, xs in values.items() for r, x in enumerate(xs)])


def test_planned_counts_repetitions_per_factor_including_gaps():
    assert planned([{"factor": 1, "rep": 0}, {"factor": 1, "rep": 2}, {"factor": 4, "rep": 0}]) == {1: 3, 4: 1}


def test_a_round_repeats_undecided_factors_up_to_the_break_with_the_baseline():
    # factor 2: noisy (inconclusive); factor 4: clearly worse (the break); factor 8: noisy but beyond the break
    v = folding_verdict(folded({1: [10, 8, 12], 2: [10, 8, 12], 4: [20, 20.1, 19.9], 8: [30, 20, 40]}))
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


def test_a_break_that_larger_factors_do_not_confirm_is_measured_again():
    # factor 4 "worse" on three close values, factor 8 back within the tolerance: a fluke or not?
    v = folding_verdict(folded({1: [10, 10.1, 9.9], 2: [10, 10.05, 9.95], 4: [12, 12.05, 11.95],
                                8: [10, 10.05, 9.95]}))
    assert v.breaking_point == 4 and v.verdicts[8] == "faithful"
    assert more_points(v, {1: 3, 2: 3, 4: 3, 8: 3}, max_reps=6) == [{"factor": 1, "rep": 3}, {"factor": 4, "rep": 3}]
    # confirmed by every larger factor: nothing to add
    v = folding_verdict(folded({1: [10, 10.1, 9.9], 2: [10, 10.05, 9.95], 4: [12, 12.05, 11.95], 8: [15, 15.1, 14.9]}))
    assert more_points(v, {1: 3, 2: 3, 4: 3, 8: 3}, max_reps=6) == []


def test_only_factors_decided_unfaithful_on_intervals_are_settled():
    v = folding_verdict(folded({1: [10, 9, 11], 2: [10, 8, 12], 4: [20, 20.1, 19.9], 8: [30, 31, 29]}))
    assert settled(v) == {4, 8}
    # one repetition: decisions on the mean only, nothing is settled by them
    assert settled(folding_verdict(folded({1: [10], 4: [20]}))) == set()


def test_with_two_repetitions_only_a_factor_far_past_the_tolerance_is_settled():
    # factor 4: +20 % on two close values (could be a fluke pair); factor 8: a hundred times slower
    v = folding_verdict(folded({1: [10, 10.1], 2: [10, 10.05], 4: [12, 12.02], 8: [1000, 1100]}), tolerance=0.1)
    assert v.verdicts[4] == "unfaithful" and v.verdicts[8] == "unfaithful"
    assert settled(v, reps=2) == {8}
    assert settled(v, reps=3) == {4, 8} and settled(v, reps=1) == set()
    # a higher-is-better metric far below the baseline is settled too
    tput = folding_verdict(folded({1: [10, 10.1], 8: [2, 2.1]}, metric="requests_per_s_per_node"), tolerance=0.1)
    assert settled(tput, reps=2) == {8}


def test_a_round_that_does_not_fit_is_cut_to_the_baseline_and_least_folded_factors():
    t = PointTimer()
    t.took = {1: [10.0], 2: [5.0], 4: [6.0], 8: [8.0]}
    extra = [{"factor": f, "rep": 3} for f in (8, 1, 4, 2)]
    assert [p["factor"] for p in fitting(extra, t, 22.0)] == [1, 2, 4]
    assert [p["factor"] for p in fitting(extra, t, 100.0)] == [1, 2, 4, 8]
    assert fitting(extra, t, 9.0) == []
    assert fitting(extra, t, 12.0) == []      # the baseline alone decides nothing
    # a weighted baseline brackets the round: one point first, the others last
    two = extra + [{"factor": 1, "rep": 4}]
    assert [p["factor"] for p in fitting(two, t, 100.0)] == [1, 2, 4, 8, 1]
    assert [p["factor"] for p in fitting(two, t, 30.0)] == [1, 2, 4, 8]


def test_a_weighted_baseline_gets_its_weight_of_points_per_round_within_its_scaled_cap():
    v = folding_verdict(folded({1: [10, 5, 15, 10, 5, 15], 2: [10, 8, 12], 4: [20, 20.1, 19.9]}))
    assert more_points(v, {1: 6, 2: 3, 4: 3}, max_reps=6, baseline_weight=2) == [
        {"factor": 1, "rep": 6}, {"factor": 1, "rep": 7}, {"factor": 2, "rep": 3}]
    assert more_points(v, {1: 11, 2: 3, 4: 3}, max_reps=6, baseline_weight=2) == [
        {"factor": 1, "rep": 11}, {"factor": 2, "rep": 3}]


def test_the_initial_design_stops_repeating_a_factor_once_it_is_decided_unfaithful(tmp_path, monkeypatch):
    """The real run_sweep on a stand-in measurement: factor 4 is clearly worse from the start (+30 %,
    not so far that two repetitions would settle it: see the test above)."""
    from edgelab import adaptive

    values = {1: [10, 10.2, 9.8, 10.1, 9.9], 2: [10.1, 9.9, 10.0, 10.05, 9.95], 4: [13, 13.1, 12.9, 13, 13]}
    measured: list[tuple[int, int]] = []

    def measure(point, run):
        from edgelab.results import Measurement
        measured.append((point["factor"], point["rep"]))
        return [Measurement("latency_ms_p50", values[point["factor"]][point["rep"]], "ms")]

    def verdict_of(path):
        from analysis.load import load_run
        return folding_verdict(load_run(path).df, ["latency_ms_p50"], tolerance=0.05)

    # the layout of experiments/folding.py's sweep_points(..., baseline_weight=2)
    points = [p for r in range(4) for p in ({"factor": 1, "rep": 2 * r}, {"factor": 2, "rep": r},
                                            {"factor": 4, "rep": r}, {"factor": 1, "rep": 2 * r + 1})]
    values[1] += [10.0, 10.1, 9.9]
    sweep = dict(experiment="adaptive-test", param_names=["factor", "rep"], measure=measure, params={},
                 results_root=str(tmp_path), backend="local", keep_going=False, will_report=False)
    out = adaptive.run_adaptive(points=points, resume=False, sweep=sweep, verdict_of=verdict_of, max_reps=5,
                                budget=600.0, baseline_weight=2)
    assert out.status == "complete"
    assert [r for f, r in measured if f == 4] == [0, 1, 2]       # settled after three repetitions
    assert [r for f, r in measured if f == 2] == [0, 1, 2, 3]    # the rest of the design still runs
    assert [r for f, r in measured if f == 1] == list(range(8))  # twice per round
    # each round bracketed by the baseline: 1, 2, (4,) 1
    assert measured[:6] == [(1, 0), (2, 0), (4, 0), (1, 1), (1, 2), (2, 1)]
    v = verdict_of(out.run.path)
    assert v.verdicts[4] == "unfaithful" and v.breaking_point == 4


def test_a_baseline_precise_next_to_a_noisy_factor_is_not_repeated():
    """Dunnett's allocation: the baseline gets sqrt(k) x sd_base/sd_factor of a factor's repetitions."""
    v = folding_verdict(folded({1: [10, 10.3, 9.7], 2: [10, 7, 13]}))
    assert v.verdicts[2] == "inconclusive" and v.needs_more() == [1, 2] and not v.baseline_helps()
    assert more_points(v, {1: 3, 2: 3}, max_reps=6, baseline_weight=2) == [{"factor": 2, "rep": 3}]
    # as noisy as the factor, with fewer repetitions: it is measured again
    v = folding_verdict(folded({1: [10, 7, 13], 2: [10, 7, 13, 10, 7, 13]}))
    assert v.verdicts[2] == "inconclusive" and v.baseline_helps()
    # a round without a baseline point still fits (its baseline is the sweep's, not the round's least factor)
    t = PointTimer()
    t.took = {1: [5.0], 16: [5.0]}
    assert fitting([{"factor": 16, "rep": 4}], t, 100.0, base=1) == [{"factor": 16, "rep": 4}]
