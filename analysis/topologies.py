"""Which network kinds carry how many phones at which application rates.

A configuration (network, hops, n_phones, rate_rps) *fits* when its mean
error rate is below ``max_error_rate`` (1 %) and its mean p95 latency is below
the latency threshold. Per network (and hop count) and rate, the maximum
phone count is the largest N such that it and every smaller measured N fit —
capacity is a prefix property: a configuration that fits only above a failing
one is noise, not headroom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

import pandas as pd

from .load import ResultsError
from .tidy import has_metric, metric_samples, summarise

KEYS = ["network", "hops", "n_phones", "rate_rps"]


def fit_table(df: pd.DataFrame, *, threshold_ms: float, max_error_rate: float = 0.01,
              confidence: float = 0.95) -> pd.DataFrame:
    """Per configuration: mean error rate and p95 latency, and whether it fits."""
    keys = [k for k in KEYS if k in df.columns]
    for k in ("network", "n_phones"):
        if k not in keys:
            raise ResultsError(f"network_topologies: measurements lack the sweep parameter {k!r}")
    err = metric_samples(df, "error_rate", keys, where="network_topologies")
    if (df.loc[df["metric"] == "error_rate", "unit"] == "%").any():
        err = err.assign(value=err["value"] / 100.0)  # store fractions
    table = summarise(err, keys, confidence, "error_rate_")
    table = table.merge(summarise(metric_samples(df, "latency_ms_p95", keys), keys, confidence, "latency_ms_p95_"),
                        on=keys)
    for metric in ("goodput_mbit", "requests_per_s"):
        if has_metric(df, metric):
            table = table.merge(summarise(metric_samples(df, metric, keys), keys, confidence, f"{metric}_"),
                                on=keys, how="left")
    table["fits"] = (table["error_rate_mean"] < max_error_rate) & (table["latency_ms_p95_mean"] < threshold_ms)
    return table.sort_values(keys).reset_index(drop=True)


def capacity(fits: pd.DataFrame) -> pd.DataFrame:
    """Per (network, hops, rate): the largest phone count reached without a failing configuration."""
    group = [k for k in ("network", "hops", "rate_rps") if k in fits.columns]
    rows = []
    for key, grp in fits.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        best: Optional[int] = None
        failing: Optional[int] = None
        for r in grp.sort_values("n_phones").itertuples():
            if not r.fits:
                failing = int(r.n_phones)
                break
            best = int(r.n_phones)
        rows.append({**dict(zip(group, key)), "max_phones": best, "first_failing": failing,
                     "measured_phones": ",".join(str(int(n)) for n in sorted(grp["n_phones"]))})
    out = pd.DataFrame(rows)
    for col in ("max_phones", "first_failing"):
        out[col] = out[col].astype("Int64")  # None stays missing, not NaN-as-float
    return out


def bound_text(max_phones, first_failing, measured: str) -> str:
    """What a capacity says about what was tested: a limit found (the next count failed) is
    not the same as "everything tested fit", and one measured count bounds nothing."""
    phones = lambda n: f"{n} phone{'s' if n != 1 else ''}"  # noqa: E731
    if pd.isna(max_phones):
        return f"no phone count fits ({phones(int(first_failing))} failed)" if not pd.isna(first_failing) \
            else "no phone count fits"
    if not pd.isna(first_failing):
        return f"fits up to {phones(int(max_phones))} ({int(first_failing)} failed)"
    counts = [c for c in str(measured).split(",") if c]
    if len(counts) <= 1:
        return f"fits at {phones(int(max_phones))}, the only count tested (no limit found)"
    return f"fits all tested, up to {phones(int(max_phones))} (no limit found)"


def fitting_rates(fits: pd.DataFrame) -> pd.DataFrame:
    """Per (network, hops, n_phones): the application rates that fit, as a readable list."""
    if "rate_rps" not in fits.columns:
        return pd.DataFrame()
    group = [k for k in ("network", "hops", "n_phones") if k in fits.columns]
    rows = []
    for key, grp in fits.groupby(group, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        ok = sorted(grp.loc[grp["fits"], "rate_rps"])
        rows.append({**dict(zip(group, key)), "fitting_rates_rps": ", ".join(f"{r:g}" for r in ok) or "none"})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class TopologiesResult:
    fits: pd.DataFrame
    capacity: pd.DataFrame
    rates: pd.DataFrame
    threshold_ms: float
    max_error_rate: float
    #: (network, hops, rate_rps) -> phone counts whose points were excluded (unhealthy, failed, incomplete)
    excluded: dict = field(default_factory=dict)

    def describe(self) -> str:
        parts = []
        for r in self.capacity.to_dict("records"):
            where = r["network"] + (f" ({int(r['hops'])} hops)" if r.get("hops", 1) not in (1, None) else "")
            rate = f" at {r['rate_rps']:g} req/s" if "rate_rps" in r else ""
            text = bound_text(r["max_phones"], r["first_failing"], r["measured_phones"])
            gone = self.excluded.get((r["network"], int(r.get("hops", 1) or 1), float(r.get("rate_rps", 0.0))))
            if gone:   # a count that was not judged is neither a limit nor headroom
                text += f"; not judged: {', '.join(map(str, sorted(gone)))} phones (excluded)"
            parts.append(f"{where}{rate}: {text}")
        return (f"Configurations fit when error rate < {self.max_error_rate:.0%} and p95 < {self.threshold_ms:g} ms. "
                + "; ".join(parts) + ".")


def excluded_configurations(point_ids: Iterable[str]) -> dict[tuple, set[int]]:
    """(network, hops, rate_rps) -> excluded phone counts, from point ids such as
    ``hops=1,n_phones=4,network=wifi,rate_rps=4.0,rep=0`` (:func:`edgelab.results.point_id`)."""
    out: dict[tuple, set[int]] = {}
    for pid in point_ids:
        kv = dict(part.split("=", 1) for part in pid.split(",") if "=" in part)
        try:
            key = (kv["network"], int(kv.get("hops", 1)), float(kv.get("rate_rps", 0.0)))
            out.setdefault(key, set()).add(int(kv["n_phones"]))
        except (KeyError, ValueError):
            continue   # not a network_topologies point: nothing to say per configuration
    return out


def topology_capacity(df: pd.DataFrame, *, threshold_ms: float, max_error_rate: float = 0.01,
                      confidence: float = 0.95, excluded: Iterable[str] = ()) -> TopologiesResult:
    """Capacities from ``df``; ``excluded``: ids of points left out, named where they fall."""
    fits = fit_table(df, threshold_ms=threshold_ms, max_error_rate=max_error_rate, confidence=confidence)
    return TopologiesResult(fits, capacity(fits), fitting_rates(fits), threshold_ms, max_error_rate,
                            excluded_configurations(excluded))
