"""How far can virtual nodes be folded onto one host before measurements go wrong?

For each metric and folding factor (virtual nodes per physical host) the
relative degradation is ``(mean_f - mean_base) / |mean_base|`` where the
baseline is the smallest factor measured. Its confidence interval is Welch's
interval for the difference of the two means (repetitions are independent
runs, not paired) divided by ``|mean_base|`` (the baseline mean is treated as
fixed in the denominator — second-order with respect to the difference).

Faithfulness is two-sided (a folded latency that is 6 % *lower* is as wrong as
one 6 % higher) and conservative: a factor is faithful for a metric when the
CI bound furthest from zero, ``max(|low|, |high|)``, is within the tolerance —
so "faithful" means "the data rule out a deviation larger than the tolerance",
not merely "the mean deviation looks small". When a factor or the baseline has
a single repetition no interval exists; the decision then falls back to
``|mean degradation|`` and the result says so (``judged_on_mean``), because a
quick one-repetition sweep should still give an (explicitly weaker) answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pandas as pd

from .load import ResultsError
from .stats import diff_ci, mean_ci
from .tidy import metric_samples

PARAM = "factor"


def _relative(x: float, base: float) -> float:
    if base == 0.0:
        return 0.0 if x == 0.0 else math.copysign(math.inf, x)
    return x / abs(base)


def degradation_table(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, *, confidence: float = 0.95,
                      param: str = PARAM) -> pd.DataFrame:
    """Per metric and factor: mean with CI, relative degradation vs the baseline with CI, and the
    ``worst`` deviation used for the faithfulness decision."""
    if param not in df.columns:
        raise ResultsError(f"folding: measurements have no {param!r} column (sweep parameters: "
                           f"{[c for c in df.columns if c not in ('point', 'metric', 'value', 'unit', 'node', 'time')]})")
    metrics = list(metrics) if metrics is not None else sorted(df["metric"].unique())
    if not metrics:
        raise ResultsError("folding: no measurements to compare")
    rows = []
    for metric in metrics:
        samples = metric_samples(df, metric, [param], where="folding")
        factors = sorted(samples[param].unique())
        base_factor = factors[0]
        base = samples.loc[samples[param] == base_factor, "value"].to_numpy()
        base_mean = float(base.mean())
        for f in factors:
            x = samples.loc[samples[param] == f, "value"].to_numpy()
            m = mean_ci(x, confidence)
            if f == base_factor:
                deg, low, high, defined = 0.0, 0.0, 0.0, True
            else:
                d = diff_ci(x, base, confidence)
                deg = _relative(d.estimate, base_mean)
                low, high, defined = _relative(d.low, base_mean), _relative(d.high, base_mean), d.defined
            worst = max(abs(low), abs(high)) if defined else abs(deg)
            rows.append({"metric": metric, param: f, "mean": m.estimate, "ci_low": m.low, "ci_high": m.high,
                         "n": m.n, "baseline_factor": base_factor, "baseline_mean": base_mean,
                         "degradation": deg, "degradation_ci_low": low if defined else math.nan,
                         "degradation_ci_high": high if defined else math.nan, "ci_defined": defined,
                         "worst": worst})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class FoldingResult:
    max_factor: int  # largest factor such that it and every smaller factor are faithful
    tolerance: float
    confidence: float
    table: pd.DataFrame
    first_unfaithful: Optional[int] = None  # smallest factor that broke the tolerance
    violations: list[tuple[str, int, float]] = field(default_factory=list)  # (metric, factor, worst) at it
    judged_on_mean: bool = False  # True when some decision had no CI (single repetition)

    def describe(self) -> str:
        basis = (f"the {self.confidence:.0%} CI bound of |degradation|" if not self.judged_on_mean
                 else "|mean degradation| (some factors have one repetition: no CI)")
        s = (f"Maximum faithful folding factor: {self.max_factor} virtual nodes per host "
             f"(every metric within ±{self.tolerance:.1%} of the baseline, judged on {basis}).")
        if self.first_unfaithful is not None:
            worst = ", ".join(f"{m} {w:.1%}" for m, _, w in self.violations)
            s += f" Factor {self.first_unfaithful} exceeds it: {worst}."
        else:
            tested = sorted(int(f) for f in self.table[PARAM].unique()) if not self.table.empty else []
            s += (f" Every tested factor ({', '.join(map(str, tested))}) is faithful: no limit found, "
                  f"larger factors were not tested.")
        return s


def folding_verdict(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, *, tolerance: float = 0.05,
                    confidence: float = 0.95, param: str = PARAM) -> FoldingResult:
    """The maximum faithful factor, with the table and what broke it."""
    if not tolerance > 0:
        raise ResultsError(f"folding: tolerance must be a positive fraction (e.g. 0.05), got {tolerance}")
    table = degradation_table(df, metrics, confidence=confidence, param=param)
    factors = sorted(table[param].unique())
    best = int(factors[0])
    judged_on_mean = False
    for f in factors:
        at = table[table[param] == f]
        judged_on_mean |= not bool(at["ci_defined"].all())
        bad = at[at["worst"] > tolerance]
        if not bad.empty:
            violations = [(r.metric, int(f), float(r.worst)) for r in bad.itertuples()]
            return FoldingResult(best, tolerance, confidence, table, int(f), violations, judged_on_mean)
        best = int(f)
    return FoldingResult(best, tolerance, confidence, table, None, [], judged_on_mean)


def max_faithful_factor(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, tolerance: float = 0.05,
                        confidence: float = 0.95) -> int:
    """Largest factor such that it and every smaller factor keep each metric within ``tolerance``."""
    return folding_verdict(df, metrics, tolerance=tolerance, confidence=confidence).max_factor
