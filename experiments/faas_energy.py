#!/usr/bin/env python3
"""How many joules does a function invocation cost on a BeagleBone worker?

BeaglePaaS (a MicroFaaS-style orchestrator and BeagleBone-class workers, each
on an emulated smart plug) runs a batch of MicroFaaS functions; the number of
workers is swept. Measured per point: invocations per second (saturated
throughput), latency percentiles (submit to done), the energy the plugs charge
each invocation (the worker's draw while running it, as MicroFaaS accounts
it), the workers' total power and the whole cluster's joules per invocation
with idle time included.

Quick default: 1, 2, 4 workers, 20 invocations per worker, 1 repetition
(about a minute); ``--full``: 1..8 workers, 50 each, 3 repetitions.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (puts the repository on sys.path)

from edgelab.experiment import (testbed_name, backend_from_args, common_arguments, dry_run, finish, int_list, main_guard,
                                run_sweep)
from edgelab.scenario_topologies import faas_topology
from edgelab.scenarios import FaasLoad, faas_point
from edgelab.scenarios.faas import FUNCTIONS
from edgelab.services.power.inventory import plugs_from_args, power_arguments

#: NixOS-Compose composition of these nodes (nxc and g5k backends).
COMPOSITION = "beaglepaas"


#: This process's testbed name (unique on the machine: see edgelab.experiment.testbed_name).
TESTBED = testbed_name("faas")

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", type=int_list, default=None,
                   help="worker counts (quick 1,2,4; --full 1,2,4,6,8)")
    p.add_argument("--per-worker", type=int, default=None, help="invocations per worker (quick 20, full 50)")
    p.add_argument("--functions", type=lambda s: tuple(s.split(",")), default=FUNCTIONS,
                   help=f"MicroFaaS functions, round-robin (default {','.join(FUNCTIONS)})")
    p.add_argument("--reps", type=int, default=None, help="repetitions (quick 1, full 3)")
    power_arguments(p, "BeagleBone model on each worker's measured CPU")
    p.add_argument("--prometheus", action="store_true",
                   help="run a real Prometheus server (Debian 'prometheus') scraping every plug and the "
                        "orchestrator during each point; the window's series go to raw/<point>/prometheus_series.csv "
                        "and the report plots power over time from them")
    p.add_argument("--slots", type=int, default=1,
                   help="worker processes per worker node: functions running at once on one board; their "
                        "energy is split by CPU-time share (default %(default)s)")
    p.add_argument("--full", action="store_true", help="the full sweep instead of the quick default")
    common_arguments(p)
    a = p.parse_args(argv)
    from edgelab.services.beaglepaas.functions import FUNCTIONS as KNOWN

    unknown = [f for f in a.functions if f not in KNOWN]
    if unknown:
        p.error(f"unknown function(s) {', '.join(unknown)}; known: {', '.join(sorted(KNOWN))}")
    a.workers = a.workers or ([1, 2, 4, 6, 8] if a.full else [1, 2, 4])
    a.per_worker = a.per_worker or (50 if a.full else 20)
    a.reps = a.reps or (3 if a.full else 1)
    if a.slots < 1:
        p.error("--slots must be at least 1")
    a.plug_map = plugs_from_args(a, p)
    return a


def sweep_points(workers: list[int], reps: int) -> list[dict]:
    return [{"n_workers": n, "rep": r} for r in range(reps) for n in workers]


def main(argv=None) -> int:
    a = parse_args(argv)
    params = {"workers": a.workers, "per_worker": a.per_worker, "functions": list(a.functions), "reps": a.reps,
              "power_source": a.power_source, "plugs": a.plug_map, "slots": a.slots,
              "prometheus": a.prometheus}

    points = sweep_points(a.workers, a.reps)
    if a.dry_run:
        return dry_run(a, [faas_topology(p["n_workers"], name=TESTBED) for p in points], COMPOSITION)
    backend = backend_from_args(a, COMPOSITION)

    def measure(point, run):
        return faas_point(faas_topology(point["n_workers"], name=TESTBED), backend=backend, run=run, point=point,
                          load=FaasLoad(per_worker=a.per_worker, functions=a.functions, power_source=a.power_source,
                                        plugs=tuple(a.plug_map.items()), slots=a.slots,
                                        prometheus=a.prometheus))

    outcome = run_sweep(experiment="faas_energy", points=points,
                        param_names=["n_workers", "rep"], measure=measure, params=params, results_root=a.results,
                        backend=a.backend, resume=a.resume, keep_going=a.keep_going, will_report=not a.no_report)
    return finish(outcome, a)


if __name__ == "__main__":
    main_guard(main)
