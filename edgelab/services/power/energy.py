"""Energy counters as a Tasmota plug keeps them: Total, Today, Yesterday (kWh).

Power is integrated with the trapezoidal rule between consecutive samples.
Counters only grow (negative power is clamped to 0, a clock stepping back resets
the baseline instead of subtracting) and are persisted atomically to a JSON state
file so a restarted meter continues from where it stopped, as Tasmota keeps its
totals in flash/RTC memory.  The interval while the meter was down is *not*
integrated: nothing is known about power then (a real plug does the same).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Optional

J_PER_KWH = 3.6e6


@dataclass
class EnergyState:
    total_kwh: float = 0.0
    today_kwh: float = 0.0
    yesterday_kwh: float = 0.0
    day: str = ""                       # ISO date that ``today_kwh`` belongs to
    total_start_time: float = field(default_factory=time.time)  # epoch seconds
    period_kwh_mark: float = 0.0        # total at the previous telemetry (for Period)


def trapezoid_j(t0: float, p0: float, t1: float, p1: float) -> float:
    """Energy in joules between two samples; 0 for a non-positive interval."""
    dt = t1 - t0
    if dt <= 0:
        return 0.0
    return 0.5 * (max(p0, 0.0) + max(p1, 0.0)) * dt


class EnergyIntegrator:
    """Accumulates energy from (time, power) samples; thread-safe."""

    def __init__(self, state_file: Optional[os.PathLike] = None, *, save_every_s: float = 10.0):
        self.state_file = Path(state_file) if state_file else None
        self.save_every_s = save_every_s
        self._lock = threading.Lock()
        self._persist_lock = threading.Lock()      # one writer of the state file at a time
        self._saved_total = 0.0
        self._last: Optional[tuple[float, float]] = None
        self._last_save = 0.0
        self.state = self._load()
        self._saved_total = self.state.total_kwh

    def _load(self) -> EnergyState:
        if self.state_file and self.state_file.exists():
            try:
                raw = json.loads(self.state_file.read_text())
                known = {k: raw[k] for k in EnergyState.__dataclass_fields__ if k in raw}
                return EnergyState(**known)
            except (OSError, ValueError, TypeError) as exc:
                raise ValueError(f"{self.state_file}: unreadable power-meter state ({exc}); "
                                 "move it away to start the counters from zero") from None
        return EnergyState()

    def save(self) -> None:
        if not self.state_file:
            return
        with self._persist_lock:
            with self._lock:
                snap = EnergyState(**asdict(self.state))
            self._write(snap)

    def _write(self, snap: EnergyState) -> None:
        """Atomic, fsynced write; never replaces a larger saved total with a smaller one."""
        if snap.total_kwh < self._saved_total:
            return
        data = json.dumps(asdict(snap))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=self.state_file.name + ".")
        with os.fdopen(fd, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)
        self._saved_total = snap.total_kwh
        self._last_save = time.monotonic()

    def persist(self) -> EnergyState:
        """Save now (when there is a state file) and return the state as saved: what may be
        exported, since a restart will resume from at least that."""
        with self._persist_lock:
            with self._lock:
                snap = EnergyState(**asdict(self.state))
            if self.state_file:
                self._write(snap)
            return snap

    def add(self, t: float, power_w: float) -> float:
        """Add a sample taken at wall time ``t``; returns joules added."""
        with self._lock:
            st = self.state
            today = date.fromtimestamp(t).isoformat()
            if st.day != today:
                if st.day:
                    days = (date.fromisoformat(today) - date.fromisoformat(st.day)).days
                    st.yesterday_kwh = st.today_kwh if days == 1 else 0.0
                st.today_kwh = 0.0
                st.day = today
            joules = 0.0
            if self._last is not None:
                joules = trapezoid_j(self._last[0], self._last[1], t, power_w)
            if self._last is None or t > self._last[0]:
                self._last = (t, power_w)
            elif t < self._last[0]:          # clock stepped back: new baseline
                self._last = (t, power_w)
            kwh = joules / J_PER_KWH
            st.total_kwh += kwh
            st.today_kwh += kwh
        if self.state_file and time.monotonic() - self._last_save >= self.save_every_s:
            self.save()
        return joules

    def take_period_wh(self) -> float:
        """Wh since the previous call (Tasmota's telemetry ``Period``)."""
        with self._lock:
            wh = (self.state.total_kwh - self.state.period_kwh_mark) * 1000.0
            self.state.period_kwh_mark = self.state.total_kwh
        return wh

    @property
    def total_j(self) -> float:
        return self.state.total_kwh * J_PER_KWH

    def start_time(self) -> datetime:
        return datetime.fromtimestamp(self.state.total_start_time)
