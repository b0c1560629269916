#!/usr/bin/env python3
"""How many virtual nodes can one machine host before measurements go wrong?

The same per-node workload (every phone serves ``--rate`` small image requests
per second, sent by one generator on the server node) is run with more and
more phones folded onto this machine: the folding factor is the number of
virtual nodes per physical host. Each metric is compared with the least
folded configuration by an equivalence test (two one-sided tests at
``--alpha`` against ``--tolerance``, see :mod:`analysis.folding`), so every
factor ends *faithful*, *unfaithful* (the breaking point is the first), *better
than baseline* (the baseline itself is suspect), *not worse* (a degradation beyond
the tolerance is ruled out, equivalence is not: it may be better than the baseline)
or *inconclusive*. Every point is warmed up first (each phone serves ``--warmup``
requests, unmeasured, with its start-up, outside its CPU cap): a phone's first
request pays one-time costs that would bias and scatter every point. Repetitions
are added adaptively, one round at a time, to the factors still inconclusive up
to the breaking point, until each is decided or ``--max-reps``/``--budget`` is
spent. Every point records the host's overload signals (CPU busy, run queue,
CPU pressure, softirq: :mod:`edgelab.hostload`) so an unfaithful factor comes
with its cause, and on the local backend ``--warm-host`` (default) keeps the
CPUs out of idle states so that a lone node's baseline does not pay wake-up
latency that folded runs do not. Its spinners also measure the host's CPU speed
in every point, and each comparison is adjusted for it (``--design speed``,
:mod:`analysis.covariate`): on a shared VM the host's speed is most of the
points' scatter.

Judged metrics: median request latency, CPU time per request of the phones
(both per node, pooled) and requests served per node. p95 latency is
recorded and reported but not judged by default (it needs many more requests
than a quick run sends to be stable to 5 %).

Over several hosts (``--backend ssh --inventory FILE --hosts 1,2,3``): each
virtual topology (``--factors`` phones and their server) runs with every node
on the inventory's first host and spread over its first 2, 3... hosts (each
host builds its share with the local backend; VXLAN joins the hosts' bridges;
placement by :func:`edgelab.folding.fold`, at most ⌈N/M⌉ nodes per host), and
each host count is judged against the 1-host baseline per factor
(:mod:`analysis.folding_hosts`). The placement and tunnels of every point are
in its ``raw/<point>/facts.json``. Adaptive rounds add one repetition of every
host count of a factor whose verdict is still inconclusive, within
``--max-reps`` and ``--budget``.

``--quick`` (the default) sweeps factors 1,2,4,8,16,32 with 3 repetitions of 8 s, up to
12 with the adaptive rounds, within a 300 s budget, at a ±10 % tolerance (its points
vary by about 10 % from run to run on a 2-core host: a ±5 % equivalence would need
some 25 repetitions per factor); ``--full`` goes to 64 with 5 repetitions, up to 20,
at ±5 %.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Optional

import _common  # noqa: F401  (puts the repository on sys.path)

from edgelab.adaptive import judgeable, run_adaptive
from edgelab.experiment import (testbed_name, backend_from_args, backend_options, common_arguments, console, dry_run,
                                finish, int_list, main_guard, run_sweep)
from edgelab.scenario_topologies import folding_topology
from edgelab.scenarios import FoldLoad, folding_point

JUDGED = ["latency_ms_p50", "cpu_time_ms_per_request", "requests_per_s_per_node"]

#: NixOS-Compose composition of these nodes (nxc and g5k backends).
COMPOSITION = "k3s-phones"


#: This process's testbed name (unique on the machine: see edgelab.experiment.testbed_name).
TESTBED = testbed_name("fold")

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", type=int_list, default=None,
                   help="virtual nodes per host (quick 1,2,4,8,16,32; --full 1,2,4,8,16,32,48,64)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per factor (quick 3, full 5)")
    p.add_argument("--seconds", type=float, default=None, help="load duration per point (quick 8, full 10)")
    p.add_argument("--baseline-weight", type=int, default=2,
                   help="the baseline is measured this many times per repetition round, before and after the "
                        "other factors (it is in every comparison, and with one node it has the fewest requests "
                        "of all: its noise weighs on every verdict; default %(default)s)")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second per node (default %(default)s)")
    p.add_argument("--warmup", type=int, default=2,
                   help="unmeasured requests each phone serves before a point's load (default %(default)s)")
    p.add_argument("--image-kb", type=int, default=20, help="request image size in KB (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest acceptable relative deviation from the baseline (quick 0.10, full 0.05): "
                        "the quick sweep's points vary by about 10 %% from run to run on a 2-core host, so a "
                        "±5 %% equivalence cannot be shown within its 5 minutes")
    p.add_argument("--metrics", type=lambda s: s.split(","), default=JUDGED,
                   help=f"metrics the verdict is judged on (default {','.join(JUDGED)})")
    p.add_argument("--design", choices=["speed", "independent", "blocked"], default="speed",
                   help="how each factor is compared with the baseline: speed (default: adjusted for the host's CPU "
                        "speed the warmer measures in every point, analysis/covariate.py; unadjusted where it was "
                        "not measured, the host was half busy or more, or the factor changed it), independent (Welch's interval) or blocked (the "
                        "sweep's rounds as blocks: analysis/blocked.py; benchmarks/verdict_replay.py compares them)")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="level of each one-sided test of the equivalence test (default %(default)s)")
    p.add_argument("--max-reps", type=int, default=None,
                   help="adaptive repetitions: at most this many per factor (quick 12, full 20; = --reps: none)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds the sweep may take with its adaptive rounds (quick 300, full 3600)")
    p.add_argument("--hosts", type=int_list, default=None,
                   help="--backend ssh: spread each virtual topology over this many of the inventory's hosts "
                        "(e.g. 1,2,3; must include 1, the baseline)")
    p.add_argument("--warm-host", action=argparse.BooleanOptionalAction, default=True,
                   help="local backend: keep the CPUs out of idle states during the sweep (default on)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick sweep (default)")
    mode.add_argument("--full", action="store_true", help="the full sweep")
    common_arguments(p)
    a = p.parse_args(argv)
    if a.tolerance is None:
        a.tolerance = 0.05 if a.full else 0.10
    if not 0 < a.tolerance < 1:
        p.error(f"--tolerance must be a fraction between 0 and 1 (e.g. 0.05), got {a.tolerance}")
    if not 0 < a.alpha < 0.5:
        p.error(f"--alpha must be between 0 and 0.5 (e.g. 0.05), got {a.alpha}")
    a.factors = sorted(set(a.factors or ([1, 2, 4, 8, 16, 32, 48, 64] if a.full else [1, 2, 4, 8, 16, 32])))
    a.reps = a.reps or (5 if a.full else 3)
    # Quick points load for 8 s, not 4: a point's scatter is mostly the host's speed, which moves
    # from one 2-s window to the next (analysis.covariate), and the lone phone's 10 requests/s give
    # its p50 few samples; both average down with the point's length, while a point's fixed cost
    # (bring-up, warm-up, teardown: ~5 s at factor 16) is paid fewer times in the same budget.
    # Measured here (README): 4 of 4 runs at 8 s decided every factor, 1 of 3 at 4 s.
    a.seconds = a.seconds or (10.0 if a.full else 8.0)
    if not 0 <= a.warmup <= 100:
        p.error(f"--warmup must be between 0 and 100 requests, got {a.warmup}")
    if a.baseline_weight < 1:
        p.error(f"--baseline-weight must be >= 1, got {a.baseline_weight}")
    a.max_reps = max(a.reps, a.max_reps or (20 if a.full else 12))
    a.budget = a.budget or (3600.0 if a.full else 300.0)
    if a.hosts is not None:
        a.hosts = sorted(set(a.hosts))
        if a.hosts[0] < 1 or 1 not in a.hosts:
            p.error(f"--hosts must list host counts >= 1 including 1, the baseline (got {a.hosts})")
        if not (a.backend == "ssh" or a.inventory):
            p.error("--hosts spreads the topology over an inventory's hosts: add --backend ssh --inventory FILE")
    elif a.reps < 2:
        p.error("--reps must be at least 2: the equivalence test needs an interval per factor")
    return a


def sweep_points(factors: list[int], reps: int, hosts: Optional[list[int]] = None,
                 baseline_weight: int = 1) -> list[dict]:
    """Repetitions interleaved (all factors, then again) so slow drifts of the host
    (thermal, other load) spread over every factor instead of biasing one.

    ``baseline_weight`` w > 1: the least folded factor is measured w times per round, once
    before the others and w - 1 times after them (bracketing the round's drift), with
    repetitions ``r*w .. r*w+w-1``. Every point keeps the same per-node workload (more points,
    not longer ones: a longer baseline would amortise per-run warm-up costs over more requests
    and bias CPU time per request)."""
    if hosts is not None:
        return [{"factor": f, "hosts": h, "rep": r} for r in range(reps) for f in factors for h in hosts]
    base, rest = factors[0], factors[1:]
    out: list[dict] = []
    for r in range(reps):
        out.append({"factor": base, "rep": r * baseline_weight})
        out += [{"factor": f, "rep": r} for f in rest]
        out += [{"factor": base, "rep": r * baseline_weight + k} for k in range(1, baseline_weight)]
    return out


def verdict_of(run_path, a: argparse.Namespace):
    from analysis.folding import folding_verdict
    from analysis.load import load_run

    return folding_verdict(load_run(run_path).df, a.metrics, tolerance=a.tolerance, alpha=a.alpha,
                           cpus=os.cpu_count(), design=a.design)


def main(argv=None) -> int:
    a = parse_args(argv)
    if (a.backend == "ssh" or a.inventory) and a.hosts is None:
        from edgelab.errors import EdgelabError

        raise EdgelabError("folding with --backend ssh folds the topology onto the inventory's hosts: say over how "
                           "many with --hosts (e.g. --hosts 1,2); each host then runs its share with the local backend")
    if a.hosts is not None:
        return main_hosts(a)
    params = {"factors": a.factors, "reps": a.reps, "seconds": a.seconds, "baseline_weight": a.baseline_weight,
              "rate_rps": a.rate, "warmup": a.warmup,
              "image_kb": a.image_kb, "tolerance": a.tolerance, "metrics": a.metrics, "alpha": a.alpha,
              "max_reps": a.max_reps, "budget_s": a.budget, "warm_host": a.warm_host,
              **({"design": a.design} if a.design != "independent" else {})}   # runs before --design: independent

    points = sweep_points(a.factors, a.reps, baseline_weight=a.baseline_weight)
    if a.dry_run:
        return dry_run(a, [folding_topology(p["factor"], name=TESTBED) for p in points], COMPOSITION)
    backend = backend_from_args(a, COMPOSITION)

    def measure(point, run):
        load = FoldLoad(seconds=a.seconds, rate_rps=a.rate, image_bytes=a.image_kb * 1000, seed=1 + point["rep"],
                        warmup=a.warmup)
        return folding_point(folding_topology(point["factor"], name=TESTBED), backend=backend, run=run,
                             point=point, load=load)

    sweep = dict(experiment="folding", param_names=["factor", "rep"], measure=measure, params=params,
                 results_root=a.results, backend=a.backend, keep_going=a.keep_going, will_report=not a.no_report)
    outcome = run_adaptive(points=points, resume=a.resume, sweep=sweep, verdict_of=lambda p: verdict_of(p, a),
                           max_reps=a.max_reps, budget=a.budget, warm=a.warm_host and a.backend == "local",
                           baseline_weight=a.baseline_weight)
    if outcome.status != "interrupted":
        if not judgeable(outcome.run.path):   # unhealthy or incomplete points are left out, and named
            return finish(outcome, a)
        verdict = verdict_of(outcome.run.path, a)
        console.print(verdict.describe(), highlight=False, soft_wrap=True)
        t = verdict.table
        for f in sorted(t["factor"].unique()):
            at = t[t["factor"] == f]
            devs = ", ".join(f"{r.metric} {r.degradation:+.1%} [{r.degradation_ci_low:+.1%}, "
                             f"{r.degradation_ci_high:+.1%}] {r.decision}" for r in at.itertuples())
            sig = verdict.signals.get(int(f), {})
            host = (f"; host CPU {sig['host_cpu_busy']:.0%} busy, run queue {sig.get('host_runqueue', 0):.1f}"
                    + (f", other work {sig['host_foreign_cpu']:.0%}" if "host_foreign_cpu" in sig else "")
                    if "host_cpu_busy" in sig else "")
            console.print(f"  factor {f} ({verdict.verdicts.get(int(f), 'baseline')}): {devs}{host}", highlight=False, soft_wrap=True)
        print(f"max faithful folding factor: {verdict.max_factor}")
        print(f"max folding factor without degradation: {verdict.max_without_degradation}")
        print(f"breaking point: {verdict.breaking_point if verdict.breaking_point is not None else 'none'}")
    return finish(outcome, a)


def main_hosts(a: argparse.Namespace) -> int:
    """The same virtual topologies on 1 host and spread over more (see the module docstring)."""
    from edgelab.remote.folded import FoldedBackend

    opts = backend_options(a.backend_opt)
    inventory = a.inventory or opts.pop("inventory", None)
    opts.pop("inventory", None)
    if not inventory:
        from edgelab.errors import EdgelabError

        raise EdgelabError("--hosts needs --inventory FILE: the hosts to fold over (scripts/ssh-devices writes one)")
    backends = {h: FoldedBackend(inventory, h, **opts) for h in a.hosts}
    params = {"factors": a.factors, "hosts": a.hosts, "reps": a.reps, "max_reps": a.max_reps, "budget_s": a.budget,
              "seconds": a.seconds, "rate_rps": a.rate, "warmup": a.warmup,
              "image_kb": a.image_kb, "tolerance": a.tolerance, "metrics": a.metrics, "alpha": a.alpha,
              "baseline": "1 host", "inventory": str(inventory)}
    points = sweep_points(a.factors, a.reps, a.hosts)
    if a.dry_run:
        from edgelab.plan import make_plan

        for f in a.factors:
            plan = make_plan(folding_topology(f, name=TESTBED))
            for h in a.hosts:
                print(f"### factor {f} over {h} host(s)\n{backends[h].dry_run(plan)}")
        return 0

    def measure(point, run):
        load = FoldLoad(seconds=a.seconds, rate_rps=a.rate,
                        image_bytes=a.image_kb * 1000, seed=1 + point["rep"], warmup=a.warmup)
        return folding_point(folding_topology(point["factor"], name=TESTBED), backend=backends[point["hosts"]],
                             run=run, point=point, load=load)

    sweep = dict(experiment="folding", param_names=["factor", "hosts", "rep"], measure=measure, params=params,
                 results_root=a.results, backend="ssh", keep_going=a.keep_going, will_report=not a.no_report)
    from analysis.folding_hosts import hosts_verdicts
    from analysis.load import ResultsError, load_run

    def verdicts_of(path):
        return hosts_verdicts(load_run(path).df, a.metrics, tolerance=a.tolerance, alpha=a.alpha)

    t0 = time.monotonic()
    outcome = run_sweep(points=points, resume=a.resume, **sweep)
    reps = {f: a.reps for f in a.factors}
    while outcome.status == "complete":   # adaptive rounds: factors whose verdict is undecided
        try:
            undecided = [f for f, v in verdicts_of(outcome.run.path).items()
                         if "inconclusive" in v.verdicts.values() and reps[f] < a.max_reps]
        except ResultsError:
            break
        if not undecided:
            break
        extra = [{"factor": f, "hosts": h, "rep": reps[f]} for f in undecided for h in a.hosts]
        spent = time.monotonic() - t0
        need = spent / max(1, len(points)) * len(extra)
        if spent + need > a.budget:
            console.print(f"adaptive repetitions stop: the next round ({len(extra)} points, about {need:.0f} s) would "
                          f"exceed the {a.budget:g} s budget", highlight=False, soft_wrap=True)
            break
        console.print(f"adaptive round: factor(s) {', '.join(map(str, undecided))} undecided over hosts; one more "
                      "repetition of every host count", highlight=False, soft_wrap=True)
        for f in undecided:
            reps[f] += 1
        points = points + extra
        outcome = run_sweep(points=points, resume=outcome.run.path, **sweep)
    if outcome.status != "interrupted" and judgeable(outcome.run.path):
        verdicts = verdicts_of(outcome.run.path)
        print("Folding over hosts: each factor's virtual topology spread over M hosts, judged against all of it "
              "on 1 host (the baseline)")
        for v in verdicts.values():
            print(f"  {v.describe()}")
            for r in v.table[v.table["hosts"] != 1].itertuples():
                print(f"    {r.hosts} hosts: {r.metric} {r.degradation:+.1%} ({r.decision})")
    return finish(outcome, a)


if __name__ == "__main__":
    main_guard(main)
