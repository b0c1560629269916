"""CPU and memory limits of virtual nodes: a thin adapter over cgroup v1 and v2.

Why cgroups and not ``taskset``/``nice``: a phone core is slower than a host
core, so a node must get a *fraction* of a core (CFS bandwidth control,
quota/period) whatever else runs, and its memory must be capped so an
experiment that would swap a phone to death fails the same way here.

v1 (separate ``cpu`` and ``memory`` hierarchies) and v2 (unified, with
``cpu.max``/``memory.max``) are both supported; which one is found is
recorded in the facts, since it changes how limits are enforced.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from ...errors import BackendError

PERIOD_US = 100_000
#: The period a new v1 cpu cgroup starts with (kernel/sched/fair.c init_cfs_bandwidth:
#: default_cfs_period(), 100 ms): written only where it differs.
DEFAULT_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000  # kernel minimum for cfs_quota_us


def quota_us(host_cpu: float) -> int:
    """CFS quota for ``host_cpu`` cores over a 100 ms period."""
    return max(MIN_QUOTA_US, int(round(host_cpu * PERIOD_US)))


def _mounts() -> list[tuple[str, str, set[str]]]:
    out = []
    with open("/proc/self/mounts") as f:
        for line in f:
            dev, mnt, fstype, opts, *_ = line.split()
            if fstype in ("cgroup", "cgroup2"):
                out.append((fstype, mnt.replace("\\040", " "), set(opts.split(","))))
    return out


@dataclass(frozen=True)
class CgroupLayout:
    """Where the controllers live: v2 -> one root; v1 -> a root per controller."""

    version: int
    roots: dict[str, str]  # controller ("cpu", "memory", or "unified") -> mount point

    def dirs(self, rel: str) -> list[Path]:
        """Every directory that makes up cgroup ``rel`` (one per hierarchy)."""
        return [Path(root) / rel for root in dict.fromkeys(self.roots.values())]


def detect_layout() -> CgroupLayout:
    """Prefer a cgroup2 hierarchy that actually offers cpu and memory, else v1."""
    mounts = _mounts()
    for fstype, mnt, _ in mounts:
        if fstype == "cgroup2":
            try:
                ctrl = set(Path(mnt, "cgroup.controllers").read_text().split())
            except OSError:
                continue
            if {"cpu", "memory"} <= ctrl:
                return CgroupLayout(2, {"unified": mnt})
    roots = {}
    for fstype, mnt, opts in mounts:
        if fstype == "cgroup":
            # cpuacct is optional (CPU-time accounting for experiments); it is often
            # co-mounted with cpu, and then the same directory serves both.
            for c in ("cpu", "memory", "cpuacct"):
                if c in opts and c not in roots:
                    roots[c] = mnt
    if {"cpu", "memory"} <= set(roots):
        return CgroupLayout(1, roots)
    raise BackendError("no usable cgroup hierarchy with cpu and memory controllers was found "
                       "(need cgroup v2 with cpu+memory enabled, or v1 cpu and memory mounts); "
                       "the local backend cannot limit node CPU/memory without it")


def _write(path: Path, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def create(layout: CgroupLayout, rel: str, host_cpu: float, memory_mib: int) -> None:
    """Create cgroup ``rel`` with a CPU quota of ``host_cpu`` cores and a memory cap."""
    q = quota_us(host_cpu)
    mem = int(memory_mib) * 1024 * 1024
    if layout.version == 2:
        root = Path(layout.roots["unified"])
        parts = rel.split("/")
        cur = root
        for part in parts:
            # A child can only get cpu/memory files if its parent delegates them.
            ctl = cur / "cgroup.subtree_control"
            if not {"cpu", "memory"} <= set(ctl.read_text().split()):
                _write(ctl, "+cpu +memory")
            cur = cur / part
            cur.mkdir(exist_ok=True)
        _write(cur / "cpu.max", f"{q} {PERIOD_US}")
        _write(cur / "memory.max", str(mem))
        return
    fresh = True
    for root in dict.fromkeys(layout.roots.values()):
        d = f"{root}/{rel}"
        try:
            os.mkdir(d)          # the usual case: the parent exists (one system call, no Path)
        except FileNotFoundError:
            os.makedirs(d, exist_ok=True)
        except FileExistsError:
            fresh = False        # a leftover: its period may not be the default
    cpu = f"{layout.roots['cpu']}/{rel}"
    if not fresh or PERIOD_US != DEFAULT_PERIOD_US:
        _write(Path(cpu, "cpu.cfs_period_us"), str(PERIOD_US))
    _write(Path(cpu, "cpu.cfs_quota_us"), str(q))
    _write(Path(layout.roots["memory"], rel, "memory.limit_in_bytes"), str(mem))


def set_cpu_quota(layout: CgroupLayout, rel: str, host_cpu: Optional[float]) -> None:
    """Set cgroup ``rel``'s CPU quota to ``host_cpu`` cores, or lift it (``None``: no limit)."""
    if layout.version == 2:
        q = "max" if host_cpu is None else str(quota_us(host_cpu))
        _write(Path(layout.roots["unified"]) / rel / "cpu.max", f"{q} {PERIOD_US}")
    else:
        q = "-1" if host_cpu is None else str(quota_us(host_cpu))
        _write(Path(layout.roots["cpu"]) / rel / "cpu.cfs_quota_us", q)


#: Real-time budget of the link-emulation delayer's cgroup (v1 ``cpu.rt_runtime_us`` /
#: ``cpu.rt_period_us``, kernels with CONFIG_RT_GROUP_SCHED): 9 ms of every 10 ms on each CPU. A
#: SCHED_FIFO task in a cgroup without a budget is refused (sched_setscheduler: EPERM), and one
#: whose budget is spent is throttled until the period ends: a short period bounds that stall to
#: 1 ms (the root's default, 950 ms per second, would stall a runaway delayer for 50 ms) while the
#: nodes keep at least 10 % of the delayer's CPU. One testbed's chain takes 0.9 of the 0.95 the root
#: allows, so a second testbed at the same time is refused and its delayer stays SCHED_OTHER
#: (recorded with the reason in its facts).
RT_PERIOD_US = 10_000
RT_RUNTIME_US = 9_000


def grant_rt_budget(layout: CgroupLayout, rel: str) -> Optional[str]:
    """Give cgroup ``rel`` and its ancestors the real-time budget a SCHED_FIFO delayer needs.

    None when done, or when this kernel needs none (no ``cpu.rt_runtime_us``: no RT group
    scheduling, a SCHED_FIFO task is bounded by the global ``sched_rt_runtime_us`` alone);
    otherwise why not, for the facts. Ancestors are only ever raised (the shared ``edgelab``
    parent keeps what an earlier testbed set); a parent's ratio must cover its children's
    (kernel/sched/rt.c tg_rt_schedulable), so the chain is written top-down.
    """
    if layout.version != 1:
        return None   # v2 has no per-cgroup RT budget: the kernel decides (EPERM is recorded)
    root = Path(layout.roots["cpu"])
    if not (root / "cpu.rt_runtime_us").exists():
        return None
    parts = rel.split("/")
    ratio = RT_RUNTIME_US / RT_PERIOD_US
    for i in range(1, len(parts) + 1):
        d = root.joinpath(*parts[:i])
        try:
            period = int((d / "cpu.rt_period_us").read_text())
            runtime = int((d / "cpu.rt_runtime_us").read_text())
            if runtime < 0 or runtime >= ratio * period:   # -1: unlimited
                continue
            if runtime <= 0:   # no budget yet: the short period first (ratio 0 passes any check)
                _write(d / "cpu.rt_period_us", str(RT_PERIOD_US))
                period = RT_PERIOD_US
            _write(d / "cpu.rt_runtime_us", str(int(ratio * period)))
        except OSError as e:
            return (f"no real-time budget for cgroup {d} ({e.strerror}: the CPU's real-time share "
                    f"is taken, e.g. by another testbed's delayer)")
    return None


def procs_files(layout: CgroupLayout, rel: str) -> list[str]:
    """The ``cgroup.procs`` files a new process must be written into (computed
    before fork, so the child only does raw writes)."""
    return [str(d / "cgroup.procs") for d in layout.dirs(rel)]


def pids(dirs: Iterable[Path]) -> set[int]:
    out: set[int] = set()
    for d in dirs:
        try:
            out.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except OSError:
            pass
    return out


def signal_all(dirs: list[Path]) -> set[int]:
    """SIGKILL every process of the cgroups once, without waiting; returns their pids."""
    live = pids(dirs)
    for pid in live:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return live


def kill_all(dirs: list[Path], timeout: float = 5.0) -> None:
    """SIGKILL every process of the cgroup and wait until it is empty."""
    deadline = time.monotonic() + timeout
    pause = 0.0005   # a SIGKILLed process leaves its cgroup within a millisecond or so: poll fast first
    busy = [str(d / "cgroup.procs") for d in dirs]
    while True:
        live: set[int] = set()
        still = []
        for f in busy:   # after the first pass, only the cgroups that had a process
            try:
                with open(f) as fh:
                    got = fh.read().split()
            except OSError:
                continue
            if got:
                still.append(f)
                live.update(int(x) for x in got)
        busy = still
        if not live:
            return
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise BackendError(f"processes {sorted(live)} in cgroup {dirs[0]} survive SIGKILL")
        time.sleep(pause)
        pause = min(pause * 2, 0.01)


def remove(dirs: list[Path], timeout: float = 5.0) -> None:
    """Remove cgroup directories (deepest first), tolerating ones already gone.

    One ``rmdir`` pass over all of them, then passes over the ones that refused
    (EBUSY: a process is still in it, or just SIGKILLed and not yet gone). A
    refusal is what finds a cgroup's processes: they are SIGKILLed then, without
    a wait (a teardown need not read the ``cgroup.procs`` of every empty cgroup
    first), and the next passes wait for them (:func:`kill_all`) before giving up.
    """
    pending = sorted(dirs, key=lambda p: -len(p.parts))
    deadline = time.monotonic() + timeout
    pause = 0.0005
    first = True
    while pending:
        busy = []
        for d in pending:
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError as e:
                if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or time.monotonic() >= deadline:
                    raise BackendError(f"cannot remove cgroup {d}: {e}") from None
                busy.append(d)
        pending = busy
        if pending:
            if first:
                signal_all(pending)   # what is in them dies while the others are removed
            else:                     # still busy: kill again and wait until they are empty
                kill_all(pending, timeout=max(0.1, deadline - time.monotonic()))
            first = False
            time.sleep(pause)
            pause = min(pause * 2, 0.01)


def remove_if_empty(d: Path) -> None:
    """Remove a shared parent (``edgelab``) only when no other testbed uses it."""
    try:
        d.rmdir()
    except OSError:
        pass


def all_dirs(layout_roots: dict[str, str], rels: Iterable[str]) -> list[Path]:
    roots = list(dict.fromkeys(layout_roots.values()))
    return [Path(r) / rel for rel in rels for r in roots]


def layout_from_state(version: int, roots: dict[str, str]) -> Optional[CgroupLayout]:
    return CgroupLayout(version, roots) if roots else None
