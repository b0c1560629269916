"""The topology model: immutable data classes shared by every layer.

Kept free of I/O so that planning, the Nix export and the backends all reason
about the same values. Validation of user input lives in ``topology``; these
classes assume their fields are already valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

ROLES: tuple[str, ...] = (
    "k3s-server",
    "k3s-agent",
    "phone",
    "beaglepaas-worker",
    "beaglepaas-orchestrator",
    "power-meter",
    "client",
    # a distributed file system's daemon (server, brick, mon/osd/mds...): see
    # compositions/{nfs,orangefs,glusterfs,cephfs} and edgelab/scenarios/glusterfs.py
    "storage",
)

NETWORK_KINDS: tuple[str, ...] = ("wifi", "ethernet", "usb", "batman-mesh", "hybrid")

#: Kinds a hybrid network may be split into.
SEGMENT_KINDS: tuple[str, ...] = ("wifi", "ethernet", "usb")

MESH_LAYOUTS: tuple[str, ...] = ("chain", "grid")


@dataclass(frozen=True)
class AirtimeParams:
    """802.11 DCF parameters for Bianchi's saturation-throughput model.

    Times are in microseconds, sizes in bytes. ``cw_min`` is the minimum
    contention window W (number of slots, e.g. 16 for CWmin=15) and
    ``max_stage`` is m, the number of backoff doublings (CWmax = W*2^m - 1).
    """

    phy_rate_mbit: float
    basic_rate_mbit: float
    slot_us: float
    sifs_us: float
    difs_us: float
    cw_min: int
    max_stage: int
    phy_header_us: float
    mac_header_bytes: int = 34
    ack_bytes: int = 14
    payload_bytes: int = 1500
    prop_delay_us: float = 1.0


@dataclass(frozen=True)
class LinkParams:
    """Impairments of one link (or one station's link to a shared medium).

    ``rate_mbit`` is the per-link cap; for a shared medium the aggregate is
    further limited by the airtime budget. Delay and jitter are one-way, per
    direction, as netem applies them on egress.
    """

    rate_mbit: float
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    shared: bool = False

    def with_overrides(self, **kw: object) -> "LinkParams":
        return replace(self, **{k: v for k, v in kw.items() if v is not None})

    def to_dict(self) -> dict:
        return {
            "rate_mbit": self.rate_mbit,
            "delay_ms": self.delay_ms,
            "jitter_ms": self.jitter_ms,
            "loss_pct": self.loss_pct,
            "shared": self.shared,
        }


@dataclass(frozen=True)
class Resources:
    """What one virtual node may use.

    ``speed`` is the node's per-core speed relative to the host running it
    (a phone core at 0.5 does half the work of a host core per second), so the
    host CPU it really needs is ``cpu * speed`` cores.
    """

    cpu: float = 1.0
    memory_mib: int = 512
    speed: float = 1.0

    @property
    def host_cpu(self) -> float:
        return self.cpu * self.speed


@dataclass(frozen=True)
class Attachment:
    """A node group's membership of a network; ``uplink`` members are wired
    to the access point / hub / switch rather than being stations."""

    network: str
    uplink: bool = False


@dataclass(frozen=True)
class PrivateDirs:
    """Per-node private directories on the local backend (Mininet's ``privateDirs``):
    the node's processes run in a mount namespace of their own where ``dirs`` are
    empty directories of the node, ``/etc/hosts`` maps the plan's node names to
    their addresses, and, with ``scratch_mib``, an ext4 scratch disk (loop file,
    ``user_xattr``) is mounted. Lets daemons that keep state in fixed paths
    (glusterd's /var/lib/glusterd, /run/...) run once per node."""

    dirs: tuple[str, ...] = ("/var/lib", "/var/log", "/run")
    scratch_mib: int = 0


@dataclass(frozen=True)
class NodeGroup:
    name: str
    role: str
    count: int
    resources: Resources
    attachments: tuple[Attachment, ...] = ()
    private: Optional[PrivateDirs] = None


@dataclass(frozen=True)
class Segment:
    """One homogeneous part of a network. Plain networks have one; a hybrid
    network has one per kind, its members split between them by ``share``."""

    kind: str
    link: LinkParams
    profile: Optional[str] = None
    airtime: Optional[AirtimeParams] = None
    share: float = 1.0


@dataclass(frozen=True)
class Network:
    name: str
    kind: str
    segments: tuple[Segment, ...]
    subnet: Optional[str] = None
    uplink_link: LinkParams = field(default_factory=lambda: LinkParams(rate_mbit=1000.0, delay_ms=0.05))
    mesh_layout: str = "chain"
    mesh_columns: int = 0


@dataclass(frozen=True)
class Host:
    """A physical machine that virtual nodes are folded onto."""

    name: str
    cpu: float
    memory_mib: int


@dataclass(frozen=True)
class Topology:
    name: str
    groups: tuple[NodeGroup, ...]
    networks: tuple[Network, ...]
    hosts: tuple[Host, ...] = ()
    address_base: str = "10.77.0.0/16"
    source: Optional[str] = None

    def network(self, name: str) -> Network:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(name)

    def group(self, name: str) -> NodeGroup:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def node_count(self) -> int:
        return sum(g.count for g in self.groups)

    def scaled(self, group: str, count: int) -> "Topology":
        """The same topology with one group's count changed (sweeps use this)."""
        groups = tuple(replace(g, count=count) if g.name == group else g for g in self.groups)
        if all(g.name != group for g in self.groups):
            raise KeyError(group)
        return replace(self, groups=groups)
