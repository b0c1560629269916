"""LocalBackend: a Plan as network namespaces + cgroups on this machine."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

from ...errors import BackendError
from ...plan import Plan
from ..base import Backend, Testbed
from . import blueprint as bpmod
from . import cgroups, netns, privdirs, wiring
from .naming import (DELAYER_CGROUP, DELAYER_MEMORY_MIB, STATE_DIR, cgroup_rel, check_testbed_name,
                     linkemu_state_dir, linkemu_tag, netns_name, netns_prefix)
from .state import StateFile
from .teardown import teardown

#: Worker threads for link emulation (it runs tc/nft/iptables processes:
#: mostly waiting on fork/exec, so more threads than cores pays off).
EMU_WORKERS = 8


def _preexec(procs_files: list[str], ns_path: str, mnt_path: Optional[str] = None) -> Callable[[], None]:
    """Child-side setup between fork and exec: join the node's cgroup(s) and netns.

    Doing it here (rather than wrapping in ``ip netns exec``) costs no extra
    process and leaves no window in which the command runs unconfined.
    """

    def fn() -> None:
        pid = str(os.getpid()).encode()
        for f in procs_files:
            fd = os.open(f, os.O_WRONLY)
            try:
                os.write(fd, pid)
            finally:
                os.close(fd)
        fd = os.open(ns_path, os.O_RDONLY)
        try:
            netns.setns_fd(fd)
        finally:
            os.close(fd)
        if mnt_path is not None:  # the node's private directories (privdirs.py)
            fd = os.open(mnt_path, os.O_RDONLY)
            try:
                privdirs.setns_mount(fd)
            finally:
                os.close(fd)

    return fn


class _Background:
    """A function run by a thread of its own; ``result()`` joins it and re-raises what it raised."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self._error: Optional[BaseException] = None

        def body() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - handed to result()
                self._error = e

        self._thread = threading.Thread(target=body, name=name, daemon=True)
        self._thread.start()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> None:
        self._thread.join()
        if self._error is not None:
            raise self._error


def _raise_for(signum: int) -> None:
    """What the default handlers would have done, as exceptions so ``finally`` blocks run."""
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signum)


class NodeCommandError(BackendError, subprocess.CalledProcessError):
    """A command run with ``check=True`` on a node failed: an edgelab error naming the node,
    and still a CalledProcessError for callers that catch that."""

    def __init__(self, node: str, testbed: str, e: subprocess.CalledProcessError) -> None:
        subprocess.CalledProcessError.__init__(self, e.returncode, e.cmd, e.output, e.stderr)
        self.node = node
        self.testbed = testbed

    def __str__(self) -> str:
        out = (self.stderr or self.output or "")
        out = out.decode(errors="replace") if isinstance(out, bytes) else out
        return (f"on node {self.node} of testbed {self.testbed}: {' '.join(map(str, self.cmd))} exited "
                f"{self.returncode}: {out.strip()[-2000:]}")


class LocalTestbed(Testbed):
    def __init__(self, plan: Plan, backend: "LocalBackend", bp: bpmod.Blueprint, layout: cgroups.CgroupLayout,
                 state: StateFile, emulator: Any) -> None:
        self.plan = plan
        self.name = plan.topology.name
        self.backend = backend
        self.blueprint = bp
        self.layout = layout
        self.state = state
        self.emulator = emulator
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.RLock()
        self._down = False
        self._tearing_down = False
        self._pending_signal: Optional[int] = None
        self._prev_handlers: dict[int, Any] = {}
        self.timings: dict[str, float] = {}
        #: Nodes share this machine's filesystem, so they run our interpreter.
        self.python = sys.executable
        self._cpu_readers: dict[str, Callable[[], float]] = {}
        #: Nodes with private directories (topology ``private:``), see privdirs.py.
        self.private: dict[str, privdirs.NodePrivate] = {}
        #: Station rate changes made while running (set_station_mcs), for the manifest.
        self.rate_changes: list[dict] = []

    # ------------------------------------------------------------ commands
    def netns(self, node: str) -> str:
        """Namespace of a node or infrastructure element (e.g. ``wlan-ap``)."""
        if node in self.blueprint.node_ns:
            return self.blueprint.node_ns[node]
        if node in self.blueprint.infra_ns:
            return self.blueprint.infra_ns[node]
        raise BackendError(f"testbed {self.name!r} has no node {node!r}; nodes: "
                           f"{', '.join(list(self.blueprint.node_ns)[:10])}...")

    def _preexec_for(self, node: str) -> Callable[[], None]:
        if self._down:
            raise BackendError(f"testbed {self.name!r} is down")
        ns = self.netns(node)
        files = cgroups.procs_files(self.layout, cgroup_rel(self.name, node)) if node in self.blueprint.node_ns else []
        mnt = self.private[node].mntns if node in self.private else None
        return _preexec(files, netns.path(ns), mnt)

    def run(self, node: str, argv: Sequence[str], *, timeout: Optional[float] = None,
            check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        try:
            return subprocess.run(list(argv), preexec_fn=self._preexec_for(node), timeout=timeout,
                                  check=check, **kw)
        except subprocess.CalledProcessError as e:
            raise NodeCommandError(node, self.name, e) from e

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        kw.setdefault("start_new_session", True)
        p = subprocess.Popen(list(argv), preexec_fn=self._preexec_for(node), **kw)
        with self._lock:
            self._procs.append(p)
            procs = self.state.data.setdefault("processes", [])
            procs.append({"node": node, "pid": p.pid, "argv": list(map(str, argv))[:8]})
            self.state.save()
        return p

    @contextlib.contextmanager
    def full_speed(self, nodes: Sequence[str]) -> Iterator[None]:
        """Lift the CPU quota of ``nodes``' cgroups for the block, then set it back
        (see :meth:`Testbed.full_speed`); the restored quota is the plan's, whatever happens."""
        limits = {c.rel: c.host_cpu for c in self.blueprint.cgroups}
        rels = [r for r in (cgroup_rel(self.name, n) for n in nodes) if r in limits]
        lifted: list[str] = []
        try:
            for rel in rels:
                cgroups.set_cpu_quota(self.layout, rel, None)
                lifted.append(rel)
            yield
        finally:
            for rel in lifted:
                cgroups.set_cpu_quota(self.layout, rel, limits[rel])

    def cpu_accounting_dir(self, node: str) -> Path:
        """The node's cgroup directory that has CPU accounting (v1 cpuacct, v2 cpu.stat)."""
        if node not in self.blueprint.node_ns:
            raise BackendError(f"testbed {self.name!r} has no node {node!r} with a cgroup")
        for d in self.layout.dirs(cgroup_rel(self.name, node)):
            if (d / "cpuacct.usage").exists() or (self.layout.version == 2 and (d / "cpu.stat").exists()):
                return d
        raise BackendError(f"no CPU accounting directory for node {node!r} (no cpuacct controller?)")

    def cpu_seconds(self, node: str) -> float:
        """Cumulative CPU seconds used by everything in ``node``'s cgroup (read often: power sampling)."""
        reader = self._cpu_readers.get(node)
        if reader is None:
            from ...services.power.sources import cgroup_cpu_seconds

            try:
                reader = cgroup_cpu_seconds(self.cpu_accounting_dir(node))
            except ValueError as exc:
                raise BackendError(f"no CPU accounting for node {node!r}: {exc}") from None
            self._cpu_readers[node] = reader
        return reader()

    def testbed_cpu_seconds(self) -> float:
        """Cumulative CPU seconds of the whole testbed: its cgroup subtree (every node and the
        link-emulation delayer). What the host spent beyond this, another job did."""
        reader = self._cpu_readers.get("")
        if reader is None:
            from ...services.power.sources import cgroup_cpu_seconds

            for d in self.layout.dirs(cgroup_rel(self.name)):
                if (d / "cpuacct.usage").exists() or (self.layout.version == 2 and (d / "cpu.stat").exists()):
                    reader = self._cpu_readers[""] = cgroup_cpu_seconds(d)
                    break
            else:
                raise BackendError(f"no CPU accounting directory for testbed {self.name!r}")
        return reader()

    # -------------------------------------------------------------- health
    def health_checks(self) -> list:
        """One check per link-emulation delayer: it must still run (it carries its links' packets)."""
        from ...health import Check

        emu = self.emulator
        if emu is None or not hasattr(emu, "delayers"):
            return []
        owner = {ns: n for n, ns in {**self.blueprint.infra_ns, **self.blueprint.node_ns}.items()}
        checks = []
        for d in emu.delayers():
            who = owner.get(d["ns"], d["ns"] or "the host")
            what = f"alive: link-emulation delayer of {who}"
            if d["alive"]:
                checks.append(Check(what, True, f"running (pid {d['pid']})"))
            else:
                code = d["returncode"]
                how = ("ended" if code is None else f"killed by signal {-code}" if code < 0 else f"exited {code}")
                checks.append(Check(what, False, f"{how} (pid {d['pid']}): the links of {who} carried "
                                                 f"nothing after that"))
        return checks

    # --------------------------------------------------------------- facts
    def facts(self) -> dict:
        q = {c.node: {"netns": self.blueprint.node_ns[c.node], "host_cpu": c.host_cpu,
                      "cpu_quota_us": cgroups.quota_us(c.host_cpu), "cpu_period_us": cgroups.PERIOD_US,
                      "memory_mib": c.memory_mib}
             for c in self.blueprint.cgroups}
        from ...folding import unenforced_limits

        return {
            "backend": "local",
            "link_engine": self.emulator.engine,
            # Node limits this machine cannot enforce (a quota of more cores than it has...).
            "limits_not_enforced": unenforced_limits(self.plan),
            # Where emulation's own CPU goes: the fallback engine's one NFQUEUE delayer runs in
            # the testbed's own delayer cgroup (no quota; SCHED_FIFO, or why not: link_delayer.sched),
            # so its CPU time is neither limited by nor counted in any node's quota and
            # cpu_seconds (tc/nft shaping runs in the kernel, uncharged too).
            "emulation_cpu": (f"the delayer's own cgroup ({DELAYER_CGROUP}): not charged to nodes"
                              if self.emulator.engine == "fallback" else "kernel qdiscs: not charged to nodes"),
            "kernel": os.uname().release,
            "cgroup_version": self.layout.version,
            "nodes": q,
            "segments": [{"network": s.network, "segment": s.segment, "stations": len(s.ports),
                          "capacity_mbit": s.capacity_mbit,
                          "station_shares_mbit": dict(zip(s.stations, (r for r, _ in s.station_rates)))}
                         for s in self.blueprint.shared],
            "station_rate_changes": list(self.rate_changes),
            "timings_s": dict(self.timings),
            "link_delayer": self.delayer_facts(),
        }

    def delayer_lateness(self) -> Optional[Any]:
        """The shared delayer's cumulative release-lateness counters
        (:class:`edgelab.linkemu.lateness.Lateness`), or None without a fallback delayer."""
        emu = self.emulator
        if emu is None or getattr(emu, "engine", None) != "fallback":
            return None
        from ...linkemu import lateness

        return lateness.read(emu.state_dir)

    def delayer_facts(self) -> Optional[dict]:
        """The shared link-emulation delayer: pid, queues, its cgroup and the CPU it used so far
        (its packets' cost is not charged to any node; this is where it went)."""
        emu = self.emulator
        if emu is None or not hasattr(emu, "delayer_info") or emu.engine != "fallback":
            return None
        info = emu.delayer_info()
        rel = f"{cgroup_rel(self.name)}/{DELAYER_CGROUP}"
        info["cgroup"] = rel
        info["cpu_s"] = None
        for d in self.layout.dirs(rel):
            if (d / "cpuacct.usage").exists() or (self.layout.version == 2 and (d / "cpu.stat").exists()):
                from ...services.power.sources import cgroup_cpu_seconds
                try:
                    info["cpu_s"] = round(cgroup_cpu_seconds(d)(), 4)
                except (ValueError, OSError):
                    pass
                break
        return info

    # ------------------------------------------------------ station rates
    def set_station_mcs(self, node: str, network: str, mcs: Optional[int]) -> dict:
        """Re-rate ``node``'s Wi-Fi link and its cell's airtime budget in place (``tc class
        change``): the cell is not torn down and no queued frame is lost. Returns the segment's
        new capacity and every station's (rate, share)."""
        from ...plan import plan_with_station_mcs

        with self._lock:
            new_plan = plan_with_station_mcs(self.plan, network, {node: mcs})
            self.blueprint, change = rerate_station(self.emulator, self.blueprint, new_plan, node, network)
            self.plan = new_plan
            self.rate_changes.append(change)
            record_station_mcs(self.state, node, network, mcs)
            return change

    # ------------------------------------------------------------ teardown
    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._prev_handlers[sig] = signal.signal(sig, self._on_signal)

    def _restore_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, h in self._prev_handlers.items():
            signal.signal(sig, h if h is not None else signal.SIG_DFL)
        self._prev_handlers.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        """SIGINT/SIGTERM: tear down, then behave as the previous handler would have.

        During bring-up this only raises: ``up`` catches it and tears down
        what exists so far (the testbed is half-built, not ours to use). A
        previous Python handler (e.g. the experiment runner's, which turns the
        signal into its own exception) is called, so callers see what they expect.
        """
        if self._tearing_down:
            # Never interrupt a teardown half-way: finish it, then act on the signal.
            self._pending_signal = signum
            return
        prev = self._prev_handlers.get(signum)
        if self.state.data.get("status") == "up":
            self.down()
        else:
            self._restore_signal_handlers()
        if callable(prev):
            prev(signum, frame)
        _raise_for(signum)

    def down(self) -> None:
        """Remove everything this testbed created. Idempotent."""
        with self._lock:
            if self._down:
                return
            self._down = True
            self._tearing_down = True
        t0 = time.monotonic()
        prev_handlers = dict(self._prev_handlers)
        try:
            if self.emulator is not None:
                self.state.data["linkemu"] = self.emulator.state()
            problems = teardown(self.state.data)
            self._reap()
            if problems:
                raise BackendError(f"teardown of testbed {self.name!r} left: " + "; ".join(problems)
                                   + f"; state kept in {self.state.path}, retry with `edgelab down {self.name}`")
            self.state.remove()
        finally:
            self._tearing_down = False
            self._restore_signal_handlers()
            self.timings["down"] = time.monotonic() - t0
            if self._pending_signal is not None:
                signum, self._pending_signal = self._pending_signal, None
                if callable(prev_handlers.get(signum)):
                    prev_handlers[signum](signum, None)
                _raise_for(signum)

    def _reap(self) -> None:
        """Collect exit statuses of processes we started (ours and the emulator's) so no zombie stays."""
        procs = list(self._procs) + list(getattr(self.emulator, "_procs", {}).values())
        for p in procs:
            try:
                p.wait(timeout=2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.emulator is not None and hasattr(self.emulator, "_procs"):
            self.emulator._procs.clear()


def rerate_station(emulator: Any, bp: bpmod.Blueprint, new_plan: Plan, node: str,
                   network: str) -> tuple[bpmod.Blueprint, dict]:
    """Make a running cell match ``new_plan``'s rate for ``node``: its link's HTB rate on both
    ends and its segment's budget classes, all by ``tc class change``. Returns the updated
    blueprint and a record of the change."""
    from .blueprint import station_rates_of

    seg = next(s for s in new_plan.network(network).segments if node in s.stations)
    itf = next(i for i in new_plan.node(node).interfaces if i.network == network)
    veth = next(v for v in bp.veths if v.label == f"{network}:{node}")
    shared = next(s for s in bp.shared if s.network == network and s.segment == seg.index)
    rates = station_rates_of(seg, list(shared.stations))
    if veth.link is not None and veth.link.rate_mbit > 0:
        emulator.set_link_rate(veth.a.ns, veth.a.ifname, itf.link.rate_mbit)
    emulator.update_shared_medium(shared.ns, shared.name, seg.capacity_mbit, len(shared.stations), list(rates))
    new_shared = replace(shared, capacity_mbit=seg.capacity_mbit, station_rates=rates)
    new_bp = replace(bp, shared=[new_shared if s is shared else s for s in bp.shared],
                     veths=[replace(v, link=itf.link) if v is veth and v.link is not None else v for v in bp.veths])
    i = seg.stations.index(node)
    mcs = seg.station_mcs[i] if i < len(seg.station_mcs) else None
    change = {"time": time.time(), "node": node, "network": network, "mcs": mcs,
              "rate_mbit": seg.station_rate(i), "capacity_mbit": seg.capacity_mbit,
              "shares_mbit": dict(zip(seg.stations, seg.station_shares_mbit))}
    return new_bp, change


def record_station_mcs(state: StateFile, node: str, network: str, mcs: Optional[int]) -> None:
    """Remember a running testbed's station rates in its state file, so a later change (from
    another process: ``edgelab wifi-rate``) starts from them."""
    data = state.load()
    overrides = dict(data.get("station_mcs", {}))
    overrides[f"{network}/{node}"] = mcs
    state.update(station_mcs=overrides)


class LocalBackend(Backend):
    """Network namespaces + cgroups on this machine (the default backend)."""

    name = "local"

    def __init__(self, engine: Optional[str] = None, state_dir: str = STATE_DIR, workers: int = EMU_WORKERS,
                 inprocess: bool = True, bridge_delay: bool = True, delayer_priority: bool = False,
                 delayer_rt: Optional[bool] = None) -> None:
        self.engine = engine
        self.state_dir = state_dir
        self.workers = workers
        #: Link emulation in bulk and in-process (LinkEmulator.apply_links); False: link by
        #: link with a tc/nft/iptables process each (the reference the root tests compare with).
        self.inprocess = inprocess
        #: Delay a station's incoming frames on its access point's port (LinkEmulator.bridge_delay):
        #: a cell's NFQUEUE rules are then one iptables-restore, not one per station (no nft_queue
        #: here). False: in the station's namespace, as the per-process path does.
        self.bridge_delay = bridge_delay
        #: The delayer's cgroup at the top CPU weight (see linkemu.emulator.DELAYER_CPU_WEIGHT: better
        #: link delay under CPU contention, worse for the nodes' own processes; off by default).
        self.delayer_priority = delayer_priority
        #: The delayer as a SCHED_FIFO task (linkemu.emulator.DELAYER_RT_PRIORITY), its cgroup given
        #: a bounded real-time budget (cgroups.grant_rt_budget): it releases packets on time whether
        #: the host is idle or loaded. Default on; EDGELAB_DELAYER_RT=0 turns it off (to compare
        #: runs of an experiment that builds its own backend).
        self.delayer_rt = (os.environ.get("EDGELAB_DELAYER_RT", "1") != "0") if delayer_rt is None else delayer_rt

    def up(self, plan: Plan, share: Any = None) -> LocalTestbed:
        """Build ``plan``; with ``share`` (a :class:`~.share.ShareSpec`), only one host's share of
        a testbed folded over several hosts: its nodes, the bridges they use, the VXLAN ports to
        the other hosts and the Wi-Fi budgets whose access point is here."""
        from ...linkemu import LinkEmulator

        if os.geteuid() != 0:
            raise BackendError("the local backend needs root (network namespaces, cgroups); run with sudo")
        t0 = time.monotonic()
        name = plan.topology.name
        state = StateFile(name, self.state_dir)
        bp = bpmod.build(plan)
        if share is not None:
            bp = share.restrict(bp, plan)
        layout = cgroups.detect_layout()
        leftovers = netns.list_owned(name)
        if leftovers and not state.exists():
            raise BackendError(f"namespaces {leftovers[:3]}... of a testbed named {name!r} exist without a state "
                               f"file; run `edgelab down {name}` to remove them")
        tag = linkemu_tag(name)
        dl_rel = f"{cgroup_rel(name)}/{DELAYER_CGROUP}"
        emulator = LinkEmulator(self.engine, tag=tag, state_dir=linkemu_state_dir(name),
                                delayer_cgroup_procs=tuple(cgroups.procs_files(layout, dl_rel)),
                                ipv6=False,   # wiring disables IPv6 in every namespace (BASE_SYSCTLS)
                                bridge_delay=self.bridge_delay, delayer_priority=self.delayer_priority,
                                delayer_rt=self.delayer_rt)
        fallback = emulator.engine == "fallback"
        # Claim the name and record every object *before* creating any of them.
        state.create({
            "testbed": name, "backend": "local", "status": "creating", "pid": os.getpid(),
            "created": time.time(), "netns": bp.namespaces,
            "cgroups": [c.rel for c in bp.cgroups] + ([dl_rel] if fallback else []),
            "cgroup_version": layout.version,
            "cgroup_roots": layout.roots, "linkemu": emulator.state(), "processes": [],
            "privdirs": privdirs.state_record(plan),
            # a share of a folded run: what `share-down` checks before removing it (local/share.py)
            **({"share": {"folded": share.testbed, "index": share.index, "run": share.run}} if share else {}),
        })
        tb = LocalTestbed(plan, self, bp, layout, state, emulator)
        tb._install_signal_handlers()
        handles = wiring.Handles()
        node_cgroups: Optional[_Background] = None
        try:
            if fallback:
                # First: the one delayer's interpreter starts while the namespaces are built,
                # in its own cgroup (no quota: it carries every link) so its CPU is accounted.
                cgroups.create(layout, dl_rel, float(os.cpu_count() or 1), DELAYER_MEMORY_MIB)
                if self.delayer_rt:
                    emulator.delayer_rt_note = cgroups.grant_rt_budget(layout, dl_rel)
                emulator.start_delayer()
                state.update(linkemu=emulator.state())
            # The nodes' cgroups (mostly the kernel's mkdir, which releases the GIL) are made by
            # a thread while this one builds the network: nothing runs in a node before the
            # testbed is returned, and it waits for them first.
            node_cgroups = _Background(lambda: [cgroups.create(layout, c.rel, c.host_cpu, c.memory_mib)
                                                for c in bp.cgroups], "edgelab-cgroups")
            t1 = time.monotonic()
            wiring.create_namespaces(bp, handles)
            wiring.create_bridges(bp, handles)
            wiring.create_veths(bp, handles)
            wiring.create_tunnels(bp, handles)
            wiring.install_routes(bp, handles)
            tb.private = privdirs.setup(plan)
            t2 = time.monotonic()
            self._emulate(bp, emulator, state, handles if self.inprocess else None)
            handles.close()
            t3 = time.monotonic()
            node_cgroups.result()
            state.update(status="up", linkemu=emulator.state())
            t4 = time.monotonic()
            tb.timings.update(cgroups=t1 - t0, network=t2 - t1, link_emulation=t3 - t2, up=t4 - t0)
            return tb
        except BaseException:
            handles.close()
            if node_cgroups is not None:
                node_cgroups.wait()   # no cgroup may appear after the teardown below has looked
            try:
                tb.down()
            except BackendError:
                pass  # the original error matters more; the state file is kept for `edgelab down`
            raise

    def _emulate(self, bp: bpmod.Blueprint, emulator: Any, state: StateFile,
                 handles: Optional[wiring.Handles] = None) -> None:
        """Every impaired veth, then the shared airtime budgets.

        With ``handles`` (bring-up): :meth:`LinkEmulator.apply_links`, all links at once,
        tc over the namespaces' netlink sockets, nft in-process, one iptables-restore per
        namespace that holds NFQUEUE rules (an access point's: all its stations'), no
        process per station. Without: link by link (:meth:`LinkEmulator.apply_link`),
        grouped by the namespace that holds their emulation state (the node side):
        groups run in parallel, the links of one group in order.
        """
        from ...linkemu.emulator import LinkSpec

        links = [v for v in bp.veths if v.link is not None]
        if handles is not None:
            emulator.apply_links([LinkSpec(v.a.ns, v.a.ifname, v.b.ns, v.b.ifname, v.link,
                                           peer_is_bridge_port=v.b.master is not None) for v in links], handles)
            state.update(linkemu=emulator.state())
            for s in bp.shared:
                emulator.apply_shared_medium(s.ns, s.name, list(s.ports), s.capacity_mbit,
                                             list(s.station_macs) or None,
                                             list(s.station_rates) if s.station_rates and s.station_macs else None,
                                             s.station_only, netlink=handles)
            return
        groups: dict[str, list[bpmod.Veth]] = {}
        for v in links:
            groups.setdefault(v.a.ns, []).append(v)

        def one_ns(links: list[bpmod.Veth]) -> None:
            for v in links:
                emulator.apply_link(v.a.ns, v.a.ifname, v.b.ns, v.b.ifname, v.link, defer_peer=True,
                                    peer_is_bridge_port=v.b.master is not None)

        with ThreadPoolExecutor(max_workers=self.workers) as ex:
            for fut in [ex.submit(one_ns, links) for links in groups.values()]:
                fut.result()
            state.update(linkemu=emulator.state())
            emulator.flush_peer_side()   # per peer namespace (access point, switch): one transaction
            state.update(linkemu=emulator.state())
            for fut in [ex.submit(emulator.apply_shared_medium, s.ns, s.name, list(s.ports), s.capacity_mbit,
                                  list(s.station_macs) or None,
                                  list(s.station_rates) if s.station_rates and s.station_macs else None,
                                  s.station_only)
                        for s in bp.shared]:
                fut.result()

    def set_station_mcs(self, plan: Plan, node: str, network: str, mcs: Optional[int]) -> dict:
        """Re-rate a station of a testbed brought up by another process (``edgelab up``), from its
        state file: the rates set earlier are kept, this one changes, nothing is torn down."""
        from ...linkemu import LinkEmulator
        from ...plan import plan_with_station_mcs

        state = StateFile(plan.topology.name, self.state_dir)
        if not state.exists():
            raise BackendError(f"testbed {plan.topology.name!r} is not up (no state file {state.path})")
        data = state.load()
        engine = (data.get("linkemu") or {}).get("engine")
        if engine is None:
            raise BackendError(f"testbed {plan.topology.name!r}: its state file records no link emulation")
        for key, old in (data.get("station_mcs") or {}).items():
            net, name = key.split("/", 1)
            plan = plan_with_station_mcs(plan, net, {name: old})
        before = bpmod.build(plan)
        new_plan = plan_with_station_mcs(plan, network, {node: mcs})
        tag = linkemu_tag(plan.topology.name)
        emulator = LinkEmulator(engine, tag=tag, state_dir=f"/run/{tag}-linkemu")
        _, change = rerate_station(emulator, before, new_plan, node, network)
        record_station_mcs(state, node, network, mcs)
        return change

    def down(self, testbed_name: str) -> None:
        """Tear down a testbed by name from its state file (also after a crash or SIGKILL)."""
        check_testbed_name(testbed_name)  # before it becomes a path: no `down ../../x`
        state = StateFile(testbed_name, self.state_dir)
        if not state.exists():
            leftovers = netns.list_owned(testbed_name)
            if not leftovers:
                raise BackendError(f"no testbed named {testbed_name!r} is up (no state file "
                                   f"{state.path}, no {netns_prefix(testbed_name)}* namespaces)")
            data: dict = {"testbed": testbed_name, "netns": leftovers, "cgroups": [],
                          "cgroup_roots": cgroups.detect_layout().roots}
        else:
            data = state.load()
        problems = teardown(data)
        if problems:
            raise BackendError(f"teardown of {testbed_name!r} incomplete: " + "; ".join(problems))
        state.remove()
