#!/usr/bin/env python3
"""Folding a cluster that contains a distributed file system (Guilloteau et al., hal-04038000).

The same file system and the same per-client I/O workload, with more and more
virtual nodes per host: the folding factor is the number of virtual nodes on
one physical host, counted as CPU nodes (clients, ``nb_cpu``) plus I/O nodes
(storage servers, ``nb_io``). Per point: write and read bandwidth per client
(MiB/s) and file creations per client (ops/s). Each factor is judged against
the least folded one by the equivalence test of :mod:`analysis.folding` (TOST at
``--alpha`` against ``--tolerance``), with adaptive repetitions for undecided
factors (experiments/folding.py) and the host's overload signals
(:mod:`edgelab.hostload`). The report plots bandwidth vs folding factor with the
paper's rule of thumb ``f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io`` overlaid.

Backends, one script:

* ``local`` (default): GlusterFS (Debian glusterfs-server) servers and FUSE
  clients as nodes with private directories, bricks on loop-file scratch disks,
  fio as the benchmark;
* ``nxc`` / ``g5k``: a composition (``--fs glusterfs|nfs|orangefs|cephfs``) whose
  clients run IOR and mdtest. ``--dry-run`` prints, per point, the composition,
  its setup parameters (node counts), the disks, and every client's IOR and
  mdtest command line, with the backend's own dry run.

``--quick`` (default): 1 I/O node, factors 2,4,6 (1, 3, 5 clients) x 3 repetitions,
2 s phases, adaptive rounds up to 5 repetitions within a 240 s budget (about 3 min here).
``--full``: factors 2,3,4,6,8,10 x 5, 5 s phases, up to 10 repetitions, 3600 s.
"""

from __future__ import annotations

import argparse
import os

import _common  # noqa: F401  (puts the repository on sys.path)


from edgelab.dfs import bench
from edgelab.dfs.compositions import COMPOSITIONS, remote_dry_run
from edgelab.experiment import backend_from_args, common_arguments, console, finish, int_list, main_guard
from edgelab.adaptive import judgeable, run_adaptive
from edgelab.scenarios import measure_on
from edgelab.scenarios.fsio import JUDGED, fs_topology, run_fsio
from edgelab.experiment import testbed_name

#: This process's testbed name: two runs on one machine never share kernel objects.
TESTBED = testbed_name("fsfold")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--factors", type=int_list, default=None,
                   help="virtual nodes per host = clients + I/O nodes (quick 2,4,6; --full 2,3,4,6,8,10)")
    p.add_argument("--io-nodes", type=int, default=1, help="I/O (storage) nodes, nb_io (default %(default)s)")
    p.add_argument("--fs", choices=sorted(COMPOSITIONS), default="glusterfs",
                   help="file system (local backend: glusterfs only; nxc/g5k: its composition)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per factor (quick 3, full 5)")
    p.add_argument("--seconds", type=float, default=None, help="duration of each fio phase (quick 2, full 5)")
    p.add_argument("--size-mib", type=int, default=64, help="file per client, MiB (default %(default)s)")
    p.add_argument("--md-files", type=int, default=300, help="files each client creates (default %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.10,
                   help="largest acceptable relative deviation from the baseline (default %(default)s)")
    p.add_argument("--alpha", type=float, default=0.05, help="level of each one-sided test (default %(default)s)")
    p.add_argument("--metrics", type=lambda s: s.split(","), default=JUDGED,
                   help=f"metrics judged (default {','.join(JUDGED)})")
    p.add_argument("--max-reps", type=int, default=None, help="adaptive repetitions per factor (quick 5, full 10)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the sweep with adaptive rounds (quick 240)")
    p.add_argument("--warm-host", action=argparse.BooleanOptionalAction, default=True,
                   help="local backend: keep the CPUs out of idle states (default on)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the quick sweep (default)")
    mode.add_argument("--full", action="store_true", help="the full sweep")
    common_arguments(p)
    a = p.parse_args(argv)
    if a.backend == "ssh" or getattr(a, "inventory", None):
        p.error("fs_folding runs on the local backend (GlusterFS + fio) or on the nxc/g5k compositions; "
                "the ssh backend's devices have no file-system role here")
    if a.io_nodes < 1:
        p.error("--io-nodes must be at least 1")
    a.factors = sorted(set(a.factors or ([2, 3, 4, 6, 8, 10] if a.full else [2, 4, 6])))
    if a.factors[0] <= a.io_nodes:
        p.error(f"every factor must exceed --io-nodes ({a.io_nodes}): a factor counts clients + I/O nodes "
                f"and needs at least one client (got {a.factors[0]})")
    if a.backend == "local" and a.fs != "glusterfs":
        p.error(f"--fs {a.fs} runs on nxc/g5k only (this kernel has no NFS; OrangeFS and CephFS need their "
                "NixOS compositions); the local backend runs glusterfs")
    a.reps = a.reps or (5 if a.full else 3)
    a.seconds = a.seconds or (5.0 if a.full else 2.0)
    a.max_reps = max(a.reps, a.max_reps or (10 if a.full else 5))
    a.budget = a.budget or (3600.0 if a.full else 240.0)
    if a.reps < 2:
        p.error("--reps must be at least 2: the equivalence test needs an interval per factor")
    if not 0 < a.tolerance < 1 or not 0 < a.alpha < 0.5:
        p.error("--tolerance must be in (0, 1) and --alpha in (0, 0.5)")
    return a


def rule_of_thumb(nb_cpu: int, nb_io: int) -> float:
    """The folding paper's f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io (OrangeFS, IOR, Grid'5000 gros)."""
    return 1 + 0.3 * nb_cpu - 0.5 * nb_io


def sweep_points(factors: list[int], reps: int, nb_io: int) -> list[dict]:
    """Repetitions interleaved over factors; each point says its CPU and I/O node counts."""
    return [point(f, r, nb_io) for r in range(reps) for f in factors]


def point(factor: int, rep: int, nb_io: int) -> dict:
    return {"factor": factor, "nb_cpu": factor - nb_io, "nb_io": nb_io, "rep": rep}


def scratch_mib(nb_cpu: int, nb_io: int, size_mib: int) -> int:
    """Each brick's scratch disk: its share of every client's file, with room for metadata
    and ext4 (a sparse loop file: only what is written takes host disk)."""
    return max(256, -(-nb_cpu * size_mib * 3 // (2 * nb_io)) + 128)


def verdict_of(run_path, a):
    from analysis.folding import folding_verdict
    from analysis.load import load_run

    return folding_verdict(load_run(run_path).df, a.metrics, tolerance=a.tolerance, alpha=a.alpha,
                           cpus=os.cpu_count())


def main(argv=None) -> int:
    a = parse_args(argv)
    load = bench.IOLoad(size_mib=a.size_mib, seconds=a.seconds, md_files=a.md_files)
    params = {"factors": a.factors, "io_nodes": a.io_nodes, "fs": a.fs, "reps": a.reps, "seconds": a.seconds,
              "size_mib": a.size_mib, "md_files": a.md_files, "tolerance": a.tolerance, "alpha": a.alpha,
              "metrics": a.metrics, "max_reps": a.max_reps, "budget_s": a.budget, "warm_host": a.warm_host,
              "rule_of_thumb": "f_break = 1 + 0.3*nb_cpu - 0.5*nb_io"}
    points = sweep_points(a.factors, a.reps, a.io_nodes)
    if a.dry_run:
        for f in a.factors:
            print(remote_dry_run(a.fs, a.backend, f - a.io_nodes, a.io_nodes, load, a.backend_opt))
        return 0
    if a.backend != "local":
        raise SystemExit("fs_folding on nxc/g5k: run the composition with `--dry-run` to see the deployment and "
                         "IOR/mdtest commands; measuring through the remote backends needs their run() over SSH "
                         "(see docs/nix.md, 'File systems')")
    backend = backend_from_args(a, None)

    def measure(pt, run):
        topo = fs_topology(pt["nb_cpu"], pt["nb_io"], name=TESTBED,
                           scratch_mib=scratch_mib(pt["nb_cpu"], pt["nb_io"], a.size_mib))
        return measure_on(topo, backend, run, pt, lambda tb, raw: run_fsio(tb, load, raw))

    sweep = dict(experiment="fs_folding", param_names=["factor", "nb_cpu", "nb_io", "rep"],
                 measure=measure, params=params, results_root=a.results, backend=a.backend,
                 keep_going=a.keep_going, will_report=not a.no_report)
    outcome = run_adaptive(points=points, resume=a.resume, sweep=sweep, verdict_of=lambda p: verdict_of(p, a),
                           max_reps=a.max_reps, budget=a.budget, warm=a.warm_host,
                           make_point=lambda f, r: point(f, r, a.io_nodes))
    if outcome.status != "interrupted":
        if not judgeable(outcome.run.path):   # unhealthy or incomplete points are left out, and named
            return finish(outcome, a)
        verdict = verdict_of(outcome.run.path, a)
        console.print(verdict.describe(), highlight=False, soft_wrap=True)
        t = verdict.table
        for f in sorted(t["factor"].unique()):
            at = t[t["factor"] == f]
            vals = ", ".join(f"{r.metric} {r.mean:.1f} ({r.degradation:+.1%})" for r in at.itertuples())
            console.print(f"  factor {f} (nb_cpu {f - a.io_nodes}, nb_io {a.io_nodes}; rule of thumb f_break "
                          f"{rule_of_thumb(f - a.io_nodes, a.io_nodes):.1f}): {vals}", highlight=False, soft_wrap=True)
        bp = verdict.breaking_point
        print(f"breaking point: {bp if bp is not None else f'none up to factor {max(a.factors)}'}")
    return finish(outcome, a)


if __name__ == "__main__":
    main_guard(main)
