"""The ``nxc`` backend: one NixOS machine (VM, container or Grid'5000 node) per plan node.

It drives the NixOS-Compose command line, as a researcher would:

* ``nxc build -f <flavour> -C <attr>`` in ``compositions/<composition>/``
  builds ``<attr>::<flavour>`` of the composition's flake;
* ``nxc start -C <attr>::<flavour> -r <role>=<node>,<node> [-m machines]``
  starts it, naming each host after its plan node;
* the deployment file nxc writes tells where every host is
  (:mod:`.nxc_deploy`), and commands run over SSH (or ``docker compose exec``).

Link impairments are the composition's job here (its NixOS module applies the
plan's per-interface parameters at boot); the ``g5k`` backend adds EnOSlib's
netem on top. All outside calls go through two injectable callables,
``runner`` (run to completion) and ``spawner`` (long-running), so the exact
argv can be checked without executing anything.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..errors import BackendError
from ..plan import Plan
from .base import Backend, Testbed
from .nxc_deploy import NxcNode, execo_hosts, map_plan_nodes, parse_deployment, remote_argv, role_distribution

#: Flavours of nixos-compose this backend knows how to start and reach.
FLAVOURS: tuple[str, ...] = ("vm", "docker", "g5k-ramdisk", "g5k-image", "g5k-nfs-store")
G5K_FLAVOURS = frozenset({"g5k-ramdisk", "g5k-image", "g5k-nfs-store"})

Runner = Callable[..., subprocess.CompletedProcess]
Spawner = Callable[..., subprocess.Popen]


def default_runner(argv: Sequence[str], *, cwd: Optional[str] = None, timeout: Optional[float] = None,
                   **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, timeout=timeout, capture_output=True, text=True, **kw)


def default_spawner(argv: Sequence[str], **kw: Any) -> subprocess.Popen:
    kw.setdefault("start_new_session", True)  # so teardown can signal the whole group
    return subprocess.Popen(list(argv), **kw)


@dataclass(frozen=True)
class NxcOptions:
    """What ``get_backend("nxc", **options)`` accepts.

    ``composition`` names ``compositions/<composition>/`` (the nxc project:
    ``flake.nix``, ``composition.nix``, ``nxc.json``); ``build_dir``
    overrides that directory. ``attr`` is the composition's name inside the
    flake (nixos-compose calls a single composition ``composition``).
    ``machines`` is the machine file nxc needs on Grid'5000 flavours.
    ``roles`` maps plan groups to nxc roles when they differ.
    """

    composition: str = "edgelab"
    flavour: str = "vm"
    machines: Optional[str] = None
    build_dir: Optional[str] = None
    compositions_dir: str = "compositions"
    attr: str = "composition"
    roles: Mapping[str, str] = field(default_factory=dict)
    nxc: str = "nxc"
    identity_file: Optional[str] = None  # public key nxc installs for root (nxc start -i)
    ssh_key: Optional[str] = None  # private key to reach nodes (defaults to ssh's own)
    skip_build: bool = False
    ready_timeout: float = 600.0
    build_timeout: float = 3600.0

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise BackendError(f"nxc flavour {self.flavour!r} is not supported; choose one of {', '.join(FLAVOURS)}")

    @property
    def envdir(self) -> Path:
        return Path(self.build_dir) if self.build_dir else Path(self.compositions_dir) / self.composition

    @property
    def prefix(self) -> str:
        """nixos-compose's ``<composition>::<flavour>`` name of the build and deployment."""
        return f"{self.attr}::{self.flavour}"

    @property
    def deployment_file(self) -> Path:
        return self.envdir / "deploy" / f"{self.prefix}.json"

    def state_file(self, name: str) -> Path:
        return self.envdir / ".edgelab" / f"{name}.json"


def build_argv(opts: NxcOptions) -> list[str]:
    return [opts.nxc, "--envdir", str(opts.envdir), "build", "-f", opts.flavour, "-C", opts.attr]


def start_argv(opts: NxcOptions, distribution: Mapping[str, Sequence[str]]) -> list[str]:
    """``nxc start`` for ``opts.flavour``.

    Grid'5000 flavours get the machine file (``-m``); ``vm`` gets ``-w``: nxc
    then keeps the VMs until it receives a signal, which is how teardown
    stops them (nxc has no ``stop`` for VMs).
    """
    argv = [opts.nxc, "--envdir", str(opts.envdir), "start", "-C", opts.prefix]
    for role, hosts in distribution.items():
        argv += ["-r", f"{role}={','.join(hosts)}"]
    if opts.flavour in G5K_FLAVOURS:
        if not opts.machines:
            raise BackendError(f"flavour {opts.flavour} needs machines=<file listing the reserved nodes> "
                               "(the g5k backend writes it for you)")
        argv += ["-m", str(opts.machines)]
    if opts.identity_file:
        argv += ["-i", opts.identity_file]
    if opts.flavour == "vm":
        argv.append("-w")
    return argv


def stop_argv(opts: NxcOptions) -> list[str]:
    return [opts.nxc, "--envdir", str(opts.envdir), "stop", "-d", str(opts.deployment_file)]


def missing_requirements(opts: NxcOptions, which: Callable[[str], Optional[str]] = shutil.which) -> list[str]:
    """Everything that stops ``up()`` here, each with what to do about it."""
    problems = []
    if not which(opts.nxc):
        problems.append(f"`{opts.nxc}` (NixOS-Compose) is not on PATH: pip install nixos-compose, "
                        "or enter the composition's `nix develop` shell")
    if not which("nix"):
        problems.append("`nix` is not installed: nxc builds compositions with Nix (flakes enabled)")
    if opts.flavour == "docker" and not which("docker"):
        problems.append("`docker` is not installed: the docker flavour runs nodes with docker compose")
    if opts.flavour == "vm" and not which("qemu-system-x86_64") and not which("qemu-kvm"):
        problems.append("QEMU is not installed: the vm flavour boots nodes in qemu-system-x86_64")
    if not (opts.envdir / "flake.nix").is_file():
        problems.append(f"no composition at {opts.envdir}/flake.nix: write it with `edgelab export` "
                        "or pick another composition=/build_dir=")
    if opts.flavour in G5K_FLAVOURS and opts.machines and not Path(opts.machines).is_file():
        problems.append(f"machine file {opts.machines} does not exist")
    return problems


class NxcTestbed(Testbed):
    """A started composition; plan node names map to deployed hosts."""

    def __init__(self, plan: Plan, opts: NxcOptions, nodes: Mapping[str, NxcNode], *,
                 runner: Runner = default_runner, spawner: Spawner = default_spawner,
                 start_process: Optional[subprocess.Popen] = None):
        self.plan = plan
        self.opts = opts
        self.nodes = dict(nodes)
        self._runner = runner
        self._spawner = spawner
        self._start = start_process
        self._procs: list[subprocess.Popen] = []
        self._down = False

    def argv_for(self, node: str, argv: Sequence[str]) -> list[str]:
        try:
            target = self.nodes[node]
        except KeyError:
            raise BackendError(f"no node {node!r} in this testbed; nodes: {', '.join(self.nodes)}")
        return remote_argv(target, argv, identity_file=self.opts.ssh_key)

    def run(self, node: str, argv: Sequence[str], *, timeout: Optional[float] = None, check: bool = True,
            **kw: Any) -> subprocess.CompletedProcess:
        full = self.argv_for(node, argv)
        res = self._runner(full, timeout=timeout, **kw)
        if check and res.returncode != 0:
            raise subprocess.CalledProcessError(res.returncode, list(argv), res.stdout, res.stderr)
        return res

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        proc = self._spawner(self.argv_for(node, argv), **kw)
        self._procs.append(proc)
        return proc

    def execo_hosts(self) -> dict:
        return execo_hosts(self.nodes)

    def facts(self) -> dict:
        return {
            "backend": "nxc",
            "flavour": self.opts.flavour,
            "composition": str(self.opts.envdir),
            "nxc_build": self.opts.prefix,
            "deployment_file": str(self.opts.deployment_file),
            "link_emulation": "composition (per-interface, applied on each NixOS node at boot)",
            "placement": {name: {"host": n.host, "role": n.role, "address": n.address, "port": n.port,
                                 "via": n.via} for name, n in self.nodes.items()},
        }

    def down(self) -> None:
        if self._down:
            return
        self._down = True
        for proc in self._procs:
            _stop(proc)
        if self.opts.flavour == "docker":
            self._runner(stop_argv(self.opts), cwd=str(self.opts.envdir))
        if self._start is not None:
            _stop(self._start, grace=30.0)
        self.opts.state_file(self.plan.topology.name).unlink(missing_ok=True)


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM (its process group when it has its own), then SIGKILL."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM) if os.getpgid(proc.pid) == proc.pid else proc.terminate()
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class NxcBackend(Backend):
    name = "nxc"

    def __init__(self, *, runner: Runner = default_runner, spawner: Spawner = default_spawner,
                 which: Callable[[str], Optional[str]] = shutil.which, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, **options: Any):
        self.opts = NxcOptions(**options)
        self._runner = runner
        self._spawner = spawner
        self._which = which
        self._clock = clock
        self._sleep = sleep

    def commands(self, plan: Plan) -> list[list[str]]:
        """The nxc argv lists ``up(plan)`` runs, in order (for dry runs and logs)."""
        steps = [] if self.opts.skip_build else [build_argv(self.opts)]
        return steps + [start_argv(self.opts, role_distribution(plan, self.opts.roles))]

    def dry_run(self, plan: Plan) -> str:
        return "".join(shlex.join(c) + "\n" for c in self.commands(plan))

    def up(self, plan: Plan) -> NxcTestbed:
        opts = self.opts
        problems = missing_requirements(opts, self._which)
        if problems:
            raise BackendError("cannot start the nxc backend here:\n  - " + "\n  - ".join(problems))
        cwd = str(opts.envdir)
        if not opts.skip_build:
            self._check(self._runner(build_argv(opts), cwd=cwd, timeout=opts.build_timeout), "nxc build")
        argv = start_argv(opts, role_distribution(plan, opts.roles))
        opts.deployment_file.unlink(missing_ok=True)  # so we never read a previous run's hosts
        start_proc = None
        if opts.flavour == "vm":
            start_proc = self._spawner(argv, cwd=cwd)
        else:
            self._check(self._runner(argv, cwd=cwd, timeout=opts.ready_timeout), "nxc start")
        try:
            nodes = map_plan_nodes(plan, parse_deployment(self._wait_deployment(start_proc), opts.flavour),
                                   opts.roles)
            testbed = NxcTestbed(plan, opts, nodes, runner=self._runner, spawner=self._spawner,
                                 start_process=start_proc)
            self._wait_ready(testbed)
        except BaseException:
            if start_proc is not None:
                _stop(start_proc, grace=30.0)
            raise
        self._save_state(plan.topology.name, start_proc)
        return testbed

    def down(self, testbed_name: str) -> None:
        """Stop what a (possibly crashed) run left: its ``nxc start`` process
        (vm) or its containers (docker). Grid'5000 nodes go with their job."""
        from .local.naming import check_testbed_name

        path = self.opts.state_file(check_testbed_name(testbed_name))
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        pid = state.get("pid")
        if pid and _is_nxc_start(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if state.get("flavour") == "docker":
            self._runner(stop_argv(self.opts), cwd=str(self.opts.envdir))
        path.unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _check(res: subprocess.CompletedProcess, what: str) -> None:
        if res.returncode != 0:
            tail = "\n".join(((res.stderr or "") + (res.stdout or "")).strip().splitlines()[-15:])
            raise BackendError(f"{what} failed (exit {res.returncode}): {' '.join(map(str, res.args))}\n{tail}")

    def _wait_deployment(self, start_proc: Optional[subprocess.Popen]) -> dict:
        path = self.opts.deployment_file
        deadline = self._clock() + self.opts.ready_timeout
        while not path.is_file():
            if start_proc is not None and start_proc.poll() is not None:
                raise BackendError(f"`nxc start` exited ({start_proc.returncode}) before writing {path}")
            if self._clock() > deadline:
                raise BackendError(f"`nxc start` wrote no deployment file {path} within {self.opts.ready_timeout}s")
            self._sleep(0.5)
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BackendError(f"{path}: not valid JSON ({exc})")

    def _wait_ready(self, testbed: NxcTestbed) -> None:
        """Every node answers ``true`` (SSH up, or container running)."""
        deadline = self._clock() + self.opts.ready_timeout
        pending = list(testbed.nodes)
        while pending:
            pending = [n for n in pending if testbed.run(n, ["true"], check=False, timeout=30).returncode != 0]
            if not pending:
                return
            if self._clock() > deadline:
                raise BackendError(f"nodes {pending} not reachable after {self.opts.ready_timeout}s")
            self._sleep(2.0)

    def _save_state(self, name: str, start_proc: Optional[subprocess.Popen]) -> None:
        path = self.opts.state_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"flavour": self.opts.flavour, "pid": start_proc.pid if start_proc else None,
                                    "deployment_file": str(self.opts.deployment_file)}))


def _is_nxc_start(pid: int) -> bool:
    """Only signal a pid that is still an ``nxc ... start`` (pids get reused)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"nxc" in part for part in cmd) and b"start" in cmd
