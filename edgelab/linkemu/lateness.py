"""How late the userspace delayer releases packets: the link emulation's own overload signal.

Why: the fallback engine (no sch_netem) holds every delayed packet in one
userspace process until its release time. When the host runs out of CPU, the
delayer wakes up late and every link gets *more* delay than configured — a
deviation a folding verdict must attribute to the emulation, not to folding.
The delayer counts, per released packet, ``now - due`` (:class:`Lateness`) and
writes its cumulative counters next to its config a few times a second
(:meth:`Lateness.dump`, atomically); a measurement reads them before and after
its window (:func:`read`, :func:`window`).
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

#: File beside the delayer's config (``<state dir>/delayer.json``) holding its counters.
STATS_FILE = "delayer-stats.json"

#: A packet released more than this late counts as late.
LATE_S = 0.001


@dataclass
class Lateness:
    """Cumulative release-lateness counters of one delayer process."""

    released: int = 0
    late_sum_s: float = 0.0
    late: int = 0           # released more than LATE_S after their due time
    late_max_s: float = 0.0
    pid: int = 0

    def note(self, late_s: float) -> None:
        """One packet released ``late_s`` seconds after its due time (<= 0: on time)."""
        self.released += 1
        if late_s > 0.0:
            self.late_sum_s += late_s
            if late_s > LATE_S:
                self.late += 1
            if late_s > self.late_max_s:
                self.late_max_s = late_s

    def dump(self, path: Path) -> None:
        """Write the counters to ``path`` atomically (a reader never sees half a file)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**asdict(self), "pid": self.pid or os.getpid()}))
        os.replace(tmp, path)


#: Reads of a record that races the delayer's in-place rewrite (CRC mismatch) before giving up.
READ_TRIES = 5


def read(state_dir: str | Path) -> Optional[Lateness]:
    """The counters a delayer last wrote in ``state_dir``, or None (no fallback delayer there).

    The delayer rewrites its record in place (``<json>\n<crc32 hex>\n`` and padding, see
    ``delayer.dump_lateness``): a read that overlaps a write can mix old and new bytes, which
    the CRC tells, and it is read again. A plain JSON file (:meth:`Lateness.dump`) is read as is."""
    path = Path(state_dir) / STATS_FILE
    for _ in range(READ_TRIES):
        try:
            body, _, rest = path.read_text().partition("\n")
            check = rest.strip()
            if check and f"{zlib.crc32(body.encode()):08x}" != check:
                continue   # torn: the delayer was rewriting it
            d = json.loads(body)
            return Lateness(int(d["released"]), float(d["late_sum_s"]), int(d["late"]), float(d["late_max_s"]),
                            int(d.get("pid", 0)))
        except (OSError, ValueError, KeyError, TypeError):
            return None
    return None


def window(before: Optional[Lateness], after: Optional[Lateness]) -> Optional[tuple[float, float, int]]:
    """(mean lateness in ms, share of packets late by more than 1 ms, packets) over a window, or
    None when it cannot be told (no counters, another delayer process, no packet released)."""
    if before is None or after is None or before.pid != after.pid:
        return None
    n = after.released - before.released
    if n <= 0:
        return None
    return (1000.0 * (after.late_sum_s - before.late_sum_s) / n, (after.late - before.late) / n, n)
