"""The ``g5k`` backend: reserve Grid'5000 machines, deploy the composition
on them with nxc, impair links with EnOSlib's netem, release at the end.

Steps of ``up(plan)``:

1. plan the reservation (:mod:`.g5k_reservation`): cluster, node count,
   walltime, job type, and the folding of virtual nodes onto machines;
2. ``enoslib.G5k(conf).init()`` reserves (and grants root on) the machines;
3. their names go into a machine file for ``nxc start -m`` (the ``nxc``
   backend builds, starts, reads nxc's deployment file and waits for every
   node over SSH): the job's nodes become the inventory of the shared remote
   transport, and the testbed is a :class:`~edgelab.remote.testbed.RemoteTestbed`;
4. ``enoslib.Netem`` applies each plan interface's LinkParams on the machine;
5. the testbed's ``down()`` removes the constraints and destroys the job.

:func:`dry_run` prints all of that without touching the network. ``up()``
must run where Grid'5000 is reachable (a frontend, or with
``~/.python-grid5000.yaml``) and nxc + nix are installed: anywhere else it
raises :class:`BackendError` saying which.
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..errors import BackendError
from ..plan import Plan
from .base import Backend
from .g5k_netem import build_netem, netem_constraints, unemulated
from .g5k_reservation import MACHINE_ROLE, G5kSettings, Reservation, build_g5k_conf, plan_reservation
from .nxc import (DEFAULT_ROUTE_NIC, G5K_FLAVOURS, NxcBackend, NxcOptions, NxcTestbed, access_point_lines,
                  testbed_interface)

_SETTINGS = {f.name for f in fields(G5kSettings)}
_NXC = {f.name for f in fields(NxcOptions)}


def split_options(options: Mapping[str, Any]) -> tuple[G5kSettings, dict]:
    """Backend options -> (Grid'5000 settings, nxc options); unknown names are an error."""
    unknown = sorted(set(options) - _SETTINGS - _NXC)
    if unknown:
        raise BackendError(f"unknown g5k backend options {unknown}; Grid'5000: {sorted(_SETTINGS)}, "
                           f"nxc: {sorted(_NXC - {'machines'})}")
    nxc = {k: v for k, v in options.items() if k in _NXC}
    nxc.setdefault("flavour", "g5k-ramdisk")
    if nxc["flavour"] not in G5K_FLAVOURS:
        raise BackendError(f"the g5k backend deploys with a Grid'5000 nxc flavour ({', '.join(sorted(G5K_FLAVOURS))}),"
                           f" not {nxc['flavour']!r}")
    return G5kSettings(**{k: v for k, v in options.items() if k in _SETTINGS}), nxc


def netem_devices(plan: Plan, settings: G5kSettings, opts: NxcOptions) -> dict[str, str]:
    """Plan interface -> NIC netem shapes on the machine: the user's ``devices``, else
    the one NIC the composition puts every plan interface on (``testbed_interface``;
    on Grid'5000 found on each node at bring-up, shown as a placeholder in dry runs)."""
    nic = testbed_interface(opts)
    out = {i.ifname: nic for n in plan.nodes for i in n.interfaces}
    out.update(settings.devices)
    return out


def g5k_access_problems(home: Optional[str] = None, hostname: Optional[str] = None) -> list[str]:
    """Why EnOSlib could not reach the Grid'5000 API from here (empty if it can)."""
    problems = []
    try:
        import enoslib  # noqa: F401
    except ImportError:
        problems.append("EnOSlib is not installed: pip install enoslib")
    home = home or os.path.expanduser("~")
    hostname = hostname or socket.getfqdn()
    if not hostname.endswith("grid5000.fr") and not Path(home, ".python-grid5000.yaml").is_file():
        problems.append("no Grid'5000 API access: run on a Grid'5000 frontend, or write ~/.python-grid5000.yaml "
                        "(username/password, see EnOSlib's 'Grid'5000 tutorial')")
    return problems


def dry_run(plan: Plan, options: Mapping[str, Any]) -> str:
    """What ``up(plan)`` would reserve, deploy and impose, as text."""
    settings, nxc_opts = split_options(options)
    res = plan_reservation(plan, settings, nxc_opts["flavour"])
    conf = build_g5k_conf(res)
    nxc_opts = {**nxc_opts, "machines": nxc_opts.get("machines") or "<machine file of the job>"}
    nxc = NxcBackend(**nxc_opts)
    cmds = nxc.commands(plan)
    resources = {n.name: n.resources for n in plan.nodes}
    lines = [
        f"edgelab g5k dry run: topology {plan.topology.name!r}, {len(plan.nodes)} virtual nodes",
        "",
        "Reservation (EnOSlib G5k provider)",
        f"  site: {res.site}   cluster: {res.cluster}   nodes: {res.nodes}   walltime: {res.walltime}",
        f"  job name: {res.job_name}   job type: {', '.join(res.job_type) or 'default (no deploy)'}"
        f"   queue: {res.queue}" + (f"   env: {res.env_name}" if res.env_name else ""),
        f"  OAR resources: {res.oar_resources}",
        f"  G5kConf: {conf.to_dict()}",
        "",
        f"Folding: {len(plan.nodes)} virtual nodes on {res.nodes} physical nodes, at most {res.max_fold} per node "
        f"({res.host_cpu:g} cores, {res.host_memory_mib} MiB each)",
    ]
    for i, members in enumerate(res.placement, 1):
        cpu = sum(resources[m].host_cpu for m in members)
        mem = sum(resources[m].memory_mib for m in members)
        lines.append(f"  physical {i}: {', '.join(members)}  ({cpu:g} cores, {mem} MiB)")
    if res.max_fold > 1:
        setup = host_setup_script(settings)
        lines += ["", f"Folded: no nxc image; each machine (deploy env {res.env_name}, root over SSH) is prepared, "
                      "gets this edgelab from the transport and builds its share with the local backend "
                      "(link emulation: edgelab.linkemu per node interface, as on the local backend)",
                  f"  host setup on every machine: {setup or '(none)'}", ""] + multihost_lines(plan, res)
        return "\n".join(lines) + "\n"
    lines += ["", f"nxc (in the project directory {nxc.opts.envdir})"] + [f"  $ {shlex.join(c)}" for c in cmds]
    if not settings.netem:
        lines += ["", "Network constraints: none from EnOSlib (netem=false); the composition's edgelab.netem "
                      "applies the plan's links at boot"]
        return "\n".join(lines) + "\n"
    lines += ["", "Network constraints (EnOSlib Netem, per plan interface, egress and ingress)"]
    from ..remote import ap as apmod

    aps = {c.ap for c in apmod.cells_for(plan, lambda n: False, nxc.opts.airtime)} if res.max_fold <= 1 else set()
    for node, cons in netem_constraints(plan, netem_devices(plan, settings, nxc.opts)).items():
        for c in cons:
            direction = "in " if type(c).__name__ == "NetemInConstraint" else "out"
            skip = "  [not applied: Wi-Fi access point, egress only]" if direction == "in " and node in aps else ""
            lines.append(f"  {node:<12} {c.device:<8} {direction} {c.options}{skip}")
    if testbed_interface(nxc.opts) == DEFAULT_ROUTE_NIC:
        lines.append(f"  {DEFAULT_ROUTE_NIC}: the device of each node's default route, found at bring-up "
                     "(the composition's testbed NIC; iface= or devices= name it)")
    lines += access_point_lines(plan, nxc.opts, egress_only=True)   # factor 1 (folded returned above)
    return "\n".join(lines) + "\n"


#: Node-side Python packages a folded machine needs (share-up, link emulation, the phone workload).
FOLDED_PIP = ("pyyaml", "click", "rich", "pyroute2", "NetfilterQueue", "numpy", "pillow", "opencv-python-headless",
              "waitress", "requests")
FOLDED_VENV = "/opt/edgelab-venv"


def pinned(names: tuple[str, ...]) -> list[str]:
    """``name==version`` from this checkout's requirements.txt (the versions the tests ran)."""
    req = Path(__file__).resolve().parents[2] / "requirements.txt"
    pins = {}
    if req.is_file():
        for line in req.read_text().splitlines():
            spec = line.split("#", 1)[0].strip()
            if "==" in spec:
                pins[spec.split("==")[0].lower()] = spec
    return [pins.get(n.lower(), n) for n in names]


def host_setup_script(settings: G5kSettings) -> str:
    """What every machine of a folded job runs first, as root (a Debian deploy env): the tools the
    local backend drives and a venv with edgelab's node-side packages (``python`` = its interpreter)."""
    if settings.host_setup is not None:
        return settings.host_setup
    return ("export DEBIAN_FRONTEND=noninteractive; apt-get update -q && apt-get install -y -q python3-venv "
            "python3-dev build-essential libnetfilter-queue-dev iproute2 iptables nftables iperf3 && "
            f"python3 -m venv {FOLDED_VENV} && {FOLDED_VENV}/bin/pip install -q " + " ".join(pinned(FOLDED_PIP)))


def multihost_lines(plan: Plan, res: Reservation) -> list[str]:
    """A folded job (several virtual nodes per machine): each machine runs its share as
    namespaces, networks span machines through VXLAN, each Wi-Fi cell's AP machine carries its
    airtime budget (edgelab.remote.multihost; machine addresses are the job's, known after oarsub)."""
    from ..remote import multihost as mh

    hosts = [f"machine-{i}" for i in range(1, res.nodes + 1)]
    where = {n: hosts[i] for i, members in enumerate(res.placement) for n in members}
    mp = mh.plan_hosts(plan, where, {h: f"<{h} address>" for h in hosts})
    lines = mh.describe(mp)
    for net in plan.networks:
        for s in net.segments:
            if s.capacity_mbit:
                lines.append(f"  AP shaping on {mp.ap_hosts[net.name]} (bridge namespace "
                             f"{mh.bridge_ns(mp, mp.share(mp.ap_hosts[net.name]).index, net.name)}): "
                             f"airtime budget {s.capacity_mbit:.1f} Mbit/s (Bianchi, {len(s.stations)} stations), "
                             "one HTB class per station (edgelab.linkemu apply_shared_medium)")
    for h in hosts[:2]:
        lines += [f"  on {h}:"] + [f"    $ {c}" for c in mh.tunnel_cmds(mp, h)]
    return lines


class G5kTestbed(NxcTestbed):
    """The nxc testbed on reserved machines (a RemoteTestbed over the job's
    nodes), plus the EnOSlib netem on them and the job itself."""

    provider: Any = None
    netem: Any = None
    reservation: Optional[Reservation] = None

    def attach(self, provider: Any, netem: Any, reservation: Reservation) -> "G5kTestbed":
        self.provider, self.netem, self.reservation = provider, netem, reservation
        return self

    def enoslib_hosts(self) -> dict:
        """Plan node -> ``enoslib.Host`` of its machine (root, the backend's key)."""
        import enoslib as en

        out = {}
        for name in self.nodes:
            d = self.transport.device(name)
            out[name] = en.Host(d.host, alias=name, user=d.user, keyfile=d.identity_file, port=d.port)
        return out

    def facts(self) -> dict:
        facts = super().facts()
        facts.update(
            backend="g5k",
            link_engine="enoslib-netem" if self.netem is not None else "composition",
            link_emulation=("enoslib-netem (per interface, egress+ingress)" if self.netem is not None else
                            "composition (edgelab.netem: per interface, applied on each NixOS node at boot)"),
            unemulated=[] if self.cells else unemulated(self.plan),
            reservation=asdict(self.reservation) if self.reservation else None,
            jobs=[getattr(j, "uid", str(j)) for j in _jobs(self.provider)],
        )
        return facts

    def down(self) -> None:
        """Netem off, the nxc testbed down, then the job destroyed, whatever fails on the way."""
        try:
            if self.netem is not None:
                netem, self.netem = self.netem, None
                netem.destroy()
        finally:
            try:
                super().down()
            finally:
                release_job(self)


def release_job(holder: Any) -> None:
    """Destroy the Grid'5000 job a testbed holds (once: the provider is dropped first)."""
    if holder.provider is not None:
        provider, holder.provider = holder.provider, None
        provider.destroy()


def _jobs(provider: Any) -> list:
    try:
        return list(provider.jobs)
    except Exception:  # facts must not fail because the API hiccups
        return []


class G5kBackend(Backend):
    name = "g5k"

    def __init__(self, *, provider_factory: Optional[Callable[[Any], Any]] = None,
                 nxc_factory: Callable[..., NxcBackend] = NxcBackend,
                 access_check: Callable[[], list[str]] = g5k_access_problems,
                 which: Callable[[str], Optional[str]] = shutil.which, **options: Any):
        self.settings, self.nxc_options = split_options(options)
        self.options = dict(options)
        self._provider_factory = provider_factory or _enoslib_provider
        self._nxc_factory = nxc_factory
        self._access_check = access_check
        self._which = which

    def dry_run(self, plan: Plan) -> str:
        return dry_run(plan, self.options)

    def up(self, plan: Plan):
        res = plan_reservation(plan, self.settings, self.nxc_options["flavour"])
        if res.max_fold > 1:
            return self._up_folded(plan, res)
        probe = NxcOptions(**{**self.nxc_options, "machines": None})
        problems = self._access_check() + [p for p in _nxc_problems(probe, self._which)]
        if problems:
            raise BackendError("cannot use Grid'5000 from here:\n  - " + "\n  - ".join(problems))
        provider = self._provider_factory(build_g5k_conf(res))
        try:
            roles, _networks = provider.init()
            machines = sorted(h.address for h in roles[MACHINE_ROLE])
            if len(machines) < res.nodes:
                raise BackendError(f"Grid'5000 gave {len(machines)} nodes, {res.nodes} were asked for")
            machine_file = probe.envdir / ".edgelab" / f"{plan.topology.name}.machines"
            machine_file.parent.mkdir(parents=True, exist_ok=True)
            machine_file.write_text("\n".join(machines) + "\n")
            tb = self._nxc_factory(**{**self.nxc_options, "machines": str(machine_file)}).up(
                plan, testbed_cls=G5kTestbed)
        except BaseException:
            provider.destroy()
            raise
        tb.attach(provider, None, res)
        try:
            if self.settings.netem:
                # each node's NIC as the transport knows it (found on the node unless iface= names it)
                nics = {n: dict(tb.transport.device(n).interfaces) for n in tb.nodes}
                netem = build_netem(plan, tb.enoslib_hosts(), netem_devices(plan, self.settings, tb.opts),
                                    per_node={n: {k: v for k, v in m.items() if k not in self.settings.devices}
                                              for n, m in nics.items()},
                                    egress_only={c.ap for c in tb.cells})
                tb.netem = netem
                netem.deploy()
        except BaseException:
            tb.down()
            raise
        return tb

    def _up_folded(self, plan: Plan, res: Reservation):
        """Several virtual nodes per machine: reserve (deploy env), prepare each machine, then the
        same folded testbed as over SSH hosts (:mod:`edgelab.remote.folded`) on the job's machines."""
        from ..remote import multihost as mh
        from ..remote.folded import bring_up
        from .g5k_folded import G5kFoldedTestbed
        from ..remote.inventory import Device, Inventory
        from ..remote.transport import RemoteError, Transport

        problems = self._access_check()
        if problems:
            raise BackendError("cannot use Grid'5000 from here:\n  - " + "\n  - ".join(problems))
        provider = self._provider_factory(build_g5k_conf(res))
        tr = None
        try:
            roles, _networks = provider.init()
            hosts = sorted(roles[MACHINE_ROLE], key=lambda h: h.address)
            if len(hosts) < res.nodes:
                raise BackendError(f"Grid'5000 gave {len(hosts)} nodes, {res.nodes} were asked for")
            hosts = hosts[:res.nodes]
            st = self.settings
            python = st.python if st.python != "python3" or st.host_setup is not None else f"{FOLDED_VENV}/bin/python"
            devices = {h.address: Device(name=h.address, node=h.address, host=h.address, port=int(h.port or 22),
                                         user=h.user or "root", identity_file=h.keyfile or st.identity_file,
                                         address=socket.gethostbyname(h.address), python=python)
                       for h in hosts}
            tr = Transport(Inventory(devices, known_hosts=st.known_hosts, source=f"Grid'5000 job {res.job_name}"))
            setup = host_setup_script(st)
            if setup:
                failed = [str(r) for r in tr.run_many({h: setup for h in devices}, timeout=1800, sudo=True).values()
                          if isinstance(r, RemoteError)]
                if failed:
                    raise BackendError("preparing the machines failed:\n  " + "\n  ".join(failed))
            tr.install_edgelab(list(devices))
            where = {n: hosts[i].address for i, members in enumerate(res.placement) for n in members}
            mp = mh.plan_hosts(plan, where, {a: d.data_address for a, d in devices.items()})
            tb = bring_up(plan, tr, mp, backend="g5k", extra_facts={"reservation": asdict(res)},
                          testbed_cls=G5kFoldedTestbed)
        except BaseException:
            try:
                if tr is not None:
                    tr.close()
            finally:
                provider.destroy()
            raise
        tb.provider = provider
        return tb

    def down(self, testbed_name: str) -> None:
        """Destroy the job of a (possibly crashed) run, found by its job name."""
        res = Reservation(site=self.settings.site, cluster=self.settings.cluster, walltime=self.settings.walltime,
                          job_name=self.settings.job_name or f"edgelab-{testbed_name}", job_type=(),
                          placement=(("?",),), queue=self.settings.queue, project=self.settings.project)
        self._provider_factory(build_g5k_conf(res)).destroy()


def _nxc_problems(opts: NxcOptions, which: Callable[[str], Optional[str]]) -> list[str]:
    from .nxc import missing_requirements

    return missing_requirements(opts, which)


def _enoslib_provider(conf: Any) -> Any:
    import enoslib as en

    return en.G5k(conf)
