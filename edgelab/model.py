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
    """802.11 DCF/EDCA parameters for Bianchi's saturation-throughput model.

    Times are in microseconds, sizes in bytes. ``cw_min`` is the minimum
    contention window W (number of slots, e.g. 16 for CWmin=15) and
    ``max_stage`` is m, the number of backoff doublings (CWmax = W*2^m - 1).

    The fields after ``prop_delay_us`` refine Bianchi's bit-continuous frame
    times into those of an OFDM PHY (their defaults keep the paper's model):
    ``aifsn`` (when set) makes the idle time before contention
    AIFS = SIFS + AIFSN x slot instead of ``difs_us``, so changing the slot
    changes it too; ``symbol_us`` > 0 rounds every PPDU's data field up to
    whole OFDM symbols carrying ``service_bits`` + PSDU + ``tail_bits``
    (802.11-2016 eq. 19-32), followed by ``signal_extension_us`` (2.4 GHz);
    the ACK/BlockAck is a non-HT PPDU with its own preamble
    (``ack_phy_header_us``) and symbol (``ack_symbol_us``) sent at the highest
    of ``basic_rates_mbit`` not above the data rate. ``ampdu_frames`` MPDUs go
    in one A-MPDU (each behind a 4-byte delimiter, padded to 4 bytes),
    acknowledged by one BlockAck of ``block_ack_bytes`` when ``block_ack``;
    ``max_ampdu_bytes`` and ``max_ppdu_us`` bound what a slow station can
    aggregate. ``mcs_rates_mbit`` (index = MCS) and ``mcs_min_rssi_dbm`` let a
    station pick its rate by MCS or by received signal strength.
    """

    phy_rate_mbit: float
    basic_rate_mbit: float
    slot_us: float
    sifs_us: float
    difs_us: Optional[float]
    cw_min: int
    max_stage: int
    phy_header_us: float
    mac_header_bytes: int = 34
    ack_bytes: int = 14
    payload_bytes: int = 1500
    prop_delay_us: float = 1.0
    aifsn: Optional[int] = None
    symbol_us: float = 0.0
    service_bits: int = 0
    tail_bits: int = 0
    signal_extension_us: float = 0.0
    ack_phy_header_us: Optional[float] = None
    ack_symbol_us: Optional[float] = None
    basic_rates_mbit: tuple[float, ...] = ()
    ampdu_frames: int = 1
    block_ack: bool = False
    block_ack_bytes: int = 32
    max_ampdu_bytes: int = 0
    max_ppdu_us: float = 0.0
    mcs_rates_mbit: tuple[float, ...] = ()
    mcs_min_rssi_dbm: tuple[float, ...] = ()

    @property
    def ifs_us(self) -> float:
        """Idle time before a contention: AIFS from ``aifsn`` when set, else ``difs_us``."""
        if self.aifsn is not None:
            return self.sifs_us + self.aifsn * self.slot_us
        return float(self.difs_us)

    def mcs_rate(self, mcs: int) -> float:
        """PHY rate of ``mcs`` from the profile's MCS table."""
        if not 0 <= mcs < len(self.mcs_rates_mbit):
            raise ValueError(f"MCS {mcs} is not in this profile's table (MCS 0-{len(self.mcs_rates_mbit) - 1})")
        return self.mcs_rates_mbit[mcs]

    def mcs_for_rssi(self, rssi_dbm: float) -> int:
        """Highest MCS whose minimum receiver sensitivity ``rssi_dbm`` meets (0 if none)."""
        ok = [i for i, s in enumerate(self.mcs_min_rssi_dbm) if rssi_dbm >= s]
        return max(ok) if ok else 0


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
    #: Wi-Fi station rate: one MCS for every node of the group, or one per node
    #: (node i gets entry i-1); empty: the profile's ``phy_rate_mbit``.
    mcs: tuple[int, ...] = ()
    #: The same from received signal strength (dBm): the highest MCS whose
    #: minimum sensitivity it meets (the profile's ``mcs_min_rssi_dbm``).
    rssi_dbm: tuple[float, ...] = ()

    def station_setting(self, index: int) -> tuple[str, float] | None:
        """("mcs", value) or ("rssi_dbm", value) for the group's ``index``-th node (1-based), or None."""
        for kind, values in (("mcs", self.mcs), ("rssi_dbm", self.rssi_dbm)):
            if values:
                return kind, values[0] if len(values) == 1 else values[index - 1]
        return None


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

    def with_station_mcs(self, group: str, network: str, mcs: tuple[int, ...]) -> "Topology":
        """The same topology with one group's Wi-Fi rate on ``network`` set: one MCS for the
        group or one per node (sweeps that mix rates use this after ``scaled``)."""
        def att(a: Attachment) -> Attachment:
            return replace(a, mcs=tuple(mcs), rssi_dbm=()) if a.network == network else a

        if all(g.name != group for g in self.groups):
            raise KeyError(group)
        g = self.group(group)
        if all(a.network != network for a in g.attachments):
            raise KeyError(f"group {group!r} is not on network {network!r}")
        groups = tuple(replace(x, attachments=tuple(att(a) for a in x.attachments)) if x.name == group else x
                       for x in self.groups)
        return replace(self, groups=groups)

    def scaled(self, group: str, count: int) -> "Topology":
        """The same topology with one group's count changed (sweeps use this)."""
        groups = tuple(replace(g, count=count) if g.name == group else g for g in self.groups)
        if all(g.name != group for g in self.groups):
            raise KeyError(group)
        return replace(self, groups=groups)
