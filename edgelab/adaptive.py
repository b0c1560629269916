"""Adaptive repetitions for folding sweeps: measure, judge, repeat what is undecided.

Why: an equivalence verdict (:mod:`analysis.folding`) is only as decided as the
data allow. A fixed number of repetitions either wastes time on factors that
are already clear or stops before noisy ones are decided. So a folding sweep
runs its initial points one repetition at a time — a factor already decided
*unfaithful* by three or more repetitions gets no more (its verdict cannot change
sides, and past the breaking point it is the most expensive to measure) — then
rounds of one more repetition of each factor still *inconclusive* up to the
breaking point (with the baseline they are compared with), until every such
factor is decided, a factor reaches ``max_reps``, or the budget is spent. A
round that does not fit the remaining ``budget`` whole is cut to what fits,
baseline first then the least folded factors (the breaking point is searched
from below). Each round is the same run (resumed), so an interruption loses
nothing.

A round without the baseline (Dunnett's allocation, :meth:`analysis.folding.FoldingResult.baseline_helps`)
keeps the blocked verdict (``--design blocked``, :mod:`analysis.blocked`) valid too: such a
round is an incomplete block, tied to the baseline through the factors it shares with other
rounds, so no design needs the baseline in every round.

``experiments/folding.py`` and ``experiments/fs_folding.py`` share this loop;
they differ only in how a point is built and judged.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from .experiment import Outcome, console, run_sweep
from .hostload import HostWarmer


def planned(points: Iterable[dict]) -> dict[int, int]:
    """Repetitions planned so far per factor (measured, failed or still to do)."""
    out: dict[int, int] = {}
    for p in points:
        out[p["factor"]] = max(out.get(p["factor"], 0), p["rep"] + 1)
    return out


def more_points(verdict: Any, reps: dict[int, int], max_reps: int,
                make_point: Callable[[int, int], dict] = lambda f, r: {"factor": f, "rep": r},
                baseline_weight: int = 1) -> list[dict]:
    """The next adaptive round: one more repetition of every factor ``verdict.needs_more()``
    names (undecided up to the breaking point, and the baseline — ``baseline_weight`` more of
    it, unless ``verdict.baseline_helps()`` says its repetitions already suffice), within
    ``max_reps`` (the baseline's cap scaled by its weight)."""
    todo = verdict.needs_more()
    if not todo:
        return []
    base = min(todo)
    helps = getattr(verdict, "baseline_helps", None)
    if helps is not None and not helps():
        todo = [f for f in todo if f != base]   # Dunnett's allocation: the baseline is precise enough
    out = []
    for f in todo:
        n, cap = (baseline_weight, max_reps * baseline_weight) if f == base else (1, max_reps)
        have = reps.get(f, 0)
        out += [make_point(f, have + k) for k in range(n) if have + k < cap]
    return out


@dataclass
class PointTimer:
    """Seconds each point took, per factor: the next round is planned from its own factors' times."""

    took: dict[int, list[float]] = field(default_factory=dict)

    def wrap(self, measure: Callable[[dict, Any], Any]) -> Callable[[dict, Any], Any]:
        def timed(point: dict, run: Any) -> Any:
            t = time.monotonic()
            try:
                return measure(point, run)
            finally:
                self.took.setdefault(point["factor"], []).append(time.monotonic() - t)
        return timed

    def estimate(self, points: Iterable[dict]) -> float:
        """Seconds ``points`` should take: each factor's mean so far, else the overall mean."""
        everything = [s for v in self.took.values() for s in v]
        mean = sum(everything) / len(everything) if everything else 0.0
        return sum(sum(self.took[p["factor"]]) / len(self.took[p["factor"]]) if self.took.get(p["factor"])
                   else mean for p in points)


def run_adaptive(*, points: list[dict], resume: Any, sweep: dict, verdict_of: Callable[[Path], Any],
                 max_reps: int, budget: float, warm: bool = False,
                 make_point: Callable[[int, int], dict] = lambda f, r: {"factor": f, "rep": r},
                 baseline_weight: int = 1) -> Outcome:
    """Run ``points`` (``run_sweep(**sweep)``), then adaptive rounds; returns the last outcome.

    ``warm``: keep the host out of idle states for the whole sweep
    (:class:`~edgelab.hostload.HostWarmer`, local backend) and record what it did in the run's facts.
    ``baseline_weight``: the least folded factor has that many repetitions per round (its
    repetition numbers ``r*w .. r*w+w-1`` belong to round ``r``), initially and in adaptive rounds.
    """
    timer = PointTimer()
    warmer = HostWarmer() if warm else contextlib.nullcontext()
    measure = sweep["measure"]

    def recorded(point: dict, run: Any) -> Any:
        run.record_facts({"host_warmer": warmer.description})
        return measure(point, run)

    sweep = {**sweep, "measure": timer.wrap(recorded if warm else measure)}
    with warmer:
        return _rounds(points, resume, sweep, verdict_of, max_reps, budget, timer, make_point, baseline_weight)


#: Repetitions a factor needs before its *unfaithful* verdict stops its initial design: with two,
#: a pair of similar values gives a narrow interval by chance (seen here: a +23 % "break" at
#: factor 4 on two points that later runs did not reproduce).
MIN_SETTLE_REPS = 3


#: With two repetitions, a factor is settled only when some metric's interval lies this many
#: tolerances beyond the worse bound (e.g. +100 % at ±10 %; for a higher-is-better metric, below
#: -50 %): a deviation no pair of similar values produces by chance (a factor far past the break).
FAR_TOLERANCES = 10


def settled(verdict: Any, reps: int = MIN_SETTLE_REPS) -> set[int]:
    """Factors no repetition needs to be added to in the initial design, after ``reps`` repetitions
    of each: those decided *unfaithful* on intervals once ``reps >= MIN_SETTLE_REPS``; with two, only
    those whose interval lies far beyond the tolerance (:data:`FAR_TOLERANCES`)."""
    if verdict is None or getattr(verdict, "judged_on_mean", False) or reps < 2:
        return set()
    bad = {int(f) for f, v in getattr(verdict, "verdicts", {}).items() if v == "unfaithful"}
    if reps >= MIN_SETTLE_REPS or not bad:
        return bad
    from analysis.folding import PARAM, higher_is_better

    t, far = verdict.table, FAR_TOLERANCES * verdict.tolerance
    return {int(r[PARAM]) for _, r in t[(t["decision"] == "worse") & t[PARAM].isin(bad)].iterrows()
            if (r["degradation_ci_high"] < -min(far, 0.5) if higher_is_better(r["metric"])
                else r["degradation_ci_low"] > far)}


def fitting(extra: list[dict], timer: PointTimer, left: float, base: Optional[int] = None) -> list[dict]:
    """The longest prefix of ``extra`` that fits ``left`` s, in measuring order: one baseline
    point, the other factors ascending (the breaking point is searched from below), then the
    baseline's other points (bracketing the round). Empty when no folded factor fits.
    ``base``: the sweep's baseline factor (default: the least folded factor of ``extra``; a
    round may have no baseline point)."""
    base = min(p["factor"] for p in extra) if base is None else base
    bases = [p for p in extra if p["factor"] == base]
    ordered = bases[:1] + sorted((p for p in extra if p["factor"] != base), key=lambda p: p["factor"]) + bases[1:]
    out: list[dict] = []
    for p in ordered:
        if timer.estimate(out + [p]) > left:
            break
        out.append(p)
    return out if any(p["factor"] != base for p in out) else []


def _rounds(points: list[dict], resume: Any, sweep: dict, verdict_of: Callable[[Path], Any], max_reps: int,
            budget: float, timer: PointTimer, make_point: Callable[[int, int], dict],
            baseline_weight: int = 1) -> Outcome:
    t0 = time.monotonic()
    base = min(p["factor"] for p in points)
    by_rep: dict[int, list[dict]] = {}
    for p in points:   # in the given order: a round keeps its own interleaving
        stage = p["rep"] // baseline_weight if p["factor"] == base else p["rep"]
        by_rep.setdefault(stage, []).append(p)
    todo: list[dict] = []
    outcome: Any = None
    for rep in sorted(by_rep):
        stage = by_rep[rep]
        if outcome is not None and rep >= 2:
            done_with = settled(verdict_of(outcome.run.path), reps=rep)
            skipped = sorted({p["factor"] for p in stage if p["factor"] in done_with})
            if skipped:
                console.print(f"repetition {rep + 1}: factor(s) {', '.join(map(str, skipped))} already decided "
                              "unfaithful" + ("" if rep >= MIN_SETTLE_REPS else ", far beyond the tolerance")
                              + ", not repeated", highlight=False, soft_wrap=True)
            stage = [p for p in stage if p["factor"] not in done_with]
        todo += stage
        outcome = run_sweep(points=todo, resume=resume if outcome is None else outcome.run.path, **sweep)
        if outcome.status != "complete":
            return outcome
    points = todo
    while outcome.status == "complete":
        extra = more_points(verdict_of(outcome.run.path), planned(points), max_reps, make_point, baseline_weight)
        if not extra:
            break
        spent = time.monotonic() - t0
        fits = fitting(extra, timer, budget - spent, base)
        if not fits:   # the baseline alone decides nothing
            console.print(f"adaptive repetitions stop: the next round ({len(extra)} points, about "
                          f"{timer.estimate(extra):.0f} s) would exceed the {budget:g} s budget ({spent:.0f} s spent)",
                          highlight=False, soft_wrap=True)
            break
        cut = "" if len(fits) == len(extra) else f" ({len(fits)} of {len(extra)} points: what fits the budget)"
        factors = sorted({p["factor"] for p in fits} - {base})
        nbase = sum(p["factor"] == base for p in fits)
        console.print(f"adaptive round: factors {', '.join(map(str, factors))} undecided; one more repetition each, "
                      + (f"with {nbase} of the baseline" if nbase else
                         "not the baseline (Dunnett's allocation: it is precise enough)") + cut,
                      highlight=False, soft_wrap=True)
        points = points + fits
        outcome = run_sweep(points=points, resume=outcome.run.path, **sweep)
    return outcome


def judgeable(run_path: Path) -> bool:
    """Print what the run's loading left out (unhealthy or incomplete points); False when no
    healthy point is left to judge."""
    from analysis.load import load_run

    loaded = load_run(run_path)
    for note in loaded.notes:
        console.print(note, highlight=False, soft_wrap=True, markup=False)
    if loaded.df.empty:
        console.print("no healthy point to judge: no folding verdict", highlight=False)
        return False
    return True
