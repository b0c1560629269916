"""Reading results directories into validated, typed DataFrames.

A run directory (written by ``edgelab.results``) holds ``manifest.json`` and a
tidy ``measurements.csv`` (point, <sweep params...>, metric, value, unit, node,
time). Runs are appended to while they execute and may be cut short by a
crash, so the reader drops a trailing line without its newline (a write that
never finished) instead of failing, and records that it did so.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pandas as pd

from edgelab.errors import EdgelabError

BASE_COLUMNS = ("metric", "value", "unit", "node", "time")
REQUIRED_MANIFEST_KEYS = ("experiment", "run_id", "status")
STATUSES = ("complete", "complete-with-failures", "running", "interrupted", "failed")


class ResultsError(EdgelabError):
    """A results directory that cannot be analysed; names the file and what is wrong."""


@dataclass
class Run:
    """One run: its manifest and its measurements (one row per measurement)."""

    path: Path
    manifest: dict
    df: pd.DataFrame
    param_names: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (point id, why) of every point left out of ``df``: unhealthy, failed, or incomplete in the file
    excluded: list[tuple[str, str]] = field(default_factory=list)
    #: how many sweep points the run recorded (measured or excluded)
    n_points: int = 0
    #: short notes the headline must carry (what was excluded, a truncated file)
    notes: list[str] = field(default_factory=list)

    @property
    def experiment(self) -> str:
        return str(self.manifest["experiment"])

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    @property
    def params(self) -> dict:
        return dict(self.manifest.get("params") or {})

    @property
    def status(self) -> str:
        return str(self.manifest.get("status"))


def _read_manifest(path: Path) -> dict:
    file = path / "manifest.json"
    if not file.is_file():
        raise ResultsError(f"{file}: missing — {path} is not a run directory (expected manifest.json and measurements.csv)")
    try:
        manifest = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{file}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(manifest, dict):
        raise ResultsError(f"{file}: expected a JSON object, got {type(manifest).__name__}")
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ResultsError(f"{file}: missing key(s) {', '.join(missing)}")
    if manifest["status"] not in STATUSES:
        raise ResultsError(f"{file}: status {manifest['status']!r} is not one of {', '.join(STATUSES)}")
    if manifest.get("params") is not None and not isinstance(manifest["params"], dict):
        raise ResultsError(f"{file}: 'params' must be an object, got {type(manifest['params']).__name__}")
    return manifest


def _coerce_param(series: pd.Series) -> pd.Series:
    """Sweep parameters are numbers (n_phones) or labels (network): numbers when every value parses."""
    numeric = pd.to_numeric(series, errors="coerce")
    if len(series) and numeric.notna().all():
        if (numeric == numeric.round()).all():
            return numeric.astype("int64")
        return numeric
    return series.astype(str)


def read_measurements(file: Path, param_names: Optional[list[str]] = None) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Parse a measurements file; returns (df, sweep parameter names, warnings).

    A final line without a newline is an unfinished append and is dropped; any
    other malformed line is an error naming its line number.
    """
    warnings: list[str] = []
    if not file.is_file():
        raise ResultsError(f"{file}: missing — the run wrote no measurements (did its first point fail? see failures.log)")
    text = file.read_text()
    if text and not text.endswith("\n"):
        cut = text.rfind("\n") + 1
        dropped = text[cut:]
        text = text[:cut]
        warnings.append(f"{file.name}: dropped a trailing partial line ({dropped[:60]!r}) left by an interrupted write")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise ResultsError(f"{file}: empty (no header line)")
    header = rows[0]
    if not header or header[0] != "point" or tuple(header[-len(BASE_COLUMNS):]) != BASE_COLUMNS:
        raise ResultsError(f"{file}:1: header must be 'point,<sweep params...>,{','.join(BASE_COLUMNS)}', got {','.join(header)!r}")
    found_params = header[1:-len(BASE_COLUMNS)]
    if param_names is not None and list(param_names) != found_params:
        raise ResultsError(f"{file}:1: sweep parameters in the header {found_params} differ from the manifest's "
                           f"param_names {list(param_names)}")
    body = rows[1:]
    for i, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise ResultsError(f"{file}:{i}: {len(row)} fields where the header has {len(header)}")
    df = pd.DataFrame(body, columns=header)
    values = pd.to_numeric(df["value"], errors="coerce")
    bad = values.isna() & ~df["value"].str.lower().isin(["nan"])
    if bad.any():
        i = int(bad.to_numpy().nonzero()[0][0])
        raise ResultsError(f"{file}:{i + 2}: value {df['value'].iloc[i]!r} is not a number")
    df["value"] = values.astype(float)
    df["time"] = pd.to_numeric(df["time"], errors="coerce")
    for p in found_params:
        df[p] = _coerce_param(df[p])
    if df.empty:
        warnings.append(f"{file.name}: no measurements yet")
    return df, found_params, warnings


def apply_health(df: pd.DataFrame, health: dict[str, dict], file: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Drop from ``df`` every point that is not a whole, healthy measurement; say why.

    ``health`` is the run's ``health.json`` (:mod:`edgelab.health`): per point its
    status and how many rows it appended. A point that was unhealthy or failed
    is excluded with its cause; a healthy point with fewer rows in the file than
    it wrote lost them (a truncated or cut file), so it is excluded too — its
    remaining rows would otherwise change the verdict without a word.
    """
    counts = df["point"].value_counts().to_dict() if not df.empty else {}
    excluded: list[tuple[str, str]] = []
    for pid, rec in sorted(health.items()):
        status = rec.get("status") or ("healthy" if rec.get("healthy") else "unhealthy")
        if status != "healthy":
            excluded.append((pid, f"{status}: {rec.get('cause') or 'no cause recorded'}"))
            continue
        want, have = rec.get("rows"), int(counts.get(pid, 0))
        if isinstance(want, int) and have != want:
            how = "missing from" if have == 0 else f"{have} of {want} rows in" if have < want else f"{have} rows (not {want}) in"
            excluded.append((pid, f"{how} {file.name} — its write was cut short, or the file was truncated or edited"))
    if excluded:
        df = df[~df["point"].isin({p for p, _ in excluded})].reset_index(drop=True)
    return df, excluded


def _headline_notes(run: Run, partial_line: bool) -> list[str]:
    notes = []
    if run.excluded:
        listed = "; ".join(f"{p} ({why})" for p, why in run.excluded[:3])
        more = f"; and {len(run.excluded) - 3} more" if len(run.excluded) > 3 else ""
        notes.append(f"EXCLUDED {len(run.excluded)} of {run.n_points} points: {listed}{more}")
    if partial_line:
        notes.append("measurements.csv ended in a partial line (dropped): the file was cut short")
    return notes


def load_run(path: str | Path) -> Run:
    """Load and validate one run directory; points that are not whole, healthy
    measurements are left out of ``df`` and listed in ``excluded``."""
    from edgelab.health import read_health

    path = Path(path)
    manifest = _read_manifest(path)
    names = manifest.get("param_names")
    file = path / "measurements.csv"
    try:
        health = read_health(path)
    except ValueError as exc:
        raise ResultsError(str(exc)) from exc
    if not file.is_file() and health and names is not None and not any(r.get("rows") for r in health.values()):
        # every point failed or was unhealthy: nothing was appended, and that is what to report
        df = pd.DataFrame(columns=["point", *names, *BASE_COLUMNS])
        df["value"] = df["value"].astype(float)
        params, warnings = list(names), [f"{file.name}: no point wrote measurements"]
    else:
        df, params, warnings = read_measurements(file, list(names) if names is not None else None)
    partial = any("partial line" in w for w in warnings)
    if manifest["status"] != "complete":
        warnings.insert(0, f"run status is {manifest['status']!r}: results may be incomplete")
    df, excluded = apply_health(df, health, file)
    points = set(health) | (set(df["point"]) if not df.empty else set())
    for pid, why in excluded:
        warnings.append(f"point {pid} excluded from the analysis: {why}")
    run = Run(path=path, manifest=manifest, df=df, param_names=params, warnings=warnings, excluded=excluded,
              n_points=len(points))
    run.notes = _headline_notes(run, partial)
    return run


def find_run_dirs(root: str | Path) -> list[Path]:
    """Run directories at or below ``root`` (a run, an experiment directory, or a results root)."""
    root = Path(root)
    if not root.is_dir():
        raise ResultsError(f"{root}: not a directory")
    if (root / "manifest.json").is_file():
        return [root]
    found = sorted(p.parent for p in root.rglob("manifest.json") if "report" not in p.relative_to(root).parts[:-1])
    if not found:
        raise ResultsError(f"{root}: no run directories found (a run directory contains manifest.json)")
    return found


def load_runs(root: str | Path) -> list[Run]:
    """Every run at or below ``root``, ordered by experiment then start time."""
    runs = [load_run(p) for p in find_run_dirs(root)]
    return sorted(runs, key=lambda r: (r.experiment, str(r.manifest.get("started") or ""), r.run_id))

