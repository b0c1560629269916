"""Figures for each experiment, captioned with the facts that make them reproducible.

Figures are built with ``matplotlib.figure.Figure`` directly (no pyplot), so
plotting never touches global backend state and works headless: saving goes
through the Agg (PNG) and SVG canvases. Every figure carries a caption line
naming the experiment, run id, git revision, backend, link engine and date,
because a figure separated from its run must still say where it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .anomaly import AnomalyResult
from .energy import EnergyResult
from .folding import FoldingResult
from .saturation import SaturationResult
from .topologies import TopologiesResult

CAPTION_SPACE = 0.06  # fraction of figure height kept free for the caption


def caption(manifest: dict) -> str:
    """One line of provenance for a figure."""
    git = manifest.get("git") or {}
    rev = str(git.get("rev") or "unknown")[:10] + ("-dirty" if git.get("dirty") else "")
    facts = manifest.get("facts") or {}
    date = str(manifest.get("started") or "")[:10] or "undated"
    parts = [str(manifest.get("experiment", "?")), f"run {manifest.get('run_id', '?')}", f"git {rev}",
             f"backend {manifest.get('backend', '?')}", f"link engine {facts.get('link_engine', 'n/a')}", date]
    if manifest.get("status") not in (None, "complete"):
        parts.append(f"status {manifest['status'].upper()}")
    return " · ".join(parts)


def _finish(fig: Figure, text: str) -> Figure:
    fig.text(0.5, 0.012, text, ha="center", va="bottom", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, CAPTION_SPACE, 1, 1))
    return fig


def _yerr(table: pd.DataFrame, prefix: str) -> Optional[np.ndarray]:
    """Asymmetric error bars from CI columns, or None when no interval exists (one repetition)."""
    low, high, mean = table[f"{prefix}ci_low"], table[f"{prefix}ci_high"], table[f"{prefix}mean"]
    if low.isna().all():
        return None
    return np.vstack([(mean - low).fillna(0).to_numpy(), (high - mean).fillna(0).to_numpy()])


def saturation_figure(result: SaturationResult, manifest: dict) -> Figure:
    """Aggregate goodput (with the airtime capacity) and latency percentiles versus phone count."""
    c = result.curve
    n = c["n_phones"]
    fig = Figure(figsize=(10, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    ax1.errorbar(n, c["goodput_mbit_mean"], yerr=_yerr(c, "goodput_mbit_"), marker="o", capsize=3,
                 label="aggregate goodput (mean, 95% CI)")
    if "airtime_capacity_mbit_mean" in c:
        ax1.plot(n, c["airtime_capacity_mbit_mean"], "k--", label="airtime capacity (Bianchi model)")
    ax1.set_xlabel("phones N")
    ax1.set_ylabel("Mbit/s")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Throughput vs phones")
    for ax in (ax1, ax2):
        if result.n is not None:
            ax.axvline(result.n, color="tab:red", ls=":", lw=1.5, label=f"saturation N={result.n} ({result.criterion})")
    ax1.legend(fontsize=8, loc="lower right")
    for pct, style in (("p50", "s-"), ("p95", "o-"), ("p99", "^-")):
        col = f"latency_ms_{pct}_"
        if f"{col}mean" in c:
            ax2.errorbar(n, c[f"{col}mean"], yerr=_yerr(c, col), fmt=style, capsize=3, label=f"latency {pct}")
    if result.threshold_ms is not None:
        ax2.axhline(result.threshold_ms, color="0.4", ls="--", label=f"threshold {result.threshold_ms:g} ms")
    ax2.set_yscale("log")
    ax2.set_xlabel("phones N")
    ax2.set_ylabel("request latency (ms)")
    ax2.set_title("Latency vs phones")
    ax2.legend(fontsize=8, loc="upper left")
    if len(n) and n.max() / max(n.min(), 1) >= 16:  # 1..64-phone sweeps: doubling steps read best on log2
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xticks(list(n))
            ax.set_xticklabels([str(int(v)) for v in n])
    return _finish(fig, caption(manifest))


def folding_figure(result: FoldingResult, manifest: dict) -> Figure:
    """Relative degradation of every metric versus folding factor, with CIs and the tolerance band."""
    t = result.table
    fig = Figure(figsize=(8, 4.8))
    ax = fig.subplots()
    ax.axhspan(-result.tolerance * 100, result.tolerance * 100, color="tab:green", alpha=0.08)
    for sign in (1, -1):
        ax.axhline(sign * result.tolerance * 100, color="tab:green", ls="--", lw=1,
                   label=f"tolerance ±{result.tolerance:.0%}" if sign > 0 else None)
    for metric, grp in t.groupby("metric", sort=True):
        grp = grp.sort_values("factor")
        deg = grp["degradation"] * 100
        low = (grp["degradation"] - grp["degradation_ci_low"]).fillna(0) * 100
        high = (grp["degradation_ci_high"] - grp["degradation"]).fillna(0) * 100
        ax.errorbar(grp["factor"], deg, yerr=np.vstack([low, high]), marker="o", capsize=3, label=metric)
    ax.axvline(result.max_factor, color="tab:green", ls=":", label=f"max faithful factor {result.max_factor}")
    if result.max_without_degradation > result.max_factor:
        ax.axvline(result.max_without_degradation, color="tab:olive", ls=":",
                   label=f"no degradation up to {result.max_without_degradation}")
    if result.breaking_point is not None:
        ax.axvline(result.breaking_point, color="tab:red", ls=":", label=f"breaking point {result.breaking_point}")
    ax.set_xscale("log", base=2)
    factors = sorted(t["factor"].unique())
    ax.set_xticks(factors)
    ax.set_xticklabels([str(f) for f in factors])
    ax.set_xlabel("folding factor (virtual nodes per physical host)")
    ax.set_ylabel(f"deviation from factor {factors[0]} (%)")
    ax.set_title(f"Folding fidelity ({result.confidence:.0%} intervals: TOST at α = {result.alpha:g})")
    ax.legend(fontsize=8, loc="upper left")
    return _finish(fig, caption(manifest))


def energy_figure(result: EnergyResult, manifest: dict) -> Figure:
    """Joules per invocation (and throughput) versus FaaS workers."""
    t = result.table
    fig = Figure(figsize=(7, 4.4))
    ax = fig.subplots()
    ax.errorbar(t["n_workers"], t["energy_j_mean"], yerr=_yerr(t, "energy_j_"), marker="o", capsize=3,
                color="tab:orange", label="energy per invocation")
    ax.set_xlabel("workers")
    ax.set_ylabel("J per invocation", color="tab:orange")
    ax.set_ylim(bottom=0)
    if result.best_workers is not None:
        ax.axvline(result.best_workers, color="tab:red", ls=":", label=f"lowest at {result.best_workers} workers")
    handles, labels = ax.get_legend_handles_labels()
    if "invocations_per_s_mean" in t:
        ax2 = ax.twinx()
        ax2.plot(t["n_workers"], t["invocations_per_s_mean"], "s--", color="tab:blue", label="invocations/s")
        ax2.set_ylabel("invocations/s", color="tab:blue")
        ax2.set_ylim(bottom=0)
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="lower right")
    ax.set_title("FaaS energy per invocation vs workers")
    return _finish(fig, caption(manifest))


def topologies_figure(result: TopologiesResult, manifest: dict) -> Figure:
    """p95 latency and error rate versus phones, per network kind, one column per application rate."""
    f = result.fits
    rates = sorted(f["rate_rps"].unique()) if "rate_rps" in f else [None]
    fig = Figure(figsize=(4.6 * len(rates) + 2.5, 7))
    axes = np.atleast_2d(fig.subplots(2, len(rates), squeeze=False))
    series = [k for k in ("network", "hops") if k in f.columns]
    colors = matplotlib.colormaps["tab10"]
    for col, rate in enumerate(rates):
        sub = f if rate is None else f[f["rate_rps"] == rate]
        lat, err = axes[0, col], axes[1, col]
        for i, (key, grp) in enumerate(sub.groupby(series, sort=True)):
            key = key if isinstance(key, tuple) else (key,)
            label = key[0] + (f" ({key[1]} hops)" if len(key) > 1 and key[1] != 1 else "")
            grp = grp.sort_values("n_phones")
            color = colors(i % 10)
            lat.plot(grp["n_phones"], grp["latency_ms_p95_mean"], "-", color=color, label=label)
            err.plot(grp["n_phones"], grp["error_rate_mean"] * 100, "-", color=color, label=label)
            for ax, y in ((lat, grp["latency_ms_p95_mean"]), (err, grp["error_rate_mean"] * 100)):
                # filled markers fit, hollow ones do not
                ax.scatter(grp["n_phones"], y, color=color, zorder=3,
                           facecolors=[color if ok else "white" for ok in grp["fits"]])
        lat.axhline(result.threshold_ms, color="0.4", ls="--", label=f"p95 threshold {result.threshold_ms:g} ms")
        err.axhline(result.max_error_rate * 100, color="0.4", ls="--", label=f"error limit {result.max_error_rate:.0%}")
        lat.set_yscale("log")
        err.set_yscale("symlog", linthresh=0.1)
        err.set_ylim(bottom=0)
        where = f" at {rate:g} req/s per phone" if rate is not None else ""
        lat.set_title(f"p95 latency{where}", fontsize=10)
        err.set_title(f"error rate{where}", fontsize=10)
        lat.set_ylabel("p95 latency (ms)")
        err.set_ylabel("error rate (%)")
        err.set_xlabel("phones")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    axes[1, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle("Network kinds compared (filled marker = fits, hollow = does not)", fontsize=11)
    return _finish(fig, caption(manifest))


def anomaly_figure(result: "AnomalyResult", manifest: dict) -> Figure:
    """Per-phone saturated throughput: fast and slow phones, measured and modelled, and what a
    fast phone would get in an all-fast cell (the gap is the performance anomaly)."""
    s = result.summary
    t = result.phones
    fig = Figure(figsize=(10, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    n = s["n_phones"]
    ax1.plot(n, s["all_fast_model_mbit"], "k--", label="a phone, all phones fast (model)")
    ax1.plot(n, s["fast_measured_mbit"], "o-", color="tab:blue", label="fast phones (measured)")
    ax1.plot(n, s["fast_model_mbit"], "x:", color="tab:blue", label="fast phones (model)")
    if s["slow_phones"].any():
        ax1.plot(n, s["slow_measured_mbit"], "s-", color="tab:red", label="slow phones (measured)")
        ax1.plot(n, s["slow_model_mbit"], "x:", color="tab:red", label="slow phones (model)")
    ax1.set_xlabel("phones N")
    ax1.set_ylabel("saturated TCP goodput per phone (Mbit/s)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("Per-phone share vs phones")
    ax1.legend(fontsize=7, loc="upper right")
    last = t[t["n_phones"] == t["n_phones"].max()].reset_index(drop=True)
    x = np.arange(len(last))
    colors = ["tab:red" if slow else "tab:blue" for slow in last["slow"]]
    ax2.bar(x, last["measured_mbit"], color=colors, alpha=0.8, label="measured")
    ax2.plot(x, last["model_mbit"], "k_", markersize=18, mew=2, ls="none", label="model")
    ax2.set_xticks(x)
    ax2.set_xticklabels([f"{nd}\nMCS {int(m)}" if m >= 0 else f"{nd}\nprofile" for nd, m in
                         zip(last["node"], last["mcs"])], fontsize=7)
    ax2.set_ylabel("Mbit/s")
    ax2.set_title(f"Each phone at N = {int(t['n_phones'].max())} (red: slow)")
    ax2.legend(fontsize=8)
    return _finish(fig, caption(manifest))


def save_figure(fig: Figure, out_dir: Path, stem: str) -> list[Path]:
    """Write ``stem.png`` and ``stem.svg``; metadata dates are dropped so reruns give identical files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    png, svg = out_dir / f"{stem}.png", out_dir / f"{stem}.svg"
    fig.savefig(png, dpi=150, metadata={"Software": None})
    with matplotlib.rc_context({"svg.hashsalt": stem}):
        fig.savefig(svg, metadata={"Date": None})
    return [png, svg]
