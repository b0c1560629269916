"""Reading what ``nxc start`` deployed, and reaching those nodes.

``nxc start`` writes ``<project>/deploy/<composition>::<flavour>.json``
(nixos-compose 0.7.11, ``actions.py`` ``generate_deployment_info``). Its
``deployment`` table is keyed by IP address: ``{"192.168.1.1": {"role":
"phone", "host": "phone-1", "init": ..., "vm_id": 1}}``. On the ``vm`` flavours
the addresses are the VMs' own (``populate_deployment_vm_by_ip``) and SSH is
forwarded from ``127.0.0.1:22021+vm_id`` (``flavours/vm.py``
``create_machines``; the qemu script's ``hostfwd=tcp::$((HOSTFWDPORT+VM_ID))-:22``
in ``nix/flavours/shared/common.nix``); on Grid'5000 flavours they are the
reserved nodes' IPs (``populate_deployment_ips``), port 22. ``ssh_key.pub`` is
the key nxc installs for root on every node (``nxc start -i``).

This module turns that file into one :class:`NxcNode` per host and maps the
plan's node names onto them; :mod:`.nxc` makes them the remote transport's
inventory (SSH goes through :mod:`edgelab.remote.transport`).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from ..errors import BackendError
from ..plan import Plan

#: SSH port of VM n in nixos-compose's ``vm`` flavours is VM_SSH_BASE + n.
VM_SSH_BASE = 22021

#: Flavours whose nodes are QEMU VMs on this machine (SSH forwarded to loopback).
VM_FLAVOURS = frozenset({"vm", "vm-ramdisk"})

@dataclass(frozen=True)
class NxcNode:
    """One deployed composition host and how to reach it over SSH (as root)."""

    host: str
    role: str
    address: str  # where to connect (127.0.0.1 for VMs, the node IP otherwise)
    port: int = 22
    ip: Optional[str] = None  # the node's own address in the deployment
    vm_id: Optional[int] = None


def parse_deployment(data: Mapping, flavour: str, source: str = "nxc deployment file") -> dict[str, NxcNode]:
    """``deploy/*.json`` content -> {host name: NxcNode}, in file order.

    Every malformed entry is an error naming the file and the entry: a
    deployment we half understand would send commands to the wrong machine.
    """
    table = data.get("deployment") if isinstance(data, Mapping) else None
    if not isinstance(table, Mapping) or not table:
        raise BackendError(f"{source}: no 'deployment' table; was it written by `nxc start`?")
    nodes: dict[str, NxcNode] = {}
    vm = flavour in VM_FLAVOURS
    for ip, info in table.items():
        if not isinstance(info, Mapping) or not isinstance(info.get("role"), str):
            raise BackendError(f"{source}: deployment entry {ip!r} has no 'role'")
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise BackendError(f"{source}: deployment key {ip!r} is not an IP address")
        host = str(info.get("host") or info["role"])
        if host in nodes:
            raise BackendError(f"{source}: host {host!r} is deployed twice")
        if vm:
            if not isinstance(info.get("vm_id"), int) or info["vm_id"] < 0:
                raise BackendError(f"{source}: VM {host!r} has no integer 'vm_id' (flavour {flavour})")
            vm_id = info["vm_id"]
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
    plan node (``context.py`` ``set_roles_distribution``), so results and logs
    use the same names on every backend. A group's nxc role is
    ``roles[group]`` or the group name itself (the compositions' roles are
    the plan's groups: ``nix/lib.nix`` ``rolesDistribution``).
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


def execo_hosts(mapping: Mapping[str, NxcNode]) -> dict:
    """Plan node -> ``execo.Host``, for parallel ``Remote``/``Put``/``Get``
    (same shape as nixos-compose's ``get_oar_job_nodes_nxc``)."""
    from execo import Host

    return {name: Host(n.address, user="root", port=n.port) for name, n in mapping.items()}
