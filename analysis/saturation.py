"""Saturation point of the Wi-Fi scaling experiment.

Definition (the question "how many phones can share one AP before the app
saturates?"): the smallest phone count N at which either

* ``goodput_plateau`` — aggregate goodput stops rising: the mean gain to the
  next measured N is below ``epsilon`` (relative, default 5 %) of the goodput
  at N, i.e. adding phones no longer adds useful throughput; or
* ``latency`` — the mean p95 request latency at N exceeds the threshold
  (the manifest's ``latency_threshold_ms`` unless given).

Means over repetitions are used for the decision (the criterion is about the
expected curve); the CIs are reported with the curve so a reader can judge
whether the step that fired is resolved by the data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from .load import ResultsError
from .tidy import has_metric, metric_samples, summarise

PARAM = "n_phones"
GOODPUT = "goodput_mbit"
P95 = "latency_ms_p95"
OPTIONAL_CURVES = ("latency_ms_p50", "latency_ms_p99", "airtime_capacity_mbit", "requests_per_s",
                   "phone_cpu_ms_per_request")


@dataclass(frozen=True)
class SaturationResult:
    """The saturation point (None when the sweep never saturated) and the curve it was read from."""

    n: Optional[int]
    criteria: tuple[str, ...]  # which criteria fired at n: "goodput_plateau", "latency"
    epsilon: float
    threshold_ms: Optional[float]
    curve: pd.DataFrame  # one row per N: <metric>_mean/_ci_low/_ci_high/_n, goodput_gain

    @property
    def criterion(self) -> str:
        return "+".join(self.criteria) if self.criteria else "not_reached"

    def describe(self) -> str:
        """One sentence for the report."""
        if self.n is None:
            top = int(self.curve[PARAM].max()) if not self.curve.empty else 0
            tested = ", ".join(str(int(n)) for n in self.curve[PARAM]) if not self.curve.empty else "none"
            return (f"No saturation up to {top} phones, the largest count tested ({tested}; a limit, if any, "
                    f"lies beyond): aggregate goodput still rose by at least "
                    f"{self.epsilon:.0%} per step" + (f" and p95 latency stayed below {self.threshold_ms:g} ms"
                                                      if self.threshold_ms is not None else "") + ".")
        row = self.curve[self.curve[PARAM] == self.n].iloc[0]
        reasons = []
        if "goodput_plateau" in self.criteria:
            later = self.curve[self.curve[PARAM] > self.n][PARAM]
            nxt = f"N = {int(later.iloc[0])}, the next count tested" if not later.empty else "the next N"
            reasons.append(f"aggregate goodput stops rising ({row['goodput_gain']:+.1%} to {nxt}, "
                           f"below {self.epsilon:.0%}; {row['goodput_mbit_mean']:.1f} Mbit/s)")
        if "latency" in self.criteria:
            reasons.append(f"mean p95 latency {row['latency_ms_p95_mean']:.0f} ms exceeds "
                           f"{self.threshold_ms:g} ms")
        return f"Saturation point: N = {self.n} phones — " + " and ".join(reasons) + "."


def saturation_curve(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Per N: mean and CI of aggregate goodput, latency percentiles and the airtime capacity."""
    curve = summarise(metric_samples(df, GOODPUT, [PARAM], where="wifi_scaling"), [PARAM], confidence, "goodput_mbit_")
    for metric in (P95, *OPTIONAL_CURVES):
        if has_metric(df, metric):
            part = summarise(metric_samples(df, metric, [PARAM]), [PARAM], confidence, f"{metric}_")
            curve = curve.merge(part, on=PARAM, how="left")
    curve = curve.sort_values(PARAM).reset_index(drop=True)
    g = curve["goodput_mbit_mean"]
    curve["goodput_gain"] = (g.shift(-1) - g) / g.abs()  # relative gain from this N to the next
    return curve


def saturation_point(df: pd.DataFrame, *, epsilon: float = 0.05, threshold_ms: Optional[float] = None,
                     confidence: float = 0.95) -> SaturationResult:
    """Smallest N where goodput stops rising (gain < epsilon) or mean p95 > threshold_ms."""
    if not 0 < epsilon < 1:
        raise ResultsError(f"epsilon must be a fraction in (0, 1), got {epsilon}")
    if threshold_ms is not None and not has_metric(df, P95):
        raise ResultsError(f"a latency threshold was given but the run has no {P95!r} measurements")
    curve = saturation_curve(df, confidence)
    for _, row in curve.iterrows():
        fired = []
        gain = row["goodput_gain"]
        if not math.isnan(gain) and gain < epsilon:
            fired.append("goodput_plateau")
        if threshold_ms is not None and row.get(f"{P95}_mean", math.nan) > threshold_ms:
            fired.append("latency")
        if fired:
            return SaturationResult(int(row[PARAM]), tuple(fired), epsilon, threshold_ms, curve)
    return SaturationResult(None, (), epsilon, threshold_ms, curve)


def saturation_for_run(run, *, epsilon: float = 0.05, threshold_ms: Optional[float] = None) -> SaturationResult:
    """Saturation of a loaded run, taking the latency threshold from its manifest params."""
    if threshold_ms is None:
        threshold_ms = run.params.get("latency_threshold_ms")
    return saturation_point(run.df, epsilon=epsilon,
                            threshold_ms=float(threshold_ms) if threshold_ms is not None else None)
