"""What the BeaglePaaS orchestrator keeps and grants: invocations and limits.

Kept apart from the orchestrator's networking so the records and the bounds
can be read (and tested) without an event loop.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from ..framing import frame

RECORD_OVERHEAD = 512
"""Bytes charged per invocation besides its arguments and result: the Python objects around them."""


@dataclass(frozen=True)
class Limits:
    """What one orchestrator grants its peers: every bound a broken or hostile peer could otherwise push."""

    max_connections: int = 512          # workers and clients together; more are told so and closed
    max_frame: int = 1 << 20            # bytes of one incoming message (a job's arguments must fit)
    max_buffered: int = 64 << 20        # bytes of incoming frames being received at once, all connections
    hello_timeout_s: float = 10.0       # a new connection must say who it is within this
    idle_timeout_s: float = 300.0       # a client may stay silent this long between requests
    frame_timeout_s: float = 30.0       # a begun frame must complete, and a reply be taken, within this
    max_held_bytes: int = 64 << 20      # arguments and results kept for the records; beyond, submit is refused
    max_queued: int = 100_000           # invocations waiting for a worker; beyond, submit is refused

    def __post_init__(self):
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"limit {name} must be positive, got {value!r}")


class Overloaded(RuntimeError):
    """The orchestrator holds as much as its limits allow; the submission is refused, nothing is dropped."""


def epoch(v: Any) -> Optional[float]:
    """A worker-reported time, or None where it is not a finite number."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


@dataclass
class Invocation:
    i_id: str
    f_id: str
    f_args_json: str                     # kept encoded: its memory is exactly what was charged
    submit_t: float
    dispatch_t: Optional[float] = None
    start_t: Optional[float] = None      # worker clock
    end_t: Optional[float] = None        # worker clock
    done_t: Optional[float] = None
    worker: Optional[str] = None
    status: str = "queued"               # queued | running | done | failed
    attempts: int = 0
    reason: Optional[str] = None         # why failed (or why re-dispatched, last one)
    result: Any = None
    energy_j: Optional[float] = None
    cpu_s: Optional[float] = None        # worker-reported CPU time of the run (energy attribution)
    lost_on: list = field(default_factory=list)

    @property
    def f_args(self) -> dict:
        return json.loads(self.f_args_json)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def job_frame(self) -> bytes:
        payload = '{"type":"job","i_id":%s,"f_id":%s,"f_args":%s}' % (
            json.dumps(self.i_id), json.dumps(self.f_id), self.f_args_json)
        return frame(payload.encode("utf-8"))

    def record(self) -> dict:
        def diff(a, b):
            return None if a is None or b is None else b - a
        return {
            "id": self.i_id, "function": self.f_id, "submit": self.submit_t, "dispatch": self.dispatch_t,
            "start": self.start_t, "end": self.end_t, "done": self.done_t,
            "queue_s": diff(self.submit_t, self.dispatch_t), "exec_s": diff(self.start_t, self.end_t),
            "worker": self.worker, "status": self.status, "attempts": self.attempts, "reason": self.reason,
            "energy_j": self.energy_j, "cpu_s": self.cpu_s, "lost_on": list(self.lost_on), "result": self.result,
        }
