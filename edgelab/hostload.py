"""The host's own overload signals during a measurement, and keeping the host awake.

Why: when a folded configuration deviates from its baseline, the researcher
needs to know *why* — the host ran out of CPU, runnable tasks queued, softirq
processing (packet forwarding, the link emulation) ate the cores — before
trusting or discarding the result. Those signals live in the host kernel's
counters, not in the nodes' cgroups:

* ``/proc/stat``: jiffies per CPU state; busy = everything but idle and iowait,
  softirq on its own (proc(5), "/proc/stat");
* ``/proc/pressure/cpu``: ``some total=`` microseconds during which at least one
  runnable task waited for a CPU (PSI, Documentation/accounting/psi.rst);
* ``/proc/loadavg``: the 4th field ``running/total`` gives runnable tasks now,
  sampled a few times a second for a mean run-queue length.

:class:`HostLoadSampler` reads them between :meth:`start` and :meth:`stop`
(a thread samples the run queue); :meth:`HostLoadSampler.measurements` turns
them into aggregate rows (``host_cpu_busy``, ``host_cpu_softirq``,
``host_cpu_pressure``, ``host_runqueue``) kept with every point. Given the
measured system's own CPU counter (the testbed's cgroup subtree, plus this
controller process), it also records ``host_foreign_cpu``: the share of the
host's CPU that went to *other* work during the window — another job on a
shared machine. A folded point that degrades while 40 % of the host ran
someone else's work measures that work too, and the verdict must say so
rather than blame folding.

:class:`HostWarmer` addresses a baseline that is itself unrepresentative: on
an idle host, one lone node's requests each pay the CPU's wake-up from a deep
idle state (and, in a VM, the vCPU's reschedule), so the *least* folded
configuration looks slower than folded ones. The warmer asks the kernel for
zero wake-up latency through PM QoS (``/dev/cpu_dma_latency``, held open for
the whole sweep, as cyclictest and tuned's latency-performance profile do) and
runs one ``SCHED_IDLE`` spinner per CPU, which keeps every CPU out of idle
while yielding to any normal task at once (sched(7): SCHED_IDLE runs only when
nothing else is runnable, and a waking normal task preempts it). The spinners'
own CPU time is subtracted from ``host_cpu_busy``.

The spinners also measure the host's *speed*: each loops over a fixed unit of
interpreted Python work (:func:`reference_unit`) and counts the units, so a
window's spinner CPU time per unit (``host_cpu_unit_us``) tells how fast the
CPUs ran work like the nodes' during that window. On a shared VM it drifts:
here it varied ±13 % (SD) between the points of one folding sweep, and the
points' CPU per request and p50 latency followed it (correlation 0.86 and 0.79
over 25 points at factors 1-8; README "Measured here"): the main source of the
points' scatter, which the verdict names when it stays inconclusive.
"""

from __future__ import annotations

import multiprocessing
import os
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .results import Measurement

PROC = "/proc"

_active: list["HostWarmer"] = []


def active_warmer() -> Optional["HostWarmer"]:
    """The :class:`HostWarmer` entered in this process, if any (samplers subtract its spinners)."""
    return _active[-1] if _active else None


@dataclass(frozen=True)
class CpuTimes:
    """System-wide CPU time (seconds) by state, from the ``cpu`` line of /proc/stat."""

    total: float
    idle: float     # idle + iowait
    softirq: float

    @property
    def busy(self) -> float:
        return self.total - self.idle


def read_cpu_times(proc: str = PROC) -> CpuTimes:
    with open(f"{proc}/stat") as f:
        fields = f.readline().split()
    if fields[0] != "cpu":
        raise ValueError(f"{proc}/stat: first line is not the aggregate 'cpu' line")
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice; guest* are included in user/nice
    v = [int(x) / hz for x in fields[1:9]]
    return CpuTimes(total=sum(v), idle=v[3] + v[4], softirq=v[6])


def read_pressure_us(proc: str = PROC) -> Optional[int]:
    """``some total=`` of /proc/pressure/cpu in microseconds, or None without PSI."""
    try:
        with open(f"{proc}/pressure/cpu") as f:
            for line in f:
                if line.startswith("some "):
                    return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_runnable(proc: str = PROC) -> int:
    """Runnable tasks right now (4th field of /proc/loadavg, ``running/total``), less this reader."""
    with open(f"{proc}/loadavg") as f:
        running = int(f.read().split()[3].split("/")[0])
    return max(0, running - 1)


def process_cpu_seconds(pid: int, proc: str = PROC) -> float:
    """utime + stime of one process (fields 14 and 15 of /proc/<pid>/stat)."""
    with open(f"{proc}/{pid}/stat") as f:
        after_comm = f.read().rsplit(")", 1)[1].split()
    return (int(after_comm[11]) + int(after_comm[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class HostLoad:
    """What the host went through during one window."""

    seconds: float
    cpus: int
    busy: float          # fraction of all CPUs' time busy (spinners of a HostWarmer excluded)
    softirq: float       # fraction of all CPUs' time in softirq
    pressure: Optional[float]  # fraction of the window some runnable task waited for a CPU
    runqueue: float      # mean runnable tasks (sampled)
    runqueue_samples: int = 0
    foreign: Optional[float] = None  # fraction of all CPUs' time busy with work outside the measured system
    delayer_late_ms: Optional[float] = None     # mean lateness of the link delayer's releases (fallback engine)
    delayer_late_share: Optional[float] = None  # share of its packets released more than 1 ms late
    unit_us: Optional[float] = None  # CPU µs per reference unit of the warmer's spinners (the host's speed)

    @property
    def overloaded(self) -> list[str]:
        """The signals that say the host could not keep up, each as a short phrase."""
        out = []
        if self.busy >= 0.9:
            out.append(f"CPU {self.busy:.0%} busy")
        if self.runqueue > self.cpus:
            out.append(f"run queue {self.runqueue:.1f} on {self.cpus} CPUs")
        if self.pressure is not None and self.pressure >= 0.2:
            out.append(f"tasks waited for a CPU {self.pressure:.0%} of the time")
        if self.softirq >= 0.1:
            out.append(f"softirq {self.softirq:.0%} of CPU time")
        if self.foreign is not None and self.foreign >= FOREIGN_SHARED:
            out.append(f"other work used {self.foreign:.0%} of the host's CPU")
        if self.delayer_late_ms is not None and self.delayer_late_ms >= DELAYER_LATE_MS:
            out.append(f"the link delayer released packets {self.delayer_late_ms:.1f} ms late on average")
        return out


#: Share of the host's CPU used by work outside the testbed from which the host counts as shared.
FOREIGN_SHARED = 0.15

#: Mean release lateness of the link delayer (ms) from which the emulation itself could not keep up.
DELAYER_LATE_MS = 1.0

#: Reference units a window needs for ``host_cpu_unit_us`` (fewer: the spinners hardly ran, the
#: host was busy; the figure would be noise).
MIN_REFERENCE_UNITS = 200


def own_process_cpu_seconds() -> float:
    """CPU seconds of this (controller) process: it runs beside the testbed, it is not foreign."""
    t = os.times()
    return t.user + t.system


def testbed_delayer_counters(tb: object) -> Optional[Callable[[], object]]:
    """A testbed's link-delayer lateness counters (the local backend's ``delayer_lateness``:
    :mod:`edgelab.linkemu.lateness`), or None where it has none."""
    return getattr(tb, "delayer_lateness", None)


def testbed_cpu_counter(tb: object) -> Optional[Callable[[], float]]:
    """A testbed's own cumulative CPU counter (the local backend's ``testbed_cpu_seconds``), or
    None where the backend has none: the sampler then records no ``host_foreign_cpu``."""
    return getattr(tb, "testbed_cpu_seconds", None)


@dataclass
class HostLoadSampler:
    """Host overload signals between :meth:`start` and :meth:`stop` (see module docstring)."""

    interval: float = 0.1
    warmer: Optional["HostWarmer"] = None
    proc: str = PROC
    #: Cumulative CPU seconds of the measured system (e.g. the testbed's cgroup subtree);
    #: with it, ``host_foreign_cpu`` is recorded. This process's own CPU is added to it.
    own_cpu: Optional[Callable[[], float]] = None
    #: The link delayer's cumulative lateness counters (:func:`edgelab.linkemu.lateness.read`);
    #: with them, ``host_delayer_late_ms`` and ``host_delayer_late_share`` are recorded.
    delayer: Optional[Callable[[], object]] = None
    _late0: object = None
    _own0: float = 0.0
    _t0: float = 0.0
    _cpu0: Optional[CpuTimes] = None
    _psi0: Optional[int] = None
    _spin0: float = 0.0
    _units0: int = 0
    _rq: list[int] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: Optional[threading.Thread] = None
    result: Optional[HostLoad] = None

    def start(self) -> "HostLoadSampler":
        self._stop.clear()
        self._rq = []
        self._t0 = time.monotonic()
        self._cpu0 = read_cpu_times(self.proc)
        self._psi0 = read_pressure_us(self.proc)
        self._spin0 = self.warmer.cpu_seconds() if self.warmer else 0.0
        self._units0 = self.warmer.reference_units() if self.warmer else 0
        self._own0 = self._own()
        self._late0 = self.delayer() if self.delayer is not None else None
        self._thread = threading.Thread(target=self._sample_runqueue, name="hostload", daemon=True)
        self._thread.start()
        return self

    def _own(self) -> float:
        return (self.own_cpu() + own_process_cpu_seconds()) if self.own_cpu is not None else 0.0

    def _sample_runqueue(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._rq.append(read_runnable(self.proc))
            except (OSError, ValueError, IndexError):
                return

    def stop(self) -> HostLoad:
        if self._cpu0 is None:
            raise RuntimeError("HostLoadSampler.stop() before start()")
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        wall = max(time.monotonic() - self._t0, 1e-9)
        cpu1, psi1 = read_cpu_times(self.proc), read_pressure_us(self.proc)
        total = max(cpu1.total - self._cpu0.total, 1e-9)
        spin = (self.warmer.cpu_seconds() - self._spin0) if self.warmer else 0.0
        units = (self.warmer.reference_units() - self._units0) if self.warmer else 0
        busy = max(0.0, (cpu1.busy - self._cpu0.busy - spin)) / total
        foreign = None
        if self.own_cpu is not None:
            # Softirq time is left out: it is not charged to the task it interrupts (with
            # IRQ time accounting), so the testbed's own packet processing lands there; it has
            # its own signal. Jiffies and cgroup nanoseconds tick differently: clamp at 0.
            own = self._own() - self._own0
            other = (cpu1.busy - self._cpu0.busy) - (cpu1.softirq - self._cpu0.softirq) - spin - own
            foreign = min(1.0, max(0.0, other) / total)
        # runnable counts include the warmer's spinners: they are not load
        spinners = self.warmer.spinners if self.warmer else 0
        rq = [max(0, r - spinners) for r in self._rq]
        late = None
        if self.delayer is not None:
            from .linkemu.lateness import window

            late = window(self._late0, self.delayer())
        self.result = HostLoad(
            seconds=wall, cpus=os.cpu_count() or 1, busy=min(busy, 1.0),
            softirq=(cpu1.softirq - self._cpu0.softirq) / total,
            pressure=None if psi1 is None or self._psi0 is None else min(1.0, (psi1 - self._psi0) / 1e6 / wall),
            runqueue=sum(rq) / len(rq) if rq else float(read_runnable(self.proc)), runqueue_samples=len(rq),
            foreign=foreign, delayer_late_ms=late[0] if late else None,
            delayer_late_share=late[1] if late else None,
            unit_us=1e6 * spin / units if units >= MIN_REFERENCE_UNITS and spin > 0 else None)
        return self.result

    def measurements(self) -> list[Measurement]:
        """Aggregate rows of the window (no node: they describe the host)."""
        r = self.result
        if r is None:
            return []
        rows = [Measurement("host_cpu_busy", r.busy, "fraction"),
                Measurement("host_cpu_softirq", r.softirq, "fraction"),
                Measurement("host_runqueue", r.runqueue, "tasks")]
        if r.pressure is not None:
            rows.append(Measurement("host_cpu_pressure", r.pressure, "fraction"))
        if r.foreign is not None:
            rows.append(Measurement("host_foreign_cpu", r.foreign, "fraction"))
        if r.delayer_late_ms is not None:
            rows += [Measurement("host_delayer_late_ms", r.delayer_late_ms, "ms"),
                     Measurement("host_delayer_late_share", r.delayer_late_share, "fraction")]
        if r.unit_us is not None:
            rows.append(Measurement("host_cpu_unit_us", r.unit_us, "us"))
        return rows


def reference_unit(buf: bytes = bytes(range(256)) * 16, table: bytes = bytes(reversed(range(256)))) -> int:
    """One unit of the spinners' reference work: interpreted Python over bytes and a dict, like
    the services' own request handling (a few tens of µs). Its CPU time per unit is the host's
    *speed* while a sweep runs (see :class:`HostWarmer`)."""
    d = {}
    for i in range(0, len(buf), 64):
        d[i] = buf[i:i + 64].translate(table)
    return len(d)


def _spin(units) -> None:  # pragma: no cover - runs in a child process
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(19)
    while True:
        reference_unit()
        units.value += 1   # one writer per counter: no lock needed


class HostWarmer:
    """Keep the host's CPUs out of idle states for a whole sweep (see module docstring).

    A context manager; what it could do is in :attr:`description` (recorded in
    the run's facts), since a VM may have no PM QoS device and a user may not
    be allowed to open it.
    """

    def __init__(self, spinners: Optional[int] = None, pm_qos: bool = True) -> None:
        self.spinners = (os.cpu_count() or 1) if spinners is None else spinners
        self.pm_qos = pm_qos
        self._fd: Optional[int] = None
        self._procs: list[multiprocessing.Process] = []
        self._units: list = []   # each spinner's count of reference units done (shared memory)
        self._spun_before_exit: float = 0.0
        self.description = "off"

    def __enter__(self) -> "HostWarmer":
        parts = []
        if self.pm_qos:
            try:
                self._fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
                os.write(self._fd, struct.pack("i", 0))  # held until close: the request lasts that long
                parts.append("PM QoS cpu_dma_latency=0")
            except OSError as exc:
                parts.append(f"PM QoS unavailable ({exc.strerror})")
                self._fd = None
        ctx = multiprocessing.get_context("fork")
        for i in range(self.spinners):
            units = ctx.RawValue("Q", 0)
            self._units.append(units)
            p = ctx.Process(target=_spin, args=(units,), name=f"edgelab-warmer-{i}", daemon=True)
            p.start()
            self._procs.append(p)
        if self.spinners:
            parts.append(f"{self.spinners} SCHED_IDLE spinner(s)")
        self.description = ", ".join(parts) or "off"
        _active.append(self)
        return self

    def reference_units(self) -> int:
        """Reference work units (:func:`reference_unit`) the spinners have done so far."""
        return sum(int(u.value) for u in self._units)

    def cpu_seconds(self) -> float:
        """CPU time the spinners have used so far (subtracted from the host's busy time)."""
        total = 0.0
        for p in self._procs:
            try:
                total += process_cpu_seconds(p.pid)
            except (OSError, ValueError, IndexError, TypeError):
                pass
        return total

    def __exit__(self, *exc: object) -> None:
        if self in _active:
            _active.remove(self)
        for p in self._procs:
            p.kill()
        for p in self._procs:
            p.join(timeout=5)
        self._procs.clear()
        self._units.clear()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def main() -> int:
    """``python3 -m edgelab.hostload [DELAYER_STATE_DIR]``: sample this host from now until a line (or
    EOF) arrives on stdin, then print the window's :class:`HostLoad` as one JSON line; with the state
    directory of a fallback link emulator, its delayer's lateness too. A testbed folded over several
    hosts runs this on each of them around a measurement (:mod:`edgelab.remote.folded`)."""
    import dataclasses
    import json
    import sys

    delayer = None
    if len(sys.argv) > 1:
        from .linkemu import lateness

        state_dir = sys.argv[1]
        delayer = lambda: lateness.read(state_dir)  # noqa: E731
    sampler = HostLoadSampler(delayer=delayer).start()
    print("READY", flush=True)
    sys.stdin.readline()
    print(json.dumps(dataclasses.asdict(sampler.stop())), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
