"""Folding over several hosts: the same virtual topology on 1 host and spread over M.

``experiments/folding.py --backend ssh --hosts 1,2,3`` measures each virtual
topology (``factor`` phones and their server) with every node on one host and
spread over 2, 3... hosts (VXLAN between them). For each factor, each host
count is compared with the one-host baseline by the same equivalence test as
the single-host folding verdict (:func:`analysis.folding.degradation_table`
with ``param="hosts"``): *faithful* (every judged metric within the tolerance),
*unfaithful* (one is worse: spreading — the tunnel, the hosts' link — changed
what is measured), *better* or *inconclusive*. Spreading the topology is
faithful when the one-host figures stay; a better figure on more hosts says
the one-host run was already folded past its breaking point.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pandas as pd

from .folding import HOST_SIGNALS, degradation_table, factor_verdict, host_signals
from .load import ResultsError

PARAM = "hosts"


@dataclass(frozen=True)
class HostsVerdict:
    """One factor (virtual topology): each host count against the 1-host baseline."""

    factor: int
    tolerance: float
    alpha: float
    table: pd.DataFrame
    verdicts: dict[int, str] = field(default_factory=dict)  # hosts -> analysis.folding.FACTOR_VERDICTS
    violations: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    judged_on_mean: bool = False
    signals: dict[int, dict[str, float]] = field(default_factory=dict)  # hosts -> mean signals of the busiest host

    def describe(self) -> str:
        per = ", ".join(f"{h} hosts {v.upper() if v == 'unfaithful' else v}" for h, v in sorted(self.verdicts.items()))
        how = ("the mean deviation (one repetition: no interval)" if self.judged_on_mean else
               f"two one-sided tests at α = {self.alpha:g}")
        s = (f"factor {self.factor} ({self.factor} phones + server) spread over hosts vs all on 1 host "
             f"(tolerance ±{self.tolerance:.1%}, {how}): {per or 'no other host count measured'}")
        bad = []
        for h, v in sorted(self.violations.items()):
            sig = self.signals.get(h, {})
            load = ", ".join(f"{HOST_SIGNALS[k]} {x:.2f}" for k, x in sig.items())
            bad.append(f"{h} hosts: " + ", ".join(f"{m} {d:+.1%}" for m, d in v)
                       + (f"; busiest host: {load}" if load else ""))
        return s + (f" ({'; '.join(bad)})" if bad else "") + "."


def hosts_verdicts(df: pd.DataFrame, metrics: Optional[Sequence[str]] = None, *, tolerance: float = 0.05,
                   alpha: float = 0.05) -> dict[int, HostsVerdict]:
    """Per factor: each host count judged against 1 host (which every factor must have)."""
    for col in ("factor", PARAM):
        if col not in df.columns:
            raise ResultsError(f"folding over hosts: measurements have no {col!r} column")
    out: dict[int, HostsVerdict] = {}
    for f in sorted(int(x) for x in df["factor"].unique()):
        sub = df[df["factor"] == f]
        if 1 not in set(int(h) for h in sub[PARAM].unique()):
            raise ResultsError(f"folding over hosts: factor {f} has no 1-host baseline (measure --hosts 1,...)")
        table = degradation_table(sub, metrics, alpha=alpha, tolerance=tolerance, param=PARAM)
        verdicts: dict[int, str] = {}
        violations: dict[int, list[tuple[str, float]]] = {}
        for h in sorted(int(x) for x in table[PARAM].unique() if int(x) != 1):
            at = table[table[PARAM] == h]
            verdicts[h] = factor_verdict(set(at["decision"]))
            if verdicts[h] == "unfaithful":
                violations[h] = [(r.metric, float(r.degradation)) for r in at.itertuples() if r.decision == "worse"]
        out[f] = HostsVerdict(f, tolerance, alpha, table, verdicts, violations,
                              not bool(table["ci_defined"].all()), host_signals(sub, PARAM))
    return out
