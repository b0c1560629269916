"""Running a sweep: progress, resume, and nothing lost on interrupt.

Every experiment script is a list of sweep points plus a ``measure(point)``
function returning :class:`~edgelab.results.Measurement` rows. This module
does the rest the same way for all of them: opens (or resumes) the run in the
results store, shows progress, writes each point's rows atomically, and on
Ctrl-C/SIGTERM puts the current point back, marks the run ``interrupted`` and
tells the user how to resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import EdgelabError
from .health import Check, cause, checks_of, failed, record_health
from .results import Measurement, ResultsStore, Run, now_iso, point_id

console = Console(stderr=True)

MeasureFn = Callable[[dict, Run], Iterable[Measurement]]


class Interrupted(BaseException):
    """Raised inside the sweep when SIGINT or SIGTERM arrives.

    A BaseException, like KeyboardInterrupt, so that the ``except Exception``
    of whatever code the signal happens to land in (ours, pyroute2's,
    requests'...) cannot swallow it and let the sweep run on.
    """


@contextmanager
def interrupts_as_exception() -> Iterator[list[str]]:
    """Turn SIGINT/SIGTERM into :class:`Interrupted` so ``finally`` blocks
    (testbed teardown, manifest update) run; restore the old handlers after.

    Yields the list of signal names received, for callers that must notice
    an interruption even if some code swallowed the exception.
    """
    received: list[str] = []

    def handler(signum, _frame):
        received.append(signal.Signals(signum).name)
        raise Interrupted(received[-1])

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Outcome:
    run: Run
    status: str
    measured: int = 0
    skipped_done: int = 0
    failed: list[str] = field(default_factory=list)
    #: The signal that interrupted the sweep (its exit status is 128 + it, as a shell reports it).
    signal: Optional[int] = None
    #: point id -> cause, for points whose health checks failed (measured, but excluded)
    unhealthy: dict[str, str] = field(default_factory=dict)


def start_execo_before_handlers(backend: str) -> None:
    """Import execo (remote backends use it) before any handler or sweep frame exists.

    Its first import forks a process-group keeper (execo/conductor.py:279, created at
    import by :590) that is a copy of this process at that instant and, once we exit,
    SIGTERMs its group, itself included. Forked in the middle of a sweep, that copy
    ran our SIGTERM handler in its copy of the sweep's frames and rewrote the
    manifest from stale memory ("failed", no facts) after the real run had ended.
    Forked here, it has the default disposition and simply dies.
    """
    if backend != "local":
        import execo  # noqa: F401


def run_sweep(*, experiment: str, points: Sequence[dict], param_names: Sequence[str], measure: MeasureFn,
              params: dict, results_root: str | Path = "results", backend: str = "local",
              topology: Optional[dict] = None, resume: bool | str | Path = False,
              keep_going: bool = False, describe: Callable[[dict], str] = point_id,
              will_report: bool = False) -> Outcome:
    """Measure every point not already done; see module docstring.

    ``will_report``: :func:`finish` writes the report next; the manifest then says
    ``report: pending`` in the same write that marks the run finished, so that a
    kill at any instant before the report is written leaves a run ``--resume`` finishes.
    """
    start_execo_before_handlers(backend)
    store = ResultsStore(results_root)
    run = store.open_run(experiment, params=params, param_names=param_names, topology=topology,
                         backend=backend, resume=resume)
    console.print(f"[bold]{experiment}[/]: results in [cyan]{run.path}[/]")
    outcome = Outcome(run=run, status="running")
    current: Optional[dict] = None
    sweep = None
    try:
        with interrupts_as_exception() as received:
            sweep = run.sweep(points)
            outcome.skipped_done = sweep.skipped_done
            if sweep.skipped_done:
                console.print(f"resuming: {sweep.skipped_done} of {sweep.total} points already done, skipped")
            with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                          transient=False) as progress:
                task = progress.add_task(experiment, total=sweep.total, completed=sweep.skipped_done)
                for point in sweep:
                    current = point
                    progress.update(task, description=f"{experiment} [{describe(point)}]")
                    t0 = time.monotonic()
                    try:
                        got = measure(point, run)
                        checks = checks_of(got)
                        rows = list(got)
                        if received:  # a signal arrived and something swallowed it: the point is suspect
                            raise Interrupted(received[0])
                    except Exception as exc:  # noqa: BLE001 - recorded, then re-raised or skipped
                        if received:  # the failure is the signal's doing (e.g. a killed wait)
                            raise Interrupted(received[0]) from exc
                        record_health(run.path, point_id(point),
                                      [Check("measurement", False, f"{type(exc).__name__}: {exc}")], None, "failed")
                        if not keep_going:
                            raise
                        sweep.failed(point, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
                        outcome.failed.append(point_id(point))
                        console.print(f"[red]point {escape(describe(point))} failed[/]: {escape(str(exc))}")
                        current = None
                        progress.advance(task)
                        continue
                    if failed(checks):
                        # Measured, but not a measurement: keep the rows aside, never in measurements.csv.
                        why = cause(checks)
                        keep_rejected(run, point, rows)
                        record_health(run.path, point_id(point), checks, None, "unhealthy")
                        sweep.failed(point, f"unhealthy: {why}")
                        outcome.unhealthy[point_id(point)] = why
                        console.print(f"[red]point {escape(describe(point))} is unhealthy, excluded[/]: "
                                      f"{escape(why)}", highlight=False)
                        current = None
                        progress.advance(task)
                        continue
                    # The row count goes first: a crash mid-append then shows as an incomplete point.
                    record_health(run.path, point_id(point), checks, len(rows), "healthy")
                    sweep.complete(point, rows)
                    current = None
                    outcome.measured += 1
                    progress.advance(task)
                    console.log(f"{describe(point)}: {len(rows)} measurements in {time.monotonic() - t0:.1f} s")
        outcome.status = "complete" if not (outcome.failed or outcome.unhealthy) else "complete-with-failures"
        if will_report:
            run.update_manifest(status=outcome.status, ended=now_iso(), report="pending")
        else:
            run.finish(outcome.status)
        if outcome.unhealthy:
            console.print(f"[red]{len(outcome.unhealthy)} point(s) unhealthy, excluded from the results[/] "
                          f"(causes in {run.path / 'health.json'})", highlight=False)
    except (Interrupted, KeyboardInterrupt) as exc:
        if sweep is not None and current is not None:
            sweep.cancel(current)
        outcome.status = "interrupted"
        outcome.signal = (signal.Signals[exc.args[0]].value if isinstance(exc, Interrupted) and exc.args
                          and exc.args[0] in signal.Signals.__members__ else signal.SIGINT.value)
        run.finish("interrupted")
        console.print(f"[yellow]interrupted ({exc or 'SIGINT'})[/]: completed points are saved in {run.path}; "
                      f"resume with the same command and --resume")
    except BaseException:
        if sweep is not None and current is not None:
            sweep.cancel(current)
        run.finish("failed")
        raise
    return outcome


def testbed_name(base: str) -> str:
    """The testbed name this process uses: ``<base>-<pid>``.

    A fixed name ("faas", "fold"...) made two users, or two sessions, running the
    same experiment on one machine claim the same namespaces; a pid is unique among
    the processes running at once, and stays the same for every point of one run, so
    ``edgelab down <name>`` after a crash has one name to use (it is printed, and is in
    each node's ``netns`` in the manifest's facts).
    """
    suffix = f"-{os.getpid()}"
    return base[: 16 - len(suffix)] + suffix


def keep_rejected(run: Run, point: dict, rows: Sequence[Measurement]) -> None:
    """An unhealthy point's rows, for inspection only: ``raw/<point>/rejected_measurements.csv``."""
    import csv

    path = run.raw_dir(point) / "rejected_measurements.csv"
    path.unlink(missing_ok=True)   # never write through a link planted in a shared run directory
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["metric", "value", "unit", "node", "time"])
        w.writerows([m.metric, repr(float(m.value)), m.unit, m.node, "" if m.time is None else repr(m.time)]
                     for m in rows)


def common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Options every experiment script shares (and the exit statuses, in ``--help``)."""
    parser.epilog = ((parser.epilog + "\n\n") if parser.epilog else "") + EXIT_HELP
    parser.add_argument("--results", default="results", help="results root directory (default: results)")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="RUN_DIR",
                        help="resume the latest unfinished run with the same parameters, or RUN_DIR")
    parser.add_argument("--backend", choices=["local", "ssh", "nxc", "g5k"], default="local",
                        help="where the nodes run (default: local namespaces + cgroups; ssh: the devices of "
                             "--inventory)")
    parser.add_argument("--inventory", metavar="FILE", default=None,
                        help="devices that run the plan's nodes (YAML; docs/backends.md); selects --backend ssh "
                             "unless another remote backend is given")
    parser.add_argument("--backend-opt", action="append", default=[], metavar="KEY=VALUE",
                        help="backend option, repeatable (nxc: composition=, flavour=; g5k: site=, cluster=, "
                             "walltime=, max_per_host=...); values are parsed as YAML scalars")
    parser.add_argument("--dry-run", action="store_true",
                        help="print what the backend would reserve, deploy and impose for the sweep's topologies, "
                             "then exit without touching anything")
    parser.add_argument("--keep-going", action="store_true", help="record a failed point and continue")
    parser.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    return parser


def int_list(text: str) -> list[int]:
    """``--phones 1,2,4``: a comma-separated list of integers (an argparse ``type``)."""
    return [int(x) for x in text.split(",")]


def float_list(text: str) -> list[float]:
    """``--rates 2,8``: a comma-separated list of numbers (an argparse ``type``)."""
    return [float(x) for x in text.split(",")]


def backend_options(pairs: Sequence[str]) -> dict:
    """``KEY=VALUE`` strings -> options; values as YAML scalars (``4`` -> int, ``true`` -> bool)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise EdgelabError(f"--backend-opt {pair!r}: expected KEY=VALUE (e.g. site=rennes)")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value else ""
    return out


def _options(args: argparse.Namespace, composition: Optional[str]) -> dict:
    opts = backend_options(args.backend_opt)
    inventory = getattr(args, "inventory", None)
    if inventory and args.backend == "local":
        args.backend = "ssh"   # --inventory alone means the ssh backend
    if args.backend == "ssh":
        if inventory:
            opts.setdefault("inventory", inventory)
        if "inventory" not in opts:
            raise EdgelabError("--backend ssh needs --inventory FILE (the devices that run the plan's nodes; "
                               "docs/backends.md)")
    if composition and args.backend in ("nxc", "g5k"):
        opts.setdefault("composition", composition)
    return opts


def backend_from_args(args: argparse.Namespace, composition: Optional[str] = None):
    """The backend an experiment's points run on: its name when no options were given
    (each point instantiates it), else an instance built with ``--backend-opt``.
    ``composition``: the NixOS-Compose composition the experiment's nodes need
    (nxc and g5k backends), unless the user chose another."""
    opts = _options(args, composition)
    if not opts:
        return args.backend
    from .backends import get_backend

    return get_backend(args.backend, **opts)


def dry_run(args: argparse.Namespace, topologies: Iterable, composition: Optional[str] = None) -> int:
    """``--dry-run``: per distinct topology of the sweep, what the backend would do."""
    from .backends import get_backend
    from .plan import make_plan

    opts = _options(args, composition)   # first: --inventory alone selects the ssh backend
    be = get_backend(args.backend, **opts)
    seen = set()
    for topo in topologies:
        plan = make_plan(topo)
        key = (topo.name, tuple(n.name for n in plan.nodes))
        if key not in seen:
            seen.add(key)
            print(f"### {topo.name}: {len(plan.nodes)} nodes\n{be.dry_run(plan)}")
    return 0


def finish(outcome: Outcome, args: argparse.Namespace) -> int:
    """After a sweep: the report (unless interrupted or ``--no-report``), then the exit code.

    The manifest says ``report: pending`` until the report is written, so a run
    killed while reporting is still "unfinished" to ``--resume``, which reopens
    it (nothing left to measure) and writes the report, instead of starting a
    new run (:meth:`edgelab.results.ResultsStore.latest_unfinished`).
    """
    if outcome.status != "interrupted" and not args.no_report:
        from .reporting import report_and_summarise

        if outcome.run.manifest.get("report") != "pending":
            outcome.run.update_manifest(report="pending")
        report_and_summarise(outcome.run.path)
        outcome.run.update_manifest(report="written")
    elif args.no_report and outcome.run.manifest.get("report") == "pending":
        outcome.run.update_manifest(report="not requested")
    return exit_code(outcome)


#: Exit status of an experiment script (documented in the README):
#: 0 every point measured and healthy; 1 some point failed or was unhealthy (measured while
#: a service, meter or delayer was dead, or with too few samples), so it is excluded from
#: the results and the report's headline names it; 2 a usage or setup error; 128 + the signal
#: when interrupted (EXIT_INTERRUPTED, 130, for Ctrl-C; 143 for SIGTERM).
EXIT_OK, EXIT_POINTS_EXCLUDED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_HELP = ("exit status: 0 every point measured and healthy; 1 some point failed or was unhealthy "
             "(excluded from the results; the report's headline and health.json say why, --resume measures "
             "it again); 2 usage or setup error; 130 interrupted by Ctrl-C, 143 by SIGTERM (resume with --resume)")


def exit_code(outcome: Outcome) -> int:
    """0 complete, 128 + the signal when interrupted (130 SIGINT, 143 SIGTERM: what a shell
    or a batch scheduler reports for that signal), 1 some point excluded or failed."""
    if outcome.status == "interrupted":
        return 128 + (outcome.signal or signal.SIGINT.value)
    return {"complete": EXIT_OK}.get(outcome.status, EXIT_POINTS_EXCLUDED)


def main_guard(fn: Callable[[], int]) -> None:
    """Run an experiment's main: user-fixable errors print one line, exit 2."""
    try:
        sys.exit(fn())
    except EdgelabError as exc:
        console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True, highlight=False)
        sys.exit(2)
