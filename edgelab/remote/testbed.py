"""RemoteTestbed: the :class:`~edgelab.backends.base.Testbed` every non-local backend returns.

It is a thin layer over :class:`~edgelab.remote.transport.Transport`: commands
and services go to the node's device, addresses are the devices' data-plane
addresses, CPU time is read from the device's cgroup, link emulation is the
same ``python -m edgelab.linkemu`` code run on each device, raw files come
back with :meth:`RemoteTestbed.fetch`. Backends differ only in how they get
their :class:`~edgelab.remote.inventory.Inventory` (a file, nxc's deployment
file, a Grid'5000 job) and in the facts they add (``extra_facts``).

Link emulation on devices: every plan interface whose link has a rate, delay,
jitter or loss gets ``edgelab.linkemu apply`` on the device's interface
(:meth:`Device.ifname`), shaping its egress and delaying both directions.
A Wi-Fi cell's shared airtime budget is carried by the access point as a
node (:mod:`edgelab.remote.ap`): stations are routed through it and it runs
the same ``apply_shared_medium`` code as the local backend's AP namespace.
On real phones with a real radio, pass ``airtime=False``: the radio is the medium.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..backends.base import Testbed
from ..errors import BackendError
from ..model import LinkParams
from ..plan import Plan
from . import ap as apmod
from . import delayers
from .transport import RemoteError, Transport, teardown


def link_tag(testbed: str, node: str) -> str:
    """Short tag (nft table, ifb and state-dir names) unique per testbed and node: devices may
    share a kernel (lab devices, folded VMs), so tags must never collide."""
    return "el" + hashlib.sha256(f"{testbed}/{node}".encode()).hexdigest()[:6]


def impaired(link: LinkParams) -> bool:
    return any(getattr(link, k) > 0 for k in ("rate_mbit", "delay_ms", "jitter_ms", "loss_pct"))


def linkemu_argv(action: str, dev: str, tag: str, link: Optional[LinkParams] = None,
                 engine: str = "auto", python: str = "python3") -> list[str]:
    """``python3 -m edgelab.linkemu apply|clear ...`` for one device interface."""
    argv = [python, "-m", "edgelab.linkemu", action, "--dev", dev, "--tag", tag, "--engine", engine]
    if action == "apply" and link is not None:
        argv += ["--rate-mbit", f"{link.rate_mbit:g}", "--delay-ms", f"{link.delay_ms:g}",
                 "--jitter-ms", f"{link.jitter_ms:g}", "--loss-pct", f"{link.loss_pct:g}"]
    return argv


def link_plan(plan: Plan, transport: Transport, testbed: str) -> dict[str, list[tuple[str, LinkParams]]]:
    """node -> [(device interface, link)] to impair (pure apart from the inventory lookup)."""
    out: dict[str, list[tuple[str, LinkParams]]] = {}
    for n in plan.nodes:
        d = transport.device(n.name)
        links = [(d.ifname(i.ifname), i.link) for i in n.interfaces if impaired(i.link)]
        if links:
            out[n.name] = links
    return out


class RemoteTestbed(Testbed):
    """Plan nodes on devices reached through one :class:`Transport`.

    ``backend`` names the backend in the facts; ``extra_facts`` are merged in.
    Use :meth:`apply_links` and :meth:`apply_cells` during bring-up (they roll back on
    failure) and :meth:`down` (or a ``with`` block) to undo everything. ``airtime``:
    whether Wi-Fi cells get their access point as a node (false for real radios).
    """

    #: Nodes run the device's own interpreter ("python3" is rewritten to :attr:`Device.python`).
    python = "python3"
    #: A cgroup directory is only readable on its own device (faas runs a modelled plug there).
    cgroups_visible_from_all_nodes = False

    def __init__(self, plan: Plan, transport: Transport, *, backend: str, name: Optional[str] = None,
                 engine: str = "auto", extra_facts: Optional[Mapping[str, Any]] = None,
                 airtime: bool = True) -> None:
        self.plan = plan
        self.transport = transport
        self.backend = backend
        self.name = name or plan.topology.name
        self.engine = engine
        self.extra_facts = dict(extra_facts or {})
        self.applied: dict[str, list[str]] = {}   # node -> device interfaces with emulation applied
        self.device_facts: dict[str, dict] = {}
        self.link_engines: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._lock = threading.Lock()
        self._down = False
        # Every remote backend's Wi-Fi cells: the AP is the infra element's device where the
        # inventory has one, else the network's uplink node (edgelab.remote.ap.ap_plan).
        self.cells = apmod.cells_for(plan, lambda n: n in transport.inventory.placement, airtime)
        self.cell_state = apmod.CellState()

    # ------------------------------------------------------------ commands
    def run(self, node: str, argv: Sequence[str], *, timeout: Optional[float] = None, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess:
        kw.pop("capture_output", None)
        kw.pop("text", None)
        return self.transport.run(node, argv, timeout=timeout, check=check, input=kw.pop("input", None),
                                  sudo=kw.pop("sudo", False), env=kw.pop("env", None),
                                  confine=kw.pop("confine", True))

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start ``argv`` on the node's device, inside its node cgroup unless ``confine=False``
        (for stand-ins of outside equipment, such as a modelled power plug)."""
        if self._down:
            raise BackendError(f"testbed {self.name!r} is down")
        kw.setdefault("confine", True)
        return self.transport.popen(node, argv, **kw)

    def address(self, node: str, network: Optional[str] = None) -> str:
        """The device's data-plane address (on ``network`` where the inventory gives one)."""
        d = self.transport.device(node)
        if network is not None and network in d.addresses:
            return d.addresses[network]
        return d.data_address

    def cpu_seconds(self, node: str) -> Optional[float]:
        return self.transport.cpu_seconds(node)

    def cpu_accounting_dir(self, node: str) -> str:
        """Directory on ``node``'s own device holding its CPU counter (for a plug running there)."""
        return self.transport.cpu_accounting_dir(node)

    def power_plug(self, node: str) -> Optional[str]:
        """URL of the real Tasmota plug in front of ``node``'s device, if the inventory names one."""
        d = self.transport.device(node)
        return d.power.url if d.power and d.power.url else None

    def fetch(self, node: str, remote_paths: Sequence[str], local_dir: Path) -> None:
        """Bring raw files from the node back into ``local_dir`` (the point's raw directory)."""
        self.transport.get(node, remote_paths, local_dir)

    # ---------------------------------------------------------- bring-up
    def apply_links(self, *, timeout: float = 60.0) -> None:
        """Impair every planned link on its device, all devices at once.

        On any failure, what was applied on the other devices is cleared
        again and one error names each failing node with linkemu's message.
        """
        t0 = time.monotonic()
        todo = link_plan(self.plan, self.transport, self.name)
        cmds = {}
        for node, links in todo.items():
            tag = link_tag(self.name, node)
            py = self.transport.device(node).python   # a shell string's words are not rewritten: say it here
            cmds[node] = " && ".join(shlex.join(linkemu_argv("apply", dev, tag, link, self.engine, py)
                                                + ["--report-engine"]) for dev, link in links)
        with self._lock:
            for node, links in todo.items():   # recorded before running: a half-applied node is cleared too
                self.applied[node] = [dev for dev, _ in links]
        results = self.transport.run_many(cmds, timeout=timeout, check=True, sudo=True)
        errors = [r for r in results.values() if isinstance(r, RemoteError)]
        for node, r in results.items():
            if not isinstance(r, RemoteError) and r.stdout.split():
                self.link_engines[node] = r.stdout.split()[-1]
        self.timings["link_emulation"] = time.monotonic() - t0
        if errors:
            self.clear_links()
            raise BackendError("link emulation failed; cleared again on every device:\n" +
                               "\n".join(str(e) for e in errors))

    def data_ifname(self, node: str) -> str:
        """The device interface carrying ``node``'s (first) plan network; ``eth0``-like default
        for a dedicated access-point device that is no plan node."""
        d = self.transport.device(node)
        try:
            itfs = self.plan.node(node).interfaces
        except KeyError:
            itfs = ()
        return d.ifname(itfs[0].ifname if itfs else (d.interface or "eth0"))

    def apply_cells(self, *, timeout: float = 60.0) -> None:
        """Each Wi-Fi cell through its access point (see :mod:`edgelab.remote.ap`); on failure
        everything the cells changed is undone and one error says what failed."""
        t0 = time.monotonic()
        if self._down:
            raise BackendError(f"testbed {self.name!r} is down")
        try:
            apmod.apply_cells(self.transport, self.cells, lambda n: link_tag(self.name, n), self.cell_state,
                              self.data_ifname, timeout=timeout)
        except BackendError:
            apmod.clear_cells(self.transport, self.cell_state)
            raise
        self.timings["access_points"] = time.monotonic() - t0

    def clear_links(self, *, timeout: float = 30.0) -> list[str]:
        """Undo :meth:`apply_links` on every device; returns problems (nothing raised: teardown goes on)."""
        with self._lock:
            applied, self.applied = dict(self.applied), {}
        cmds = {}
        for node, devs in applied.items():
            tag = link_tag(self.name, node)
            py = shlex.quote(self.transport.device(node).python)
            # clear each interface even if another's clear fails; report the worst status
            parts = [f"{py} -m edgelab.linkemu clear --dev {shlex.quote(d)} --tag {tag} --engine {self.engine} "
                     f"|| s=1" for d in devs]
            cmds[node] = "s=0; " + "; ".join(parts) + "; exit $s"
        if not cmds:
            return []
        res = self.transport.run_many(cmds, timeout=timeout, check=True, sudo=True)
        return [str(r) for r in res.values() if isinstance(r, RemoteError)]

    def health_checks(self) -> list:
        """One check per device whose links the fallback engine's userspace delayer carries:
        it must still run (its pid from the shared delayer's config, delayer.json, on the device)."""
        nodes = [n for n, e in self.link_engines.items() if e == "fallback" and n in self.applied]
        if not nodes or self._down:
            return []
        cmds = {n: delayers.check_script(f"/run/{link_tag(self.name, n)}-linkemu") for n in nodes}
        res = self.transport.run_many(cmds, timeout=15, check=False, sudo=True)
        return delayers.checks(res, what=lambda n: n, where=lambda n: f" on {self.transport.device(n).host}",
                               links=lambda n: n, none_is_fine=True)

    def collect_facts(self) -> None:
        self.device_facts = self.transport.facts([n.name for n in self.plan.nodes])

    # ------------------------------------------------------------ facts
    def facts(self) -> dict:
        kernels = sorted({f.get("kernel") for f in self.device_facts.values() if f.get("kernel")})
        engines = sorted(set(self.link_engines.values()))
        out = {
            "backend": self.backend,
            "link_engine": ",".join(engines) if engines else "none",
            "link_emulation": ("edgelab.linkemu on each device (per interface)" +
                               ("; Wi-Fi airtime budget on the access point node" if self.cells else
                                "; no shared-medium airtime budget")),
            "access_points": [{"network": c.network, "segment": c.segment, "ap": c.ap,
                               "ap_device": self.transport.device(c.ap).where(), "stations": len(c.stations),
                               "capacity_mbit": c.capacity_mbit} for c in self.cells],
            "kernel": kernels[0] if len(kernels) == 1 else kernels,
            "devices": self.device_facts,
            "placement": self.transport.inventory.to_dict(),
            "edgelab_installed": dict(self.transport.installed),
            "timings_s": dict(self.timings),
        }
        out.update(self.extra_facts)
        return out

    # --------------------------------------------------------- teardown
    def detach(self) -> None:
        """Leave the testbed up on the devices (``edgelab up``) and drop the connections;
        ``edgelab down --inventory FILE NAME`` clears it later."""
        with self._lock:
            self._down = True
        self.transport.detach()

    def down(self) -> None:
        """Stop services, clear link emulation, close connections. Idempotent."""
        with self._lock:
            if self._down:
                return
            self._down = True
        t0 = time.monotonic()
        problems = teardown(self.transport, lambda: apmod.clear_cells(self.transport, self.cell_state)
                            + self.clear_links())
        self.timings["down"] = time.monotonic() - t0
        if problems:
            raise BackendError(f"teardown of testbed {self.name!r} left: " + "; ".join(problems))
