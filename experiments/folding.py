#!/usr/bin/env python3
"""How many virtual nodes can one machine host before measurements go wrong?

The same per-node workload (every phone serves ``--rate`` small image requests
per second, sent by one generator on the server node) is run with more and
more phones folded onto this machine: the folding factor is the number of
virtual nodes per physical host. Each metric is compared with the least
folded configuration; the maximum faithful folding factor is the largest one
whose deviation (95 % confidence bound over repetitions) stays within the
tolerance for every judged metric, it and every smaller factor.

Judged metrics: median request latency, CPU time per request of the phones
(both per node, pooled) and requests served per node. p95 latency is
recorded and reported but not judged by default (it needs many more requests
than a quick run sends to be stable to 5 %).

``--quick`` (the default) sweeps factors 1,2,4,8,16,32 with 3 repetitions and
prints the maximum faithful factor; ``--full`` goes to 64 with 5 repetitions.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (puts the repository on sys.path)

from edgelab.experiment import (testbed_name, backend_from_args, common_arguments, console, dry_run, finish, int_list,
                                main_guard, run_sweep)
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
    p.add_argument("--seconds", type=float, default=None, help="load duration per point (quick 4, full 10)")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second per node (default %(default)s)")
    p.add_argument("--image-kb", type=int, default=20, help="request image size in KB (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="largest acceptable relative deviation from the baseline (default %(default)s)")
    p.add_argument("--metrics", type=lambda s: s.split(","), default=JUDGED,
                   help=f"metrics the verdict is judged on (default {','.join(JUDGED)})")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick sweep (default)")
    mode.add_argument("--full", action="store_true", help="the full sweep")
    common_arguments(p)
    a = p.parse_args(argv)
    if not 0 < a.tolerance < 1:
        p.error(f"--tolerance must be a fraction between 0 and 1 (e.g. 0.05), got {a.tolerance}")
    a.factors = sorted(set(a.factors or ([1, 2, 4, 8, 16, 32, 48, 64] if a.full else [1, 2, 4, 8, 16, 32])))
    a.reps = a.reps or (5 if a.full else 3)
    a.seconds = a.seconds or (10.0 if a.full else 4.0)
    return a


def sweep_points(factors: list[int], reps: int) -> list[dict]:
    """Repetitions interleaved (all factors, then again) so slow drifts of the host
    (thermal, other load) spread over every factor instead of biasing one."""
    return [{"factor": f, "rep": r} for r in range(reps) for f in factors]


def main(argv=None) -> int:
    a = parse_args(argv)
    params = {"factors": a.factors, "reps": a.reps, "seconds": a.seconds, "rate_rps": a.rate,
              "image_kb": a.image_kb, "tolerance": a.tolerance, "metrics": a.metrics}

    points = sweep_points(a.factors, a.reps)
    if a.dry_run:
        return dry_run(a, [folding_topology(p["factor"], name=TESTBED) for p in points], COMPOSITION)
    backend = backend_from_args(a, COMPOSITION)

    def measure(point, run):
        load = FoldLoad(seconds=a.seconds, rate_rps=a.rate, image_bytes=a.image_kb * 1000, seed=1 + point["rep"])
        return folding_point(folding_topology(point["factor"], name=TESTBED), backend=backend, run=run,
                             point=point, load=load)

    outcome = run_sweep(experiment="folding", points=points,
                        param_names=["factor", "rep"], measure=measure, params=params, results_root=a.results,
                        backend=a.backend, resume=a.resume, keep_going=a.keep_going)
    if outcome.status != "interrupted":
        from analysis.folding import folding_verdict
        from analysis.load import load_run

        verdict = folding_verdict(load_run(outcome.run.path).df, a.metrics, tolerance=a.tolerance)
        console.print(verdict.describe(), highlight=False)
        t = verdict.table
        for f in sorted(t["factor"].unique()):
            at = t[t["factor"] == f]
            devs = ", ".join(f"{r.metric} {r.degradation:+.1%} (CI bound {r.worst:.1%})" for r in at.itertuples())
            console.print(f"  factor {f}: {devs}", highlight=False)
        print(f"max faithful folding factor: {verdict.max_factor}")
    return finish(outcome, a)


if __name__ == "__main__":
    main_guard(main)
