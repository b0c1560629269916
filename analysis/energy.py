"""Energy per FaaS invocation versus the number of workers.

Uses the recorded ``energy_per_invocation_j`` when present; otherwise derives
it per sweep point as ``power_w / invocations_per_s`` (a watt is a joule per
second), so runs from meters that only log power still answer the question.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pandas as pd

from .load import ResultsError
from .tidy import has_metric, metric_samples, summarise

PARAM = "n_workers"
ENERGY = "energy_per_invocation_j"


def energy_samples(df: pd.DataFrame) -> pd.DataFrame:
    """Joules per invocation, one value per sweep point."""
    if has_metric(df, ENERGY):
        return metric_samples(df, ENERGY, [PARAM], where="faas_energy")
    if has_metric(df, "power_w") and has_metric(df, "invocations_per_s"):
        # total power of the point (aggregate row, else sum over nodes) over its throughput
        p = df[df["metric"] == "power_w"]
        agg = p[p["node"] == ""]
        power = agg if not agg.empty else p
        power = power.groupby(["point", PARAM], as_index=False)["value"].sum()
        rate = metric_samples(df, "invocations_per_s", [PARAM])
        merged = power.merge(rate, on=["point", PARAM], suffixes=("_w", "_rps"))
        merged = merged[merged["value_rps"] > 0]
        merged["value"] = merged["value_w"] / merged["value_rps"]
        return merged[["point", PARAM, "value"]]
    raise ResultsError(f"faas_energy: need {ENERGY!r}, or both 'power_w' and 'invocations_per_s' measurements")


@dataclass(frozen=True)
class EnergyResult:
    table: pd.DataFrame  # per n_workers: energy_j_* and (when measured) invocations_per_s_*, latency_ms_p95_*
    best_workers: Optional[int]  # the worker count with the lowest mean joules per invocation

    def describe(self) -> str:
        if self.best_workers is None:
            return "No energy measurements."
        row = self.table[self.table[PARAM] == self.best_workers].iloc[0]
        tested = ", ".join(str(int(n)) for n in self.table[PARAM])
        return (f"Lowest energy per invocation: {row['energy_j_mean']:.3g} J with {self.best_workers} worker(s)"
                + (f" ({row['invocations_per_s_mean']:.3g} invocations/s)" if "invocations_per_s_mean" in row else "")
                + f", among the worker counts tested ({tested}).")


def energy_per_invocation(df: pd.DataFrame, confidence: float = 0.95) -> EnergyResult:
    table = summarise(energy_samples(df), [PARAM], confidence, "energy_j_")
    for metric in ("invocations_per_s", "latency_ms_p95", "power_w"):
        if has_metric(df, metric):
            table = table.merge(summarise(metric_samples(df, metric, [PARAM]), [PARAM], confidence, f"{metric}_"),
                                on=PARAM, how="left")
    table = table.sort_values(PARAM).reset_index(drop=True)
    best = int(table.loc[table["energy_j_mean"].idxmin(), PARAM]) if not table.empty else None
    return EnergyResult(table, best)
