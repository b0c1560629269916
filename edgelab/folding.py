"""Folding: place N virtual nodes onto M physical hosts.

Researchers fold many emulated phones onto few machines to save hardware; the
question is how far they can fold before measurements drift. This module only
decides *where* nodes go (a pure function); ``experiments/folding.py`` measures
the drift. Capacity is honoured strictly: a node needs ``cpu * speed`` host
cores (see :class:`~edgelab.model.Resources`) and its memory, and a host may be
over-committed only by an explicit ``cpu_overcommit`` factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional

from .errors import FoldingError
from .model import Host
from .plan import NodePlan, Plan

STRATEGIES = ("spread", "pack")


@dataclass
class HostLoad:
    host: Host
    cpu_limit: float
    nodes: list[str] = field(default_factory=list)
    cpu: float = 0.0
    memory_mib: int = 0

    def fits(self, node: NodePlan, max_nodes: Optional[int]) -> bool:
        if max_nodes is not None and len(self.nodes) >= max_nodes:
            return False
        return (self.cpu + node.resources.host_cpu <= self.cpu_limit + 1e-9
                and self.memory_mib + node.resources.memory_mib <= self.host.memory_mib)


@dataclass(frozen=True)
class Placement:
    assignment: dict[str, str]  # node -> host
    hosts: tuple[Host, ...]
    loads: dict[str, tuple[float, int, int]]  # host -> (cpu used, memory used, node count)

    @property
    def hosts_used(self) -> int:
        return sum(1 for h in self.loads.values() if h[2] > 0)

    @property
    def folding_factor(self) -> float:
        """Virtual nodes per physical host actually used."""
        return len(self.assignment) / self.hosts_used if self.hosts_used else 0.0

    @property
    def max_per_host(self) -> int:
        return max((h[2] for h in self.loads.values()), default=0)

    def nodes_on(self, host: str) -> list[str]:
        return [n for n, h in self.assignment.items() if h == host]


def fold(nodes: Iterable[NodePlan], hosts: Iterable[Host], *, strategy: str = "spread",
         max_per_host: Optional[int] = None, cpu_overcommit: float = 1.0) -> Placement:
    """Place ``nodes`` onto ``hosts``.

    ``spread`` puts each node on the least CPU-loaded host that fits (balanced
    load, the usual choice for measurements); ``pack`` uses first-fit
    decreasing (ties in plan order) to use as few hosts as possible (the
    highest folding factor; how many machines a Grid'5000 reservation needs).
    ``max_per_host`` caps the folding factor explicitly, as a folding sweep does.
    Raises :class:`FoldingError` naming the node that does not fit and why.
    """
    if strategy not in STRATEGIES:
        raise FoldingError(f"unknown folding strategy {strategy!r}; choose {' or '.join(STRATEGIES)}")
    if cpu_overcommit <= 0:
        raise FoldingError("cpu_overcommit must be > 0")
    if max_per_host is not None and max_per_host < 1:
        raise FoldingError("max_per_host must be >= 1")
    hosts = tuple(hosts)
    nodes = list(nodes)
    if not hosts:
        raise FoldingError("no physical hosts to fold onto: list some under 'hosts:' in the topology")
    names = [h.name for h in hosts]
    if len(set(names)) != len(names):
        raise FoldingError(f"host names must be unique (got {names})")
    loads = [HostLoad(h, h.cpu * cpu_overcommit) for h in hosts]

    total_cpu = sum(n.resources.host_cpu for n in nodes)
    total_mem = sum(n.resources.memory_mib for n in nodes)
    cap_cpu = sum(l.cpu_limit for l in loads)
    cap_mem = sum(h.memory_mib for h in hosts)
    if total_cpu > cap_cpu + 1e-9 or total_mem > cap_mem:
        raise FoldingError(
            f"{len(nodes)} nodes need {total_cpu:g} host cores and {total_mem} MiB, but the {len(hosts)} "
            f"host(s) offer {cap_cpu:g} cores and {cap_mem} MiB: add hosts (under 'hosts:'), shrink node "
            "resources, or allow CPU over-commit (`edgelab plan --cpu-overcommit F`)")
    if max_per_host is not None and len(nodes) > max_per_host * len(hosts):
        raise FoldingError(f"{len(nodes)} nodes cannot fit {len(hosts)} host(s) at most {max_per_host} per host")

    order = nodes
    if strategy == "pack":   # first-fit decreasing; ties keep plan order, so a plan always folds the same way
        order = sorted(nodes, key=lambda n: (-n.resources.host_cpu, -n.resources.memory_mib))
    assignment: dict[str, str] = {}
    for node in order:
        candidates = [l for l in loads if l.fits(node, max_per_host)]
        if not candidates:
            best = max(loads, key=lambda l: (l.cpu_limit - l.cpu, l.host.memory_mib - l.memory_mib))
            raise FoldingError(
                f"node {node.name!r} (needs {node.resources.host_cpu:g} cores, {node.resources.memory_mib} MiB) "
                f"fits on no host; the roomiest, {best.host.name!r}, has {best.cpu_limit - best.cpu:g} cores and "
                f"{best.host.memory_mib - best.memory_mib} MiB left with {len(best.nodes)} nodes: "
                "try --strategy spread/pack, more hosts, or a larger --max-per-host")
        if strategy == "spread":
            target = min(candidates, key=lambda l: (l.cpu / l.cpu_limit, len(l.nodes), names.index(l.host.name)))
        else:
            target = candidates[0]
        target.nodes.append(node.name)
        target.cpu += node.resources.host_cpu
        target.memory_mib += node.resources.memory_mib
        assignment[node.name] = target.host.name
    ordered = {n.name: assignment[n.name] for n in nodes}
    return Placement(assignment=ordered, hosts=hosts,
                     loads={l.host.name: (l.cpu, l.memory_mib, len(l.nodes)) for l in loads})


def local_host() -> Host:
    """This machine as a folding target (its cores and memory)."""
    import os

    cpus = len(os.sched_getaffinity(0))
    with open("/proc/meminfo") as fh:
        mem_kib = next(int(line.split()[1]) for line in fh if line.startswith("MemTotal:"))
    import socket

    return Host(name=socket.gethostname() or "local", cpu=float(cpus), memory_mib=mem_kib // 1024)


def fold_plan(plan: Plan, hosts: Optional[Iterable[Host]] = None, **kw) -> Placement:
    """Fold a plan onto ``hosts`` (default: the topology's hosts, else this machine)."""
    hosts = tuple(hosts) if hosts is not None else (plan.topology.hosts or (local_host(),))
    return fold(plan.nodes, hosts, **kw)


def unenforced_limits(plan: Plan, host: Optional[Host] = None) -> list[str]:
    """Node limits that this machine (or ``host``) cannot enforce: a CPU quota of more
    cores than it has, or more memory than it has, limits nothing. Said out loud by
    ``validate``, ``plan`` and ``up`` alike, and recorded in the local backend's facts,
    rather than silently meaning "no limit"."""
    host = host or local_host()
    out = []
    for n in plan.nodes:
        r = n.resources
        if r.host_cpu > host.cpu + 1e-9:
            out.append(f"node {n.name}: cpu x speed = {r.host_cpu:g} cores, more than the {host.cpu:g} of "
                       f"{host.name}: its CPU quota does not limit it")
        if r.memory_mib > host.memory_mib:
            out.append(f"node {n.name}: memory_mib {r.memory_mib}, more than the {host.memory_mib} MiB of "
                       f"{host.name}: its memory limit does not limit it")
    return out
