"""Per-phone throughput of a mixed-rate Wi-Fi cell: the 802.11 performance anomaly.

Heusse et al. (INFOCOM 2003): DCF gives every saturated station the same
chance to send, so one phone at a low rate holds the air longer per frame and
every phone's throughput falls towards its own. ``wifi_scaling --slow-phones
K`` records, per phone, its saturated TCP share (``iperf_goodput_mbit``), its
MCS and the model's share; this module lays them side by side, and against
what each phone would get were all phones fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from .load import ResultsError

#: TCP payload per L2 frame the airtime budget charges (1448 B of 1514 B): model shares are
#: L2 budget rates, measured shares TCP goodput.
TCP_PER_FRAME = 1448 / 1514


@dataclass(frozen=True)
class AnomalyResult:
    #: one row per (n_phones, phone): mcs, phy_mbit, measured_mbit (mean over reps), model_mbit, slow
    phones: pd.DataFrame
    #: one row per n_phones: measured/model means of fast and slow phones, all-fast model
    summary: pd.DataFrame

    @property
    def mixed(self) -> bool:
        return bool(self.phones["slow"].any())

    def describe(self) -> str:
        if not self.mixed:
            return "All phones at one rate: no anomaly to show."
        worst = self.summary.dropna(subset=["fast_measured_mbit"]).iloc[-1]
        return (f"With {int(worst['slow_phones'])} slow phone(s) among N = {int(worst['n_phones'])}, each fast phone "
                f"got {worst['fast_measured_mbit']:.2f} Mbit/s (model {worst['fast_model_mbit']:.2f}) where an "
                f"all-fast cell would give it {worst['all_fast_model_mbit']:.2f}: the 802.11 performance anomaly.")


def _per_node(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = df[(df["metric"] == metric) & (df["node"] != "")]
    return rows.groupby(["n_phones", "node"], as_index=False)["value"].mean().rename(columns={"value": metric})


def anomaly_table(df: pd.DataFrame) -> AnomalyResult:
    """Per-phone measured and modelled shares from a wifi_scaling run's tidy measurements."""
    need = ["iperf_goodput_mbit", "model_share_mbit", "station_mcs", "station_phy_mbit"]
    missing = [m for m in need if not (df["metric"] == m).any()]
    if missing or "n_phones" not in df.columns:
        raise ResultsError(f"no per-phone Wi-Fi shares in this run (missing {', '.join(missing) or 'n_phones'})")
    t = _per_node(df, need[0])
    for m in need[1:]:
        t = t.merge(_per_node(df, m), on=["n_phones", "node"], how="inner")
    t = t.rename(columns={"iperf_goodput_mbit": "measured_mbit", "station_phy_mbit": "phy_mbit",
                          "station_mcs": "mcs"})
    t["model_mbit"] = t["model_share_mbit"] * TCP_PER_FRAME
    # Slow: below the fastest rate of the whole run (a point may hold only slow phones: N <= K).
    t["slow"] = t["phy_mbit"] < t["phy_mbit"].max()
    allfast = df[(df["metric"] == "model_share_all_fast_mbit") & (df["node"] == "")] \
        .groupby("n_phones")["value"].mean() * TCP_PER_FRAME
    rows = []
    for n, grp in t.groupby("n_phones", sort=True):
        fast, slow = grp[~grp["slow"]], grp[grp["slow"]]
        rows.append({"n_phones": n, "slow_phones": len(slow),
                     "fast_measured_mbit": fast["measured_mbit"].mean() if len(fast) else float("nan"),
                     "fast_model_mbit": fast["model_mbit"].mean() if len(fast) else float("nan"),
                     "slow_measured_mbit": slow["measured_mbit"].mean() if len(slow) else float("nan"),
                     "slow_model_mbit": slow["model_mbit"].mean() if len(slow) else float("nan"),
                     "all_fast_model_mbit": allfast.get(n, float("nan"))})
    return AnomalyResult(phones=t.drop(columns=["model_share_mbit"]).sort_values(["n_phones", "node"]),
                         summary=pd.DataFrame(rows))
