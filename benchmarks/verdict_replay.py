#!/usr/bin/env python3
"""Replay the adaptive stopping of finished folding runs with the independent and the blocked verdict.

Why: whether the blocked comparison (:mod:`analysis.blocked`: the sweep's rounds as
blocks of a randomized complete block design) decides a quick folding sweep sooner than
Welch's independent-samples comparison is a question the runs already on disk answer at
no CPU cost. For each run the points are taken in measuring order and cut into rounds
(:func:`analysis.blocked.blocks`); after each round from the last initial one on (the
adaptive loop first judges then), both verdicts are computed on the points measured so
far. A verdict *decides* when the adaptive loop would stop (``needs_more()`` is empty).
Printed per run: when each would have decided (seconds since the run started, and the
round), the breaking point each gives there, and both on all the run's points.

Caveat: the runs were steered by the independent verdict (which factors each adaptive
round repeated); a blocked verdict that decides at a round the run reached would have seen
the same points only if it had asked for the same repetitions up to there, which holds for
the initial rounds and approximately after.

Run: python benchmarks/verdict_replay.py RUN_DIR_OR_FOLDER... [--tolerance 0.1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from datetime import datetime
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.blocked import blocks  # noqa: E402
from analysis.folding import folding_verdict, point_order  # noqa: E402
from analysis.load import load_run  # noqa: E402
from analysis.tidy import metric_samples  # noqa: E402

JUDGED = ["latency_ms_p50", "cpu_time_ms_per_request", "requests_per_s_per_node"]
from analysis.folding import DESIGNS  # noqa: E402  (independent, blocked, speed)


def run_dirs(args: list[str]) -> list[Path]:
    out: list[Path] = []
    for a in args:
        p = Path(a)
        out += [p] if (p / "manifest.json").is_file() else sorted(m.parent for m in p.rglob("manifest.json"))
    return out


def short(verdicts: dict[int, str]) -> str:
    code = {"faithful": "F", "unfaithful": "U", "better": "B", "not worse": "n", "inconclusive": "?"}
    return "".join(code[v] for _, v in sorted(verdicts.items()))


def replay(path: Path, tolerance: Optional[float], alpha: float) -> dict:
    run = load_run(path)
    df, params = run.df, run.params
    tol = tolerance if tolerance is not None else float(params.get("tolerance", 0.1))
    metrics = params.get("metrics") or JUDGED
    start = datetime.fromisoformat(run.manifest["started"]).timestamp()
    order = point_order(df).sort_values(kind="stable")
    factor_of = df.groupby("point")["factor"].first()
    base = int(factor_of.min())
    rep_of = df.groupby("point")["rep"].first()
    blk = blocks([int(factor_of[p]) for p in order.index], base, [int(rep_of[p]) for p in order.index])
    initial = int(params.get("reps", 3))
    out: dict = {"run": path.parent.parent.name if path.parent.name == "folding" else path.name,
                 "tol": tol, "rounds": max(blk) + 1, "points": len(order), "end_s": order.iloc[-1] - start}
    for design in DESIGNS:
        out[design] = None
    for k in range(initial - 1, max(blk) + 1):
        pts = [p for p, b in zip(order.index, blk) if b <= k]
        sub = df[df["point"].isin(pts)]
        t = order[pts].max() - start
        for design in DESIGNS:
            if out[design] is not None:
                continue
            res = folding_verdict(sub, metrics, tolerance=tol, alpha=alpha, design=design)
            if not res.needs_more():
                out[design] = (t, k + 1, res.breaking_point, short(res.verdicts))
    tables = {}
    for design in DESIGNS:
        res = folding_verdict(df, metrics, tolerance=tol, alpha=alpha, design=design)
        out[design + "_all"] = (res.breaking_point, short(res.verdicts))
        out[design + "_decided_all"] = res.decided_up_to_break()
        tables[design] = res.table.set_index(["metric", "factor"])
    # Width of the two designs' intervals on the log scale, factors below the independent break
    # (where the verdict is undecided or decided on them), judged metrics whose widths differ
    limit = out["independent_all"][0] or math.inf
    ratios = []
    for key, r in tables["independent"].iterrows():
        b = tables["blocked"].loc[key]
        if key[1] == base or key[1] >= limit or not (r["ci_defined"] and b["ci_defined"]):
            continue
        wi = math.log1p(r["degradation_ci_high"]) - math.log1p(r["degradation_ci_low"])
        wb = math.log1p(b["degradation_ci_high"]) - math.log1p(b["degradation_ci_low"])
        if wi > 1e-6:
            ratios.append((int(key[1]), wb / wi))
    out["width_ratio"] = ratios
    return out


def autocorrelation(path: Path, metrics: list[str], lags: int = 5, below: int = 8) -> dict[tuple[str, int], float]:
    """Lag-k autocorrelation, in measuring order, of the log-scale residuals of each point from its
    factor's mean (factors up to ``below``: past the break a factor's own scatter dominates):
    how long the host's drift lasts, in points."""
    df = load_run(path).df
    order = point_order(df)
    out = {}
    for metric in metrics:
        s = metric_samples(df, metric, ["factor"])
        s = s.assign(t=s["point"].map(order)).sort_values("t")
        s = s[s["factor"] <= below]
        lv = np.log(s["value"].to_numpy())
        e = lv - s.assign(lv=lv).groupby("factor")["lv"].transform("mean").to_numpy()
        for k in range(1, lags + 1):
            if len(e) > k + 2 and e[:-k].std() > 0 and e[k:].std() > 0:
                out[(metric, k)] = float(np.corrcoef(e[:-k], e[k:])[0, 1])
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="folding run directories, or folders holding them")
    p.add_argument("--tolerance", type=float, default=None, help="judge every run at this tolerance "
                   "(default: each run's own)")
    p.add_argument("--alpha", type=float, default=0.05)
    a = p.parse_args(argv)
    rows = [replay(d, a.tolerance, a.alpha) for d in run_dirs(a.runs)]
    print("verdicts per factor (2,4,8,16,32): F faithful, U unfaithful, B better, n not worse, ? inconclusive; "
          "decided = the adaptive loop would stop; time in s since the run started")
    hdr = (f"{'run':>8} {'tol':>5} {'rnds':>4} {'end':>5} | {'independent: decided':>22} {'break':>5} | "
           f"{'blocked: decided':>22} {'break':>5} | {'all points: ind / blk':>24}")
    print(hdr)
    print("-" * len(hdr))

    def cell(d):
        return (f"{d[0]:5.0f} s round {d[1]:>2} {d[3]:>6}", f"{d[2] if d[2] is not None else '-':>5}") if d else \
            (f"{'no':>22}", f"{'':>5}")
    for r in rows:
        ci, bi = cell(r["independent"])
        cb, bb = cell(r["blocked"])
        ai, ab = r["independent_all"], r["blocked_all"]
        print(f"{r['run']:>8} {r['tol']:5.2f} {r['rounds']:>4} {r['end_s']:5.0f} | {ci:>22} {bi} | {cb:>22} {bb} | "
              f"{ai[1]:>6} {str(ai[0]):>3} / {ab[1]:>6} {str(ab[0]):>3}")
    n = len(rows)
    for design in DESIGNS:
        done = [r[design] for r in rows if r[design] is not None]
        within = sum(1 for d in done if d[0] <= 300)
        print(f"{design}: decided in {len(done)} of {n} runs ({within} within 300 s)"
              + (f", median {sorted(d[0] for d in done)[len(done) // 2]:.0f} s" if done else ""))
    both = [r for r in rows if r["independent"] and r["blocked"]]
    earlier = sum(1 for r in both if r["blocked"][0] < r["independent"][0])
    same = sum(1 for r in both if r["blocked"][2] == r["independent"][2])
    print(f"both decided: {len(both)} runs; blocked earlier in {earlier}; same breaking point in {same}")
    agree = sum(1 for r in rows if r["independent_all"][0] == r["blocked_all"][0])
    print(f"on all points: same breaking point in {agree} of {n} runs; decided up to the break: independent "
          f"{sum(r['independent_decided_all'] for r in rows)}, blocked {sum(r['blocked_decided_all'] for r in rows)}")
    acs: dict[tuple[str, int], list[float]] = {}
    for d in run_dirs(a.runs):
        for key, v in autocorrelation(d, JUDGED[:2]).items():
            acs.setdefault(key, []).append(v)
    for metric in JUDGED[:2]:
        print(f"autocorrelation of {metric} residuals (factors <= 8, measuring order; mean over runs) at lag "
              + ", ".join(f"{k}: {statistics.mean(acs[(metric, k)]):+.2f}" for k in range(1, 6) if (metric, k) in acs))
    pairs = [x for r in rows for x in r["width_ratio"]]
    ratios = [x for _, x in pairs]
    if ratios:
        q = statistics.quantiles(ratios, n=4)
        print(f"interval width blocked / independent (log scale, every judged metric at each factor below the break, "
              f"all points; {len(ratios)} intervals): median {statistics.median(ratios):.2f}, quartiles "
              f"{q[0]:.2f}-{q[2]:.2f}; narrower in {sum(x < 1 for x in ratios)} of {len(ratios)}")
        per = {f: [x for g, x in pairs if g == f] for f in sorted({g for g, _ in pairs})}
        print("  per factor (median): " + ", ".join(f"{f}: {statistics.median(v):.2f} ({len(v)})" for f, v in per.items())
              + f"  [at factor {min(per)} the block model holds only the baseline and it: the paired comparison "
                "with its round's baseline points]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
