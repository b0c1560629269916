"""The blocked folding comparison (analysis.blocked): rounds as blocks remove the host's drift."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.blocked import block_contrast, blocks
from analysis.folding import degradation_table, folding_verdict
from analysis.stats import t_ppf


def rounds_run(values: dict[int, list[list[float]]], metric="latency_ms_p50") -> pd.DataFrame:
    """Tidy measurements of a sweep measured in rounds: ``values[f][r]`` is the list of factor f's
    values in round r (the baseline's first value before the others, the rest after)."""
    rows, t = [], 0.0
    rounds = max(len(v) for v in values.values())
    base = min(values)
    reps = {f: 0 for f in values}

    def add(f, x):
        nonlocal t
        t += 5.0
        rows.append({"point": f"factor={f},rep={reps[f]}", "factor": f, "rep": reps[f], "metric": metric,
                     "value": x, "unit": "ms", "node": "", "time": t})
        reps[f] += 1

    for r in range(rounds):
        bvals = values[base][r] if r < len(values[base]) else []
        for x in bvals[:1]:
            add(base, x)
        for f in sorted(values):
            if f != base and r < len(values[f]):
                for x in values[f][r]:
                    add(f, x)
        for x in bvals[1:]:
            add(base, x)
    return pd.DataFrame(rows)


def test_blocks_follow_the_sweeps_rounds():
    # baseline weight 2: base, folded factors ascending, base | next round
    assert blocks([1, 2, 4, 1, 1, 2, 4, 1], 1) == [0, 0, 0, 0, 1, 1, 1, 1]
    # weight 1: the baseline opens each round
    assert blocks([1, 2, 4, 1, 2, 4], 1) == [0, 0, 0, 1, 1, 1]
    # an adaptive round without the baseline (Dunnett's allocation): the lone baseline point between
    # two rounds opens the later one (any partition fixed by the order alone keeps the model valid)
    assert blocks([1, 2, 4, 1, 1, 2, 4, 1, 2, 4], 1) == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    # with the repetition numbers (weight 2: reps 2k open round k, 2k+1 close it) that lone point
    # is known to close its round, and an adaptive round's opening point opens the next
    seq, reps = [1, 2, 4, 1, 1, 2, 4, 1, 2, 4, 1, 2, 1], [0, 0, 0, 1, 2, 1, 1, 3, 2, 2, 4, 3, 5]
    assert blocks(seq, 1, reps) == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 3]
    # weight 1: every baseline point opens a round
    assert blocks([1, 2, 4, 1, 2, 4, 2, 1, 2], 1, [0, 0, 0, 1, 1, 1, 2, 2, 3]) == [0, 0, 0, 1, 1, 1, 2, 3, 3]


def test_with_one_baseline_per_round_the_contrast_is_the_paired_t():
    """Two factors, one point each per block: the block model is the paired t-test on the
    differences (Student 1908; paired TOST, Schuirmann 1987)."""
    rng = np.random.default_rng(3)
    drift = rng.normal(0, 0.2, 6)
    base = drift + rng.normal(0, 0.02, 6)
    f2 = drift + 0.03 + rng.normal(0, 0.02, 6)
    y = np.concatenate([base, f2])
    c = block_contrast(y, [1] * 6 + [2] * 6, list(range(6)) * 2, 2, 1)
    d = f2 - base
    assert c.df == pytest.approx(5)
    assert c.estimate == pytest.approx(d.mean())
    assert c.se == pytest.approx(d.std(ddof=1) / math.sqrt(6))


def test_a_round_without_the_baseline_still_informs_the_comparison():
    # exactly additive data: factor effects 0 (base), +0.1 (2), +0.3 (4); block effects 0, 0.5, -0.2
    mu, beta = {1: 0.0, 2: 0.1, 4: 0.3}, [0.0, 0.5, -0.2]
    pts = [(1, 0), (2, 0), (4, 0), (1, 0), (1, 1), (2, 1), (4, 1), (1, 1), (2, 2), (4, 2)]   # round 2: no base
    y = [mu[f] + beta[b] + 0.001 * ((i * 7) % 3 - 1) for i, (f, b) in enumerate(pts)]
    c = block_contrast(y, [f for f, _ in pts], [b for _, b in pts], 4, 1)
    assert c.defined and c.estimate == pytest.approx(0.3, abs=0.002)
    # a factor measured only in a block that shares nothing with the baseline's: no interval
    c = block_contrast([0.0, 0.1, 0.7], [1, 2, 8], [0, 0, 1], 8, 1)
    assert not c.defined


def test_a_factor_scattering_more_than_the_pool_gets_its_own_variance():
    rng = np.random.default_rng(5)
    fac, blk, y = [], [], []
    for b in range(6):
        for f, sd in ((1, 0.02), (1, 0.02), (2, 0.02), (4, 0.02), (8, 0.3)):
            fac.append(f), blk.append(b), y.append(rng.normal(0, sd))
    noisy = block_contrast(y, fac, blk, 8, 1)
    below = [i for i, f in enumerate(fac) if f != 8]   # the pool alone: factors 1, 2, 4
    quiet = block_contrast([y[i] for i in below], [fac[i] for i in below], [blk[i] for i in below], 4, 1)
    # a factor's own scatter sets its interval (its own residual degrees of freedom weigh most)
    assert noisy.se > 5 * quiet.se and noisy.df < quiet.df


def _coverage(compared_sd: float, rounds: int = 3, n: int = 600) -> float:
    """Share of 90 % intervals that hold the true contrast (+0.05): baseline twice and factors
    2, 4, 8 per round, an AR(1) drift through the measuring order, factor 8 compared."""
    rng = np.random.default_rng(7)
    hit = 0
    for _ in range(n):
        fac, blk, y, u = [], [], [], 0.0
        for b in range(rounds):
            for g in (1, 2, 4, 8, 1):
                u = 0.5 * u + rng.normal(0, 0.05)
                fac.append(g), blk.append(b)
                y.append(u + rng.normal(0, compared_sd if g == 8 else 0.08) + (0.05 if g == 8 else 0.0))
        c = block_contrast(y, fac, blk, 8, 1)
        half = t_ppf(0.95, c.df) * c.se
        hit += c.estimate - half <= 0.05 <= c.estimate + half
    return hit / n


def test_the_interval_covers_at_its_level_also_when_the_compared_factor_scatters_more():
    assert 0.87 <= _coverage(0.08) <= 0.93
    assert 0.85 <= _coverage(0.25) <= 0.93   # one pooled variance covers 0.68 here


def test_drift_between_rounds_leaves_the_independent_verdict_undecided_but_not_the_blocked_one():
    """Rounds drift by ±15 % (the host), each point scatters 1 % around its round: the independent
    (Welch) interval carries the drift, the blocked one removes it."""
    drift = [0.0, 0.15, -0.12, 0.08]
    noise = iter(np.random.default_rng(11).normal(0, 0.01, 64))
    v = lambda shift, r: 10 * math.exp(drift[r] + shift + next(noise))  # noqa: E731
    values = {1: [[v(0, r), v(0, r)] for r in range(4)], 2: [[v(0.02, r)] for r in range(4)],
              4: [[v(-0.01, r)] for r in range(4)], 8: [[v(0.6, r)] for r in range(4)]}
    df = rounds_run(values)
    ind = folding_verdict(df, tolerance=0.10, design="independent")
    blk = folding_verdict(df, tolerance=0.10, design="blocked")
    assert ind.verdicts[2] == ind.verdicts[4] == "inconclusive"
    assert blk.verdicts == {2: "faithful", 4: "faithful", 8: "unfaithful"}
    assert blk.breaking_point == 8 and blk.decided_up_to_break() and blk.needs_more() == []
    t = degradation_table(df, tolerance=0.10, design="blocked").set_index("factor")
    assert t.loc[2, "degradation"] == pytest.approx(math.expm1(0.02), abs=0.01)
    assert (t["design"] == "blocked").all()


def test_without_drift_both_designs_agree():
    """No round effect, balanced rounds: the same estimate (the difference of the means), intervals
    of about the same width, the same verdicts."""
    rng = np.random.default_rng(2)
    v = lambda shift: 10 * math.exp(shift + rng.normal(0, 0.02))  # noqa: E731
    values = {1: [[v(0), v(0)] for _ in range(5)], 2: [[v(0.01)] for _ in range(5)],
              4: [[v(-0.02)] for _ in range(5)], 8: [[v(0.5)] for _ in range(5)]}
    df = rounds_run(values)
    ti = degradation_table(df, tolerance=0.10, design="independent").set_index("factor")
    tb = degradation_table(df, tolerance=0.10, design="blocked").set_index("factor")
    assert tb["degradation"].to_numpy() == pytest.approx(ti["degradation"].to_numpy(), abs=1e-9)
    wi = np.log1p(ti["degradation_ci_high"]) - np.log1p(ti["degradation_ci_low"])
    wb = np.log1p(tb["degradation_ci_high"]) - np.log1p(tb["degradation_ci_low"])
    for f in (2, 4):
        assert 0.6 < wb[f] / wi[f] < 1.5
    assert (folding_verdict(df, tolerance=0.10, design="blocked").verdicts
            == folding_verdict(df, tolerance=0.10).verdicts == {2: "faithful", 4: "faithful", 8: "unfaithful"})


def test_an_unknown_design_is_refused():
    from analysis.load import ResultsError

    df = rounds_run({1: [[1.0, 1.1]], 2: [[1.0]]})
    with pytest.raises(ResultsError, match="design"):
        degradation_table(df, design="paired")


def test_t_quantile_used_for_fractional_df():
    assert t_ppf(0.95, 4.5) == pytest.approx((t_ppf(0.95, 4) + t_ppf(0.95, 5)) / 2, rel=0.02)


def test_the_report_says_which_design_judged_the_run(tmp_path):
    import json
    import shutil

    from analysis.report import write_report
    from analysis_fixtures import FOLDING

    run = tmp_path / "folding" / FOLDING.name
    shutil.copytree(FOLDING, run)
    summary = write_report(tmp_path).read_text()
    assert "Welch's t interval" in summary and "rounds as blocks" not in summary
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["params"]["design"] = "blocked"
    (run / "manifest.json").write_text(json.dumps(manifest))
    summary = write_report(tmp_path).read_text()
    assert "the sweep's rounds as blocks" in summary and "Welch's t interval" not in summary
