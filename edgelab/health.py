"""Is a sweep point a measurement at all? Health checks recorded with every point.

A killed service, a dead link-emulation delayer or a power meter that stopped
answering still leave numbers behind (an error rate, an energy averaged over
the few invocations that were metered) and those numbers look like results.
So every point carries *checks*: plain data (name, ok, detail, value, limit)
that the scenario, the backend and whoever adds a power source append to.
The sweep runner (:mod:`edgelab.experiment`) then treats a point with a
failed check as a failed point: its rows are kept under ``raw/<point>/`` for
inspection but never enter ``measurements.csv``, its cause is logged, the
report's headline lists it as excluded, and the experiment exits non-zero.

Every point's health, healthy or not, is written to ``health.json`` in the run
directory with the number of rows it wrote, so a reader can also tell a
truncated ``measurements.csv`` from a complete one (:mod:`analysis.load`).

To add a check (e.g. a new power source), return it with the point's rows::

    rows = Measured(rows)
    rows.checks.append(coverage("energy samples of plug_1", got, expected))
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

#: A point's samples (energy per invocation, power samples, CPU readings) must cover
#: at least this fraction of what was expected; below it the average describes a
#: part of the point chosen by whatever failed, not the point.
MIN_COVERAGE = 0.9

HEALTH_FILE = "health.json"


@dataclass(frozen=True)
class Check:
    """One health check of one point. ``ok`` False makes the point unhealthy."""

    name: str                      # what was checked: "alive: phone service on server", "coverage: energy"
    ok: bool
    detail: str = ""               # what was seen, in words (the cause when not ok)
    value: Optional[float] = None  # the measured quantity, when there is one (a fraction, a count)
    limit: Optional[float] = None  # the bound it was held to

    def describe(self) -> str:
        return f"{self.name}: {self.detail}" if self.detail else self.name


class Measured(list):
    """A point's :class:`~edgelab.results.Measurement` rows plus its health ``checks``.

    A list, so every caller that expects rows keeps working; the sweep runner
    reads ``checks`` where present.
    """

    def __init__(self, rows: Iterable = (), checks: Iterable[Check] = ()) -> None:
        super().__init__(rows)
        self.checks: list[Check] = list(checks)


def checks_of(rows: object) -> list[Check]:
    """The checks attached to what a measure function returned (none for a plain list)."""
    return list(getattr(rows, "checks", []) or [])


def failed(checks: Sequence[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def cause(checks: Sequence[Check]) -> str:
    """One line naming every failed check (empty when all passed)."""
    return "; ".join(c.describe() for c in failed(checks))


# -- the checks every scenario uses ---------------------------------------------

def process_alive(what: str, proc: subprocess.Popen) -> Check:
    """A service that must run for the whole point is still running at its end.

    A service that exited during the point took part of the load with it: an
    error rate or an average over what it served is then the failure's, not the
    system's.
    """
    code = proc.poll()
    if code is None:
        return Check(f"alive: {what}", True, "running at the end of the point")
    how = f"killed by signal {-code}" if code < 0 else f"exited {code}"
    return Check(f"alive: {what}", False, f"{how} during the point (pid {proc.pid})")


def coverage(what: str, got: float, expected: float, minimum: float = MIN_COVERAGE) -> Check:
    """``got`` of ``expected`` samples: at least ``minimum`` of them must be there."""
    if expected <= 0:
        return Check(f"coverage: {what}", True, "nothing expected", None, minimum)
    frac = got / expected
    ok = frac >= minimum
    detail = (f"{got:g} of {expected:g} ({frac:.0%})" + ("" if ok else f", below the {minimum:.0%} required"))
    return Check(f"coverage: {what}", ok, detail, frac, minimum)


def service_errors(what: str, kinds: dict, requests: int) -> Check:
    """Requests that found no service (refused) or a broken one (HTTP 5xx other than 503).

    Timeouts, resets and 503 (a bounded service shedding load) are what an
    overloaded network or server does, so they
    stay measurements (an error rate the verdict judges); a refused connection
    means nothing listened and a 5xx that the service itself failed, so the point
    measured a failure of the testbed, not of the system under test.
    """
    bad = int(kinds.get("refused", 0)) + int(kinds.get("http_5xx", 0))
    if not bad:
        return Check(f"service errors: {what}", True, f"none of {requests} requests refused or 5xx", 0.0, 0.0)
    parts = ", ".join(f"{kinds[k]} {k}" for k in ("refused", "http_5xx") if kinds.get(k))
    return Check(f"service errors: {what}", False, f"{parts} of {requests} requests (the service was not there "
                 f"or failed)", bad / requests if requests else 1.0, 0.0)


# -- health.json -------------------------------------------------------------------

def health_path(run_dir: Path) -> Path:
    return Path(run_dir) / HEALTH_FILE


def read_health(run_dir: Path) -> dict[str, dict]:
    """point id -> {"healthy", "rows", "checks", "cause"}; empty when the run has no health file.

    Raises ValueError (with the file) when the file is not a JSON object of objects.
    """
    path = health_path(run_dir)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected an object mapping point ids to objects")
    return data


def record_health(run_dir: Path, point: str, checks: Sequence[Check], rows: Optional[int],
                  status: str) -> None:
    """Record one point's health (replacing an earlier record of it) atomically.

    ``status``: "healthy", "unhealthy" (a check failed) or "failed" (the point
    raised). ``rows``: how many rows the point appended to measurements.csv
    (None when it appended none).
    """
    path = health_path(run_dir)
    data = read_health(run_dir) if path.exists() else {}
    data[point] = {"status": status, "healthy": status == "healthy", "rows": rows,
                   "cause": cause(checks), "checks": [asdict(c) for c in checks]}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)   # a stale one, or a link planted in a shared run directory: never followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data, indent=1, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)

