"""What to ask Grid'5000 for: folding virtual nodes onto physical ones, and
the EnOSlib configuration of the reservation.

Pure functions over the plan; nothing here talks to the Grid'5000 API (the
EnOSlib configuration is built without the cluster look-ups its convenience
methods make, so dry runs work offline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

from ..errors import FoldingError
from ..plan import NodePlan, Plan

#: Machine role under which EnOSlib returns the reserved nodes.
MACHINE_ROLE = "edgelab"


@dataclass(frozen=True)
class Reservation:
    """One OAR job on one cluster, and which virtual nodes go on which machine."""

    site: str
    cluster: str
    walltime: str
    job_name: str
    job_type: tuple[str, ...]
    placement: tuple[tuple[str, ...], ...]  # per physical node, the plan nodes on it
    queue: str = "default"
    project: Optional[str] = None
    env_name: Optional[str] = None  # only with the deploy job type
    host_cpu: float = 0.0
    host_memory_mib: int = 0

    @property
    def nodes(self) -> int:
        return len(self.placement)

    @property
    def max_fold(self) -> int:
        return max((len(p) for p in self.placement), default=0)

    @property
    def oar_resources(self) -> str:
        """The OAR resource request (what ``oarsub -l`` would get)."""
        return f"{{cluster='{self.cluster}'}}/nodes={self.nodes},walltime={self.walltime}"


def fold_nodes(nodes: Sequence[NodePlan], host_cpu: float, host_memory_mib: int, max_per_host: int) -> list[list[str]]:
    """Virtual nodes onto as few identical machines as they need: :func:`edgelab.folding.fold`'s
    ``pack`` (first-fit decreasing, ties in plan order) over as many machines as nodes, the
    machines it used in order.

    A node needs ``resources.host_cpu`` cores (its cores times its speed relative to the host)
    and ``memory_mib``; one bigger than a machine is named with what the machine offers.
    """
    from ..folding import fold
    from ..model import Host

    if max_per_host < 1:
        raise FoldingError(f"max_per_host must be at least 1, got {max_per_host}")
    for n in nodes:
        res = n.resources
        if res.host_cpu > host_cpu + 1e-9 or res.memory_mib > host_memory_mib:
            raise FoldingError(f"node {n.name} needs {res.host_cpu:g} cores and {res.memory_mib} MiB, more "
                               f"than one physical node offers ({host_cpu:g} cores, {host_memory_mib} MiB); "
                               "choose a bigger cluster or lower its resources")
    machines = [Host(name=f"m{i}", cpu=host_cpu, memory_mib=host_memory_mib) for i in range(len(nodes))]
    placed = fold(nodes, machines, strategy="pack", max_per_host=max_per_host)
    return [members for m in machines if (members := placed.nodes_on(m.name))]


def placement_from_mapping(plan: Plan, mapping: Mapping[str, int]) -> list[list[str]]:
    """A user's ``{node: physical index}`` as lists; every plan node must be placed."""
    missing = [n.name for n in plan.nodes if n.name not in mapping]
    unknown = sorted(set(mapping) - {n.name for n in plan.nodes})
    if missing or unknown:
        raise FoldingError(f"placement must give every plan node a physical index: missing {missing}, "
                           f"unknown {unknown}")
    hosts = sorted(set(mapping.values()))
    return [[n.name for n in plan.nodes if mapping[n.name] == h] for h in hosts]


def job_types(flavour: str, exotic: bool = False) -> tuple[str, ...]:
    """OAR job types for an nxc flavour.

    ``g5k-image`` is written to disk by kadeploy, which needs a ``deploy``
    job. The kexec flavours (``g5k-ramdisk``, ``g5k-nfs-store``) need root
    over SSH on the standard environment, which EnOSlib grants (sudo-g5k) on
    ordinary jobs.
    """
    types = ("deploy",) if flavour == "g5k-image" else ()
    return types + (("exotic",) if exotic else ())


@dataclass(frozen=True)
class G5kSettings:
    """Grid'5000 options of the ``g5k`` backend (defaults: Rennes' paravance,
    2x8 cores and 128 GiB per node, one virtual node per machine)."""

    site: str = "rennes"
    cluster: str = "paravance"
    walltime: str = "01:00:00"
    job_name: Optional[str] = None
    queue: str = "default"
    project: Optional[str] = None
    exotic: bool = False
    env_name: str = "debian12-min"  # what EnOSlib puts on disk before nxc's kadeploy (g5k-image only)
    host_cpu: float = 16.0
    host_memory_mib: int = 128 * 1024
    max_per_host: int = 1
    placement: Optional[Mapping[str, int]] = None
    devices: Mapping[str, str] = field(default_factory=dict)  # plan ifname -> NIC (default: the nodes' testbed NIC)
    netem: bool = True  # False: leave link emulation to the composition (edgelab.netem at boot)
    # Folded jobs (max_per_host > 1: each machine runs its share with the local backend, see g5k.py):
    folded_env: str = "debian12-min"   # deployed on every machine (job type deploy), root over SSH
    python: str = "python3"            # the machines' interpreter with edgelab's node-side deps
    host_setup: Optional[str] = None   # shell run as root on each machine first (None: FOLDED_HOST_SETUP)
    identity_file: Optional[str] = None  # the key root on the deployed machines accepts (default: ssh's)
    known_hosts: Optional[str] = None


def plan_reservation(plan: Plan, settings: G5kSettings, flavour: str) -> Reservation:
    """The job and the placement. Folded (several virtual nodes on a machine): a ``deploy`` job of
    ``folded_env`` (each machine then runs its share with the local backend, no nxc image)."""
    if settings.placement is not None:
        placement = placement_from_mapping(plan, settings.placement)
    else:
        placement = fold_nodes(plan.nodes, settings.host_cpu, settings.host_memory_mib, settings.max_per_host)
    if max((len(p) for p in placement), default=0) > 1:
        return Reservation(
            site=settings.site, cluster=settings.cluster, walltime=settings.walltime,
            job_name=settings.job_name or f"edgelab-{plan.topology.name}",
            job_type=("deploy",) + (("exotic",) if settings.exotic else ()),
            placement=tuple(tuple(p) for p in placement), queue=settings.queue, project=settings.project,
            env_name=settings.folded_env, host_cpu=settings.host_cpu, host_memory_mib=settings.host_memory_mib)
    types = job_types(flavour, settings.exotic)
    return Reservation(
        site=settings.site, cluster=settings.cluster, walltime=settings.walltime,
        job_name=settings.job_name or f"edgelab-{plan.topology.name}", job_type=types,
        placement=tuple(tuple(p) for p in placement), queue=settings.queue, project=settings.project,
        env_name=settings.env_name if "deploy" in types else None,
        host_cpu=settings.host_cpu, host_memory_mib=settings.host_memory_mib,
    )


def build_g5k_conf(res: Reservation):
    """The ``enoslib.G5kConf`` for a reservation, finalized (schema-checked).

    Machines are attached the way ``G5kConf.from_dictionary`` does, with
    their site and production network given, so no API call is needed.
    """
    import enoslib as en

    settings = dict(job_name=res.job_name, walltime=res.walltime, job_type=list(res.job_type), queue=res.queue)
    if res.project:
        settings["project"] = res.project
    if res.env_name:
        settings["env_name"] = res.env_name
    conf = en.G5kConf.from_settings(**settings)
    prod = en.G5kNetworkConf(id=f"prod-{res.site}", type="prod", roles=["prod"], site=res.site)
    conf.add_network_conf(prod)
    conf.machines.append(en.G5kClusterConf(roles=[MACHINE_ROLE], cluster=res.cluster, site=res.site,
                                           nodes=res.nodes, primary_network=prod))
    return conf.finalize()
