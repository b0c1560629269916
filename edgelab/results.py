"""The results store: one directory per run, a manifest and tidy measurements.

Layout of ``<root>/<experiment>/<run_id>/``::

    manifest.json      experiment, params, topology plan, backend facts, git
                       revision, flake.lock hash, host facts, start/end, status
    measurements.csv   tidy: point, <sweep params...>, metric, value, unit, node, time
    sweep.json         which points are done (JSON point ids: nothing
                       in a run directory is ever unpickled or executed)
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
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

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
    """Resumable iteration over sweep points; which are done is kept in ``sweep.json``.

    Usage::

        for point in run.sweep(points):
            rows = measure(point)
            sweep.complete(point, rows)   # writes rows, then marks done

    The state is JSON (point ids), not execo's ``ParamSweeper``: that one
    pickles its sets, and unpickling a run directory someone else could write
    runs their code (run directories are meant to be shared). A point in
    progress is never recorded, so after a crash it is simply not done and is
    measured again.
    """

    def __init__(self, run: Run, points: list[dict]):
        self.run = run
        self.points = points
        for p in points:
            if set(p) != set(run.param_names):
                raise EdgelabError(f"sweep point {p} must have exactly the parameters {run.param_names}")
        self._ids = [point_id(p) for p in points]
        self._done = _load_sweep_state(run.path)
        self._skipped: set[str] = set()  # failed in this process: not retried now, retried on resume
        self.dropped_rows = run._drop_unfinished_rows(self._done)
        self.skipped_done = sum(1 for i in set(self._ids) if i in self._done)

    @property
    def total(self) -> int:
        return len(self.points)

    def _remaining(self) -> list[dict]:
        seen: set[str] = set()
        out = []
        for pid, p in zip(self._ids, self.points):
            if pid not in self._done and pid not in self._skipped and pid not in seen:
                seen.add(pid)
                out.append(p)
        return out

    @property
    def remaining(self) -> int:
        return len(self._remaining())

    def __iter__(self) -> Iterator[dict]:
        # The researcher's order; a point handed out and neither completed, failed nor
        # cancelled (the caller stopped iterating) is handed out again only on resume.
        handed: set[str] = set()
        while True:
            nxt = next((p for p in self._remaining() if point_id(p) not in handed), None)
            if nxt is None:
                return
            handed.add(point_id(nxt))
            yield dict(nxt)

    def _save(self) -> None:
        atomic_write_text(self.run.path / SWEEP_STATE, json.dumps(
            {"format": SWEEP_FORMAT, "done": sorted(self._done)}, indent=1) + "\n")

    def complete(self, point: dict, measurements: Iterable[Measurement]) -> int:
        n = self.run.write_point(point, measurements)
        self._done.add(point_id(point))
        self._save()
        return n

    def failed(self, point: dict, reason: str) -> None:
        """Mark a point failed and log why: not measured again by this sweep, but ``--resume``
        measures it again (as execo's ParamSweeper did: its skipped set was never saved)."""
        self._skipped.add(point_id(point))
        with open(self.run.path / "failures.log", "a") as fh:
            fh.write(f"{now_iso()} {point_id(point)}: {reason}\n")

    def cancel(self, point: dict) -> None:
        """Put a point back (e.g. on Ctrl-C) so a resume measures it again."""
        pid = point_id(point)
        self._skipped.discard(pid)
        if pid in self._done:
            self._done.discard(pid)
            self._save()


SWEEP_STATE = "sweep.json"
SWEEP_FORMAT = 1
#: A sweep state larger than this is not a list of point ids.
SWEEP_STATE_MAX_BYTES = 16 << 20


def _load_sweep_state(path: Path) -> set[str]:
    """The done point ids of run directory ``path``; empty for a new run.

    A run written by an older edgelab keeps execo's pickled ``sweep/`` state: it is
    never unpickled (that could run code), so such a run cannot be resumed.
    """
    f = path / SWEEP_STATE
    if not os.path.lexists(f):
        if (path / "sweep").exists():
            raise EdgelabError(f"{path}: its resume state is an execo pickle (sweep/, from an older edgelab); "
                               "it is not read, since unpickling a file can run code: start a new run")
        return set()
    check_owned(f)
    if f.stat().st_size > SWEEP_STATE_MAX_BYTES:
        raise EdgelabError(f"{f}: {f.stat().st_size} bytes is not a sweep state; cannot resume")
    try:
        data = json.loads(f.read_text())
        if not isinstance(data, dict) or data.get("format") != SWEEP_FORMAT:
            raise ValueError(f"expected an object with format {SWEEP_FORMAT}")
        ids = data.get("done", [])
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError("'done' must be a list of point ids")
    except ValueError as e:
        raise EdgelabError(f"{f} is not a sweep state ({e}); cannot resume") from None
    return set(ids)


def check_owned(path: Path) -> None:
    """Refuse a run directory or file that is a symlink or that another user owns.

    Resuming reads the run's state and then appends to it as the current user:
    someone else's directory could feed it anything, and we would write where they choose.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise EdgelabError(f"{path} is a symlink; refusing to resume from it (copy the run directory instead)")
    if st.st_uid != os.geteuid():
        raise EdgelabError(f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()}); refusing to "
                           "resume someone else's run: copy the run directory and resume the copy")


class ResultsStore:
    def __init__(self, root: str | Path = "results"):
        self.root = Path(root)

    def runs(self, experiment: str) -> list[Path]:
        d = self.root / experiment
        return sorted(p for p in d.iterdir() if (p / "manifest.json").exists()) if d.exists() else []

    def latest_unfinished(self, experiment: str, params: dict) -> Optional[Path]:
        for path in reversed(self.runs(experiment)):
            try:
                check_owned(path)
            except EdgelabError:
                continue  # someone else's run: never resumed implicitly
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
            for p in (path, path / "manifest.json", path / "measurements.csv", path / SWEEP_STATE):
                check_owned(p)
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
