"""The file-system folding experiment's analysis: bandwidth vs folding factor, the verdict
of :mod:`analysis.folding`, and the folding paper's rule of thumb overlaid.

Guilloteau, Richard, Bleuse, Rutten ("Folding a Cluster containing a Distributed
File-System", hal-04038000) fold OrangeFS and NFS clusters on Grid'5000 and fit
``f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io``: the folding factor beyond which IOR's
bandwidth degrades, given the CPU (client) and I/O (server) node counts. Here each
sweep point has its own ``nb_cpu`` and ``nb_io`` (all nodes on one host: the factor
is ``nb_cpu + nb_io``), so the rule gives one predicted ``f_break`` per point; the
rule predicts a faithful point where its factor is at most that value.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .folding import FoldingResult
from .plots import _finish, caption
from .tidy import metric_samples, summarise

BANDWIDTH = {"throughput_write_mib_s": "write", "throughput_read_mib_s": "read"}
METADATA = "throughput_create_ops_s"


def rule_of_thumb(nb_cpu: float, nb_io: float) -> float:
    """f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io (hal-04038000)."""
    return 1 + 0.3 * nb_cpu - 0.5 * nb_io


def rule_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per factor: nb_cpu, nb_io, the rule's f_break and whether it predicts a faithful point."""
    pts = df.drop_duplicates("point")[["factor", "nb_cpu", "nb_io"]].drop_duplicates().sort_values("factor")
    pts = pts.astype(int)
    pts["rule_f_break"] = [rule_of_thumb(c, i) for c, i in zip(pts["nb_cpu"], pts["nb_io"])]
    pts["rule_predicts"] = np.where(pts["factor"] <= pts["rule_f_break"], "faithful", "broken")
    return pts.reset_index(drop=True)


def bandwidth_table(df: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Mean per-client bandwidth (and creations/s) per factor, with CIs."""
    out = None
    for metric in [*BANDWIDTH, METADATA]:
        if not (df["metric"] == metric).any():
            continue
        s = summarise(metric_samples(df, metric, ["factor"], where="fs_folding"), ["factor"], confidence,
                      prefix=f"{metric}_")
        out = s if out is None else out.merge(s, on="factor", how="outer")
    return out if out is not None else pd.DataFrame({"factor": []})


def fs_folding_figure(df: pd.DataFrame, result: Optional[FoldingResult], manifest: dict) -> Figure:
    """Per-client bandwidth vs factor (left), the rule of thumb's f_break vs factor (right)."""
    t = bandwidth_table(df)
    rules = rule_table(df)
    fig = Figure(figsize=(11, 4.6))
    ax, ax2 = fig.subplots(1, 2)
    for metric, label in BANDWIDTH.items():
        if f"{metric}_mean" not in t:
            continue
        m = t[f"{metric}_mean"]
        err = np.vstack([(m - t[f"{metric}_ci_low"]).fillna(0), (t[f"{metric}_ci_high"] - m).fillna(0)])
        ax.errorbar(t["factor"], m, yerr=err, marker="o", capsize=3, label=f"{label} MiB/s per client")
    if f"{METADATA}_mean" in t:
        axm = ax.twinx()
        axm.plot(t["factor"], t[f"{METADATA}_mean"], "s--", color="tab:gray", label="file creations/s per client")
        axm.set_ylabel("creations/s per client", color="tab:gray")
        axm.set_ylim(bottom=0)
    if result is not None and result.breaking_point is not None:
        ax.axvline(result.breaking_point, color="tab:red", ls=":", label=f"measured breaking point {result.breaking_point}")
    predicted = rules[rules["rule_predicts"] == "broken"]["factor"]
    if len(predicted):
        ax.axvline(int(predicted.iloc[0]), color="tab:purple", ls="--",
                   label=f"rule of thumb: breaks from {int(predicted.iloc[0])}")
    ax.set_xlabel("folding factor (virtual nodes per host = nb_cpu + nb_io)")
    ax.set_ylabel("MiB/s per client")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title("Bandwidth vs folding")
    ax2.plot(rules["factor"], rules["factor"], "k-", lw=1, label="folding factor f")
    ax2.plot(rules["factor"], rules["rule_f_break"], "o--", color="tab:purple",
             label="f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io")
    ax2.fill_between(rules["factor"], rules["rule_f_break"], rules["factor"],
                     where=rules["factor"] > rules["rule_f_break"], color="tab:red", alpha=0.1,
                     label="rule predicts degraded (f > f_break)")
    ax2.set_xlabel("folding factor")
    ax2.set_ylabel("factor")
    ax2.legend(fontsize=8, loc="upper left")
    ax2.set_title("The paper's rule of thumb at each point")
    return _finish(fig, caption(manifest))
