"""Recorder the experiment runner uses: periodic (time, node, power_w, energy_j) samples.

Energy is integrated per node with the trapezoidal rule from the samples the
sampler itself took, so it does not depend on a plug's own (coarse, kWh with 3
decimals) counter.  ``energy_between`` answers "how many joules did this node use
between t0 and t1" (linear interpolation inside sample intervals), which is what
BeaglePaaS uses to charge an invocation its energy share.
"""

from __future__ import annotations

import bisect
import threading
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Optional, Union

from .energy import trapezoid_j
from .sources import PowerSource, SourceError


@dataclass(frozen=True)
class PowerSample:
    time: float       # epoch seconds
    node: str
    power_w: float
    energy_j: float   # cumulative since the sampler started


class PowerSampler:
    def __init__(self, sources: Union[PowerSource, Mapping[str, PowerSource]], interval: float = 1.0,
                 node: str = "node"):
        if interval <= 0:
            raise ValueError(f"PowerSampler interval must be > 0 s, got {interval}")
        self.sources = dict(sources) if isinstance(sources, Mapping) else {node: sources}
        self.interval = interval
        self.errors: dict[str, int] = {n: 0 for n in self.sources}
        self._samples: dict[str, list[PowerSample]] = {n: [] for n in self.sources}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def sample_once(self) -> list[PowerSample]:
        out = []
        for node, src in self.sources.items():
            t = time.time()
            try:
                p = src.read().power_w
            except SourceError:
                self.errors[node] += 1
                continue
            with self._lock:
                prev = self._samples[node][-1] if self._samples[node] else None
                e = prev.energy_j + trapezoid_j(prev.time, prev.power_w, t, p) if prev else 0.0
                s = PowerSample(t, node, p, e)
                self._samples[node].append(s)
            out.append(s)
        return out

    def __iter__(self) -> Iterator[PowerSample]:
        """Sample forever at ``interval`` (until ``stop()``), yielding each sample."""
        next_t = time.monotonic()
        while not self._stop.is_set():
            yield from self.sample_once()
            next_t += self.interval
            self._stop.wait(max(0.0, next_t - time.monotonic()))

    def start(self) -> "PowerSampler":
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: [None for _ in self], daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5 * self.interval + 5)
        self.sample_once()          # close the interval at the stop time

    def __enter__(self) -> "PowerSampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def samples(self, node: Optional[str] = None) -> list[PowerSample]:
        with self._lock:
            if node is not None:
                return list(self._samples[node])
            return sorted((s for ss in self._samples.values() for s in ss), key=lambda s: s.time)

    def records(self) -> list[dict]:
        """Rows for the results store (one dict per sample)."""
        return [asdict(s) for s in self.samples()]

    def energy_j(self, node: Optional[str] = None) -> float:
        node = node or next(iter(self.sources))
        with self._lock:
            ss = self._samples[node]
            return ss[-1].energy_j if ss else 0.0

    def energy_between(self, node: str, t0: float, t1: float) -> Optional[float]:
        """Joules used by ``node`` in [t0, t1]; None if samples do not cover it yet."""
        with self._lock:
            ss = list(self._samples.get(node, []))
        if len(ss) < 2 or t0 < ss[0].time or t1 > ss[-1].time or t1 < t0:
            return None
        times = [s.time for s in ss]

        def cumulative(t: float) -> float:
            i = bisect.bisect_right(times, t)
            if i >= len(ss):
                return ss[-1].energy_j
            a, b = ss[i - 1], ss[i]
            # energy from a to t under the linear power segment a->b
            frac = (t - a.time) / (b.time - a.time) if b.time > a.time else 0.0
            p_t = a.power_w + (b.power_w - a.power_w) * frac
            return a.energy_j + trapezoid_j(a.time, a.power_w, t, p_t)

        return cumulative(t1) - cumulative(t0)
