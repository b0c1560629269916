"""Reducing tidy measurements to one sample per sweep point, then to means with CIs.

Why "one sample per point": repetitions are the independent unit of an
experiment; nodes within one point share the same run and are not. So the
statistics work on per-point values: the aggregate row (node empty) when the
experiment recorded one, else the mean over the nodes of that point.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from .load import ResultsError
from .stats import mean_ci


def metric_samples(df: pd.DataFrame, metric: str, by: Sequence[str], *, where: str = "") -> pd.DataFrame:
    """One row per sweep point: the ``by`` columns, ``point`` and ``value`` of ``metric``."""
    by = list(by)
    missing = [c for c in ["point", *by] if c not in df.columns]
    if missing:
        raise ResultsError(f"{where or 'measurements'}: column(s) {', '.join(missing)} missing")
    rows = df[df["metric"] == metric]
    if rows.empty:
        known = ", ".join(sorted(df["metric"].unique())) or "none"
        raise ResultsError(f"{where or 'measurements'}: no {metric!r} measurements (metrics present: {known})")
    aggregate = rows[rows["node"] == ""]
    per_node = rows[~rows["point"].isin(aggregate["point"])]
    parts = [aggregate.groupby(["point", *by], as_index=False)["value"].mean()]
    if not per_node.empty:
        parts.append(per_node.groupby(["point", *by], as_index=False)["value"].mean())
    return pd.concat(parts, ignore_index=True).sort_values(by + ["point"]).reset_index(drop=True)


def summarise(samples: pd.DataFrame, by: Sequence[str], confidence: float = 0.95, prefix: str = "") -> pd.DataFrame:
    """Mean, CI bounds and repetition count of ``value`` per group of ``by``."""
    out = []
    for key, grp in samples.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ci = mean_ci(grp["value"].to_numpy(), confidence)
        out.append({**dict(zip(by, key)), f"{prefix}mean": ci.estimate, f"{prefix}ci_low": ci.low,
                    f"{prefix}ci_high": ci.high, f"{prefix}n": ci.n})
    return pd.DataFrame(out)


def has_metric(df: pd.DataFrame, metric: str) -> bool:
    return bool((df["metric"] == metric).any())
