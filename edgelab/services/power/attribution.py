"""A node's measured energy divided among the tasks that ran on it, by CPU-time share.

This is Kepler's ratio model (kepler: pkg/model/estimator "ratio" power model) applied where
Kepler cannot run: the node's power comes from its wall plug (or the device model), not from
RAPL, and the tasks are function invocations or processes whose CPU time is known.

The timeline of a node is cut at every task start and end.  In each piece the node's energy
(interpolated from the plug's cumulative samples) goes to the tasks running then, in proportion
to their CPU rate (CPU seconds over wall seconds of the task, assumed steady over its run).  So
two functions sharing a worker each get their share and the shares add up to the node's energy
while anything ran; energy while nothing ran is reported as idle, not spread over the tasks.

A task whose interval the samples do not cover gets no energy (None) and lowers the *coverage*:
the caller reports the coverage instead of averaging over the tasks that happened to be covered.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence


@dataclass(frozen=True)
class Task:
    id: str
    node: str
    start: float     # epoch s
    end: float
    cpu_s: float     # CPU seconds the task used (process/thread time)


@dataclass
class Attribution:
    energy_j: dict[str, Optional[float]]                 # per task; None = not covered by samples
    idle_j: dict[str, float] = field(default_factory=dict)   # per node: energy while no task ran
    node_j: dict[str, float] = field(default_factory=dict)   # per node: energy over the tasks' span

    @property
    def coverage(self) -> float:
        """Fraction of tasks whose energy is known (1.0 = complete; NaN when there are no tasks)."""
        if not self.energy_j:
            return float("nan")
        return sum(v is not None for v in self.energy_j.values()) / len(self.energy_j)

    def per_task_mean(self) -> Optional[float]:
        """Mean J per task, only when every task is covered (None otherwise: no partial averages)."""
        if not self.energy_j or self.coverage < 1.0:
            return None
        return sum(self.energy_j.values()) / len(self.energy_j)


def cumulative_at(samples: Sequence[tuple[float, float]], t: float) -> Optional[float]:
    """Cumulative joules at ``t`` by linear interpolation of (time, cumulative J) samples."""
    if len(samples) < 2 or t < samples[0][0] or t > samples[-1][0]:
        return None
    times = [s[0] for s in samples]
    i = bisect.bisect_right(times, t)
    if i >= len(samples):
        return samples[-1][1]
    (t0, e0), (t1, e1) = samples[i - 1], samples[i]
    return e0 if t1 <= t0 else e0 + (e1 - e0) * (t - t0) / (t1 - t0)


def attribute(samples: Mapping[str, Sequence[tuple[float, float]]], tasks: Iterable[Task]) -> Attribution:
    """Energy per task; ``samples[node]`` = (time, cumulative J) in time order."""
    tasks = list(tasks)
    out = Attribution({t.id: None for t in tasks})
    by_node: dict[str, list[Task]] = {}
    for t in tasks:
        by_node.setdefault(t.node, []).append(t)
    for node, ts in by_node.items():
        ss = list(samples.get(node, ()))
        covered = [t for t in ts if t.end >= t.start and cumulative_at(ss, t.start) is not None
                   and cumulative_at(ss, t.end) is not None]
        if not covered:
            continue
        for t in covered:
            out.energy_j[t.id] = 0.0
        cuts = sorted({x for t in covered for x in (t.start, t.end)})
        idle = 0.0
        for a, b in zip(cuts, cuts[1:]):
            e = cumulative_at(ss, b) - cumulative_at(ss, a)
            active = [t for t in covered if t.start <= a and t.end >= b]
            if not active:
                idle += e
                continue
            rates = [t.cpu_s / (t.end - t.start) if t.end > t.start else 0.0 for t in active]
            total = sum(rates)
            for t, r in zip(active, rates):
                out.energy_j[t.id] += e * (r / total if total > 0 else 1.0 / len(active))
        out.idle_j[node] = idle
        out.node_j[node] = cumulative_at(ss, cuts[-1]) - cumulative_at(ss, cuts[0])
    return out
