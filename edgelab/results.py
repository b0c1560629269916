"""The results store: one directory per run, a manifest and tidy measurements.

Layout of ``<root>/<experiment>/<run_id>/``::

    manifest.json      experiment, params, topology plan, backend facts, git
                       revision, flake.lock hash, host facts, start/end, status
    measurements.csv   tidy: point, <sweep params...>, metric, value, unit, node, time
    sweep/             execo ParamSweeper state (which points are done)
    raw/<point>/       raw tool outputs kept for re-analysis (iperf3 JSON...)

Crash safety: the manifest is replaced atomically; a sweep point's rows are
appended in one write and fsynced *before* the point is marked done, and on
resume rows of points not marked done are dropped, so an interrupted point is
re-measured instead of being half-counted. Readers also drop a trailing
partial line (see :func:`read_measurements`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from execo_engine import ParamSweeper
from execo_engine.sweep import HashableDict

from .errors import EdgelabError
from .provenance import provenance

BASE_COLUMNS = ("metric", "value", "unit", "node", "time")


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def point_id(point: dict) -> str:
    """Stable id of a sweep point: ``n_phones=4,rep=0`` (keys sorted)."""
    return ",".join(f"{k}={point[k]}" for k in sorted(point))


@dataclass
class Measurement:
    metric: str
    value: float
    unit: str = ""
    node: str = ""
    time: Optional[float] = None


def read_measurements_rows(path: Path) -> list[dict]:
    """Rows of a measurements file, dropping a trailing partial line left by a crash."""
    if not path.exists():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    reader = csv.DictReader(io.StringIO(text))
    return [row for row in reader if None not in row and None not in row.values()]


class Run:
    """An open run directory. Created by :meth:`ResultsStore.open_run`."""

    def __init__(self, path: Path, manifest: dict, param_names: Sequence[str]):
        self.path = path
        self.manifest = manifest
        self.param_names = list(param_names)
        self.columns = ["point", *self.param_names, *BASE_COLUMNS]
        self._sweeper: Optional[ParamSweeper] = None

    # -- manifest -------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    def update_manifest(self, **fields: Any) -> None:
        self.manifest.update(fields)
        atomic_write_text(self.path / "manifest.json", json.dumps(self.manifest, indent=2, default=str) + "\n")

    def record_facts(self, facts: dict) -> None:
        """Merge backend facts (link engine, placement...) into the manifest."""
        merged = dict(self.manifest.get("facts") or {})
        merged.update(facts)
        self.update_manifest(facts=merged)

    def finish(self, status: str = "complete") -> None:
        self.update_manifest(status=status, ended=now_iso())

    # -- sweep ----------------------------------------------------------------
    def sweep(self, points: Iterable[dict]) -> "Sweep":
        """Iterate the points not yet done (resuming skips the done ones)."""
        return Sweep(self, [dict(p) for p in points])

    # -- measurements ---------------------------------------------------------
    @property
    def measurements_path(self) -> Path:
        return self.path / "measurements.csv"

    def raw_dir(self, point: dict) -> Path:
        d = self.path / "raw" / point_id(point).replace("=", "-").replace(",", "_").replace("/", "_")
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_point(self, point: dict, measurements: Iterable[Measurement]) -> int:
        """Append all rows of one point in a single fsynced write; returns the row count."""
        import time

        missing = [p for p in self.param_names if p not in point]
        if missing:
            raise EdgelabError(f"point {point} lacks sweep parameters {missing}")
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        pid = point_id(point)
        n = 0
        for m in measurements:
            writer.writerow([pid, *(point[p] for p in self.param_names), m.metric, repr(float(m.value)), m.unit,
                             m.node, repr(m.time if m.time is not None else time.time())])
            n += 1
        path = self.measurements_path
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a") as fh:
            if new:
                fh.write(",".join(self.columns) + "\n")
            fh.write(buf.getvalue())
            fh.flush()
            os.fsync(fh.fileno())
        return n

    def read_rows(self) -> list[dict]:
        return read_measurements_rows(self.measurements_path)

    def _drop_unfinished_rows(self, done: set[str]) -> int:
        rows = self.read_rows()
        keep = [r for r in rows if r["point"] in done]
        if len(keep) == len(rows) and (not self.measurements_path.exists()
                                       or self.measurements_path.read_text().endswith("\n")):
            return 0
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(self.measurements_path, buf.getvalue())
        return len(rows) - len(keep)


class Sweep:
    """Resumable iteration over sweep points, on top of execo's ParamSweeper.

    Usage::

        for point in run.sweep(points):
            rows = measure(point)
            sweep.complete(point, rows)   # writes rows, then marks done
    """

    def __init__(self, run: Run, points: list[dict]):
        self.run = run
        self.points = points
        for p in points:
            if set(p) != set(run.param_names):
                raise EdgelabError(f"sweep point {p} must have exactly the parameters {run.param_names}")
        combos = [HashableDict(p) for p in points]
        # Points left "in progress" by a crash must be measured again. execo's
        # reset(True) forgets them without re-queuing them in that instance, so
        # reset, then reopen: a fresh instance computes remaining = all - done.
        ParamSweeper(str(run.path / "sweep"), combos, save_sweeps=True).reset(True)
        self.sweeper = ParamSweeper(str(run.path / "sweep"), combos)
        done_ids = {point_id(dict(p)) for p in self.sweeper.get_done()}
        self.dropped_rows = run._drop_unfinished_rows(done_ids)
        self.skipped_done = len(done_ids)

    @property
    def total(self) -> int:
        return len(self.points)

    @property
    def remaining(self) -> int:
        return len(self.sweeper.get_remaining())

    def __iter__(self) -> Iterator[dict]:
        # Keep the researcher's order (ParamSweeper's own order is arbitrary).
        order = {point_id(p): i for i, p in enumerate(self.points)}
        while True:
            remaining = sorted(self.sweeper.get_remaining(), key=lambda p: order[point_id(dict(p))])
            if not remaining:
                return
            nxt = remaining[0]
            # mark in progress through the sweeper's own API
            got = self.sweeper.get_next(lambda rem, _n=nxt: [_n] if _n in rem else list(rem)[:1])
            if got is None:
                return
            yield dict(got)

    def complete(self, point: dict, measurements: Iterable[Measurement]) -> int:
        n = self.run.write_point(point, measurements)
        self.sweeper.done(HashableDict(point))
        return n

    def failed(self, point: dict, reason: str) -> None:
        """Mark a point skipped (it will not be retried on resume) and log why."""
        self.sweeper.skip(HashableDict(point))
        with open(self.run.path / "failures.log", "a") as fh:
            fh.write(f"{now_iso()} {point_id(point)}: {reason}\n")

    def cancel(self, point: dict) -> None:
        """Put a point back (e.g. on Ctrl-C) so a resume measures it again."""
        self.sweeper.cancel(HashableDict(point))


class ResultsStore:
    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)

    def runs(self, experiment: str) -> list[Path]:
        d = self.root / experiment
        return sorted(p for p in d.iterdir() if (p / "manifest.json").exists()) if d.exists() else []

    def latest_unfinished(self, experiment: str, params: dict) -> Optional[Path]:
        for path in reversed(self.runs(experiment)):
            m = json.loads((path / "manifest.json").read_text())
            # "report": "pending" — killed while writing the report: resuming finishes it
            unfinished = m.get("status") != "complete" or m.get("report") == "pending"
            if unfinished and m.get("params") == json.loads(json.dumps(params, default=str)):
                return path
        return None

    def open_run(self, experiment: str, *, params: dict, param_names: Sequence[str], topology: Optional[dict] = None,
                 backend: str = "local", resume: bool | str | Path = False) -> Run:
        """Create a new run, or reopen one to resume.

        ``resume=True`` reopens the latest unfinished run of this experiment with
        identical params (a new run is created if there is none); a path reopens
        that run directory.
        """
        path: Optional[Path] = None
        if isinstance(resume, (str, Path)):
            path = Path(resume)
            if not (path / "manifest.json").exists():
                raise EdgelabError(f"{path}: not a run directory (no manifest.json) — nothing to resume")
        elif resume:
            path = self.latest_unfinished(experiment, params)
        if path is not None:
            manifest = json.loads((path / "manifest.json").read_text())
            if manifest["experiment"] != experiment:
                raise EdgelabError(f"{path} is a {manifest['experiment']!r} run, not {experiment!r}")
            run = Run(path, manifest, manifest.get("param_names", param_names))
            resumes = list(manifest.get("resumed", [])) + [now_iso()]
            run.update_manifest(status="running", resumed=resumes, ended=None)
            return run
        stamp = _dt.datetime.now().strftime("%Y%m%dT%H%M%S")
        run_id = f"{stamp}-{secrets.token_hex(3)}"
        path = self.root / experiment / run_id
        path.mkdir(parents=True, exist_ok=False)
        manifest = {
            "experiment": experiment,
            "run_id": run_id,
            "status": "running",
            "started": now_iso(),
            "ended": None,
            "params": json.loads(json.dumps(params, default=str)),
            "param_names": list(param_names),
            "backend": backend,
            "facts": {},
            **provenance(),
            "topology": topology,
        }
        run = Run(path, manifest, param_names)
        run.update_manifest()
        return run
