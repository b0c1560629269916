"""LinkEmulator: applies LinkParams to veth pairs / interfaces with netem or the fallback.

Per namespace, the fallback engine keeps one JSON record in ``state_dir``
(``<ns>.json``; ``_root`` for the current namespace) of what was installed per
interface and the queues the shared delayer serves there, so that ``clear``
works from another process (the CLI's ``clear`` on a real node) and ``cleanup``
can undo a crashed emulator's work. :meth:`LinkEmulator.apply_links` records
the namespaces it is the first to touch in one file instead (``links.json``,
namespace key -> record): a hundred stations are then one write at bring-up
and one unlink at teardown, not a hundred of each. A namespace's own file,
once written (any later change to it), takes precedence over its entry there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..errors import BackendError
from ..safefs import UnsafePathError, open_append, read_own, remove_interrupted_saves, secure_dir, write_atomic
from ..model import LinkParams
from . import commands as C
from .engine import ENGINES, detect_engine, shared_leaf
from .delayer import config_table   # the C delayer's line table of a config (stdlib only)
from .lateness import STATS_FILE as DELAYER_STATS_FILE   # the delayer's lateness counters, beside its config
from .nsexec import in_ns, run, run_all, run_batched, write_sysctl

QUEUE_BASE = 1000
#: Threads running apply_links' iptables-restore processes (one per namespace with NFQUEUE rules).
RESTORE_WORKERS = 8
DELAYER_KEY = "_delayer"   # its Popen in LinkEmulator._procs
BULK_RECORD = "links.json"  # apply_links' records of the namespaces it created records for
READY_TIMEOUT_S = 10.0
#: CPU weight of the delayer's own cgroup with ``delayer_priority`` (v1 cpu.shares, v2
#: cpu.weight: the maximum of each; a node's is 1024 / 100). The delayer is the links, not a
#: workload: when the cores are contended, a packet due now must not wait behind a hundred
#: nodes' processes for a core (fidelity_under_load: 12 -> 5 ms of delay error). Off by
#: default: the scheduler's load balancer weighs a CPU by its tasks' weights, so the delayer's
#: CPU looks overloaded and the nodes' processes crowd onto the others — folding.py at factor 16
#: measured p50 latency +338 % (host CPU 44 % busy, run queue 7.3) against +55 to +89 %
#: (55-58 % busy, run queue 2.4-3.5) at the default weight, on the same 2 cores.
DELAYER_CPU_WEIGHT = {"cpu.shares": "262144", "cpu.weight": "10000"}
#: Scheduling of the delayer (``delayer_rt``, the default): SCHED_FIFO at the lowest real-time
#: priority. Measured here (benchmarks/delayer_wake.py, a ping through a 2 ms link): on an idle
#: host the policy changes nothing (0.11-0.12 ms mean lateness, the vCPU's wake from halt; the
#: host warmer's spinners halve it), but beside two busy normal processes a normal-task delayer
#: released 0.44 ms late on average and 19 % of packets > 1 ms late (it waits for its turn on the
#: core), a SCHED_FIFO one 0.14 ms and 2 %: a real-time task preempts any normal one at once. Unlike
#: the top CPU weight it does not skew the load balancer (a real-time task's load is not counted in
#: the fair class's weights; its CPU time only lowers that CPU's capacity for them), and real-time
#: throttling bounds its CPU (local backend: cgroups.grant_rt_budget). SCHED_RESET_ON_FORK: nothing
#: it might start inherits it.
DELAYER_RT_PRIORITY = 1
_PKG_ROOT = str(Path(__file__).resolve().parents[2])
_TAG = re.compile(r"[A-Za-z0-9_-]{1,24}")
_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


@dataclass(frozen=True)
class LinkSpec:
    """One link for :meth:`LinkEmulator.apply_links`: ``dev`` in ``ns`` and its peer end."""
    ns: Optional[str]
    dev: str
    peer_ns: Optional[str]
    peer_dev: Optional[str]
    link: LinkParams
    peer_is_bridge_port: Optional[bool] = None


def _check_link(link: LinkParams, where: str) -> None:
    for name in ("rate_mbit", "delay_ms", "jitter_ms", "loss_pct"):
        v = getattr(link, name)
        if not isinstance(v, (int, float)) or math.isnan(v) or v < 0:
            raise BackendError(f"{where}: {name}={v!r} must be a number >= 0")
    if link.loss_pct > 100:
        raise BackendError(f"{where}: loss_pct={link.loss_pct} must be <= 100")
    if link.jitter_ms > 0 and link.jitter_ms > link.delay_ms:
        raise BackendError(f"{where}: jitter_ms={link.jitter_ms} exceeds delay_ms={link.delay_ms}; "
                           "uniform jitter needs delay >= jitter")


def _ns_key(ns: Optional[str]) -> str:
    return ns or "_root"


_POLICIES = {getattr(os, n): n for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
             if hasattr(os, n)}


def _sched_name(pid: Optional[int]) -> Optional[str]:
    """The scheduling policy process ``pid`` runs under now (None: gone, or no pid)."""
    if not pid:
        return None
    try:
        pol = os.sched_getscheduler(pid) & ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    except OSError:
        return None
    return _POLICIES.get(pol, str(pol))


def _pid_alive(pid: int, needle: str) -> bool:
    """True if ``pid`` runs and its command line contains ``needle`` (guards against PID reuse)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().decode(errors="replace")
    except OSError:
        return False
    if needle not in cmd:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def _kill(pid: int, needle: str, timeout: float = 5.0) -> None:
    if not _pid_alive(pid, needle):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    pause = 0.0005   # the delayer exits within milliseconds: poll fast first
    while time.monotonic() < deadline and _pid_alive(pid, needle):
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
    if _pid_alive(pid, needle):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


#: The C delayer, as scripts/bootstrap builds it (EDGELAB_DELAYER_BIN: one installed elsewhere).
DELAYER_BIN = Path(_PKG_ROOT) / "build" / "edgelab-nfq-delayer"
DELAYER_SRC = Path(__file__).with_name("nfq_delayer.c")
DELAYER_PY = Path(__file__).with_name("delayer.py")
DELAYER_IMPLS = ("c", "python")


def delayer_program(impl: Optional[str] = None) -> dict:
    """Which delayer program serves the queues: ``{"impl": "c" | "python", "path", "why"}``.

    ``impl`` (else ``EDGELAB_DELAYER``): ``"c"`` insists on the C program, ``"python"`` takes
    delayer.py, ``None``/``"auto"`` the C program where it is built and not older than its
    source (a stale build would run other code than the tree's), else delayer.py. Both read
    the same config (delayer.config_table), write the same counters and answer the same signals;
    the C one spends ~2 us of user time per queue pass against 10-12 (benchmarks/fidelity_under_load.py)."""
    impl = impl or os.environ.get("EDGELAB_DELAYER") or "auto"
    if impl not in (*DELAYER_IMPLS, "auto"):
        raise BackendError(f"unknown delayer {impl!r} (EDGELAB_DELAYER): use c, python or auto")
    if impl == "python":
        return {"impl": "python", "path": str(DELAYER_PY), "why": "asked for"}
    path = Path(os.environ.get("EDGELAB_DELAYER_BIN") or DELAYER_BIN)
    why = ""
    if not os.access(path, os.X_OK):
        why = f"{path} is not built (scripts/bootstrap builds it)"
    elif path == DELAYER_BIN and DELAYER_SRC.exists() and DELAYER_SRC.stat().st_mtime > path.stat().st_mtime:
        why = f"{path} is older than {DELAYER_SRC.name} (rerun scripts/bootstrap)"
    if not why:
        return {"impl": "c", "path": str(path), "why": "asked for" if impl == "c" else "built"}
    if impl == "c":
        raise BackendError(f"the C delayer was asked for (EDGELAB_DELAYER=c) but {why}")
    return {"impl": "python", "path": str(DELAYER_PY), "why": why}


def remove_delayer_files(config: str) -> None:
    """The delayer's config (``<dir>/delayer.json``) and what is written beside it: the C
    program's line table, the ready file, the log, the lateness counters, and the temporary
    files of any of those saves (safefs.write_atomic) that a SIGKILL interrupted."""
    for suffix in ("", ".tab", ".ready", ".log"):
        Path(config + suffix).unlink(missing_ok=True)
        remove_interrupted_saves(config + suffix)
    (Path(config).parent / DELAYER_STATS_FILE).unlink(missing_ok=True)


class LinkEmulator:
    """Impairs links: ``apply_link`` / ``apply_shared_medium`` / ``clear`` / ``close``, with
    ``state()`` recording everything so :func:`cleanup` can undo a crashed emulator's work."""

    def __init__(self, engine: Optional[str] = None, *, tag: str = "edgelab",
                 state_dir: Optional[str] = None, delayer_cgroup_procs: tuple[str, ...] = (),
                 ipv6: bool = True, bridge_delay: bool = False, delayer_priority: bool = False,
                 delayer_rt: bool = True, delayer_impl: Optional[str] = None) -> None:
        if engine in (None, "auto"):
            engine = detect_engine()
        if engine not in ENGINES:
            raise BackendError(f"unknown link emulation engine {engine!r}; use one of {', '.join(ENGINES)} or auto")
        if engine == "netem" and detect_engine() != "netem":
            raise BackendError("engine 'netem' requested but this kernel cannot create a netem qdisc "
                               "(sch_netem missing); use engine 'fallback' or auto")
        if not isinstance(tag, str) or not _TAG.fullmatch(tag):
            # The tag becomes a directory under /run, interface and nft table names: no paths.
            raise BackendError(f"link emulation tag {tag!r} must be 1-24 letters, digits, '-' or '_'")
        self.engine = engine
        self.tag = tag
        self.delayer_priority = delayer_priority   # DELAYER_CPU_WEIGHT on its cgroup
        #: SCHED_FIFO (DELAYER_RT_PRIORITY) for the delayer; where the kernel refuses, it stays a
        #: normal task and the reason is recorded (delayer_info()["sched"]).
        self.delayer_rt = delayer_rt
        #: Which delayer program: "c" (nfq_delayer.c, built by scripts/bootstrap), "python"
        #: (delayer.py) or None: EDGELAB_DELAYER, else C where it is built (delayer_program).
        self.delayer_impl = delayer_impl
        #: Why the caller could not give the delayer's cgroup a real-time budget (None: it did, or
        #: none is needed): added to the reason when the kernel refuses SCHED_FIFO.
        self.delayer_rt_note: Optional[str] = None
        self.state_dir = Path(state_dir or f"/run/{tag}-linkemu")
        self._procs: dict[str, subprocess.Popen] = {}
        self._ifbs: list[dict] = []   # {"ns": ns, "name": ifb}
        self._touched: set[str] = set()
        self._bulk: Optional[dict[str, dict]] = None   # links.json, read once (apply_links)
        # One lock per namespace: links of many nodes share a peer namespace (the
        # access point's), whose record and delayer they all update.
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._pending: dict[str, list[tuple]] = {}   # peer ns -> deferred peer-side work
        self._pending_tc: dict[str, list[list[str]]] = {}   # peer ns -> deferred tc commands
        self._pending_rules: dict[str, list[list[str]]] = {}   # ns -> deferred NFQUEUE rule specs
        self._br_nf: dict[str, bool] = {}
        self._fams: dict[str, list[str]] = {}
        #: False where the caller disabled IPv6 in every namespace it hands us (the local backend
        #: does): no IPv6 packet can flow, so no ip6tables rule (a process per node) is needed.
        self.ipv6 = ipv6
        #: ``cgroup.procs`` files the delayer is written into when it starts.
        self.delayer_cgroup_procs = tuple(delayer_cgroup_procs)
        self._dl_lock = threading.Lock()
        self._dl_started = False
        #: apply_links: delay a bridge port's node's *incoming* frames on the port too (in the
        #: bridge's namespace, --physdev-out on POSTROUTING, before the airtime budget's IFB),
        #: so a cell's NFQUEUE rules are one iptables-restore instead of one per station. The
        #: local backend turns it on (LocalBackend(bridge_delay=...)); the delay a ping -U sees
        #: is the same (tests/test_inprocess_root.py), and so was the error at 100 stations x 20
        #: pings/s (benchmarks/fidelity_under_load.py, README).
        self.bridge_delay = bridge_delay

    def _lock(self, ns: Optional[str]) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(_ns_key(ns), threading.RLock())

    # ---------------------------------------------------------- state files
    def _cfg_path(self, ns: Optional[str]) -> Path:
        return self.state_dir / f"{_ns_key(ns)}.json"

    def _load(self, ns: Optional[str]) -> dict:
        p = self._cfg_path(ns)
        if os.path.lexists(p):
            self._ensure_state_dir()
            try:
                return json.loads(read_own(p))
            except (UnsafePathError, OSError, ValueError) as e:
                raise BackendError(f"link emulation record {p}: {e}") from None
        bulk = self._bulk_records().get(_ns_key(ns))
        if bulk is not None:
            return json.loads(json.dumps(bulk))   # a copy: callers change it and _save it as the ns's own
        return {"generation": 0, "ns": ns, "tag": self.tag, "pid": None, "queues": {}, "links": {}}

    def _bulk_records(self) -> dict[str, dict]:
        """``links.json`` (see the module docstring), read once per emulator."""
        if self._bulk is None:
            self._bulk = read_bulk_records(self.state_dir)
        return self._bulk

    def _ensure_state_dir(self) -> None:
        """Create the state directory, or accept it only if it is ours alone (root writes here:
        a directory someone else owns could hold a symlink to any file; see ``edgelab.safefs``)."""
        try:
            secure_dir(self.state_dir, 0o755)
        except (UnsafePathError, OSError) as e:
            raise BackendError(f"link emulation state directory: {e}") from None

    def _save(self, ns: Optional[str], cfg: dict) -> None:
        self._ensure_state_dir()
        # not fsynced: the objects it records do not outlive the machine (safefs.write_atomic)
        write_atomic(self._cfg_path(ns), json.dumps(cfg, indent=1), durable=False)
        self._touched.add(_ns_key(ns))

    # --------------------------------------------------------------- delayer
    # One delayer process serves every namespace of this emulator (see delayer.py).
    # Its config, ``delayer.json`` in state_dir, holds the queues of every namespace
    # and the pid; each namespace's ``<ns>.json`` keeps that namespace's links.
    def _dl_path(self) -> Path:
        return self.state_dir / "delayer.json"

    def _dl_load(self) -> dict:
        p = self._dl_path()
        if p.exists():
            return json.loads(p.read_text())
        return {"generation": 0, "tag": self.tag, "pid": None, "namespaces": {}}

    def _dl_save(self, d: dict) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        p = self._dl_path()
        if (d.get("program") or {}).get("impl") == "c":
            # The C delayer reads its queues from a line table beside the JSON (nfq_delayer.c);
            # written first, so that a reload always finds the table of this generation or newer.
            write_atomic(str(p) + ".tab", config_table(d), durable=False)
        write_atomic(p, json.dumps(d), durable=False)

    def _dl_alive(self, pid: Optional[int]) -> bool:
        if not pid:
            return False
        proc = self._procs.get(DELAYER_KEY)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None   # our child: exact, no /proc race around exec
        return _pid_alive(pid, str(self._dl_path()))

    def start_delayer(self) -> None:
        """Start the (empty) delayer now, without waiting: its interpreter starts while the
        caller builds namespaces and veths, and is ready when the first link needs it.
        Only the fallback engine has one; a no-op if it already runs."""
        if self.engine != "fallback":
            return
        with self._dl_lock:
            d = self._dl_load()
            if not self._dl_alive(d.get("pid")):
                self._dl_spawn(d)

    def _dl_spawn(self, d: dict) -> int:
        """Start the delayer on config ``d`` (saved first); caller holds _dl_lock."""
        d["generation"] += 1
        prog = delayer_program(self.delayer_impl)
        d["program"] = prog
        self._dl_save(d)
        log = os.fdopen(open_append(str(self._dl_path()) + ".log"), "ab")
        env = dict(os.environ)
        env["PYTHONPATH"] = _PKG_ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        head = ([prog["path"]] if prog["impl"] == "c" else [sys.executable, "-m", "edgelab.linkemu.delayer"])
        argv = [*head, "--config", str(self._dl_path()), "--tag", self.tag]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env=env, start_new_session=True)
        log.close()
        for f in self.delayer_cgroup_procs:   # its own cgroup: its CPU is accounted, apart from the nodes'
            try:
                with open(f, "w") as fh:
                    fh.write(str(proc.pid))
            except OSError as e:
                proc.kill()
                proc.wait()
                raise BackendError(f"cannot move the link-emulation delayer into cgroup {f}: {e}") from e
            for knob, value in (DELAYER_CPU_WEIGHT.items() if self.delayer_priority else ()):
                w = Path(f).parent / knob
                if w.exists():
                    try:
                        w.write_text(value)
                    except OSError:
                        pass   # left at the default weight: recorded as such (delayer_info)
        d["sched"] = self._dl_schedule(proc.pid)
        self._procs[DELAYER_KEY] = proc
        self._dl_started = False
        d["pid"] = proc.pid
        self._dl_save(d)
        return proc.pid

    def _dl_schedule(self, pid: int) -> dict:
        """Make the delayer SCHED_FIFO (``delayer_rt``), after it joined its cgroups (a v1 cpu
        cgroup's real-time budget is what the kernel checks). Returns what it got, and why."""
        if not self.delayer_rt:
            return {"policy": "SCHED_OTHER", "reason": "not asked for (delayer_rt=False)"}
        prio = DELAYER_RT_PRIORITY
        try:
            os.sched_setscheduler(pid, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(prio))
            return {"policy": "SCHED_FIFO", "priority": prio}
        except OSError as e:
            why = self.delayer_rt_note or ("no CAP_SYS_NICE, or a cgroup without a real-time budget "
                                           "(cpu.rt_runtime_us 0)" if e.errno == errno.EPERM else "")
            return {"policy": "SCHED_OTHER",
                    "reason": f"sched_setscheduler(SCHED_FIFO, {prio}) refused: {e.strerror}"
                              + (f"; {why}" if why else "")}

    def _delayer_sync(self, ns: Optional[str], cfg: dict) -> None:
        """Make the shared delayer serve exactly cfg['queues'] in ``ns`` (start/HUP/stop it)."""
        self._save(ns, cfg)
        self._delayer_sync_many([ns], {_ns_key(ns): cfg})

    def _delayer_sync_many(self, spaces: list[Optional[str]], cfgs: Optional[dict] = None,
                           wait: bool = True) -> Optional[tuple[int, int]]:
        """Make the shared delayer serve the recorded queues of every namespace in ``spaces``:
        one reload (or start, or stop) for all of them, and wait until it has bound them.
        ``wait=False``: return ``(pid, generation)`` to hand to :meth:`_dl_wait` instead of
        waiting (None: nothing to wait for), so the caller can do other work meanwhile."""
        with self._dl_lock:
            d = self._dl_load()
            pid = d.get("pid")
            alive = self._dl_alive(pid)
            changed = False
            adding = False
            for ns in spaces:
                key = _ns_key(ns)
                cfg = (cfgs or {}).get(key) or self._load(ns)
                want = ({"netns": None if ns is None else f"/run/netns/{ns}",
                         "queues": {q: _delayer_queue(v) for q, v in cfg["queues"].items()}}
                        if cfg["queues"] else None)
                adding = adding or want is not None
                if d["namespaces"].get(key) == want:
                    continue
                changed = True
                if want is None:
                    d["namespaces"].pop(key, None)
                else:
                    d["namespaces"][key] = want
            if pid and not alive and adding:
                # Restarting it silently would hide that its links dropped everything meanwhile.
                raise BackendError(self._dl_death(pid, d))
            if not changed and (alive or not adding):
                return
            if not alive and not adding:   # a dead delayer's queues are gone anyway: just forget them
                proc = self._procs.get(DELAYER_KEY)
                if not d["namespaces"] and not (proc is not None and proc.pid == pid):
                    d["pid"] = None   # another process's (the CLI's) crashed delayer: start afresh later
                self._dl_save(d)      # ours: a later link must not silently get a new one (close() resets)
                return
            if not d["namespaces"]:
                self._dl_save(d)
                if alive:
                    self._dl_stop(pid)
                d["pid"] = None
                self._dl_save(d)
                return
            if not alive:
                pid = self._dl_spawn(d)
                gen = d["generation"]
            else:
                if not self._dl_started:   # not yet sure its SIGHUP handler is installed
                    self._wait_ready(pid, 0)
                    self._dl_started = True
                d["generation"] += 1
                gen = d["generation"]
                self._dl_save(d)
                os.kill(pid, signal.SIGHUP)
        if not wait:
            return pid, gen
        self._dl_wait((pid, gen))
        return None

    def _dl_wait(self, pending: Optional[tuple[int, int]]) -> None:
        """Wait until the delayer has loaded a reload that ``_delayer_sync_many(wait=False)`` began."""
        if pending is not None:
            self._wait_ready(*pending)
            self._dl_started = True

    def _dl_death(self, pid: int, d: dict) -> str:
        """What to say about a delayer that died while it carried links."""
        proc = self._procs.get(DELAYER_KEY)
        code = proc.poll() if proc is not None and proc.pid == pid else None
        how = ("ended" if code is None else f"was killed by signal {-code}" if code < 0 else f"exited {code}")
        spaces = ", ".join(sorted(d["namespaces"])) or "its namespaces"
        log = Path(str(self._dl_path()) + ".log")
        tail = log.read_text(errors="replace")[-1500:] if log.exists() else ""
        return (f"the link-emulation delayer (pid {pid}) {how}: the delayed links of {spaces} carried "
                f"nothing since; tear the testbed down (or `python -m edgelab.linkemu clear`)\n{tail}")

    def _wait_ready(self, pid: int, gen: int) -> None:
        ready = Path(str(self._dl_path()) + ".ready")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                g, p = ready.read_text().split()
                if int(g) >= gen and int(p) == pid:
                    return
            except (OSError, ValueError):
                pass
            if not self._dl_alive(pid):
                break
            time.sleep(0.002)
        log = Path(str(self._dl_path()) + ".log")
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
        raise BackendError(f"the link-emulation (NFQUEUE) delayer did not become ready (pid {pid}, "
                           f"config {self._dl_path()}); is NetfilterQueue installed and are you root?\n{tail}")

    def _dl_stop(self, pid: int) -> None:
        proc = self._procs.pop(DELAYER_KEY, None)
        _kill(pid, str(self._dl_path()))
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    @staticmethod
    def _alloc_queues(cfg: dict, n: int) -> list[int]:
        used = {int(k) for k in cfg["queues"]}
        out, q = [], QUEUE_BASE
        while len(out) < n:
            if q not in used:
                out.append(q)
            q += 1
        return out

    # ------------------------------------------------------------ public API
    def apply_link(self, ns: Optional[str], dev: str, peer_ns: Optional[str], peer_dev: Optional[str],
                   link: LinkParams, *, defer_peer: bool = False,
                   peer_is_bridge_port: Optional[bool] = None, control_port: Optional[int] = None) -> None:
        """Impair ``dev`` (and its peer end) with ``link``.

        ``defer_peer``: queue the fallback's peer-side loss and delay (see below)
        until :meth:`flush_peer_side`, which installs everything one peer namespace
        needs in one transaction: an access point with N stations then costs one
        delayer reload and one iptables-restore instead of N of each.
        ``peer_is_bridge_port``: what the caller knows of ``peer_dev`` (None: ask the kernel).
        ``control_port``: TCP port of the controller's session on ``dev`` (a remote device's SSH),
        kept out of the fallback's delayer (:func:`~edgelab.linkemu.commands.nfqueue_rule_specs`).
        """
        where = f"link {ns or '(current)'}/{dev}"
        _check_link(link, where)
        self.clear(ns, dev)
        rec: dict[str, Any] = {"peer_ns": peer_ns, "peer_dev": peer_dev, "link": link.to_dict(),
                               "engine": self.engine}
        if self.engine == "netem":
            with self._lock(ns):
                cfg = self._load(ns)
                cfg["links"][dev] = rec
                self._save(ns, cfg)   # recorded before installing, so a failure half-way is still clearable
            run_all(ns, C.netem_egress_cmds(dev, link))
            if peer_dev is not None:
                run_all(peer_ns, C.netem_egress_cmds(peer_dev, link))
            elif C.needs_netem(link):
                ifb = self.ifb_name(f"in-{dev}")
                rec["ifb"] = ifb
                self._save(ns, cfg)
                self._ifbs.append({"ns": ns, "name": ifb})
                run_all(ns, C.ingress_ifb_netem_cmds(dev, ifb, link))
            return
        # fallback: rate on both egresses. Loss and delay of traffic *into* dev are
        # applied in ns; of traffic *out of* dev where it arrives, on the peer side
        # (the peer end or, for a bridge port, the bridge's netfilter hooks), so the
        # sender's socket is not charged for packets the delayer holds (TCP Small
        # Queues would cap a flow at ~2 packets per delay) and a lost packet is a
        # lost frame, not a local send error.
        peer_side = None
        if peer_dev is not None and (link.loss_pct > 0 or C.needs_delay(link)):
            bridge = (self._is_bridge_port(peer_ns, peer_dev) if peer_is_bridge_port is None
                      else peer_is_bridge_port)
            if not bridge or self._bridge_netfilter(peer_ns):
                peer_side = {"ns": peer_ns, "dev": peer_dev, "bridge": bridge, "loss": False, "queue": None}
                rec["peer_side"] = peer_side
        with self._lock(ns):
            cfg = self._load(ns)
            cfg["links"][dev] = rec
            self._save(ns, cfg)   # recorded before installing, so a failure half-way is still clearable
            # One process per tool and namespace: tc -batch, nft -f, iptables-restore.
            if link.rate_mbit > 0:
                run_batched(ns, C.htb_rate_cmds(dev, link.rate_mbit))
                if peer_dev is not None:
                    if defer_peer:   # the access point's side of 100 stations: one tc -batch at flush
                        with self._locks_guard:
                            self._pending_tc.setdefault(_ns_key(peer_ns), []).extend(
                                C.htb_rate_cmds(peer_dev, link.rate_mbit))
                    else:
                        run_batched(peer_ns, C.htb_rate_cmds(peer_dev, link.rate_mbit))
            if link.loss_pct > 0:
                rec["loss"] = True
                self._save(ns, cfg)
                _run_input(ns, ["nft", "-f", "-"], C.nft_script(
                    C.nft_loss_cmds(self.tag, dev, link.loss_pct, egress=peer_side is None)))
            if C.needs_delay(link):
                n = 1 if peer_side is not None else 2
                qs = self._alloc_queues(cfg, n)
                for q, d in zip(qs, ("in", "out")):
                    cfg["queues"][str(q)] = {"delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms,
                                             "dev": dev, "dir": d}
                rec["queues"] = qs if n == 2 else [qs[0], None]
                rec["families"] = self._families(ns)
                if control_port:
                    rec["control_port"] = int(control_port)
                specs = C.nfqueue_rule_specs(dev, *rec["queues"], control_port=rec.get("control_port"))
                if defer_peer:
                    # One delayer reload for every namespace at flush time, then the rules.
                    self._save(ns, cfg)
                    with self._locks_guard:
                        self._pending_rules.setdefault(_ns_key(ns), []).extend(specs)
                else:
                    self._delayer_sync(ns, cfg)          # delayer bound before rules point at it
                    self._save(ns, cfg)
                    for tool in rec["families"]:
                        _run_input(ns, [f"{tool}-restore", "-w", "--noflush"], C.iptables_restore_text(specs))
        if peer_side is not None:
            if defer_peer:
                with self._locks_guard:
                    self._pending.setdefault(_ns_key(peer_ns), []).append((ns, dev, peer_side, link))
            else:
                self._install_peer_side(peer_ns, [(ns, dev, peer_side, link)])

    def apply_links(self, links: list["LinkSpec"], netlink: Any) -> None:
        """Impair many links at once, with no process per link (the fallback engine; the
        netem engine goes link by link through :meth:`apply_link`).

        ``netlink`` queues tc requests per namespace and sends them in bulk (the local
        backend's ``wiring.Handles``: ``batch(ns)``, ``index(ns, dev)``, ``commit()``). Per
        link the kernel objects are those of :meth:`apply_link` with ``defer_peer``: the
        HTB rate on both ends (netlink), the loss of arriving frames in the node's
        namespace and of leaving frames where they arrive (nftables, in-process through
        libnftables), the delays through the shared delayer (one reload for all namespaces),
        and the NFQUEUE rules by one ``iptables-restore`` per namespace that has any (this
        kernel has no ``nft_queue``, CONFIG_NFT_QUEUE, so iptables' NFQUEUE target is what
        redirects: the only processes left, run from a few threads). With ``bridge_delay``
        the delay of frames *to* a bridge port's node is applied on the port, in the bridge's
        namespace (``--physdev-out`` on POSTROUTING), so a cell needs one ``iptables-restore``
        in all (the local backend's default).
        Every namespace's record is written once, before anything is installed.
        """
        if self.engine != "fallback":
            for l in links:
                self.apply_link(l.ns, l.dev, l.peer_ns, l.peer_dev, l.link, defer_peer=True,
                                peer_is_bridge_port=l.peer_is_bridge_port)
            self.flush_peer_side()
            return
        from . import nftlib
        from . import nlbatch

        cfgs: dict[str, dict] = {}

        def cfg_of(ns: Optional[str]) -> dict:
            key = _ns_key(ns)
            if key not in cfgs:
                cfgs[key] = self._load(ns)
            return cfgs[key]

        for l in links:
            _check_link(l.link, f"link {l.ns or '(current)'}/{l.dev}")
            if l.dev in self._load(l.ns)["links"]:
                self.clear(l.ns, l.dev)
        specs: dict[str, list[list[str]]] = {}      # ns key -> NFQUEUE rule specs
        nft: dict[str, list[list[str]]] = {}        # ns key -> nft commands
        htb_q: dict[float, tuple[bytes, bytes]] = {}

        def htb(ns: Optional[str], dev: str, rate: float) -> None:
            if rate not in htb_q:
                burst, quantum = C.htb_burst_bytes(rate), C.htb_quantum_bytes(rate)
                # Bytes per second exactly as tc computes them from "<rate>mbit" (iproute2
                # tc_util.c get_rate64: strtod, * 1e6, / 8, truncated): pyroute2's own parser
                # takes no fractional rates ("6.5mbit"), a number it takes as bytes/s.
                r = int(float(C._fmt(rate)) * 1000000.0 / 8)
                htb_q[rate] = (nlbatch.tc_template("replace", "htb", 0x10000, default=0x10),
                               nlbatch.tc_template("replace-class", "htb", 0x10010, parent=0x10000, rate=r,
                                                   ceil=r, burst=burst, cburst=burst, quantum=quantum))
            idx = netlink.index(ns, dev)
            b = netlink.batch(ns)
            b.add(nlbatch.with_index(htb_q[rate][0], idx), f"tc qdisc replace dev {dev} root handle 1: htb")
            b.add(nlbatch.with_index(htb_q[rate][1], idx), f"tc class replace dev {dev} classid 1:10 htb rate {rate}mbit")

        def queue(ns: Optional[str], link: LinkParams, dev: str, d: str, **extra: Any) -> int:
            c = cfg_of(ns)
            q = self._alloc_queues(c, 1)[0]
            c["queues"][str(q)] = {"delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms, "dev": dev, "dir": d,
                                   **extra}
            return q

        def bridge_queue(ns: Optional[str]) -> int:
            """The bridge queue of ``ns`` (one per namespace: its one rule per family sends every
            bridged frame there), created with its rule on first use."""
            c = cfg_of(ns)
            for k, v in c["queues"].items():
                if v.get("dir") == "bridge":
                    return int(k)
            q = self._alloc_queues(c, 1)[0]
            c["queues"][str(q)] = {"delay_ms": 0.0, "jitter_ms": 0.0, "dev": "*", "dir": "bridge"}
            specs.setdefault(_ns_key(ns), []).extend(C.nfqueue_bridge_rule_specs(q))
            ports_table(ns)
            return q

        def ports_table(ns: Optional[str]) -> None:
            """The bridge's ports table (loss and in-port marks, see commands.bridge_ports_cmds),
            created once, before any element."""
            c = cfg_of(ns)
            if not c.get("ports_table"):
                c["ports_table"] = True
                nft.setdefault(_ns_key(ns), [])[:0] = C.bridge_ports_cmds(self.tag)

        for l in links:
            link, ns, dev, pns, pdev = l.link, l.ns, l.dev, l.peer_ns, l.peer_dev
            rec: dict[str, Any] = {"peer_ns": pns, "peer_dev": pdev, "link": link.to_dict(), "engine": self.engine}
            peer_side = None
            if pdev is not None and (link.loss_pct > 0 or C.needs_delay(link)):
                bridge = (self._is_bridge_port(pns, pdev) if l.peer_is_bridge_port is None
                          else l.peer_is_bridge_port)
                if not bridge or self._bridge_netfilter(pns):
                    peer_side = {"ns": pns, "dev": pdev, "bridge": bridge, "loss": False, "queue": None}
                    rec["peer_side"] = peer_side
            cfg_of(ns)["links"][dev] = rec
            if link.rate_mbit > 0:
                htb(ns, dev, link.rate_mbit)
                if pdev is not None:
                    htb(pns, pdev, link.rate_mbit)
            if link.loss_pct > 0:
                rec["loss"] = True
                nft.setdefault(_ns_key(ns), []).extend(
                    C.nft_loss_cmds(self.tag, dev, link.loss_pct, egress=peer_side is None))
                if peer_side is not None and peer_side["bridge"] and self.bridge_delay:
                    peer_side["loss"] = "ports"   # in the bridge's ports table, not a table of its own
                    ports_table(pns)
                    nft.setdefault(_ns_key(pns), []).extend(C.bridge_port_loss_cmds(self.tag, pdev, link.loss_pct))
                elif peer_side is not None:
                    peer_side["loss"] = True
                    nft.setdefault(_ns_key(pns), []).extend(
                        C.nft_loss_cmds(self.tag, pdev, link.loss_pct, egress=False,
                                        family="bridge" if peer_side["bridge"] else "inet"))
            if C.needs_delay(link):
                if peer_side is not None:
                    fams = self._families(pns)
                    q_from = queue(pns, link, pdev, "from-peer", of=f"{ns}/{dev}")
                    peer_side["queue"], peer_side["families"] = q_from, fams
                    if peer_side["bridge"] and self.bridge_delay:
                        # Both directions in the bridge's namespace, as stages of its one bridge queue
                        # (delayer.py: one queue pass per bridged frame, one rule per hook).
                        qb = bridge_queue(pns)
                        c = cfg_of(pns)
                        c["queues"][str(q_from)]["via"] = qb
                        q_to = queue(pns, link, pdev, "to-peer", of=f"{ns}/{dev}", via=qb)
                        peer_side["queue_to"], peer_side["via"] = q_to, qb
                        # Its frames carry its in-stage's number as their mark (delayer.py).
                        nft.setdefault(_ns_key(pns), []).extend(C.bridge_port_cmds(self.tag, pdev, q_from))
                    else:
                        specs.setdefault(_ns_key(pns), []).extend(
                            C.nfqueue_rule_specs(pdev, q_from, None, bridge_port=peer_side["bridge"]))
                        q_in = queue(ns, link, dev, "in")
                        rec["queues"], rec["families"] = [q_in, None], self._families(ns)
                        specs.setdefault(_ns_key(ns), []).extend(C.nfqueue_rule_specs(dev, q_in, None))
                else:
                    q_in, q_out = queue(ns, link, dev, "in"), queue(ns, link, dev, "out")
                    rec["queues"], rec["families"] = [q_in, q_out], self._families(ns)
                    specs.setdefault(_ns_key(ns), []).extend(C.nfqueue_rule_specs(dev, q_in, q_out))
        # Recorded before installing (compact JSON, the directory checked once): a namespace
        # that has a record file of its own keeps it; the others, all of them on a fresh
        # bring-up, go into one file together (BULK_RECORD), a write instead of a hundred.
        self._ensure_state_dir()
        bulk = dict(self._bulk_records())
        for key, c in cfgs.items():
            ns = None if key == "_root" else key
            with self._lock(ns):
                if os.path.lexists(self._cfg_path(ns)):
                    write_atomic(self._cfg_path(ns), json.dumps(c, separators=(",", ":")), durable=False)
                else:
                    bulk[key] = c
                self._touched.add(key)
        if bulk != self._bulk_records():
            write_atomic(self.state_dir / BULK_RECORD, json.dumps(bulk, separators=(",", ":")), durable=False)
            self._bulk = bulk
        netlink.commit()
        in_process = nftlib.available()

        def loss_rules(keys: list[str]) -> None:
            for key in keys:
                ns = None if key == "_root" else key
                if in_process:
                    nftlib.run_script(ns, C.nft_script(nft[key]))
                else:
                    _run_input(ns, ["nft", "-f", "-"], C.nft_script(nft[key]))

        if not specs:
            loss_rules(list(nft))
            return
        from concurrent.futures import ThreadPoolExecutor

        # The delayer binds every queue (one reload for all namespaces) before rules point at
        # them; while it does, and while the NFQUEUE rules' processes run, this thread installs
        # the loss rules of the namespaces that get no NFQUEUE rule (the stations', with
        # bridge_delay): the two never share a namespace's nftables at the same time
        # (iptables-restore is iptables-nft here, one transaction each).
        pending = self._delayer_sync_many([None if k == "_root" else k for k in specs], cfgs, wait=False)
        # One iptables-restore per namespace (this kernel has no nft_queue: iptables' NFQUEUE
        # target is what redirects), run from a few threads: each mostly waits on its process.
        jobs = [(None if key == "_root" else key, tool, C.iptables_restore_text(sp))
                for key, sp in specs.items() for tool in self._families(None if key == "_root" else key)]
        with ThreadPoolExecutor(max_workers=RESTORE_WORKERS + 1) as ex:
            def queue_rules() -> None:
                self._dl_wait(pending)
                for fut in [ex.submit(_run_input, ns, [f"{tool}-restore", "-w", "--noflush"], text)
                            for ns, tool, text in jobs]:
                    fut.result()

            rules = ex.submit(queue_rules)
            try:
                loss_rules([k for k in nft if k not in specs])
            finally:
                rules.result()
        loss_rules([k for k in nft if k in specs])

    def flush_peer_side(self) -> None:
        """Install the deferred work: the peer ends' rates (one ``tc -batch`` per peer namespace),
        every deferred namespace's queues (one delayer reload for all), their NFQUEUE rules (after
        the queues are bound), then the peer-side loss and delay, one transaction per peer namespace."""
        with self._locks_guard:
            pending, self._pending = self._pending, {}
            tcs, self._pending_tc = self._pending_tc, {}
            rules, self._pending_rules = self._pending_rules, {}
        for key, cmds in tcs.items():
            run_batched(None if key == "_root" else key, cmds)
        if rules:
            self._delayer_sync_many([None if k == "_root" else k for k in rules])
            for key, specs in rules.items():
                ns = None if key == "_root" else key
                for tool in self._families(ns):
                    _run_input(ns, [f"{tool}-restore", "-w", "--noflush"], C.iptables_restore_text(specs))
        for key, items in pending.items():
            self._install_peer_side(None if key == "_root" else key, items)

    def _install_peer_side(self, pns: Optional[str], items: list[tuple]) -> None:
        """Loss and delay of traffic leaving each ``(ns, dev, side, link)``, installed in the
        peer namespace ``pns`` where it arrives (see apply_link): one delayer reload, one
        iptables-restore and one nft transaction for all of them."""
        with self._lock(pns):
            pcfg = self._load(pns)
            delayed = [it for it in items if C.needs_delay(it[3])]
            queues = self._alloc_queues(pcfg, len(delayed))
            fams = self._families(pns) if delayed else []
            specs = []
            for (ns, dev, side, link), q in zip(delayed, queues):
                pcfg["queues"][str(q)] = {"delay_ms": link.delay_ms, "jitter_ms": link.jitter_ms,
                                          "dev": side["dev"], "dir": "from-peer", "of": f"{ns}/{dev}"}
                side["queue"], side["families"] = q, fams
                specs += C.nfqueue_rule_specs(side["dev"], q, None, bridge_port=side["bridge"])
            nft_cmds = []
            for ns, dev, side, link in items:
                if link.loss_pct > 0:
                    side["loss"] = True
                    nft_cmds += C.nft_loss_cmds(self.tag, side["dev"], link.loss_pct, egress=False,
                                                family="bridge" if side["bridge"] else "inet")
            for ns, dev, side, link in items:   # recorded before installing
                self._update_link_record(ns, dev, peer_side=side)
            if delayed:
                self._delayer_sync(pns, pcfg)
                for tool in fams:
                    _run_input(pns, [f"{tool}-restore", "-w", "--noflush"], C.iptables_restore_text(specs))
            if nft_cmds:
                _run_input(pns, ["nft", "-f", "-"], C.nft_script(nft_cmds))

    def _update_link_record(self, ns: Optional[str], dev: str, **fields: Any) -> None:
        with self._lock(ns):
            cfg = self._load(ns)
            if dev in cfg["links"]:
                cfg["links"][dev].update(fields)
                self._save(ns, cfg)

    def _clear_peer_side(self, side: dict) -> None:
        if not _remove_peer_side_rules(self.tag, side) or side.get("queue") is None:
            return
        with self._lock(side["ns"]):
            pcfg = self._load(side["ns"])
            pcfg["queues"].pop(str(side["queue"]), None)
            if side.get("queue_to") is not None:
                pcfg["queues"].pop(str(side["queue_to"]), None)
            qb = side.get("via")
            if qb is not None and not any(v.get("via") == qb for v in pcfg["queues"].values()):
                # The bridge's last delayed port: its rule goes before its queue does (a rule
                # pointing at an unbound queue drops every bridged frame).
                _remove_bridge_rule(side["ns"], qb, side.get("families", ["iptables"]))
                pcfg["queues"].pop(str(qb), None)
            elif qb is not None:
                run_all(side["ns"], C.bridge_port_cmds(self.tag, side["dev"], 0, delete=True), check=False)
            self._delayer_sync(side["ns"], pcfg)

    @staticmethod
    def _is_bridge_port(ns: Optional[str], dev: str) -> bool:
        cp = run(ns, ["ip", "-j", "-d", "link", "show", "dev", dev])
        try:
            info = json.loads(cp.stdout)[0].get("linkinfo", {})
        except (ValueError, IndexError):
            return False
        return info.get("info_slave_kind") == "bridge"

    def _bridge_netfilter(self, ns: Optional[str]) -> bool:
        """Make bridged IPv4/IPv6 frames traverse iptables in ``ns`` (br_netfilter); False if unavailable."""
        key = _ns_key(ns)
        if key not in self._br_nf:
            self._br_nf[key] = self._enable_bridge_netfilter(ns)
        return self._br_nf[key]

    @staticmethod
    def _enable_bridge_netfilter(ns: Optional[str]) -> bool:
        if not os.path.exists("/proc/sys/net/bridge"):
            subprocess.run(["modprobe", "br_netfilter"], capture_output=True)
        ok = write_sysctl(ns, "net.bridge.bridge-nf-call-iptables", "1")   # in-process: no sysctl processes
        write_sysctl(ns, "net.bridge.bridge-nf-call-ip6tables", "1")
        return ok

    def _families(self, ns: Optional[str]) -> list[str]:
        """iptables families usable here. Probed once per emulator, in the first namespace asked:
        whether ip6tables' mangle table works is the kernel's and the tools' property, the same in
        every namespace (a probe per node was a process per node)."""
        if "any" not in self._fams:
            fams = ["iptables"]
            if self.ipv6 and run(ns, ["ip6tables", "-w", "-t", "mangle", "-S", "POSTROUTING"], check=False).returncode == 0:
                fams.append("ip6tables")
            self._fams["any"] = fams
        return list(self._fams["any"])

    def apply_shared_medium(self, ns: Optional[str], name: str, ports: list[str], capacity_mbit: float,
                            station_macs: Optional[list[str]] = None,
                            station_rates: Optional[list[tuple[float, float]]] = None,
                            station_only: bool = False, netlink: Any = None) -> None:
        """One airtime budget of ``capacity_mbit`` for every frame to or from ``ports``.

        ``station_macs`` (the MAC of the station behind each port, in order)
        gives each station its own fair share of the budget; without them the
        stations' frames share one queue (see ``commands.shared_medium_cmds``).
        ``station_only``: one port also carrying wired frames (an access point
        that is a node of a remote backend): only the stations' frames are charged.
        ``station_rates`` (aligned with them): each station's (share, ceil) in
        Mbit/s, from the airtime model of stations at different PHY rates;
        without them the shares are equal.
        ``netlink`` (bring-up of a fresh namespace, see :meth:`apply_links`): the IFB is
        created over it instead of by ``ip`` processes; the tc objects stay one ``tc -batch``.
        """
        if not ports:
            raise BackendError(f"shared medium {name!r} in {ns}: no ports given")
        if not capacity_mbit > 0:
            raise BackendError(f"shared medium {name!r} in {ns}: capacity_mbit={capacity_mbit!r} must be > 0")
        if station_only and not station_macs:
            raise BackendError(f"shared medium {name!r}: station_only needs the stations' MAC addresses")
        if station_macs is not None:
            if len(station_macs) != len(ports) and not station_only:
                raise BackendError(f"shared medium {name!r} in {ns}: {len(station_macs)} station MACs "
                                   f"for {len(ports)} ports")
            bad = [m for m in station_macs if not _MAC.fullmatch(m)]
            if bad:
                raise BackendError(f"shared medium {name!r} in {ns}: {bad[0]!r} is not a MAC address "
                                   f"(expected xx:xx:xx:xx:xx:xx)")
        self._check_station_rates(ns, name, len(station_macs or []), station_rates)
        ifb = self.ifb_name(name)
        if netlink is None:
            run(ns, ["ip", "link", "del", ifb], check=False)
        self._ifbs.append({"ns": ns, "name": ifb})
        # The FIFO fallback leaf: ~1000 packets of buffer in all, split between the classes.
        leaf = shared_leaf(max(32, 1000 // (len(station_macs or []) + 1)))
        cmds = C.shared_medium_cmds(ifb, ports, capacity_mbit, leaf, station_macs, station_rates, station_only)
        if netlink is not None:
            from . import nlbatch

            create = C.ifb_create_cmds(ifb)
            assert cmds[:len(create)] == create
            cmds = cmds[len(create):]
            netlink.batch(ns).add(nlbatch.ifb_add(ifb, netlink.new_index(ns, ifb)), f"create IFB {ifb} in {ns}")
            netlink.commit()
        run_batched(ns, cmds)

    @staticmethod
    def _check_station_rates(ns: str, name: str, n: int, station_rates: Optional[list[tuple[float, float]]]) -> None:
        if station_rates is None:
            return
        if len(station_rates) != n:
            raise BackendError(f"shared medium {name!r} in {ns}: {len(station_rates)} station rates for "
                               f"{n} stations (give them with the stations' MACs, in the same order)")
        for i, (share, ceil) in enumerate(station_rates):
            if not (share > 0 and ceil > 0) or math.isnan(share) or math.isnan(ceil):
                raise BackendError(f"shared medium {name!r} in {ns}: station {i}: share={share!r}, "
                                   f"ceil={ceil!r} must be numbers > 0")

    def update_shared_medium(self, ns: str, name: str, capacity_mbit: float, n_stations: int,
                             station_rates: Optional[list[tuple[float, float]]] = None) -> None:
        """Re-rate a running airtime budget and its stations' classes in place (``tc class change``):
        no frame queued in the cell is dropped and no station is detached, so a rate can
        change (a phone walking away) while an experiment's traffic flows."""
        if not capacity_mbit > 0:
            raise BackendError(f"shared medium {name!r} in {ns}: capacity_mbit={capacity_mbit!r} must be > 0")
        self._check_station_rates(ns, name, n_stations, station_rates)
        run_batched(ns, C.budget_class_cmds(self.ifb_name(name), capacity_mbit, n_stations, station_rates,
                                            op="change"))

    def set_link_rate(self, ns: Optional[str], dev: str, rate_mbit: float) -> None:
        """Change the rate of a link applied with :meth:`apply_link`, on both its ends, in place."""
        if not rate_mbit > 0:
            raise BackendError(f"link {ns or '(current)'}/{dev}: rate_mbit={rate_mbit!r} must be > 0")
        with self._lock(ns):
            cfg = self._load(ns)
            rec = cfg["links"].get(dev)
            if rec is None or not rec["link"].get("rate_mbit"):
                raise BackendError(f"link {ns or '(current)'}/{dev} has no rate applied by this emulator "
                                   "(apply_link with rate_mbit > 0 first)")
            run_all(ns, C.link_rate_change_cmds(dev, rate_mbit))
            if rec.get("peer_dev"):
                run_all(rec["peer_ns"], C.link_rate_change_cmds(rec["peer_dev"], rate_mbit))
            rec["link"]["rate_mbit"] = rate_mbit
            self._save(ns, cfg)

    def ifb_name(self, name: str) -> str:
        """``<tag>-<name>`` if it fits IFNAMSIZ (15), else a short tag+hash form."""
        n = f"{self.tag}-{name}"
        if len(n) <= 15:
            return n
        h = hashlib.sha1(n.encode()).hexdigest()[:6]
        return f"{self.tag[:8]}-{h}"

    def clear(self, ns: Optional[str], dev: str) -> None:
        with self._lock(ns):
            cfg = self._load(ns)
            rec = cfg["links"].pop(dev, None)
            if rec is None:
                return
            if rec.get("queues"):
                q_in, q_out = rec["queues"]
                run_all(ns, C.iptables_nfqueue_cmds(dev, q_in, q_out, delete=True,
                                                    families=tuple(rec.get("families", ["iptables"])),
                                                    control_port=rec.get("control_port")), check=False)
                for q in rec["queues"]:
                    cfg["queues"].pop(str(q), None)
            if rec.get("loss"):
                run_all(ns, C.nft_loss_clear_cmds(self.tag, dev), check=False)
            run_all(ns, C.clear_root_cmds(dev), check=False)
            if rec.get("peer_dev"):
                run_all(rec["peer_ns"], C.clear_root_cmds(rec["peer_dev"]), check=False)
            if rec.get("ifb"):
                run_all(ns, C.clear_clsact_cmds(dev) + C.ifb_delete_cmds(rec["ifb"]), check=False)
                self._ifbs = [i for i in self._ifbs if not (i["ns"] == ns and i["name"] == rec["ifb"])]
            self._delayer_sync(ns, cfg)
        if rec.get("peer_side"):
            self._clear_peer_side(rec["peer_side"])

    def close_if_idle(self, ns: Optional[str] = None) -> bool:
        """When ``ns`` has no impaired link left (``python -m edgelab.linkemu clear`` just removed
        the last, in a process of its own: a remote device's teardown), stop the delayer and
        remove the state directory as :meth:`close` does; True when it did. Without this every
        cleared device interface left an empty ``/run/<tag>-linkemu`` behind."""
        if self._load(ns)["links"]:
            return False
        self._touched.add(_ns_key(ns))
        self.close()
        return True

    def close(self) -> None:
        """Clear every link this emulator impaired, stop its delayer, delete its IFBs. Idempotent."""
        for key in list(self._touched):
            ns = None if key == "_root" else key
            cfg = self._load(ns)
            for dev in list(cfg["links"]):
                self.clear(ns, dev)
        with self._dl_lock:
            d = self._dl_load()
            if d.get("pid"):
                self._dl_stop(d["pid"])
            remove_delayer_files(str(self._dl_path()))
        for key in list(self._touched):
            ns = None if key == "_root" else key
            for suffix in ("", ".ready", ".log"):
                Path(str(self._cfg_path(ns)) + suffix).unlink(missing_ok=True)
            self._touched.discard(key)
        (self.state_dir / BULK_RECORD).unlink(missing_ok=True)
        self._bulk = None
        for i in self._ifbs:
            if _netns_exists(i["ns"]):
                run(i["ns"], ["ip", "link", "del", i["name"]], check=False)
        self._ifbs = []
        try:
            self.state_dir.rmdir()
        except OSError:
            pass

    def delayers(self) -> list[dict]:
        """The delayer's state for every namespace it serves: namespace, pid, whether it still runs,
        how it ended. One process serves them all, so one crash fails every entry.

        A delayer that died takes its links with it (NFQUEUE drops what no one
        reads), so a measurement's health and a failed measurement's error
        both ask this first (:meth:`edgelab.backends.local.LocalTestbed.health_checks`).
        """
        d = self._dl_load()
        pid = d.get("pid")
        if not pid:
            return []
        proc = self._procs.get(DELAYER_KEY)
        code = proc.poll() if proc is not None and proc.pid == pid else None
        alive = code is None and _pid_alive(pid, str(self._dl_path()))
        served = set(d["namespaces"])
        for key in d["namespaces"]:
            # Queues of a bridge's namespace that delay another namespace's links (apply_links
            # puts both directions of a station's link on the access point's port): that node
            # depends on the delayer too, and is named as such.
            try:
                cfg = self._load(None if key == "_root" else key)
            except BackendError:
                continue
            for q in cfg.get("queues", {}).values():
                of = q.get("of")
                if of and "/" in of:
                    served.add(of.rsplit("/", 1)[0] or "_root")
        return [{"ns": None if key in ("_root", "None") else key, "pid": pid, "alive": alive, "returncode": code}
                for key in sorted(served)]

    def delayer_info(self) -> dict:
        """The shared delayer: pid, config, cgroup, namespaces and queues served (for manifests)."""
        d = self._dl_load()
        weight = {}
        for f in self.delayer_cgroup_procs:
            for knob in DELAYER_CPU_WEIGHT:
                try:
                    weight[knob] = int((Path(f).parent / knob).read_text())
                except (OSError, ValueError):
                    pass
        return {"pid": d.get("pid"), "config": str(self._dl_path()),
                "cgroup_procs": list(self.delayer_cgroup_procs),
                "cpu_weight": weight,   # its cgroup's, against the nodes' (see DELAYER_CPU_WEIGHT)
                # asked for and got (or why not), and what the live process has now
                "sched": {**(d.get("sched") or {}), "live": _sched_name(d.get("pid"))},
                # which program (C or Python) and why (delayer_program)
                "program": d.get("program"),
                "namespaces": len(d["namespaces"]),
                "queues": sum(len(v["queues"]) for v in d["namespaces"].values())}

    def state(self) -> dict:
        delayers = []
        for key in sorted(self._touched):
            ns = None if key == "_root" else key
            delayers.append({"ns": ns, "config": str(self._cfg_path(ns))})
        d = self._dl_load()
        return {"tag": self.tag, "engine": self.engine, "state_dir": str(self.state_dir),
                "delayer": {"pid": d.get("pid"), "config": str(self._dl_path())},
                "delayers": delayers, "ifbs": list(self._ifbs)}


def _run_input(ns: Optional[str], argv: list[str], text: str) -> None:
    """Run a restore-style command fed on stdin; BackendError with its stderr on failure."""
    full = in_ns(ns, argv)
    cp = subprocess.run(full, input=text, capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        raise BackendError(f"link emulation command failed in namespace {ns!r}: {' '.join(full)}\n"
                           f"  exit {cp.returncode}: {cp.stderr.strip()}\n  input:\n{text[:2000]}")


def _delayer_queue(v: dict) -> dict:
    """A recorded queue as the delayer's config has it (see delayer.py): its delay, and for a
    bridge queue or a bridge port's stage what the delayer needs to dispatch frames."""
    out = {"delay_ms": v["delay_ms"], "jitter_ms": v["jitter_ms"]}
    if v.get("dir") == "bridge":
        out["bridge"] = True
    elif v.get("via") is not None:
        out.update(via=v["via"], dev=v["dev"], dir=v["dir"])
    return out


def _remove_bridge_rule(ns: Optional[str], q: int, families: list[str]) -> None:
    """Delete a bridge queue's rule (tolerant of it gone). The ports table stays (other ports'
    loss may be in it; empty, it costs a frame two failed lookups) until cleanup() or the
    namespace goes."""
    for tool in families:
        run(ns, [tool, "-w", "-t", "mangle", "-D", *C.nfqueue_bridge_rule_specs(q)[0]], check=False)


def _remove_peer_side_rules(tag: str, side: dict) -> bool:
    """Delete a link's peer-side NFQUEUE rule and loss table; False if the peer namespace is gone."""
    pns, pdev = side["ns"], side["dev"]
    if not _netns_exists(pns):
        return False
    if side.get("queue") is not None and side.get("via") is None:   # a bridge queue's stage has no rule
        run_all(pns, C.iptables_nfqueue_cmds(pdev, side["queue"], side.get("queue_to"), delete=True,
                                             bridge_port=side["bridge"],
                                             families=tuple(side.get("families", ["iptables"]))), check=False)
    if side.get("loss") == "ports":
        run_all(pns, C.bridge_port_loss_cmds(tag, pdev, 0, delete=True), check=False)
    elif side.get("loss"):
        run_all(pns, C.nft_loss_clear_cmds(tag, pdev, "bridge" if side["bridge"] else "inet"), check=False)
    return True


def _netns_exists(ns: Optional[str]) -> bool:
    return ns is None or Path(f"/run/netns/{ns}").exists()


def read_bulk_records(state_dir: Path) -> dict[str, dict]:
    """The records :meth:`LinkEmulator.apply_links` wrote together (``links.json``), {} if none."""
    p = Path(state_dir) / BULK_RECORD
    if not os.path.lexists(p):
        return {}
    try:
        data = json.loads(read_own(p))
    except (UnsafePathError, OSError, ValueError) as e:
        raise BackendError(f"link emulation record {p}: {e}") from None
    if not isinstance(data, dict):
        raise BackendError(f"link emulation record {p}: not a mapping of namespaces to records")
    return data


def cleanup(state: dict) -> None:
    """Undo what a crashed LinkEmulator left (from its ``state()``); tolerant of things gone."""
    tag = state.get("tag", "edgelab")
    bulk: dict = {}
    if state.get("state_dir") and state.get("delayers"):
        try:
            bulk = read_bulk_records(Path(state["state_dir"]))
        except BackendError:
            pass   # unreadable: its namespaces' links are undone by removing the namespaces, or not at all
    for d in state.get("delayers", []):
        ns, cfg_path = d.get("ns"), d.get("config", "")
        cfg: dict = {}
        try:
            with open(cfg_path) as f:
                cfg = json.loads(f.read())
        except (OSError, ValueError):
            cfg = bulk.get(Path(cfg_path).name[:-len(".json")], {}) if cfg_path.endswith(".json") else {}
        if not cfg and not d.get("pid"):
            continue   # no record left (and no delayer): nothing to undo
        if _netns_exists(ns):
            for q, v in cfg.get("queues", {}).items():
                if v.get("dir") == "bridge":
                    _remove_bridge_rule(ns, int(q), ["iptables", "ip6tables"])
            if cfg.get("ports_table"):
                run(ns, ["nft", "delete", "table", "bridge", C.ports_table(tag)], check=False)
            for dev, rec in cfg.get("links", {}).items():
                if rec.get("queues"):
                    run_all(ns, C.iptables_nfqueue_cmds(dev, *rec["queues"], delete=True,
                                                        families=tuple(rec.get("families", ["iptables"])),
                                                        control_port=rec.get("control_port")),
                            check=False)
                if rec.get("peer_side"):
                    _remove_peer_side_rules(tag, rec["peer_side"])
                if rec.get("loss"):
                    run_all(ns, C.nft_loss_clear_cmds(tag, dev), check=False)
                run_all(ns, C.clear_root_cmds(dev), check=False)
                if rec.get("ifb"):
                    run_all(ns, C.clear_clsact_cmds(dev) + C.ifb_delete_cmds(rec["ifb"]), check=False)
        pids = {d.get("pid"), cfg.get("pid")} - {None}
        for pid in pids:   # per-namespace delayers of older versions
            _kill(int(pid), cfg_path)
        for suffix in ("", ".ready", ".log") if pids else ("",):
            try:
                os.unlink(cfg_path + suffix)
            except FileNotFoundError:
                pass
    if state.get("state_dir") and state.get("delayers"):
        (Path(state["state_dir"]) / BULK_RECORD).unlink(missing_ok=True)
    shared = dict(state.get("delayer") or {})
    if not shared and state.get("state_dir"):
        shared = {"config": str(Path(state["state_dir"]) / "delayer.json")}
    if shared.get("config"):
        path = shared["config"]
        pids = {shared.get("pid")}
        try:
            pids.add(json.loads(Path(path).read_text()).get("pid"))
        except (OSError, ValueError):
            pass
        for pid in pids - {None}:
            _kill(int(pid), path)
        remove_delayer_files(path)
    for i in state.get("ifbs", []):
        if _netns_exists(i.get("ns")):
            run(i.get("ns"), ["ip", "link", "del", i["name"]], check=False)
