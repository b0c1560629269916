"""Reading what ``nxc start`` deployed, and reaching those nodes.

``nxc start`` writes ``<envdir>/deploy/<composition>::<flavour>.json``. Its
``deployment`` table is keyed by IP address on machine flavours
(``{"10.0.0.1": {"role": "phone", "host": "phone-1", ...}}``; the ``vm``
flavour adds ``vm_id`` and forwards SSH from ``localhost:22021+vm_id``) and by
host name on ``docker`` (``{"phone-1": {"role": "phone"}}`` plus a top-level
``docker-compose-file``). This module turns that into one
:class:`NxcNode` per host, maps the plan's node names onto them and builds the
argv that runs a command on one (SSH via execo's command builder, or
``docker compose exec``), the same way nixos-compose's own ``connect`` does.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from ..errors import BackendError
from ..plan import Plan

#: SSH port of VM n in nixos-compose's ``vm`` flavour is VM_SSH_BASE + n.
VM_SSH_BASE = 22021

#: Non-interactive, no host-key prompts: nodes are rebuilt on every start.
SSH_OPTIONS: tuple[str, ...] = (
    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20",
)


@dataclass(frozen=True)
class NxcNode:
    """One deployed composition host and how to reach it."""

    host: str
    role: str
    address: str  # where to connect (127.0.0.1 for VMs, the node IP otherwise)
    port: int = 22
    ip: Optional[str] = None  # the node's own address in the deployment
    vm_id: Optional[int] = None
    compose_file: Optional[str] = None  # docker flavour: the generated compose file

    @property
    def via(self) -> str:
        return "docker" if self.compose_file else "ssh"


def parse_deployment(data: Mapping, flavour: str) -> dict[str, NxcNode]:
    """``deploy/*.json`` content -> {host name: NxcNode}, in file order."""
    try:
        table = data["deployment"]
    except (KeyError, TypeError):
        raise BackendError("nxc deployment file has no 'deployment' table; was it written by `nxc start`?")
    nodes: dict[str, NxcNode] = {}
    if flavour == "docker":
        compose = data.get("docker-compose-file")
        if not compose:
            raise BackendError("docker deployment file has no 'docker-compose-file'; rerun `nxc start -f docker`")
        for host, info in table.items():
            nodes[host] = NxcNode(host=host, role=info["role"], address=host, port=0, compose_file=compose)
        return nodes
    for ip, info in table.items():
        host = info.get("host", info["role"])
        if "vm_id" in info:
            vm_id = int(info["vm_id"])
            nodes[host] = NxcNode(host=host, role=info["role"], address="127.0.0.1", port=VM_SSH_BASE + vm_id,
                                  ip=ip, vm_id=vm_id)
        else:
            nodes[host] = NxcNode(host=host, role=info["role"], address=ip, port=22, ip=ip)
    return nodes


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def role_distribution(plan: Plan, roles: Mapping[str, str]) -> dict[str, list[str]]:
    """nxc role -> plan node names, for ``nxc start -r role=h1,h2``.

    Giving explicit host names makes nixos-compose name each host after the
    plan node, so results and logs use the same names on every backend. A
    group's nxc role is ``roles[group]`` or the group name itself.
    """
    out: dict[str, list[str]] = {}
    for node in plan.nodes:
        out.setdefault(roles.get(node.group, node.group), []).append(node.name)
    return out


def map_plan_nodes(plan: Plan, nodes: Mapping[str, NxcNode], roles: Mapping[str, str]) -> dict[str, NxcNode]:
    """Plan node name -> deployed host.

    Hosts named after plan nodes match directly (what ``role_distribution``
    asks for). Otherwise, e.g. a composition that fixed its own host names
    (``phone1``, ``phone2``), the remaining hosts of a node's nxc role are
    taken in natural order.
    """
    mapping: dict[str, NxcNode] = {}
    used: set[str] = set()
    for node in plan.nodes:
        if node.name in nodes:
            mapping[node.name] = nodes[node.name]
            used.add(node.name)
    for node in plan.nodes:
        if node.name in mapping:
            continue
        role = roles.get(node.group, node.group)
        free = sorted((h for h, n in nodes.items() if n.role == role and h not in used), key=_natural_key)
        if free:
            mapping[node.name] = nodes[free[0]]
            used.add(free[0])
    missing = [n.name for n in plan.nodes if n.name not in mapping]
    if missing:
        have = ", ".join(f"{h} ({n.role})" for h, n in nodes.items()) or "none"
        raise BackendError(f"nxc deployment has no host for plan nodes {missing}; deployed hosts: {have}. "
                           "Check the composition's roles, or map groups to roles with roles={group: role}")
    return mapping


def remote_argv(node: NxcNode, argv: Sequence[str], *, identity_file: Optional[str] = None) -> list[str]:
    """The local argv that runs ``argv`` as root on ``node``."""
    if node.compose_file:
        return ["docker", "compose", "-f", node.compose_file, "exec", "-u", "root", "-T", node.host, *argv]
    from execo.ssh_utils import get_ssh_command  # execo knows the ssh option plumbing

    ssh = get_ssh_command(user="root", keyfile=identity_file, port=node.port,
                          connection_params={"ssh_options": SSH_OPTIONS})
    return [*ssh, node.address, shlex.join(list(argv))]


def execo_hosts(mapping: Mapping[str, NxcNode]) -> dict:
    """Plan node -> ``execo.Host``, for experiments that prefer execo's
    parallel ``Remote``/``Put``/``Get`` (same shape as nixos-compose's
    ``get_oar_job_nodes_nxc``). Docker hosts are not reachable over SSH."""
    from execo import Host

    return {name: Host(n.address, user="root", port=n.port) for name, n in mapping.items() if not n.compose_file}
