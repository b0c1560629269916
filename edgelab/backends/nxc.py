"""The ``nxc`` backend: one NixOS machine (QEMU VM or Grid'5000 node) per plan node.

It drives the NixOS-Compose command line on the project's top-level flake,
whose outputs are named ``<composition>::<flavour>`` (``flake.nix``:
``nxc.lib.compose`` over ``compositions/compositions.nix``), as a researcher
would, from the project directory (nxc reads ``nxc.json`` from its working
directory: nixos-compose 0.7.11 ``cli.py``):

* ``nxc build -C <composition>::<flavour> --setup-param <count>=<n> ...``
  builds the composition with exactly the plan's node counts (the counts are
  ``setup.toml`` ``[params]``; ``compositions/compositions.nix`` reads them);
* ``nxc start -C <composition>::<flavour> -r <role>=<node>,... -i <key>.pub``
  (``-w`` on VMs, ``-m <machine file>`` on Grid'5000) starts it, naming each
  host after its plan node and installing the backend's key for root;
* the deployment file nxc writes (:mod:`.nxc_deploy`) says where every host
  is; it becomes the inventory of the shared remote transport
  (:mod:`edgelab.remote`), and the testbed -- a
  :class:`~edgelab.remote.testbed.RemoteTestbed` -- waits until every node
  answers over SSH.

Link impairments are the composition's job here (its NixOS module applies the
plan's per-interface parameters at boot); the ``g5k`` backend adds EnOSlib's
netem on top. Each Wi-Fi cell's access point is then made a node, as on the
``ssh`` backend (:meth:`RemoteTestbed.apply_cells`: the uplink node forwards
the stations' traffic and carries the airtime budget; ``airtime=false`` turns
it off). The testbed's ``down()`` undoes it; after a crash, ``down(name)``
runs the undo scripts it left on the hosts, then stops the VMs. nxc itself runs through two injectable callables, ``runner``
(run to completion) and ``spawner`` (long-running), which default to
:mod:`subprocess`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from ..errors import BackendError
from ..plan import Plan, make_plan
from ..model import Topology
from ..topology import load_topology
from ..remote.inventory import Device, Inventory
from ..remote.testbed import RemoteTestbed
from ..remote.transport import RemoteError, Transport
from .base import Backend
from .nxc_deploy import VM_FLAVOURS, NxcNode, execo_hosts, map_plan_nodes, parse_deployment, role_distribution

#: Flavours the top-level flake outputs (``flake.nix``: ``flavours = { inherit
#: (nxc.lib.flavours) vm vm-ramdisk g5k-ramdisk g5k-image; }``).
FLAVOURS: tuple[str, ...] = ("vm", "vm-ramdisk", "g5k-ramdisk", "g5k-image")
G5K_FLAVOURS = frozenset({"g5k-ramdisk", "g5k-image"})

#: Per composition, the ``setup.toml`` parameter that sets each scaled group's
#: node count (``compositions/compositions.nix``: ``param setup "k3s_phones"``
#: -> ``phones`` -> ``counts = { phone = phones; }`` in the composition).
COUNT_PARAMS: dict[str, dict[str, str]] = {
    "k3s-phones": {"k3s_phones": "phone", "relays": "relay"},
    "beaglepaas": {"workers": "worker"},
    "mesh": {"mesh_phones": "phone"},
    "nfs": {"nfs_servers": "server", "nfs_clients": "client"},
    "orangefs": {"orangefs_servers": "server", "orangefs_clients": "client"},
    "glusterfs": {"glusterfs_servers": "server", "glusterfs_clients": "client"},
    "cephfs": {"ceph_osds": "osd", "ceph_clients": "client"},
}

#: nixos-compose's qemu script zero-pads VM_ID (``VM_ID=$(printf "%02d" $VM_ID)``,
#: nix/flavours/shared/common.nix:83) and then computes the SSH port as
#: ``$(($HOSTFWDPORT+$VM_ID))`` (:134): bash reads ``08`` and ``09`` as octal and
#: fails ("value too great for base"), so VMs 8 and 9 never start with the pinned
#: nxc. The vm flavours therefore take at most 7 nodes unless ``max_vms`` is raised
#: (for an nxc whose script uses ``$((10#$VM_ID))``).
NXC_MAX_VMS = 7

ParamValue = Union[int, str]
Runner = Callable[..., subprocess.CompletedProcess]
Spawner = Callable[..., subprocess.Popen]


def default_runner(argv: Sequence[str], *, cwd: Optional[str] = None, timeout: Optional[float] = None,
                   **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), cwd=cwd, timeout=timeout, capture_output=True, text=True, **kw)


def default_spawner(argv: Sequence[str], **kw: Any) -> subprocess.Popen:
    kw.setdefault("start_new_session", True)  # so teardown can signal the whole group (nxc and its QEMUs)
    return subprocess.Popen(list(argv), **kw)


def default_project() -> str:
    """The edgelab checkout this package runs from, when it is the nxc project
    (``flake.nix`` + ``nxc.json``); else the current directory."""
    root = Path(__file__).resolve().parents[2]
    if (root / "flake.nix").is_file() and (root / "nxc.json").is_file():
        return str(root)
    return "."


@dataclass(frozen=True)
class NxcOptions:
    """What ``get_backend("nxc", **options)`` accepts.

    ``flake_dir`` is the nxc project: the directory holding ``flake.nix``,
    ``nxc.json`` and ``setup.toml`` (this repository's top level; named so as
    not to clash with the ``g5k`` backend's OAR ``project``).
    ``composition`` is one of the flake's compositions (``k3s-phones``,
    ``beaglepaas``, ``mesh``). ``setup_params`` adds or overrides
    ``--setup-param`` values (the node counts come from the plan).
    ``machines`` is the machine file nxc needs on Grid'5000 flavours.
    ``roles`` maps plan groups to nxc roles when they differ.
    ``ssh_key`` is the private key that reaches the nodes; nxc installs its
    ``.pub`` for root. Without one the backend makes
    ``<project>/.edgelab/ssh/id_ed25519``. ``install`` copies this checkout's
    edgelab onto the nodes (the compositions carry their own, built by Nix).
    ``iface`` is the nodes' testbed NIC (default eth1 on VMs, eth0 on
    Grid'5000); ``node_python`` the nodes' interpreter with edgelab.
    ``airtime``: each Wi-Fi cell's access point as a node after deployment
    (:mod:`edgelab.remote.ap`, the same code as the ssh backend: the
    network's uplink node forwards the stations' traffic and carries the
    airtime budget); false where the composition does it at boot
    (``edgelab.netem.accessPoint``) or the nodes' real radios are the medium.
    """

    composition: str = "k3s-phones"
    flavour: str = "vm"
    flake_dir: str = field(default_factory=default_project)
    machines: Optional[str] = None
    setup_params: Mapping[str, ParamValue] = field(default_factory=dict)
    roles: Mapping[str, str] = field(default_factory=dict)
    nxc: str = "nxc"
    ssh_key: Optional[str] = None
    skip_build: bool = False
    install: bool = False
    iface: Optional[str] = None
    node_python: str = "python3"
    ready_timeout: float = 600.0
    build_timeout: float = 3600.0
    max_vms: int = NXC_MAX_VMS
    airtime: bool = True

    def __post_init__(self) -> None:
        if self.flavour not in FLAVOURS:
            raise BackendError(f"nxc flavour {self.flavour!r} is not one the flake builds; "
                               f"choose one of {', '.join(FLAVOURS)}")
        if "::" in self.composition or not self.composition:
            raise BackendError(f"composition {self.composition!r}: give its name only (e.g. k3s-phones); "
                               "the flavour is the separate flavour= option")
        for k, v in self.setup_params.items():
            if isinstance(v, bool) or not isinstance(v, (int, str)):
                raise BackendError(f"setup parameter {k}={v!r}: nxc --setup-param passes only integers and "
                                   "strings (nixos-compose setup.py apply_setup); set booleans in setup.toml")
            # apply_setup splits `name=value` on every '=' and writes the name as a TOML key
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", str(k)) or "=" in str(v) or "\n" in str(v):
                raise BackendError(f"setup parameter {k!r}={v!r}: the name must be a plain identifier and the "
                                   "value must not contain '=' or a newline (nxc --setup-param name=value)")

    @property
    def envdir(self) -> Path:
        return Path(self.flake_dir)

    @property
    def prefix(self) -> str:
        """nixos-compose's ``<composition>::<flavour>`` name of the build and deployment."""
        return f"{self.composition}::{self.flavour}"

    @property
    def deployment_file(self) -> Path:
        return self.envdir / "deploy" / f"{self.prefix}.json"

    @property
    def key_file(self) -> Path:
        return Path(self.ssh_key) if self.ssh_key else self.envdir / ".edgelab" / "ssh" / "id_ed25519"

    def state_file(self, name: str) -> Path:
        return self.envdir / ".edgelab" / f"{name}.json"


# -- planning (pure) ----------------------------------------------------------------------------

def declared_params(project: Path) -> Optional[dict]:
    """``setup.toml`` ``[params]`` of the project (None when there is no setup.toml)."""
    path = project / "setup.toml"
    if not path.is_file():
        return None
    try:
        return dict(tomllib.loads(path.read_text()).get("params", {}))
    except tomllib.TOMLDecodeError as exc:
        raise BackendError(f"{path}: {exc}")


def setup_params(plan: Plan, opts: NxcOptions, declared: Optional[Mapping[str, Any]] = None) -> dict[str, ParamValue]:
    """The ``--setup-param`` values that give the composition the plan's node counts.

    Each scaled group's count is the number of plan nodes in it; the user's
    ``setup_params`` come on top. Every name must be declared in setup.toml's
    ``[params]``: nxc would silently add an unused one.
    """
    counts = COUNT_PARAMS.get(opts.composition)
    if counts is None:
        raise BackendError(f"unknown composition {opts.composition!r}; the flake has {', '.join(COUNT_PARAMS)}")
    params: dict[str, ParamValue] = {}
    for param, group in counts.items():
        if declared is not None and param not in declared:
            continue  # this checkout's compositions do not scale that group (the plan check decides)
        group = next((g for g, r in opts.roles.items() if r == group), group)
        params[param] = len(plan.nodes_of(group=group))
    params.update(opts.setup_params)
    if declared is not None:
        unknown = sorted(set(params) - set(declared))
        if unknown:
            raise BackendError(f"{opts.envdir / 'setup.toml'}: [params] declares no {', '.join(unknown)} "
                               f"(it has {', '.join(sorted(declared)) or 'none'})")
    return params


def composition_plan(opts: NxcOptions, params: Mapping[str, ParamValue]) -> Optional[Plan]:
    """The plan the composition builds its nodes from: its own topology scaled
    by the count parameters (what ``pkgs/plan.nix`` computes at build time)."""
    path = opts.envdir / "compositions" / opts.composition / "topology.yaml"
    if not path.is_file():
        return None
    # setup.toml [params] updated by the passed ones, as nixos-compose nix/setup.nix merges them
    params = {**(declared_params(opts.envdir) or {}), **params}
    counts = {group: int(params[param]) for param, group in COUNT_PARAMS.get(opts.composition, {}).items()
              if param in params}
    return make_plan(scaled_topology(load_topology(path), counts))


def scaled_topology(topo: Topology, counts: Mapping[str, int]) -> Topology:
    """``topo`` with each group of ``counts`` resized; a count of 0 drops the group
    (an optional role such as k3s-phones' ``relay``), as the build-time planner does."""
    for group, n in counts.items():
        if n > 0 and any(g.name == group for g in topo.groups):
            topo = topo.scaled(group, n)
    return dataclasses.replace(topo, groups=tuple(g for g in topo.groups if counts.get(g.name, g.count) > 0))


def plan_differences(plan: Plan, built: Plan) -> tuple[list[str], list[str]]:
    """(blocking, recorded) differences between the experiment's plan and the composition's.

    Blocking: a node missing on either side, or another group, role or address
    (commands would reach the wrong machine or address). Recorded: link or
    resource parameters the composition applies differently (the manifest says so).
    """
    blocking, recorded = [], []
    mine = {n.name: n for n in plan.nodes}
    theirs = {n.name: n for n in built.nodes}
    if set(mine) != set(theirs):
        blocking.append(f"nodes {sorted(set(mine) - set(theirs))} are not in the composition, which has "
                        f"{sorted(set(theirs) - set(mine))} the plan lacks")
    for name in [n for n in mine if n in theirs]:
        a, b = mine[name], theirs[name]
        if (a.group, a.role) != (b.group, b.role):
            blocking.append(f"{name}: group/role {a.group}/{a.role} here, {b.group}/{b.role} in the composition")
        ia = {i.ifname: i for i in a.interfaces}
        ib = {i.ifname: i for i in b.interfaces}
        for ifname in sorted(set(ia) | set(ib)):
            if ifname not in ia or ifname not in ib or ia[ifname].address != ib[ifname].address:
                blocking.append(f"{name} {ifname}: {ia[ifname].address if ifname in ia else 'absent'} here, "
                                f"{ib[ifname].address if ifname in ib else 'absent'} in the composition")
            elif ia[ifname].link != ib[ifname].link:
                recorded.append(f"{name} {ifname}: link {ia[ifname].link} here, {ib[ifname].link} in the composition")
        if a.resources != b.resources:
            recorded.append(f"{name}: resources {a.resources} here, {b.resources} in the composition")
    return blocking, recorded


def composition_ap_conflict(opts: NxcOptions, params: Mapping[str, ParamValue]) -> str:
    """Why the backend must not make the access point itself, or "": the composition's own
    AP (setup param ``wifi_ap``, modules/netem.nix accessPoint) would be a second budget."""
    merged = {**(declared_params(opts.envdir) or {}), **params}
    if opts.airtime and str(merged.get("wifi_ap", False)).lower() in ("true", "1", "yes", "on"):
        return ("setup parameter wifi_ap=true makes the composition's server the Wi-Fi access point at boot, and "
                "the backend's airtime=true would install a second airtime budget: pass airtime=false (keep the "
                "composition's AP) or wifi_ap=false (the backend's)")
    return ""


def build_argv(opts: NxcOptions, params: Mapping[str, ParamValue]) -> list[str]:
    """``nxc build -C <c>::<f>`` (``cmd_build.py``: ``-C`` picks the flake
    output ``.#packages.x86_64-linux.<c>::<f>``), with the counts."""
    argv = [opts.nxc, "--envdir", str(opts.envdir), "build", "-C", opts.prefix]
    for k, v in params.items():
        argv += ["--setup-param", f"{k}={v}"]
    return argv


def start_argv(opts: NxcOptions, distribution: Mapping[str, Sequence[str]], pub_key: str) -> list[str]:
    """``nxc start`` for ``opts.flavour``.

    Grid'5000 flavours get the machine file (``-m``); VMs get ``-w``: nxc then
    keeps them until it receives a signal (``driver.py`` ``__exit__``), which
    is how teardown stops them (nxc has no ``stop`` for VMs).
    """
    argv = [opts.nxc, "--envdir", str(opts.envdir), "start", "-C", opts.prefix]
    for role, hosts in distribution.items():
        argv += ["-r", f"{role}={','.join(hosts)}"]
    argv += ["-i", pub_key]
    if opts.flavour in G5K_FLAVOURS:
        if not opts.machines:
            raise BackendError(f"flavour {opts.flavour} needs machines=<file listing the reserved nodes> "
                               "(the g5k backend writes it for you)")
        argv += ["-m", str(opts.machines)]
    if opts.flavour in VM_FLAVOURS:
        argv.append("-w")
    return argv


def missing_requirements(opts: NxcOptions, which: Callable[[str], Optional[str]] = shutil.which) -> list[str]:
    """Everything that stops ``up()`` here, each with what to do about it."""
    problems = []
    if not which(opts.nxc):
        problems.append(f"`{opts.nxc}` (NixOS-Compose) is not on PATH: pip install nixos-compose==0.7.11, "
                        "or enter the project's `nix develop` shell")
    if not which("nix"):
        problems.append("`nix` is not installed: nxc builds compositions with Nix (flakes enabled)")
    if opts.flavour in VM_FLAVOURS:
        # The qemu script runs qemu-kvm, else kvm (nixos-compose nix/flavours/shared/common.nix);
        # nxc's driver starts vde_switch for the VMs' network (driver/vlan.py).
        if not which("qemu-kvm") and not which("kvm"):
            problems.append("QEMU is not installed: the vm flavours boot nodes with `qemu-kvm` (or `kvm`)")
        if not which("vde_switch"):
            problems.append("`vde_switch` is not installed (vde2): nxc links the VMs through it")
    if not which("ssh-keygen") and not opts.ssh_key:
        problems.append("`ssh-keygen` is not installed: the backend makes the key nxc installs on the nodes")
    for name in ("flake.nix", "nxc.json"):
        if not (opts.envdir / name).is_file():
            problems.append(f"no {name} in the nxc project {opts.envdir}: set flake_dir= to the edgelab checkout")
    if (opts.envdir / "flake.nix").is_file() and not (opts.envdir / "compositions" / opts.composition).is_dir():
        problems.append(f"no composition {opts.composition!r} in {opts.envdir}/compositions")
    if opts.flavour in G5K_FLAVOURS and opts.machines and not Path(opts.machines).is_file():
        problems.append(f"machine file {opts.machines} does not exist")
    return problems


# -- the running testbed ------------------------------------------------------------------------

#: Composition services the experiments start themselves (scenarios/faas.py: orchestrator,
#: workers, modelled plugs). Where a composition still runs one at boot it would hold the
#: port the experiment's own instance needs, so bring-up stops it and the facts say so.
EXPERIMENT_OWNED_UNITS: tuple[str, ...] = (
    "edgelab-beaglepaas-orchestrator", "edgelab-beaglepaas-worker", "edgelab-power-meter")


#: What the nodes' testbed NIC is called before it is known (Grid'5000, no ``iface=``).
DEFAULT_ROUTE_NIC = "<default-route NIC>"


def testbed_interface(opts: NxcOptions) -> str:
    """The NIC that carries every plan interface on the nodes: nxc's VMs put
    every node on one virtual switch as eth1 (nixos-compose
    nix/flavours/shared/nxc.nix, with net.ifnames=0 in its qemu script;
    compositions/common.nix ``dev``). On Grid'5000 the names differ per
    cluster and the composition uses the default route's device, so it is
    found on each node at bring-up (:func:`default_route_nics`) unless
    ``iface=`` names it."""
    if opts.iface:
        return opts.iface
    return "eth1" if opts.flavour in VM_FLAVOURS else DEFAULT_ROUTE_NIC


#: Prints the device of the default route (``ip -o route show default``: "default via A dev D ...").
DEFAULT_ROUTE_SCRIPT = ("ip -o -4 route show default | "
                        "awk '{for (i = 1; i < NF; i++) if ($i == \"dev\") {print $(i + 1); exit}}'")


def default_route_nics(transport: Transport, nodes: Sequence[str], timeout: float = 30.0) -> dict[str, str]:
    """Node -> the device of its default route, read on every node at once; one
    error naming each node where there is none."""
    res = transport.run_many({n: DEFAULT_ROUTE_SCRIPT for n in nodes}, timeout=timeout, check=False)
    out, bad = {}, []
    for n, r in res.items():
        nic = "" if isinstance(r, RemoteError) else r.stdout.strip()
        if re.fullmatch(r"[A-Za-z0-9_.:@-]{1,15}", nic):
            out[n] = nic
        else:
            bad.append(f"{n}: {r}" if isinstance(r, RemoteError) else f"{n}: no default route ({r.stderr.strip()})")
    if bad:
        raise BackendError("cannot find the testbed NIC (default route) on: " + "; ".join(bad)
                           + " -- set iface= to name it")
    return out


def with_nics(inventory: Inventory, nics: Mapping[str, str]) -> Inventory:
    """The inventory with every plan interface of each node on its NIC from ``nics``."""
    devices = {name: dataclasses.replace(d, interfaces={k: nics[d.node] for k in d.interfaces})
               if d.node in nics else d for name, d in inventory.devices.items()}
    return dataclasses.replace(inventory, devices=devices)


def access_point_lines(plan: Plan, opts: NxcOptions, *, egress_only: bool = False) -> list[str]:
    """Dry-run lines: the Wi-Fi cells' access point as a node (what ``apply_cells`` runs after
    deployment, exact commands), or the cells left without a shared budget when ``airtime`` is off."""
    from ..remote import ap as apmod
    from ..remote.testbed import link_tag
    from .g5k_netem import unemulated

    cells = apmod.cells_for(plan, lambda n: False, opts.airtime)   # nxc deploys plan nodes only: the uplink
    if not cells:
        shared = unemulated(plan)
        return ["  not emulated (airtime=false: per-machine netem has no shared airtime): " + "; ".join(shared)] \
            if shared else []
    nic = testbed_interface(opts)
    ip = {n.name: n.interfaces[0].ip for n in plan.nodes if n.interfaces}
    lines = ["", "Wi-Fi access point as a node (edgelab.remote.ap, after deployment; same code as the ssh backend)"]
    lines += apmod.shaping_lines(cells, lambda n: ip[n], lambda n: nic, lambda n: link_tag(plan.topology.name, n),
                                 opts.node_python)
    if egress_only:
        aps = sorted({c.ap for c in cells})
        lines.append(f"  EnOSlib netem on {', '.join(aps)}: egress only (its ingress qdisc would take the "
                     "clsact hook the AP's station filters use; the wired uplink's ingress delay is left out)")
    return lines


def inventory_from_deployment(plan: Plan, nodes: Mapping[str, NxcNode], opts: NxcOptions, key: Path) -> Inventory:
    """The deployed hosts as the remote transport's inventory: one device per
    plan node, root with the backend's key, its data-plane addresses from the
    plan (the composition assigns them), the whole machine as its cgroup."""
    nic = testbed_interface(opts)
    devices = {}
    for n in plan.nodes:
        host = nodes[n.name]
        devices[n.name] = Device(
            name=n.name, node=n.name, host=host.address, port=host.port, user="root", identity_file=str(key),
            address=n.interfaces[0].ip if n.interfaces else None,
            addresses={i.network: i.ip for i in n.interfaces}, interfaces={i.ifname: nic for i in n.interfaces},
            python=opts.node_python, cgroup="/", connect_timeout_s=10.0)
    # Nodes are rebuilt at every start with new host keys: never record or check them.
    return Inventory(devices=devices, known_hosts="/dev/null", strict_host_keys="no",
                     source=str(opts.deployment_file))


class NxcTestbed(RemoteTestbed):
    """A started composition: a :class:`RemoteTestbed` over the hosts of nxc's
    deployment file, plus the ``nxc start`` process that keeps VMs alive."""

    def __init__(self, plan: Plan, transport: Transport, opts: NxcOptions, nodes: Mapping[str, NxcNode], *,
                 start_process: Optional[subprocess.Popen] = None, params: Optional[Mapping] = None,
                 differences: Sequence[str] = (), backend: str = "nxc"):
        super().__init__(plan, transport, backend=backend, airtime=opts.airtime)
        self.opts = opts
        self.nodes = dict(nodes)
        self.params = dict(params or {})
        self.differences = list(differences)
        self.stopped_units: dict[str, list[str]] = {}
        self._start = start_process

    def execo_hosts(self) -> dict:
        return execo_hosts(self.nodes)

    def stop_experiment_owned_units(self, timeout: float = 60.0) -> None:
        """Stop composition units the experiments run themselves (see EXPERIMENT_OWNED_UNITS)."""
        units = " ".join(EXPERIMENT_OWNED_UNITS)
        script = (f"for u in {units}; do if systemctl is-active --quiet $u 2>/dev/null; then "
                  "systemctl stop $u && echo $u; fi; done; true")
        res = self.transport.run_many({n: script for n in self.nodes}, timeout=timeout, check=False)
        errors = [str(r) for r in res.values() if isinstance(r, RemoteError)]
        if errors:
            raise BackendError("could not stop composition services on: " + "; ".join(errors))
        self.stopped_units = {n: r.stdout.split() for n, r in res.items() if r.stdout.split()}

    def facts(self) -> dict:
        out = super().facts()
        out.update(
            backend=self.backend,
            flavour=self.opts.flavour,
            flake_dir=str(self.opts.envdir),
            nxc_build=self.opts.prefix,
            setup_params=self.params,
            deployment_file=str(self.opts.deployment_file),
            link_engine="composition",
            link_emulation="composition (edgelab.netem: per interface, applied on each NixOS node at boot)"
                           + ("; Wi-Fi airtime budget on the access point node" if self.cells else ""),
            composition_differs=self.differences,
            stopped_composition_units=self.stopped_units,
            nxc_placement={name: {"host": n.host, "role": n.role, "address": n.address, "port": n.port,
                                  "ip": n.ip, "vm_id": n.vm_id} for name, n in self.nodes.items()},
        )
        return out

    def down(self) -> None:
        """Stop services (RemoteTestbed), then ``nxc start`` and its VMs. Idempotent."""
        try:
            super().down()
        finally:
            if self._start is not None:
                _stop(self._start, grace=30.0)
            self.opts.state_file(self.plan.topology.name).unlink(missing_ok=True)


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM (its process group when it has its own: nxc and the QEMUs it
    started), then SIGKILL; returns once the whole group is gone."""
    try:
        own_group = os.getpgid(proc.pid) == proc.pid
    except ProcessLookupError:
        own_group = False
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM) if own_group else proc.terminate()
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if own_group:
        deadline = time.monotonic() + grace
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(proc.pid):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def ensure_ssh_key(opts: NxcOptions, runner: Runner = default_runner) -> tuple[Path, Path]:
    """(private, public) key nxc installs for root on every node (``nxc start -i``:
    without it nxc reads ``~/.ssh/id_rsa.pub``, actions.py ``generate_deployment_info``)."""
    key = opts.key_file
    pub = Path(f"{key}.pub")
    if opts.ssh_key:
        if not key.is_file() or not pub.is_file():
            raise BackendError(f"ssh_key={key}: need the private key and {pub}")
        return key, pub
    if not key.is_file():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        res = runner(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgelab-nxc", "-f", str(key)])
        if res.returncode != 0:
            raise BackendError(f"ssh-keygen failed: {res.stderr.strip()}")
    return key, pub


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

    def params(self, plan: Plan) -> dict[str, ParamValue]:
        return setup_params(plan, self.opts, declared_params(self.opts.envdir))

    def commands(self, plan: Plan) -> list[list[str]]:
        """The nxc argv lists ``up(plan)`` runs, in order, in the project directory."""
        pub = f"{self.opts.key_file}.pub"
        steps = [] if self.opts.skip_build else [build_argv(self.opts, self.params(plan))]
        return steps + [start_argv(self.opts, role_distribution(plan, self.opts.roles), pub)]

    def dry_run(self, plan: Plan) -> str:
        lines = [f"cd {shlex.quote(str(self.opts.envdir))}"] + [shlex.join(c) for c in self.commands(plan)]
        built = composition_plan(self.opts, self.params(plan))
        if built is not None:
            blocking, recorded = plan_differences(plan, built)
            lines += [f"# refused (the composition cannot run this plan): {d}" for d in blocking]
            shown = recorded[:2] + ([f"... and {len(recorded) - 2} more (recorded in the facts)"]
                                    if len(recorded) > 2 else [])
            lines += [f"# composition differs: {d}" for d in shown]
        lines += [f"# {line.strip()}" for line in access_point_lines(plan, self.opts) if line.strip()]
        return "\n".join(lines) + "\n"

    def up(self, plan: Plan, testbed_cls: Optional[type] = None) -> NxcTestbed:
        """Build, start, read the deployment, wait for every node over SSH.
        ``testbed_cls``: a subclass of :class:`NxcTestbed` (the ``g5k`` backend's)."""
        testbed_cls = testbed_cls or NxcTestbed
        opts = self.opts
        problems = missing_requirements(opts, self._which)
        if problems:
            raise BackendError("cannot start the nxc backend here:\n  - " + "\n  - ".join(problems))
        if opts.flavour in VM_FLAVOURS and len(plan.nodes) > opts.max_vms:
            raise BackendError(
                f"{len(plan.nodes)} nodes on nxc's {opts.flavour} flavour: nixos-compose's qemu script cannot start "
                "VM 8 or 9 (it zero-pads VM_ID, then bash reads 08/09 as octal in $(($HOSTFWDPORT+$VM_ID)): "
                f"nix/flavours/shared/common.nix), so at most {opts.max_vms} VMs; use fewer nodes, a g5k flavour, "
                "or max_vms= with an nxc whose script is fixed")
        params = self.params(plan)
        conflict = composition_ap_conflict(opts, params)
        if conflict:
            raise BackendError(conflict)
        recorded: list[str] = []
        built = composition_plan(opts, params)
        if built is not None:
            blocking, recorded = plan_differences(plan, built)
            if blocking:
                raise BackendError(f"composition {opts.composition} cannot run this plan:\n  - "
                                   + "\n  - ".join(blocking))
        _key, pub = ensure_ssh_key(opts, self._runner)
        cwd = str(opts.envdir)
        if not opts.skip_build:
            self._build(build_argv(opts, params), cwd)
        argv = start_argv(opts, role_distribution(plan, opts.roles), str(pub))
        opts.deployment_file.unlink(missing_ok=True)  # so we never read a previous run's hosts
        start_proc = None
        log = opts.state_file(plan.topology.name).with_suffix(".nxc-start.log")
        if opts.flavour in VM_FLAVOURS:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "wb") as out:
                start_proc = self._spawner(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                           stderr=subprocess.STDOUT)
        else:
            # nxc's g5k-image start asks "Do you want to launch kadeploy" (nixos-compose 0.7.11
            # flavours/grid5000.py G5kImageFlavour.launch, click.confirm): answer it, never hang on a prompt.
            answer = "y\n" if opts.flavour == "g5k-image" else ""
            self._check(self._runner(argv, cwd=cwd, timeout=opts.ready_timeout, input=answer), "nxc start")
        testbed = None
        try:
            data = self._wait_deployment(start_proc, log)
            nodes = map_plan_nodes(plan, parse_deployment(data, opts.flavour, str(opts.deployment_file)), opts.roles)
            import execo  # noqa: F401  execo sets up its conductor on import, which only the main thread may do

            transport = Transport(inventory_from_deployment(plan, nodes, opts, _key))
            testbed = testbed_cls(plan, transport, opts, nodes, start_process=start_proc, params=params,
                                  differences=recorded)
            self._save_state(plan.topology.name, start_proc)
            t0 = self._clock()
            self._wait_ready(testbed, start_proc, log)
            testbed.timings["ready"] = self._clock() - t0
            if testbed_interface(opts) == DEFAULT_ROUTE_NIC:
                transport.inventory = with_nics(transport.inventory, default_route_nics(transport, list(nodes)))
            testbed.stop_experiment_owned_units()
            if opts.install:
                transport.install_edgelab(list(nodes))
            # the Wi-Fi cells' access point as a node (after the NICs are known and edgelab is there)
            testbed.apply_cells()
            testbed.collect_facts()
        except BaseException:
            if testbed is not None:
                try:
                    testbed.down()
                except BackendError:
                    pass
            if start_proc is not None:
                _stop(start_proc, grace=30.0)
            opts.state_file(plan.topology.name).unlink(missing_ok=True)
            raise
        return testbed

    def down(self, testbed_name: str) -> None:
        """Stop what a (possibly crashed) run left: the access point's routes, sysctls and
        budget (the undo scripts on the hosts), then its ``nxc start -w`` process group (the
        VMs). Grid'5000 nodes go with their job (``g5k`` backend)."""
        from .local.naming import check_testbed_name

        path = self.opts.state_file(check_testbed_name(testbed_name))
        if not path.is_file():
            return
        state = json.loads(path.read_text())
        self._undo_access_points(testbed_name, state)
        pid = state.get("pid")
        if pid and _is_nxc_start(pid):
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        path.unlink(missing_ok=True)

    def _undo_access_points(self, testbed_name: str, state: Mapping[str, Any], timeout: float = 20.0) -> None:
        """Run the access point's undo scripts (:mod:`edgelab.remote.ap`) that a crashed run left on
        the deployed hosts: Grid'5000 machines outlive the controller (VMs go with ``nxc start``
        anyway). Unreachable hosts are skipped: nothing of the testbed is left on a host that is gone."""
        from ..remote import ap as apmod
        from ..remote.testbed import link_tag

        try:
            data = json.loads(Path(state.get("deployment_file") or self.opts.deployment_file).read_text())
            nodes = parse_deployment(data, state.get("flavour", self.opts.flavour))
        except (OSError, ValueError, BackendError):
            return
        if not self.opts.key_file.is_file():
            return
        devices = {h: Device(name=h, node=h, host=n.address, port=n.port, user="root",
                             identity_file=str(self.opts.key_file), connect_timeout_s=5.0)
                   for h, n in nodes.items()}
        tr = Transport(Inventory(devices=devices, known_hosts="/dev/null", strict_host_keys="no",
                                 source=str(self.opts.deployment_file)))
        try:
            tr.run_many({h: apmod.undo_crashed_cmd(d.workdir, link_tag(testbed_name, h)) for h, d in devices.items()},
                        timeout=timeout, check=False)
        finally:
            tr.close()

    # -- helpers -----------------------------------------------------------------------------

    def _build(self, argv: list[str], cwd: str) -> None:
        """Run ``nxc build``, then put ``setup.toml`` back: ``--setup-param``
        makes nxc write an ``[override-params]`` table into it (nixos-compose
        setup.py ``apply_setup``), which Nix reads during this build only."""
        setup = self.opts.envdir / "setup.toml"
        before = setup.read_bytes() if setup.is_file() else None
        try:
            self._check(self._runner(argv, cwd=cwd, timeout=self.opts.build_timeout, stdin=subprocess.DEVNULL),
                        "nxc build")
        finally:
            if before is not None and setup.read_bytes() != before:
                setup.write_bytes(before)

    @staticmethod
    def _check(res: subprocess.CompletedProcess, what: str) -> None:
        if res.returncode != 0:
            tail = "\n".join(((res.stderr or "") + (res.stdout or "")).strip().splitlines()[-15:])
            raise BackendError(f"{what} failed (exit {res.returncode}): {' '.join(map(str, res.args))}\n{tail}")

    @staticmethod
    def _nxc_errors(log: Path) -> list[str]:
        """``Error: ...`` lines nxc printed (``context.py`` ``elog``). After a VM fails to
        start, ``nxc start -w`` still waits for a signal, so its exit cannot be the sign."""
        try:
            text = log.read_text(errors="replace")
        except OSError:
            return []
        text = re.sub(r"\x1b\[[0-9;]*m", "", text)
        return [line.strip() for line in text.splitlines() if line.startswith("Error: ")]

    @staticmethod
    def _log_tail(log: Path, n: int = 15) -> str:
        try:
            return "\n".join(log.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""

    def _wait_deployment(self, start_proc: Optional[subprocess.Popen], log: Path) -> dict:
        path = self.opts.deployment_file
        deadline = self._clock() + self.opts.ready_timeout
        while not path.is_file():
            if start_proc is not None and start_proc.poll() is not None:
                raise BackendError(f"`nxc start` exited ({start_proc.returncode}) before writing {path}:\n"
                                   + self._log_tail(log))
            if self._clock() > deadline:
                raise BackendError(f"`nxc start` wrote no deployment file {path} within {self.opts.ready_timeout}s")
            self._sleep(0.2)
        for _ in range(50):  # nxc writes it in one go, but we may look in between open() and write()
            try:
                return json.loads(path.read_text())
            except json.JSONDecodeError as exc:
                err = exc
                self._sleep(0.1)
        raise BackendError(f"{path}: not valid JSON ({err})")

    def _wait_ready(self, testbed: NxcTestbed, start_proc: Optional[subprocess.Popen], log: Path) -> None:
        """Every node answers over SSH (all probed at once), or one error naming each that does not."""
        deadline = self._clock() + self.opts.ready_timeout
        pending = list(testbed.nodes)
        last: dict[str, str] = {}
        while True:
            res = testbed.transport.run_many({n: "true" for n in pending}, timeout=30, check=False)
            for n, r in res.items():
                if isinstance(r, RemoteError):
                    last[n] = " ".join(str(r).split())
                elif r.returncode != 0:
                    last[n] = f"{n}: `true` exited {r.returncode}: {' '.join((r.stderr or '').split())[-300:]}"
            pending = [n for n, r in res.items() if isinstance(r, RemoteError) or r.returncode != 0]
            if not pending:
                return
            if start_proc is not None and start_proc.poll() is not None:
                raise BackendError(f"`nxc start` exited ({start_proc.returncode}) while nodes booted:\n"
                                   + self._log_tail(log))
            errors = self._nxc_errors(log) if start_proc is not None else []
            if errors:
                raise BackendError(f"`nxc start` failed to start nodes {pending} (its log: {log}):\n  "
                                   + "\n  ".join(errors[-8:]))
            if self._clock() > deadline:
                raise BackendError(f"nodes not reachable over SSH after {self.opts.ready_timeout:g}s:\n  - "
                                   + "\n  - ".join(last.get(n, n) for n in pending))
            self._sleep(1.0)

    def _save_state(self, name: str, start_proc: Optional[subprocess.Popen]) -> None:
        path = self.opts.state_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"flavour": self.opts.flavour, "pid": start_proc.pid if start_proc else None,
                                    "deployment_file": str(self.opts.deployment_file)}))


def _is_nxc_start(pid: int) -> bool:
    """Only signal a pid that is still an ``nxc ... start`` (pids get reused). A process
    in the middle of exec shows an empty cmdline for a moment: look again then."""
    for _ in range(20):
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        if raw:
            cmd = raw.split(b"\0")
            return any(b"nxc" in part for part in cmd) and b"start" in cmd
        time.sleep(0.05)
    return False
