"""A testbed folded over several hosts: each host runs its share with the local backend.

:class:`FoldedBackend` places the plan's nodes on M hosts of an inventory
(:func:`edgelab.folding.fold`), plans the VXLAN tunnels that join the hosts'
bridges (:mod:`edgelab.remote.multihost`), installs edgelab on every host and
runs ``python3 -m edgelab share-up`` on all of them at once through the one
:class:`~edgelab.remote.transport.Transport`; each host builds its share with
the local backend (namespaces, per-node cgroups, link emulation, VXLAN ports,
the Wi-Fi budget on the AP host: :mod:`edgelab.backends.local.share`). If any
host fails, every share is taken down again and one error names each failure.

:class:`FoldedTestbed` is the Testbed experiments use: a command for a node
goes to the node's host, joins the node's cgroup (its ``cgroup.procs``, as the
local backend's pre-exec does) and enters its namespace (``ip netns exec``),
so CPU time, quotas and addresses are exactly those of the local backend;
``cpu_seconds`` reads the node's cgroup on its host; ``down`` stops what was
started and runs ``edgelab down <testbed>-h<i>`` on every host.

Before touching any host, :meth:`FoldedBackend.up` claims a record of the run
on the controller (:mod:`.foldedstate`); after a crash, ``edgelab down
<testbed> --inventory FILE`` (:meth:`FoldedBackend.down`) reads it and has
each host remove its share (``edgelab share-down``, checked against the
share's own state file).

The hosts are any machines reachable over SSH with root: the SSH lab's
devices here, a Grid'5000 job's machines (:mod:`edgelab.backends.g5k`).
"""

from __future__ import annotations

import json
import math
import os
import shlex
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Optional, Sequence, Union

from ..backends.base import Backend, Testbed
from ..errors import BackendError
from ..model import Host
from ..plan import Plan
from . import delayers
from . import multihost as mh
from .inventory import Device, Inventory, load_inventory
from .transport import PYTHON_WORDS, RemoteError, Transport, cpu_read_script, parse_cpu_read, teardown

#: How long one host may take to build its share (a 100-node share takes seconds on a laptop).
SHARE_UP_TIMEOUT = 300.0


def host_resources(transport: Transport, hosts: Sequence[str]) -> list[Host]:
    """Each host's cores and memory, read on it (what :func:`edgelab.folding.fold` places by)."""
    facts = transport.facts(list(hosts))
    out = []
    for h in hosts:
        f = facts[h]
        if "error" in f:
            raise BackendError(f"cannot read host {h}'s resources: {f['error']}")
        out.append(Host(h, float(f.get("cores") or 1), int(f.get("memory_mib") or 0)))
    return out


def node_script(d: Device, info: Mapping[str, Any], argv: Union[str, Sequence[str]], confine: bool = True) -> str:
    """POSIX sh run as root on the node's host: join its cgroup, enter its namespace, exec ``argv``.

    The same two steps as the local backend's pre-exec (``_preexec``: cgroup.procs first, so
    nothing the command forks escapes the quota, then only the network namespace, with
    ``nsenter``: ``ip netns exec`` would also remount /sys, hiding the host's cgroups, which the
    local backend's nodes see). ``confine=False``: on the host itself, for stand-ins of outside
    equipment (a modelled power plug)."""
    if isinstance(argv, str):
        cmd = f"sh -c {shlex.quote(argv)}"
    else:
        cmd = shlex.join([d.python if i == 0 and a in PYTHON_WORDS else str(a) for i, a in enumerate(argv)])
    if not confine:
        return f"exec {cmd}"
    join = "".join(f"echo $$ > {shlex.quote(f)} && " for f in info["procs"])
    return f"{join}exec nsenter --net={shlex.quote('/run/netns/' + info['netns'])} {cmd}"


class HostsLoadSampler:
    """The hosts' own overload signals during a measurement window (``python3 -m edgelab.hostload``
    on every host, unconfined): each host's :class:`~edgelab.hostload.HostLoad`, and as the point's
    rows the most loaded host's (that host is what an unfaithful point would be blamed on).
    A host whose sampler fails is left out (and named in :attr:`errors`), never the measurement."""

    def __init__(self, transport: Transport, hosts: Sequence[str],
                 delayer_dirs: Optional[Mapping[str, str]] = None) -> None:
        self.transport, self.hosts = transport, list(hosts)
        self.delayer_dirs = dict(delayer_dirs or {})   # host -> its share's link emulator state dir
        self._procs: dict[str, subprocess.Popen] = {}
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def start(self) -> "HostsLoadSampler":
        for h in self.hosts:
            argv = ["python3", "-m", "edgelab.hostload"] + ([self.delayer_dirs[h]] if h in self.delayer_dirs else [])
            self._procs[h] = self.transport.popen(h, argv, stdin=subprocess.PIPE,
                                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        for h, p in list(self._procs.items()):
            if p.stdout.readline().strip() != b"READY":
                self.errors[h] = "the host's load sampler did not start"
                self._procs.pop(h)
                p.kill()
        return self

    def stop(self) -> dict[str, Any]:
        from ..hostload import HostLoad

        for h, p in self._procs.items():
            try:
                out, _ = p.communicate(b"stop\n", timeout=15)
                self.results[h] = HostLoad(**json.loads(out.decode().strip().splitlines()[-1]))
            except (subprocess.TimeoutExpired, ValueError, IndexError, TypeError) as exc:
                self.errors[h] = f"no load figures: {type(exc).__name__}"
                p.kill()
        self._procs.clear()
        return self.results

    def measurements(self) -> list:
        from ..results import Measurement

        if not self.results:
            return []
        loads = list(self.results.values())
        rows = [Measurement("host_cpu_busy", max(r.busy for r in loads), "fraction"),
                Measurement("host_cpu_softirq", max(r.softirq for r in loads), "fraction"),
                Measurement("host_runqueue", max(r.runqueue for r in loads), "tasks")]
        psi = [r.pressure for r in loads if r.pressure is not None]
        if psi:
            rows.append(Measurement("host_cpu_pressure", max(psi), "fraction"))
        late = [r for r in loads if r.delayer_late_ms is not None]
        if late:
            rows += [Measurement("host_delayer_late_ms", max(r.delayer_late_ms for r in late), "ms"),
                     Measurement("host_delayer_late_share", max(r.delayer_late_share for r in late), "fraction")]
        return rows


class FoldedTestbed(Testbed):
    """Plan nodes folded onto several hosts (see the module docstring)."""

    #: "python3" means the host's interpreter (rewritten per host).
    python = "python3"
    #: A node's cgroup is only readable on its own host.
    cgroups_visible_from_all_nodes = False

    def __init__(self, plan: Plan, transport: Transport, mp: mh.MultiHostPlan, *, backend: str,
                 extra_facts: Optional[Mapping[str, Any]] = None) -> None:
        self.plan = plan
        self.name = plan.topology.name
        self.transport = transport
        self.multihost = mp
        self.backend = backend
        self.extra_facts = dict(extra_facts or {})
        self.shares: dict[str, dict] = {}       # host -> share-up's answer
        self.host_facts: dict[str, dict] = {}
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()
        self._down = False
        #: The controller's record of this run (FoldedBackend.up writes it), removed after a clean down.
        self.record = None

    # ----------------------------------------------------------- placement
    def host_of(self, node: str) -> str:
        try:
            return self.multihost.host_of(node)
        except StopIteration:
            raise BackendError(f"testbed {self.name!r} has no node {node!r}") from None

    def _node(self, node: str) -> tuple[Device, dict]:
        if self._down:
            raise BackendError(f"testbed {self.name!r} is down")
        host = self.host_of(node)
        return self.transport.device(host), self.shares[host]["nodes"][node]

    # ------------------------------------------------------------ commands
    def run(self, node: str, argv: Sequence[str], *, timeout: Optional[float] = None, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess:
        d, info = self._node(node)
        r = self.transport.run_device(d, node_script(d, info, argv, kw.pop("confine", True)), timeout=timeout,
                                      check=False, sudo=True, env=kw.pop("env", None), input=kw.pop("input", None))
        if check and r.returncode != 0:
            from .transport import RemoteCommandError

            shown = argv if isinstance(argv, str) else list(map(str, argv))
            raise RemoteCommandError(d, [f"[{node}]", *([shown] if isinstance(shown, str) else shown)],
                                     r.returncode, r.stdout, r.stderr)
        return subprocess.CompletedProcess(argv, r.returncode, r.stdout, r.stderr)

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` in ``node``'s namespace and cgroup on its host; stopped at :meth:`down`."""
        d, info = self._node(node)
        script = node_script(d, info, argv, kw.pop("confine", True))
        return self.transport.popen(self.host_of(node), ["sh", "-c", script], sudo=True, env=kw.pop("env", None),
                                    **kw)

    def cpu_seconds(self, node: str) -> Optional[float]:
        d, info = self._node(node)
        r = self.transport.run_device(d, cpu_read_script(info["cgroup"]), timeout=10, check=False)
        return parse_cpu_read(d, r.stdout, r.stderr)

    def cpu_accounting_dir(self, node: str) -> str:
        """The directory on the node's host holding its CPU counter (for a plug modelled there)."""
        d, info = self._node(node)
        r = self.transport.run_device(d, cpu_read_script(info["cgroup"], print_dir=True), timeout=10, check=False)
        if r.returncode != 0 or not r.stdout.split():
            parse_cpu_read(d, r.stdout, r.stderr)
        return r.stdout.split()[0]

    def delayer_dirs(self) -> dict[str, str]:
        """host -> the state directory of its share's userspace delayer (shares on the fallback engine)."""
        from ..backends.local.naming import linkemu_state_dir

        return {h: linkemu_state_dir(s["share"]) for h, s in self.shares.items()
                if s["facts"].get("link_engine") == "fallback"}

    def host_load_sampler(self) -> HostsLoadSampler:
        """Overload signals of every host of the testbed, for a measurement window."""
        return HostsLoadSampler(self.transport, [s.host for s in self.multihost.shares], self.delayer_dirs())

    # -------------------------------------------------------------- health
    def health_checks(self) -> list:
        """Each share's link-emulation delayer must still run (it carries its links' packets)."""
        if self._down:
            return []
        todo = {h: delayers.check_script(d) for h, d in self.delayer_dirs().items()}
        if not todo:
            return []
        res = self.transport.run_many(todo, timeout=15, check=False, sudo=True)
        return delayers.checks(res, what=lambda h: f"{self.shares[h]['share']} on host {h}", where=lambda h: "",
                               links=lambda h: ", ".join(self.multihost.share(h).nodes), none_is_fine=False)

    # --------------------------------------------------------------- facts
    def facts(self) -> dict:
        mp = self.multihost
        share_facts = {h: s["facts"] for h, s in self.shares.items()}
        engines = sorted({f.get("link_engine") for f in share_facts.values() if f.get("link_engine")})
        kernels = sorted({f.get("kernel") for f in share_facts.values() if f.get("kernel")})
        nodes = {}
        for h, f in share_facts.items():
            for n, q in (f.get("nodes") or {}).items():
                nodes[n] = {**q, "host": h}
        out = {
            "backend": self.backend,
            "link_engine": ",".join(engines) or "none",
            "link_emulation": "edgelab.linkemu by the local backend on each host (per node interface); "
                              "Wi-Fi airtime budget on the AP host",
            "kernel": kernels[0] if len(kernels) == 1 else kernels,
            "cgroup_version": next(iter({f.get("cgroup_version") for f in share_facts.values()}), None),
            "folding": {"hosts": len(mp.shares), "virtual_nodes": len(self.plan.nodes),
                        "factor": len(self.plan.nodes) / len(mp.shares)},
            "placement": {n: mp.host_of(n) for n in (x.name for x in self.plan.nodes)},
            "hosts": {s.host: {"index": s.index, "address": s.address, "share": self.shares.get(s.host, {}).get("share"),
                               "nodes": list(s.nodes), **self.host_facts.get(s.host, {})} for s in mp.shares},
            "tunnels": [{"network": t.network, "host": t.host, "dev": t.dev, "vni": t.vni, "local": t.local,
                         "peers": list(t.peers), "mtu": mh.UNDERLAY_MTU - mh.VXLAN_OVERHEAD} for t in mp.tunnels],
            "access_points": [{"network": n, "ap_host": h, "remote_stations": mp.remote_stations.get(n, [])}
                              for n, h in mp.ap_hosts.items()],
            "airtime_budgets": {h: f.get("airtime_budgets", []) for h, f in share_facts.items()},
            "nodes": nodes,
            "segments": [s for f in share_facts.values() for s in f.get("segments", [])],
            "link_delayers": {h: f.get("link_delayer") for h, f in share_facts.items()},
            "edgelab_installed": dict(self.transport.installed),
            "timings_s": {**self.timings, "shares": {h: f.get("timings_s") for h, f in share_facts.items()}},
        }
        out.update(self.extra_facts)
        return out

    # ------------------------------------------------------------ teardown
    def down(self) -> None:
        """Stop what was started on the nodes, then every share (``edgelab down``). Idempotent."""
        with self._lock:
            if self._down:
                return
            self._down = True
        t0 = time.monotonic()
        problems = teardown(self.transport, lambda: down_shares(self.transport, self.multihost))
        self.timings["down"] = time.monotonic() - t0
        if problems:
            raise BackendError(f"teardown of testbed {self.name!r} left: " + "; ".join(problems)
                               + (f"; record kept, retry with `edgelab down {self.name} --inventory FILE`"
                                  if self.record is not None else ""))
        if self.record is not None:
            self.record.remove()


def down_script(python: str, names: Sequence[str]) -> str:
    """``edgelab down`` for each of ``names`` that exists on the host (state file or namespaces)."""
    py = shlex.quote(python)
    return "s=0; " + " ".join(
        f"if [ -e /run/edgelab/{n}.json ] || ls /run/netns/el-{n}.* >/dev/null 2>&1; then "
        f"{py} -m edgelab down {shlex.quote(n)} || s=1; fi;" for n in names) + " exit $s"


def down_shares(transport: Transport, mp: mh.MultiHostPlan) -> list[str]:
    """``edgelab down <testbed>-h<i>`` on every host that has its share, at once (a host whose
    share-up failed rolled itself back); returns problems (nothing raised)."""
    from ..backends.local.share import share_name

    cmds = {s.host: down_script(transport.device(s.host).python, [share_name(mp.testbed, s.index)])
            for s in mp.shares}
    res = transport.run_many(cmds, timeout=120, check=True, sudo=True)
    return [str(r) for r in res.values() if isinstance(r, RemoteError)]


def bring_up(plan: Plan, transport: Transport, mp: mh.MultiHostPlan, *, engine: Optional[str] = None,
             backend: str = "ssh", extra_facts: Optional[Mapping[str, Any]] = None,
             timeout: float = SHARE_UP_TIMEOUT, testbed_cls: type = None, run: str = "") -> FoldedTestbed:
    """Every share at once (edgelab already installed on the hosts); all rolled back if one fails."""
    from ..backends.local.share import share_document
    from ..wire import plan_digest

    tb = (testbed_cls or FoldedTestbed)(plan, transport, mp, backend=backend, extra_facts=extra_facts)
    digest = plan_digest(plan)
    docs = {s.host: share_document(plan.topology, digest, mh.share_spec(mp, s.host, run), engine) for s in mp.shares}
    t0 = time.monotonic()

    def one(host: str) -> Union[dict, BackendError]:
        try:
            r = transport.run(host, ["python3", "-m", "edgelab", "share-up"], input=docs[host], sudo=True,
                              timeout=timeout)
            return json.loads(r.stdout.strip().splitlines()[-1])
        except BackendError as exc:
            return exc
        except (ValueError, IndexError) as exc:
            return BackendError(f"host {host}: share-up answered no JSON ({exc})")

    try:
        with ThreadPoolExecutor(max_workers=max(1, len(docs))) as ex:
            results = dict(zip(docs, ex.map(one, list(docs))))
    except BaseException:   # interrupted while hosts build: what got built goes too
        down_shares(transport, mp)
        raise
    errors = [f"host {h}: {r}" for h, r in results.items() if isinstance(r, BackendError)]
    tb.shares = {h: r for h, r in results.items() if isinstance(r, dict)}
    tb.timings["shares_up"] = time.monotonic() - t0
    if errors:
        problems = down_shares(transport, mp)
        raise BackendError(f"{len(errors)} of {len(docs)} hosts could not build their share; every share was "
                           "taken down again:\n  " + "\n  ".join(errors)
                           + ("".join(f"\n  (teardown: {p})" for p in problems)))
    return tb


class FoldedBackend(Backend):
    """N virtual nodes folded onto M hosts of an inventory (see the module docstring).

    ``inventory``: the hosts (one device each; its ``node`` names the host). ``hosts``: how many
    of them to use (the first M), or their names; default all. ``max_per_host``, ``strategy``,
    ``cpu_overcommit``: :func:`edgelab.folding.fold`'s (default: at most ⌈N/M⌉ nodes per host,
    spread). ``engine``: the local backend's link-emulation engine on the hosts.
    """

    name = "ssh"

    def __init__(self, inventory: Union[str, Inventory], hosts: Union[int, Sequence[str], None] = None, *,
                 engine: Optional[str] = None, install: bool = True, max_per_host: Optional[int] = None,
                 strategy: str = "spread", cpu_overcommit: float = 8.0, backend_name: str = "ssh") -> None:
        self.inventory = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
        names = [d.node for d in self.inventory.devices.values()]
        if hosts is None:
            chosen = names
        elif isinstance(hosts, int):
            if not 1 <= hosts <= len(names):
                raise BackendError(f"{hosts} hosts asked for; the inventory {self.inventory.source} has "
                                   f"{len(names)}: {', '.join(names)}")
            chosen = names[:hosts]
        else:
            chosen = list(hosts)
            self.inventory.check_covers(chosen)
        self.hosts = chosen
        self.engine, self.install = engine, install
        self.max_per_host, self.strategy, self.cpu_overcommit = max_per_host, strategy, cpu_overcommit
        self.name = backend_name

    def placement(self, plan: Plan, resources: Sequence[Host]) -> mh.MultiHostPlan:
        """Nodes onto hosts (:func:`edgelab.folding.fold`) and the tunnels that follow from it."""
        from ..folding import fold

        cap = self.max_per_host or math.ceil(len(plan.nodes) / len(resources))
        pl = fold(plan.nodes, resources, strategy=self.strategy, max_per_host=cap,
                  cpu_overcommit=self.cpu_overcommit)
        addrs = {h.name: self.inventory.device(h.name).data_address for h in resources}
        mh.check_underlay(list(addrs.values()))
        return mh.plan_hosts(plan, pl.assignment, addrs)

    def dry_run(self, plan: Plan) -> str:
        res = [Host(h, 1e9, 1 << 40) for h in self.hosts]   # resources are read at bring-up
        mp = self.placement(plan, res)
        return "\n".join([f"ssh backend, folded: {len(plan.nodes)} nodes on {len(self.hosts)} hosts of "
                          f"{self.inventory.source} (at most ⌈N/M⌉ per host; CPU read on the hosts at bring-up)"]
                         + mh.describe(mp)) + "\n"

    def up(self, plan: Plan) -> FoldedTestbed:
        from ..backends.ssh import preflight
        from .foldedstate import FoldedRecord, new_run_id

        # The record first, before any host is touched: `edgelab down <testbed> --inventory FILE`
        # finds every host's share from it after a crash (foldedstate.py).
        record = FoldedRecord(plan.topology.name)
        run = new_run_id()
        record.create({"run": run, "controller_pid": os.getpid(), "inventory": self.inventory.source,
                       "hosts": {h: {"address": self.inventory.device(h).data_address,
                                     "workdir": self.inventory.device(h).workdir} for h in self.hosts},
                       "shares": {}, "pythonpath": {}, "status": "preparing"})
        tr = Transport(self.inventory.subset(self.hosts))
        try:
            t0 = time.monotonic()
            rows = preflight(tr, self.hosts)
            bad = [r for r in rows if r.missing]
            if bad:
                raise BackendError(f"{len(bad)} of {len(rows)} hosts are not ready (nothing was built):\n"
                                   + "\n".join(r.line() for r in bad))
            if self.install:
                tr.install_edgelab(self.hosts)
            t1 = time.monotonic()
            resources = host_resources(tr, self.hosts)
            mp = self.placement(plan, resources)
            from ..backends.local.share import share_name

            record.update(shares={s.host: s.index for s in mp.shares}, status="building",
                          share_names={s.host: share_name(mp.testbed, s.index) for s in mp.shares},
                          pythonpath={h: tr._pythonpath[h] for h in self.hosts if h in tr._pythonpath})
            tb = bring_up(plan, tr, mp, engine=self.engine, backend=self.name,
                          extra_facts={"inventory": self.inventory.source}, run=run)
            tb.record = record
            record.update(status="up")
            tb.host_facts = {h.name: {"cores": h.cpu, "memory_mib": h.memory_mib} for h in resources}
            tb.timings.update(preflight_install=t1 - t0, up=time.monotonic() - t0)
            return tb
        except BaseException:
            tr.close()
            try:   # bring_up rolled the shares back; this checks that from the record and drops it
                self.down(plan.topology.name)
            except BackendError:
                pass   # the record stays for `edgelab down`; the original error matters more
            raise

    def down(self, testbed_name: str) -> list[str]:
        """After a crash: every host's share of ``testbed_name`` removed, from this controller's record
        (:mod:`.foldedstate`: which host has which share, the run's id), or, without a record (another
        controller, a reboot), by name on every host of the inventory, one host after the other.

        Each host removes a share only if its state file says it is that share of this folded run
        (``edgelab share-down``), and kills what the crashed controller started there (its pid files).
        Idempotent. Returns one line per host; raises one BackendError with one line per host that
        could not be cleaned (the record is then kept, so the same command can be run again).
        """
        from ..backends.local.share import share_name
        from .foldedstate import FoldedRecord

        record = FoldedRecord(testbed_name)
        if record.exists():
            data = record.load()
            plan = {h: [i] for h, i in data["shares"].items()}
            run, pid = str(data.get("run", "")), data.get("controller_pid")
            paths = data.get("pythonpath") or {}
            parallel = True
        else:   # no record: any index on any host, checked there; serial (lab hosts share one kernel)
            plan = {h: None for h in self.hosts}
            run, pid, paths, parallel = "", None, {}, False
        known = {d.node for d in self.inventory.devices.values()}
        lines, problems = [], []
        for h in [h for h in plan if h not in known]:
            problems.append(f"host {h}: not in inventory {self.inventory.source}; on it, run "
                            f"`edgelab down {share_name(testbed_name, (plan.pop(h) or [1])[0])}`")
        if plan:
            tr = Transport(self.inventory.subset(list(plan)))
            try:
                cmds = {h: share_down_script(tr.device(h), testbed_name, idx, run, pid, paths.get(h))
                        for h, idx in plan.items()}
                if parallel:
                    res = tr.run_many(cmds, timeout=120, check=False, sudo=True)
                else:
                    res = {h: tr.run_many({h: c}, timeout=120, check=False, sudo=True)[h] for h, c in cmds.items()}
            finally:
                tr.close()
            for h, r in res.items():
                where = f"host {h} ({self.inventory.device(h).where()})"
                if isinstance(r, RemoteError):
                    problems.append(f"{where}: could not be cleaned: {str(r).splitlines()[0]}")
                elif r.returncode != 0:
                    why = (r.stderr.strip() or r.stdout.strip() or f"exit status {r.returncode}").splitlines()[-1]
                    problems.append(f"{where}: could not be cleaned: {why}")
                else:
                    lines += [f"{where}: {x}" for x in r.stdout.splitlines() if x.strip()]
        if problems:
            raise BackendError(f"{len(problems)} host(s) of folded testbed {testbed_name!r} could not be cleaned"
                               + (f" (record {record.path} kept: run the same command again)" if record.exists() else "")
                               + ":\n  " + "\n  ".join(problems))
        record.remove()
        return lines


def share_down_script(d: Device, testbed: str, indices: Optional[Sequence[int]], run: str, controller_pid: Optional[int],
                      pythonpath: Optional[str]) -> str:
    """POSIX sh run as root on one host after a crash: kill what the dead controller started there
    (its pid files, :meth:`Transport.popen`), then ``edgelab share-down`` for each of ``indices``
    whose share has a state file or namespaces here. Prints one line per share; fails if one does."""
    from ..backends.local.share import share_name

    py = shlex.quote(d.python)
    out = []
    if controller_pid:
        pids = shlex.quote(f"{d.workdir}/pids")
        out.append(f"for f in {pids}/{int(controller_pid)}-*; do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); "
                   "kill -9 -- -$p 2>/dev/null || kill -9 $p 2>/dev/null; rm -f \"$f\"; done")
    if pythonpath:
        out.append(f"[ -f {shlex.quote(pythonpath)}/.complete ] && export PYTHONPATH={shlex.quote(pythonpath)}")
    else:   # an edgelab this controller installed there (any version has share-down since it has shares)
        out.append(f"for p in {shlex.quote(d.workdir + '/edgelab-')}*; do [ -f \"$p/.complete\" ] && "
                   "export PYTHONPATH=$p; done")
    out.append("s=0")
    if indices is None:   # every share of the testbed found here by name (no record to say which)
        out.append(f"if ls /run/edgelab/{testbed}-h*.json /run/netns/el-{testbed}-h* >/dev/null 2>&1; then "
                   f"{py} -m edgelab share-down {shlex.quote(testbed)} || s=1; fi")
    for i in indices or ():
        n = share_name(testbed, i)
        out.append(f"if [ -e /run/edgelab/{n}.json ] || ls /run/netns/el-{n}.* >/dev/null 2>&1; then "
                   f"{py} -m edgelab share-down {shlex.quote(testbed)} --index {int(i)}"
                   + (f" --run {shlex.quote(run)}" if run else "") + " || s=1; "
                   f"else echo '{n}: nothing left'; fi")
    return "; ".join(out) + "; exit $s"
