"""How far can virtual nodes be folded onto one host before measurements go wrong?

For each metric and folding factor (virtual nodes per physical host) the
relative deviation from the baseline (the smallest factor measured) is, for a
metric whose values are all positive (latency, CPU time, rates), the ratio of
geometric means minus one, ``exp(mean(log x_f) - mean(log x_base)) - 1``,
with Welch's interval on the logarithms (repetitions are independent runs, not
paired: the ``independent`` design, the default) mapped back the same way — the log scale on which equivalence of
positive, right-skewed quantities is judged in bioequivalence (Schuirmann
1987; FDA, "Statistical Approaches to Establishing Bioequivalence", 2001):
one slow point near the breaking point then weighs as a factor, not as an
absolute amount. A metric with a zero or negative value is compared on its own
scale: ``(mean_f - mean_base) / |mean_base|`` with Welch's interval of the
difference divided by ``|mean_base|``.

The ``blocked`` design (:mod:`analysis.blocked`) compares each factor with the
baseline within the sweep's rounds instead (randomized complete block design:
``log y = μ_factor + β_round + ε``), removing a drift of the host between
rounds. Replayed on 18 quick runs of this machine (``benchmarks/verdict_replay.py``)
it did not decide sooner than the independent design — the drift here is mostly
shorter than a round, and blocking costs degrees of freedom — so it stays an
option (``experiments/folding.py --design blocked``) for hosts whose drift is slow.

The ``speed`` design (:mod:`analysis.covariate`, the default of
``experiments/folding.py``) adjusts each comparison for the host's CPU speed
measured in every point (``host_cpu_unit_us``: the host warmer's reference
work): an analysis of covariance on the baseline's and the factor's points. On
a shared VM that speed is most of the points' scatter (here ±13 % between
points, correlation 0.86 with CPU per request): the adjusted intervals are about
half as wide. A comparison falls back to the unadjusted one where a point lacks
the speed, where the factor's points kept the host half busy or more
(``SPEED_MAX_BUSY``: the spinners then share their cores with the testbed and
their speed may measure the factor itself), or where the factor changed it.

Each (metric, factor) is then decided by an **equivalence test** — two
one-sided tests (TOST, Schuirmann 1987) at level ``alpha`` against the
tolerance, i.e. the ``1 - 2·alpha`` interval of the deviation:

* ``equivalent`` — the interval lies inside ``[-tol, +tol]``: the data rule
  out a deviation larger than the tolerance;
* ``worse`` / ``better`` — the interval lies entirely beyond ``+tol`` or
  ``-tol``: the deviation is larger than the tolerance, and we know in which
  direction it goes for this metric (latency and CPU per request: lower is
  better; throughput: higher is better);
* ``not worse`` — the interval lies below the *worse* bound but reaches past
  the *better* one: the one-sided test against degradation is decided
  (non-inferiority), equivalence is not, because the factor may measure better
  than the baseline by more than the tolerance;
* ``inconclusive`` — the interval straddles the *worse* bound: more
  repetitions are needed (``needs_more`` says which factors).

A factor is **faithful** when every judged metric is equivalent,
**unfaithful** when some metric is worse, **inconclusive** when some metric
is inconclusive (it may be worse), **better than baseline** when some metric
is better (the baseline itself is then suspect: e.g. a lone node on an idle
host paying CPU wake-up latency), else **not worse** (some metric may be
better than the baseline beyond the tolerance: no degradation, but not shown
equivalent). Faithful, not worse and better are *decided*: more repetitions
cannot make them a breaking point at this tolerance and level. The breaking
point is the smallest unfaithful factor; the maximum faithful factor is the
largest one such that it and every smaller factor are faithful, and the
maximum factor without degradation the largest such that it and every smaller
factor are faithful, not worse or better. When a factor or the baseline has a
single repetition no interval exists; the decision then falls back to the mean
deviation and the result says so (``judged_on_mean``).

Host overload signals recorded with each point (``host_cpu_busy``,
``host_runqueue``, ``host_cpu_pressure``, ``host_cpu_softirq``,
``host_foreign_cpu``, and with the fallback link engine the delayer's release
lateness ``host_delayer_late_ms`` / ``host_delayer_late_share``; see
:mod:`edgelab.hostload`) are averaged per factor and
name the cause of an unfaithful factor; where other work than the testbed used
the host's CPU, the verdict says which factors it touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from .load import ResultsError
from .blocked import block_contrast, blocks
from .covariate import ancova_contrast, speed_is_external
from .stats import diff_ci, mean_ci, t_ppf
from .tidy import metric_samples

PARAM = "factor"

#: Metrics for which a higher value is better (everything else: lower is better).
HIGHER_IS_BETTER_PREFIXES = ("requests_per_s", "goodput", "throughput", "invocations_per_s")

#: Host signals recorded by edgelab.hostload, with how each is shown.
HOST_SIGNALS = {"host_cpu_busy": "CPU busy", "host_runqueue": "run queue", "host_cpu_pressure": "CPU pressure",
                "host_cpu_softirq": "softirq", "host_foreign_cpu": "other work",
                "host_delayer_late_ms": "delayer lateness (ms)", "host_delayer_late_share": "packets > 1 ms late",
                "host_cpu_unit_us": "reference work (CPU µs per unit)"}

#: ``host_foreign_cpu`` from which a point's host counts as shared with other work
#: (edgelab.hostload.FOREIGN_SHARED; repeated here so analysis needs no edgelab import).
FOREIGN_SHARED = 0.15

#: ``host_delayer_late_ms`` from which the link emulation could not keep up (edgelab.hostload.DELAYER_LATE_MS).
DELAYER_LATE_MS = 1.0

#: Mean ``host_cpu_busy`` of a factor's points from which its comparison is not adjusted for the host's
#: speed: the spinners then share their cores with the testbed often enough that their speed may
#: measure the factor itself (measured here: 16 % slower at factor 16, 55 % busy, in one run), and
#: an adjustment could hide part of a degradation.
SPEED_MAX_BUSY = 0.5

#: SD of the host's CPU speed between points (log scale) from which an inconclusive verdict names it.
HOST_SPEED_NOISY = 0.05

FACTOR_VERDICTS = ("faithful", "unfaithful", "better", "not worse", "inconclusive")

#: Factor verdicts that rule out a degradation beyond the tolerance.
NO_DEGRADATION = ("faithful", "not worse", "better")


def higher_is_better(metric: str) -> bool:
    return metric.startswith(HIGHER_IS_BETTER_PREFIXES)


def _relative(x: float, base: float) -> float:
    if base == 0.0:
        return 0.0 if x == 0.0 else math.copysign(math.inf, x)
    return x / abs(base)


def decide(low: float, high: float, estimate: float, defined: bool, tolerance: float, metric: str) -> str:
    """One metric at one factor: equivalent, worse, better or inconclusive (see module docstring)."""
    if not defined:  # one repetition: no interval, judge the mean (weaker, and the result says so)
        low = high = estimate
    if -tolerance <= low and high <= tolerance:
        return "equivalent"
    if low > tolerance or high < -tolerance:
        up = low > tolerance
        return "better" if up == higher_is_better(metric) else "worse"
    # Straddles one bound (or both): decided against degradation when the *worse* bound is cleared.
    if (low >= -tolerance) if higher_is_better(metric) else (high <= tolerance):
        return "not worse"
    return "inconclusive"


#: How a factor is compared with the baseline: ``independent`` (Welch's interval: repetitions as
#: independent samples), ``blocked`` (the sweep's rounds as blocks: :mod:`analysis.blocked`) or
#: ``speed`` (adjusted for the host's measured CPU speed: :mod:`analysis.covariate`).
DESIGNS = ("independent", "blocked", "speed")


def point_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """point -> the value of a per-point host signal (``host_cpu_unit_us``, ``host_cpu_busy``);
    empty where it was not recorded."""
    return df[df["metric"] == metric].groupby("point")["value"].first()


def point_log_speed(df: pd.DataFrame) -> pd.Series:
    """point -> log of the host's measured speed (``host_cpu_unit_us``; positive values only)."""
    u = point_values(df, "host_cpu_unit_us")
    return np.log(u[u > 0])


def point_order(df: pd.DataFrame) -> pd.Series:
    """Each point's measuring time (its rows' latest ``time``), the order the blocks follow."""
    return df.groupby("point")["time"].max()


def _blocked_deviation(samples: pd.DataFrame, f, base_factor, log_scale: bool, level: float,
                       param: str) -> tuple[float, float, float, bool]:
    """(estimate, low, high, defined) of factor ``f`` against the baseline, from the block model
    fitted on the baseline, ``f`` and the factors below it (analysis.blocked)."""
    sub = samples[samples[param] <= f]
    y = np.log(sub["value"].to_numpy()) if log_scale else sub["value"].to_numpy()
    c = block_contrast(y, sub[param].tolist(), sub["block"].tolist(), f, base_factor)
    if not c.defined:
        return c.estimate, math.nan, math.nan, False
    half = t_ppf(0.5 + level / 2.0, c.df) * c.se
    return c.estimate, c.estimate - half, c.estimate + half, True


def _speed_deviation(x: np.ndarray, base: np.ndarray, xs: np.ndarray, bs: np.ndarray, log_scale: bool,
                     level: float) -> Optional[tuple[float, float, float, bool]]:
    """(estimate, low, high, defined) of a factor against the baseline adjusted for the host's
    speed (analysis.covariate), or None where it cannot be (a point without the speed, or a
    factor that changed the speed itself): the caller then compares unadjusted."""
    if np.isnan(xs).any() or np.isnan(bs).any() or not speed_is_external(bs, xs):
        return None
    y, yb = (np.log(x), np.log(base)) if log_scale else (x, base)
    a = ancova_contrast(yb, bs, y, xs)
    if not a.defined:
        return None
    half = t_ppf(0.5 + level / 2.0, a.df) * a.se
    return a.estimate, a.estimate - half, a.estimate + half, True


def degradation_table(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, *, alpha: float = 0.05,
                      tolerance: float = 0.05, param: str = PARAM, design: str = "independent") -> pd.DataFrame:
    """Per metric and factor: mean with its CI, relative deviation vs the baseline with its
    ``1 - 2·alpha`` interval, ``worst`` (the interval bound farthest from zero) and the decision.
    ``design``: ``independent`` (Welch), ``blocked`` (rounds as blocks) or ``speed`` (adjusted for
    the host's speed where valid, else Welch); see the module docstring."""
    if design not in DESIGNS:
        raise ResultsError(f"folding: design must be one of {', '.join(DESIGNS)}, got {design!r}")
    if param not in df.columns:
        raise ResultsError(f"folding: measurements have no {param!r} column (sweep parameters: "
                           f"{[c for c in df.columns if c not in ('point', 'metric', 'value', 'unit', 'node', 'time')]})")
    if not 0 < alpha < 0.5:
        raise ResultsError(f"folding: alpha must be between 0 and 0.5 (e.g. 0.05), got {alpha}")
    level = 1 - 2 * alpha
    metrics = list(metrics) if metrics is not None else sorted(m for m in df["metric"].unique()
                                                               if m not in HOST_SIGNALS)
    if not metrics:
        raise ResultsError("folding: no measurements to compare")
    if design == "blocked":   # each point's measuring time and repetition: its round
        order = point_order(df)
        rep = df.groupby("point")["rep"].first() if "rep" in df.columns else pd.Series(dtype=float)
    if design == "speed":     # each point's log speed (NaN where not recorded) and CPU busy
        speed = point_log_speed(df)
        busy = point_values(df, "host_cpu_busy")
    rows = []
    for metric in metrics:
        samples = metric_samples(df, metric, [param], where="folding")
        factors = sorted(samples[param].unique())
        base_factor = factors[0]
        if design == "blocked":   # rounds from the measuring order (ties: repetition order)
            samples = samples.assign(_t=samples["point"].map(order), _r=samples["point"].map(rep))
            samples = samples.sort_values(["_t", "_r"], kind="stable").reset_index(drop=True)
            reps = samples["_r"].tolist() if samples["_r"].notna().all() else None
            samples["block"] = blocks(samples[param].tolist(), base_factor,
                                      [int(r) for r in reps] if reps is not None else None)
        base = samples.loc[samples[param] == base_factor, "value"].to_numpy()
        base_mean = float(base.mean())
        log_scale = bool((samples["value"] > 0).all())
        if design == "speed":
            sx = samples["point"].map(speed).to_numpy(dtype=float)
            bx = sx[(samples[param] == base_factor).to_numpy()]
            fbusy = samples["point"].map(busy).groupby(samples[param]).mean()
        for f in factors:
            x = samples.loc[samples[param] == f, "value"].to_numpy()
            m = mean_ci(x, level)
            adj = None
            if f == base_factor:
                deg, low, high, defined, decision = 0.0, 0.0, 0.0, True, "baseline"
            else:
                adj = (_speed_deviation(x, base, sx[(samples[param] == f).to_numpy()], bx, log_scale, level)
                       if design == "speed" and fbusy.get(f, 1.0) < SPEED_MAX_BUSY else None)
                if adj is not None:
                    est, lo, hi, defined = adj
                elif design == "blocked":
                    est, lo, hi, defined = _blocked_deviation(samples, f, base_factor, log_scale, level, param)
                elif log_scale:
                    d = diff_ci(np.log(x), np.log(base), level)
                    est, lo, hi, defined = d.estimate, d.low, d.high, d.defined
                else:
                    d = diff_ci(x, base, level)
                    est, lo, hi, defined = d.estimate, d.low, d.high, d.defined
                if log_scale:   # ratio of geometric means (see the module docstring)
                    deg, low, high = (math.expm1(v) if not math.isnan(v) else v for v in (est, lo, hi))
                else:
                    deg, low, high = (_relative(v, base_mean) for v in (est, lo, hi))
                decision = decide(low, high, deg, defined, tolerance, metric)
            judged = np.log(x) if log_scale else x
            sd = float(np.std(judged, ddof=1)) if len(judged) > 1 else math.nan   # on the judged scale
            worst = max(abs(low), abs(high)) if defined else abs(deg)
            rows.append({"metric": metric, param: f, "mean": m.estimate, "ci_low": m.low, "ci_high": m.high,
                         "n": m.n, "baseline_factor": base_factor, "baseline_mean": base_mean,
                         "degradation": deg, "degradation_ci_low": low if defined else math.nan,
                         "degradation_ci_high": high if defined else math.nan, "ci_defined": defined,
                         "worst": worst, "decision": decision, "log_scale": log_scale, "sd": sd,
                         "design": design, "speed_adjusted": adj is not None})
    return pd.DataFrame(rows)


def host_signals(df: pd.DataFrame, param: str = PARAM) -> dict[int, dict[str, float]]:
    """Mean of each recorded host overload signal per factor ({} when none was recorded)."""
    out: dict[int, dict[str, float]] = {}
    for metric in HOST_SIGNALS:
        if not (df["metric"] == metric).any():
            continue
        s = metric_samples(df, metric, [param], where="folding")
        for f, grp in s.groupby(param):
            out.setdefault(int(f), {})[metric] = float(grp["value"].mean())
    return out


def _overload_phrases(sig: dict[str, float], cpus: Optional[int]) -> list[str]:
    out = []
    if sig.get("host_cpu_busy", 0) >= 0.9:
        out.append(f"host CPU {sig['host_cpu_busy']:.0%} busy")
    if cpus and sig.get("host_runqueue", 0) > cpus:
        out.append(f"run queue {sig['host_runqueue']:.1f} on {cpus} CPUs")
    if sig.get("host_cpu_pressure", 0) >= 0.2:
        out.append(f"tasks waited for a CPU {sig['host_cpu_pressure']:.0%} of the time")
    if sig.get("host_cpu_softirq", 0) >= 0.1:
        out.append(f"softirq {sig['host_cpu_softirq']:.0%} of CPU time")
    if sig.get("host_foreign_cpu", 0) >= FOREIGN_SHARED:
        out.append(f"other work (not the testbed) used {sig['host_foreign_cpu']:.0%} of the host's CPU")
    if sig.get("host_delayer_late_ms", 0) >= DELAYER_LATE_MS:
        out.append(f"the link delayer released packets {sig['host_delayer_late_ms']:.1f} ms late on average "
                   f"({sig.get('host_delayer_late_share', 0):.0%} more than 1 ms late)")
    return out


@dataclass(frozen=True)
class FoldingResult:
    max_factor: int  # largest factor such that it and every smaller factor are faithful
    tolerance: float
    alpha: float
    table: pd.DataFrame
    verdicts: dict[int, str] = field(default_factory=dict)  # factor -> one of FACTOR_VERDICTS
    first_unfaithful: Optional[int] = None  # the breaking point: smallest factor with a metric worse
    violations: list[tuple[str, int, float]] = field(default_factory=list)  # (metric, factor, deviation) at it
    judged_on_mean: bool = False  # True when some decision had no interval (single repetition)
    signals: dict[int, dict[str, float]] = field(default_factory=dict)
    cpus: Optional[int] = None  # the host's CPUs, to read the run queue against
    design: str = "independent"  # how factors were compared with the baseline (DESIGNS)
    #: SD (log scale) of the host's CPU speed between points below the breaking point, from the
    #: warmer's reference work (``host_cpu_unit_us``); None where it was not recorded.
    host_speed_sd: Optional[float] = None

    @property
    def baseline(self) -> int:
        return int(min(self.table[PARAM]))

    @property
    def breaking_point(self) -> Optional[int]:
        return self.first_unfaithful

    @property
    def confidence(self) -> float:
        """Level of the deviation intervals (1 - 2·alpha)."""
        return 1 - 2 * self.alpha

    @property
    def inconclusive(self) -> list[int]:
        return [f for f, v in self.verdicts.items() if v == "inconclusive"]

    @property
    def max_without_degradation(self) -> int:
        """Largest factor such that it and every smaller factor rule out a degradation beyond the
        tolerance (faithful, not worse or better than the baseline)."""
        best = self.baseline
        for f in sorted(self.verdicts):
            if self.verdicts[f] not in NO_DEGRADATION:
                break
            best = f
        return best

    def decided_up_to_break(self) -> bool:
        """Every factor up to the breaking point (or every factor, if none broke) is decided."""
        limit = self.first_unfaithful if self.first_unfaithful is not None else math.inf
        return all(v != "inconclusive" for f, v in self.verdicts.items() if f <= limit)

    def needs_more(self) -> list[int]:
        """Factors whose verdict more repetitions could decide: the inconclusive ones up to the
        breaking point, the breaking point itself while a larger factor is not unfaithful, with
        the baseline (every comparison uses it)."""
        limit = self.first_unfaithful if self.first_unfaithful is not None else math.inf
        todo = [f for f, v in self.verdicts.items() if v == "inconclusive" and f <= limit]
        if self.first_unfaithful is not None and not all(
                v == "unfaithful" for f, v in self.verdicts.items() if f > self.first_unfaithful):
            # A break the larger factors do not confirm may be a fluke of few repetitions
            # (folding more should not measure better): measure it again too.
            todo.append(self.first_unfaithful)
        return sorted({self.baseline, *todo}) if todo else []

    def baseline_helps(self) -> bool:
        """Whether the next round should measure the baseline again, by Dunnett's allocation
        (Dunnett 1955: with k comparisons against one control, the control deserves √k times
        a treatment's repetitions, scaled by the ratio of their standard deviations): True when
        some undecided comparison has no more baseline repetitions than that. A baseline that
        is already precise next to a noisy factor (a factor near the break) is not
        repeated: its points would narrow nothing."""
        todo = [f for f in self.needs_more() if f != self.baseline]
        if not todo:
            return False
        t = self.table
        base = t[t[PARAM] == self.baseline].set_index("metric")
        k = math.sqrt(len(todo))
        for r in t[t[PARAM].isin(todo) & t["decision"].isin(("inconclusive", "worse"))].itertuples():
            sb, nb = base.at[r.metric, "sd"], base.at[r.metric, "n"]
            if not (r.sd > 0 and sb >= 0) or nb < 2:
                return True   # not enough to tell: measure it
            if nb <= k * (sb / r.sd) * r.n:   # a tie goes to the baseline: it serves every comparison
                return True
        return False

    def baseline_suspect(self) -> Optional[str]:
        """Why the baseline looks unrepresentative, or None: most folded factors below the
        breaking point measure *better* than the baseline on the same metric."""
        limit = self.first_unfaithful if self.first_unfaithful is not None else math.inf
        t = self.table[(self.table[PARAM] != self.baseline) & (self.table[PARAM] < limit)]
        if t.empty:
            return None
        notes = []
        for metric, grp in t.groupby("metric", sort=True):
            # better beyond the tolerance, or not worse with the estimate past half of it
            better = grp[(grp["decision"] == "better") | ((grp["decision"] == "not worse")
                                                         & (grp["degradation"].abs() >= self.tolerance / 2))]
            if len(better) and len(better) * 2 >= len(grp):
                devs = "/".join(f"{d:+.1%}" for d in better["degradation"])
                notes.append(f"{metric} at factors {','.join(str(int(f)) for f in better[PARAM])} ({devs})")
        if not notes:
            return None
        return ("the baseline looks unrepresentative: folded runs measure better than the "
                f"{self.baseline}-node baseline on " + "; ".join(notes)
                + " (a lone node on an idle host pays CPU wake-up latency: keep --warm-host on, "
                  "or take the baseline under a fixed background load)")

    def shared_host(self) -> dict[int, float]:
        """Factors (up to the breaking point, baseline included) during which other work than the
        testbed used a noticeable share of the host's CPU: factor -> that share."""
        limit = self.first_unfaithful if self.first_unfaithful is not None else math.inf
        return {f: sig["host_foreign_cpu"] for f, sig in sorted(self.signals.items())
                if f <= limit and sig.get("host_foreign_cpu", 0) >= FOREIGN_SHARED}

    def describe(self) -> str:
        blocked = {"blocked": ", the sweep's rounds as blocks",
                   "speed": ", adjusted for the host's measured CPU speed where it was external"}.get(self.design, "")
        basis = (f"two one-sided tests at α = {self.alpha:g} ({self.confidence:.0%} interval of the deviation{blocked})"
                 if not self.judged_on_mean else
                 "the mean deviation where a factor has one repetition (no interval), TOST elsewhere")
        per = ", ".join(f"{f} {v.upper() if v == 'unfaithful' else v}" for f, v in sorted(self.verdicts.items()))
        s = (f"Folding verdict per factor (tolerance ±{self.tolerance:.1%} of the {self.baseline}-node baseline, "
             f"judged on {basis}): {per}. Maximum faithful folding factor: {self.max_factor}.")
        if self.max_without_degradation > self.max_factor:
            s += (f" No degradation beyond the tolerance up to factor {self.max_without_degradation} (factors "
                  "measuring better than the baseline, or not worse, are not shown equivalent to it).")
        if self.first_unfaithful is not None:
            worst = ", ".join(f"{m} {d:+.1%}" for m, _, d in self.violations)
            s += f" Breaking point: factor {self.first_unfaithful} ({worst})"
            below = [f for f in sorted(self.verdicts) if f < self.first_unfaithful]
            if below:
                s += f", between {below[-1]} and {self.first_unfaithful}"
            cause = _overload_phrases(self.signals.get(self.first_unfaithful, {}), self.cpus)
            if cause:
                s += "; the host was overloaded there: " + ", ".join(cause)
            elif self.signals:
                s += "; no host overload signal explains it"
            s += "."
        else:
            s += (f" No factor up to {max(self.verdicts, default=self.baseline)} broke the tolerance "
                  f"(no limit found: larger factors were not tested).")
        if self.inconclusive:
            s += (f" Inconclusive (more repetitions needed): factor(s) "
                  f"{', '.join(str(f) for f in self.inconclusive)}.")
        if self.inconclusive and self.host_speed_sd is not None and self.host_speed_sd >= HOST_SPEED_NOISY:
            s += (f" The host's own CPU speed varied by ±{self.host_speed_sd:.0%} (SD) between points (the warmer's "
                  "reference work, host_cpu_unit_us): it moves every node of a point alike and is most of the "
                  "points' scatter; a dedicated host, or a larger --budget, decides sooner.")
        suspect = self.baseline_suspect()
        if suspect:
            s += f" Note: {suspect}."
        shared = self.shared_host()
        if shared:
            s += (" Caution: the host was shared with other work during factor(s) "
                  + ", ".join(f"{f} ({x:.0%} of its CPU)" for f, x in shared.items())
                  + ": those points measure that work too; rerun on a quiet host before attributing "
                    "their deviations to folding.")
        return s


def factor_verdict(decisions: set[str]) -> str:
    """A factor's verdict from its metrics' decisions (see the module docstring): one worse
    metric makes it unfaithful, then one inconclusive undecided, then one better suspect."""
    if "worse" in decisions:
        return "unfaithful"
    if "inconclusive" in decisions:
        return "inconclusive"
    if "better" in decisions:
        return "better"
    return "not worse" if "not worse" in decisions else "faithful"


def folding_verdict(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, *, tolerance: float = 0.05,
                    alpha: float = 0.05, param: str = PARAM, cpus: Optional[int] = None,
                    design: str = "independent") -> FoldingResult:
    """Per-factor verdicts, the breaking point and the maximum faithful factor, with the table."""
    if not tolerance > 0:
        raise ResultsError(f"folding: tolerance must be a positive fraction (e.g. 0.05), got {tolerance}")
    table = degradation_table(df, metrics, alpha=alpha, tolerance=tolerance, param=param, design=design)
    factors = [int(f) for f in sorted(table[param].unique())]
    judged_on_mean = not bool(table["ci_defined"].all())
    verdicts: dict[int, str] = {}
    first_bad: Optional[int] = None
    violations: list[tuple[str, int, float]] = []
    for f in factors[1:]:
        at = table[table[param] == f]
        verdicts[f] = factor_verdict(set(at["decision"]))
        if verdicts[f] == "unfaithful" and first_bad is None:
            first_bad = f
            violations = [(r.metric, f, float(r.degradation)) for r in at.itertuples() if r.decision == "worse"]
    best = factors[0]
    for f in factors[1:]:
        if verdicts[f] != "faithful":
            break
        best = f
    return FoldingResult(best, tolerance, alpha, table, verdicts, first_bad, violations, judged_on_mean,
                         host_signals(df, param), cpus, design, host_speed_sd(df, first_bad, param))


def host_speed_sd(df: pd.DataFrame, below: Optional[int] = None, param: str = PARAM) -> Optional[float]:
    """SD of log ``host_cpu_unit_us`` over the points of factors below ``below`` (the breaking
    point: beyond it the spinners share their cores with an overloaded testbed, and their speed
    measures that too), or None with fewer than 3 such points."""
    u = df[df["metric"] == "host_cpu_unit_us"]
    if below is not None and param in u.columns:
        u = u[u[param] < below]
    v = point_log_speed(u).to_numpy()
    return float(np.std(v, ddof=1)) if len(v) >= 3 else None


def max_faithful_factor(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, tolerance: float = 0.05,
                        alpha: float = 0.05) -> int:
    """Largest factor such that it and every smaller factor keep each metric within ``tolerance``."""
    return folding_verdict(df, metrics, tolerance=tolerance, alpha=alpha).max_factor
