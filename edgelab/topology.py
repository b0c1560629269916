"""Topology as code: load and validate a YAML testbed description.

Every rejection names the file, the line, the key path and what is allowed,
and unknown keys are errors: a misspelt ``delay_ms`` silently ignored would
invalidate an experiment without anyone noticing.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Optional

from .errors import TopologyError
from .model import (
    MESH_LAYOUTS,
    NETWORK_KINDS,
    ROLES,
    SEGMENT_KINDS,
    AirtimeParams,
    Attachment,
    Host,
    LinkParams,
    Network,
    NodeGroup,
    PrivateDirs,
    Resources,
    Segment,
    Topology,
)
from .profiles import get_profile, profile_names
from .yamlsrc import MAX_BYTES, decode, fmt_path, load_with_lines

#: Names end up in netns and interface names (IFNAMSIZ is 16), so keep them short. Matched
#: with ``fullmatch`` (``$`` would accept a trailing newline). No name contains '.': the
#: local backend separates testbed and node with it (``backends/local/naming.py``).
NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,11}")
TESTBED_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,15}")

#: Bounds that keep a limit a limit. A node's CPU quota is ``cpu * speed`` host cores over
#: a 100 ms CFS period; the kernel's smallest quota is 1 ms (cgroups.MIN_QUOTA_US), so less
#: than 0.01 cores would silently become more. Upper bounds: beyond any device edgelab
#: models, and beyond them a limit no longer limits anything (the kernel clamps memory).
MIN_HOST_CPU = 0.01
MAX_CPU = 256.0
MAX_SPEED = 16.0
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB
#: Nodes and networks in one topology (addresses, interface numbering, bring-up time).
MAX_NODES = 4096
MAX_NETWORKS = 256
#: Address ranges that cannot carry a testbed's unicast traffic.
FORBIDDEN_NETS = {
    "0.0.0.0/8": "'this network' (0.0.0.0/8)",
    "127.0.0.0/8": "loopback (127.0.0.0/8)",
    "169.254.0.0/16": "link-local (169.254.0.0/16)",
    "224.0.0.0/4": "multicast (224.0.0.0/4)",
    "240.0.0.0/4": "reserved (240.0.0.0/4, with the broadcast address)",
}

#: Default resources by role: a judgement of typical hardware, overridable.
ROLE_DEFAULTS: dict[str, Resources] = {
    "k3s-server": Resources(cpu=1.0, memory_mib=1024, speed=1.0),
    "k3s-agent": Resources(cpu=0.5, memory_mib=512, speed=1.0),
    "phone": Resources(cpu=0.5, memory_mib=512, speed=1.0),
    "beaglepaas-worker": Resources(cpu=0.25, memory_mib=256, speed=1.0),
    "beaglepaas-orchestrator": Resources(cpu=0.5, memory_mib=512, speed=1.0),
    "power-meter": Resources(cpu=0.1, memory_mib=64, speed=1.0),
    "client": Resources(cpu=0.5, memory_mib=256, speed=1.0),
    "storage": Resources(cpu=0.5, memory_mib=512, speed=1.0),
}

LINK_KEYS = {"rate_mbit", "delay_ms", "jitter_ms", "loss_pct", "shared"}
AIRTIME_KEYS = set(AirtimeParams.__dataclass_fields__)


class _Ctx:
    """Carries the file name and line map so checks can raise precise errors."""

    def __init__(self, file: str, lines: dict):
        self.file = file
        self.lines = lines

    def fail(self, path: tuple, message: str) -> TopologyError:
        line = None
        probe = path
        while probe is not None:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe[:-1] if probe else None
        return TopologyError(message, file=self.file, path=fmt_path(path), line=line)

    def mapping(self, value: Any, path: tuple, allowed: set[str], required: set[str] = frozenset()) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping with keys {sorted(allowed)} (got {type(value).__name__})")
        for key in value:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}")
        for key in sorted(required):
            if key not in value:
                raise self.fail(path, f"missing required key {key!r}")
        return value

    def number(self, value: Any, path: tuple, *, minimum: float = None, exclusive_min: bool = False,
               maximum: float = None, exclusive_max: bool = False, integer: bool = False) -> float:
        kind = "an integer" if integer else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
            raise self.fail(path, f"must be {kind} (got {value!r})")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.fail(path, f"must be a finite number (got {value!r})")
        if minimum is not None and (value < minimum or (exclusive_min and value == minimum)):
            raise self.fail(path, f"must be {'>' if exclusive_min else '>='} {minimum} (got {value!r})")
        if maximum is not None and (value > maximum or (exclusive_max and value == maximum)):
            raise self.fail(path, f"must be {'<' if exclusive_max else '<='} {maximum} (got {value!r})")
        return value

    def name(self, value: Any, path: tuple, regex: re.Pattern = NAME_RE) -> str:
        if not isinstance(value, str) or not regex.fullmatch(value):
            n = 12 if regex is NAME_RE else 16
            raise self.fail(path, f"must be a name of 1-{n} characters: a lowercase letter, then letters, digits or '-' (got {value!r})")
        return value

    def choice(self, value: Any, path: tuple, allowed: tuple[str, ...]) -> str:
        if value not in allowed:
            raise self.fail(path, f"must be one of {', '.join(allowed)} (got {value!r})")
        return value

    def boolean(self, value: Any, path: tuple) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, f"must be true or false (got {value!r})")
        return value


def _link(ctx: _Ctx, raw: Any, path: tuple, base: Optional[LinkParams]) -> LinkParams:
    raw = ctx.mapping(raw, path, LINK_KEYS, set() if base else {"rate_mbit"})
    kw: dict[str, Any] = {}
    if "rate_mbit" in raw:
        kw["rate_mbit"] = float(ctx.number(raw["rate_mbit"], path + ("rate_mbit",), minimum=0, exclusive_min=True, maximum=100000))
    for key in ("delay_ms", "jitter_ms"):
        if key in raw:
            kw[key] = float(ctx.number(raw[key], path + (key,), minimum=0, maximum=10000))
    if "loss_pct" in raw:
        kw["loss_pct"] = float(ctx.number(raw["loss_pct"], path + ("loss_pct",), minimum=0, maximum=100, exclusive_max=True))
    if "shared" in raw:
        kw["shared"] = ctx.boolean(raw["shared"], path + ("shared",))
    link = base.with_overrides(**kw) if base else LinkParams(**kw)
    if link.jitter_ms > link.delay_ms:
        raise ctx.fail(path, f"jitter_ms ({link.jitter_ms}) must not exceed delay_ms ({link.delay_ms}): delays cannot be negative")
    return link


#: Airtime fields by type (the rest are numbers > 0).
_AIR_INTS = {"cw_min", "max_stage", "mac_header_bytes", "ack_bytes", "payload_bytes", "aifsn", "service_bits",
             "tail_bits", "ampdu_frames", "block_ack_bytes", "max_ampdu_bytes"}
_AIR_ZERO_OK = {"max_stage", "prop_delay_us", "symbol_us", "service_bits", "tail_bits", "signal_extension_us",
                "max_ampdu_bytes", "max_ppdu_us", "aifsn"}
_AIR_NULLABLE = {"difs_us", "aifsn", "ack_phy_header_us", "ack_symbol_us"}
_AIR_LISTS = {"basic_rates_mbit", "mcs_rates_mbit", "mcs_min_rssi_dbm"}
#: A BlockAck's bitmap covers 64 MPDUs (802.11-2016 9.3.1.9.3, compressed BlockAck).
MAX_AMPDU_FRAMES = 64
#: Upper bounds that keep the model finite and fast on any input (CWmax = W * 2^m stays a
#: plausible window; a PSDU is at most an A-MSDU's 11454 B in 802.11ac, 65535 B bounds both).
_AIR_MAX = {"max_stage": 16, "cw_min": 1 << 16, "payload_bytes": 65535, "mac_header_bytes": 1024,
            "ack_bytes": 1024, "block_ack_bytes": 1024, "aifsn": 15, "service_bits": 64, "tail_bits": 64}
_AIR_MAX_LIST = 32


def _airtime(ctx: _Ctx, raw: Any, path: tuple, base: Optional[AirtimeParams]) -> AirtimeParams:
    required = set() if base else {"phy_rate_mbit", "basic_rate_mbit", "slot_us", "sifs_us", "cw_min", "max_stage", "phy_header_us"}
    raw = ctx.mapping(raw, path, AIRTIME_KEYS, required)
    kw: dict[str, Any] = {}
    for key, value in raw.items():
        kpath = path + (key,)
        if value is None and key in _AIR_NULLABLE:
            kw[key] = None
        elif key == "block_ack":
            kw[key] = ctx.boolean(value, kpath)
        elif key in _AIR_LISTS:
            if not isinstance(value, list) or not value or len(value) > _AIR_MAX_LIST:
                raise ctx.fail(kpath, f"must be a list of 1-{_AIR_MAX_LIST} numbers (got {value!r})")
            sign = key != "mcs_min_rssi_dbm"
            kw[key] = tuple(float(ctx.number(v, kpath + (i,), minimum=0 if sign else -200, exclusive_min=sign,
                                             maximum=100000 if sign else 0))
                            for i, v in enumerate(value))
        else:
            integer = key in _AIR_INTS
            minimum = 0 if key in _AIR_ZERO_OK else 1 if integer else 0
            kw[key] = ctx.number(value, kpath, minimum=minimum, maximum=_AIR_MAX.get(key, 1e9),
                                 exclusive_min=not integer and key not in _AIR_ZERO_OK, integer=integer)
    # AIFS from aifsn, or an explicit difs_us: whichever the user sets wins over the base's other one.
    if "difs_us" in kw and kw["difs_us"] is not None and "aifsn" not in kw:
        kw["aifsn"] = None
    if "aifsn" in kw and kw["aifsn"] is not None and "difs_us" not in kw:
        kw["difs_us"] = None
    air = replace(base, **kw) if base else AirtimeParams(**{"difs_us": None, **kw})
    if air.difs_us is None and air.aifsn is None:
        raise ctx.fail(path, "needs 'difs_us' (legacy DCF) or 'aifsn' (EDCA: AIFS = sifs_us + aifsn * slot_us)")
    if air.difs_us is not None and air.aifsn is not None:
        raise ctx.fail(path, "give 'difs_us' or 'aifsn', not both")
    if air.mcs_min_rssi_dbm and len(air.mcs_min_rssi_dbm) != len(air.mcs_rates_mbit):
        raise ctx.fail(path + ("mcs_min_rssi_dbm",), f"needs one entry per MCS of mcs_rates_mbit "
                       f"({len(air.mcs_rates_mbit)}), got {len(air.mcs_min_rssi_dbm)}")
    _check_aggregation(ctx, air, path)
    return air


def _check_aggregation(ctx: _Ctx, air: AirtimeParams, path: tuple) -> None:
    if air.ampdu_frames > MAX_AMPDU_FRAMES:
        raise ctx.fail(path, f"ampdu_frames must be <= {MAX_AMPDU_FRAMES} (a BlockAck acknowledges at most "
                             f"{MAX_AMPDU_FRAMES} MPDUs), got {air.ampdu_frames}")
    if air.ampdu_frames > 1 and not air.block_ack:
        raise ctx.fail(path, f"an A-MPDU of {air.ampdu_frames} MPDUs is acknowledged by a BlockAck: "
                             "set block_ack: true (or ampdu_frames: 1)")


def _aggregation(ctx: _Ctx, raw: Any, path: tuple, air: AirtimeParams) -> AirtimeParams:
    """``aggregation: off`` / ``false`` or ``{ampdu_frames: K, block_ack: true}`` over the profile's."""
    if raw is False or raw == "off":
        return replace(air, ampdu_frames=1, block_ack=False)
    raw = ctx.mapping(raw, path, {"ampdu_frames", "block_ack"})
    kw: dict[str, Any] = {}
    if "ampdu_frames" in raw:
        kw["ampdu_frames"] = int(ctx.number(raw["ampdu_frames"], path + ("ampdu_frames",), minimum=1, integer=True))
        if kw["ampdu_frames"] > 1 and "block_ack" not in raw:
            kw["block_ack"] = True
    if "block_ack" in raw:
        kw["block_ack"] = ctx.boolean(raw["block_ack"], path + ("block_ack",))
    out = replace(air, **kw)
    _check_aggregation(ctx, out, path)
    return out


def _segment(ctx: _Ctx, raw: dict, path: tuple, kind: str, allowed_kinds: tuple[str, ...]) -> Segment:
    """Resolve profile + overrides for one (homogeneous) segment."""
    profile_name = raw.get("profile")
    base_link = base_air = None
    if profile_name is not None:
        if profile_name not in profile_names():
            raise ctx.fail(path + ("profile",), f"unknown profile {profile_name!r}; known profiles: {', '.join(profile_names())}")
        prof = get_profile(profile_name)
        if kind is None:
            kind = prof.kind
        elif prof.kind != kind:
            raise ctx.fail(path + ("profile",), f"profile {profile_name!r} is for kind {prof.kind!r}, not {kind!r}")
        base_link, base_air = prof.link, prof.airtime
    if kind is None:
        raise ctx.fail(path, "missing required key 'kind' (or a 'profile' that implies it)")
    ctx.choice(kind, path + ("kind",), allowed_kinds)
    if base_link is None and "link" not in raw:
        raise ctx.fail(path, "needs a 'profile' or a 'link' with at least rate_mbit")
    link = _link(ctx, raw["link"], path + ("link",), base_link) if "link" in raw else base_link
    airtime = base_air
    if "airtime" in raw:
        if kind != "wifi":
            raise ctx.fail(path + ("airtime",), f"'airtime' applies to wifi only, not {kind!r}")
        airtime = _airtime(ctx, raw["airtime"], path + ("airtime",), base_air)
    if "aggregation" in raw:
        if kind != "wifi" or airtime is None:
            raise ctx.fail(path + ("aggregation",), f"'aggregation' applies to wifi with airtime parameters only, not {kind!r}")
        airtime = _aggregation(ctx, raw["aggregation"], path + ("aggregation",), airtime)
    if kind == "wifi":
        link = replace(link, shared=True) if "link" not in raw or "shared" not in raw["link"] else link
        if link.shared and airtime is None:
            raise ctx.fail(path, "a shared wifi medium needs 'airtime' parameters (or a wifi profile that has them)")
    share = 1.0
    if "share" in raw:
        share = float(ctx.number(raw["share"], path + ("share",), minimum=0, exclusive_min=True, maximum=1))
    return Segment(kind=kind, link=link, profile=profile_name, airtime=airtime, share=share)


def _ipv4_net(ctx: _Ctx, value: Any, path: tuple, example: str) -> str:
    """An IPv4 network that can carry unicast between nodes (not loopback, multicast...)."""
    if not isinstance(value, str):
        raise ctx.fail(path, f"must be an IPv4 network such as {example} (got {value!r})")
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ctx.fail(path, f"must be an IPv4 network such as {example} ({exc})") from None
    for bad, what in FORBIDDEN_NETS.items():
        if net.overlaps(ipaddress.IPv4Network(bad)):
            raise ctx.fail(path, f"{net} overlaps {what}, which cannot carry the testbed's traffic; "
                                 f"use a private range such as {example}")
    if net.prefixlen > 30:
        raise ctx.fail(path, f"{net} has no room for two hosts; use a prefix of /30 or shorter")
    return str(net)


def _network(ctx: _Ctx, raw: Any, path: tuple) -> Network:
    allowed = {"name", "kind", "profile", "link", "airtime", "aggregation", "subnet", "uplink_link", "mesh", "segments"}
    raw = ctx.mapping(raw, path, allowed, {"name"})
    name = ctx.name(raw["name"], path + ("name",))
    kind = raw.get("kind")
    if kind is not None:
        ctx.choice(kind, path + ("kind",), NETWORK_KINDS)
    subnet = None
    if "subnet" in raw:
        subnet = _ipv4_net(ctx, raw["subnet"], path + ("subnet",), "10.0.1.0/24")
    uplink_link = LinkParams(rate_mbit=1000.0, delay_ms=0.05)
    if "uplink_link" in raw:
        uplink_link = _link(ctx, raw["uplink_link"], path + ("uplink_link",), uplink_link)

    if kind == "hybrid":
        for key in ("profile", "link", "airtime", "aggregation"):
            if key in raw:
                raise ctx.fail(path + (key,), f"a hybrid network sets {key!r} per entry of 'segments', not at its top")
        segs_raw = raw.get("segments")
        if not isinstance(segs_raw, list) or len(segs_raw) < 2:
            raise ctx.fail(path + ("segments",), "a hybrid network needs a list 'segments' of at least 2 entries, e.g. [{profile: wifi-80211n-2.4ghz, share: 0.5}, {profile: gigabit-ethernet, share: 0.5}]")
        segments = []
        for i, sraw in enumerate(segs_raw):
            spath = path + ("segments", i)
            sraw = ctx.mapping(sraw, spath, {"kind", "profile", "link", "airtime", "aggregation", "share"}, {"share"})
            segments.append(_segment(ctx, sraw, spath, sraw.get("kind"), SEGMENT_KINDS))
        total = sum(s.share for s in segments)
        if abs(total - 1.0) > 1e-6:
            raise ctx.fail(path + ("segments",), f"the shares must add up to 1 (they add up to {total:g})")
        return Network(name=name, kind="hybrid", segments=tuple(segments), subnet=subnet, uplink_link=uplink_link)

    if "segments" in raw:
        raise ctx.fail(path + ("segments",), "'segments' is for kind: hybrid only")
    seg = _segment(ctx, raw, path, kind, tuple(k for k in NETWORK_KINDS if k != "hybrid"))
    kind = seg.kind
    layout, columns = "chain", 0
    if "mesh" in raw:
        if kind != "batman-mesh":
            raise ctx.fail(path + ("mesh",), f"'mesh' applies to batman-mesh only, not {kind!r}")
        mraw = ctx.mapping(raw["mesh"], path + ("mesh",), {"layout", "columns"})
        layout = ctx.choice(mraw.get("layout", "chain"), path + ("mesh", "layout"), MESH_LAYOUTS)
        if layout == "grid":
            if "columns" not in mraw:
                raise ctx.fail(path + ("mesh",), "a grid layout needs 'columns'")
            columns = int(ctx.number(mraw["columns"], path + ("mesh", "columns"), minimum=1, integer=True))
    return Network(name=name, kind=kind, segments=(seg,), subnet=subnet, uplink_link=uplink_link,
                   mesh_layout=layout, mesh_columns=columns)


def _group(ctx: _Ctx, raw: Any, path: tuple, networks: dict[str, Network]) -> NodeGroup:
    raw = ctx.mapping(raw, path, {"group", "role", "count", "resources", "networks", "private"}, {"group", "role"})
    name = ctx.name(raw["group"], path + ("group",))
    role = ctx.choice(raw["role"], path + ("role",), ROLES)
    count = int(ctx.number(raw.get("count", 1), path + ("count",), minimum=1, maximum=4096, integer=True))
    res = ROLE_DEFAULTS[role]
    if "resources" in raw:
        rpath = path + ("resources",)
        rraw = ctx.mapping(raw["resources"], rpath, {"cpu", "memory_mib", "speed"})
        kw = {}
        if "cpu" in rraw:
            kw["cpu"] = float(ctx.number(rraw["cpu"], rpath + ("cpu",), minimum=0, exclusive_min=True,
                                         maximum=MAX_CPU))
        if "memory_mib" in rraw:
            kw["memory_mib"] = int(ctx.number(rraw["memory_mib"], rpath + ("memory_mib",), minimum=16,
                                              maximum=MAX_MEMORY_MIB, integer=True))
        if "speed" in rraw:
            kw["speed"] = float(ctx.number(rraw["speed"], rpath + ("speed",), minimum=0, exclusive_min=True,
                                           maximum=MAX_SPEED))
        res = replace(res, **kw)
        if res.host_cpu < MIN_HOST_CPU - 1e-12:
            raise ctx.fail(rpath, f"cpu x speed = {res.host_cpu:g} host cores is below the smallest CPU quota the "
                                  f"kernel enforces ({MIN_HOST_CPU:g} cores: 1 ms per 100 ms period); it would "
                                  "silently become more: raise cpu or speed")
    attachments = []
    listed: set[str] = set()
    nets = raw.get("networks", [])
    if not isinstance(nets, list):
        raise ctx.fail(path + ("networks",), "must be a list of network names or {name, uplink} mappings")
    for i, entry in enumerate(nets):
        epath = path + ("networks", i)
        uplink = False
        rates: dict[str, tuple] = {}
        if isinstance(entry, dict):
            ctx.mapping(entry, epath, {"name", "uplink", "mcs", "rssi_dbm"}, {"name"})
            uplink = ctx.boolean(entry.get("uplink", False), epath + ("uplink",))
            rates = {k: entry[k] for k in ("mcs", "rssi_dbm") if k in entry}
            base_path, entry = epath, entry["name"]
            epath = epath + ("name",)
        if not isinstance(entry, str) or entry not in networks:
            raise ctx.fail(epath, f"unknown network {entry!r}; defined networks: {', '.join(networks) or '(none)'}")
        if rates:
            rates = _station_rates(ctx, rates, base_path, networks[entry], count, uplink)
        if uplink and networks[entry].kind == "batman-mesh":
            raise ctx.fail(epath, "a batman-mesh has no access point: 'uplink' is not allowed there")
        if entry in listed:
            raise ctx.fail(epath, f"network {entry!r} is listed twice for this group")
        listed.add(entry)
        attachments.append(Attachment(network=entry, uplink=uplink, **rates))
    private = _private(ctx, raw["private"], path + ("private",)) if "private" in raw else None
    return NodeGroup(name=name, role=role, count=count, resources=res, attachments=tuple(attachments),
                     private=private)


def _private(ctx: _Ctx, raw: Any, path: tuple) -> Optional[PrivateDirs]:
    """``private: true`` | ``false`` | ``{dirs: [/var/lib, ...], scratch_mib: 256}``."""
    if isinstance(raw, bool):
        return PrivateDirs() if raw else None
    raw = ctx.mapping(raw, path, {"dirs", "scratch_mib"})
    kw: dict[str, Any] = {}
    if "dirs" in raw:
        dirs = raw["dirs"]
        if not isinstance(dirs, list) or not dirs:
            raise ctx.fail(path + ("dirs",), "must be a non-empty list of absolute directories")
        for i, d in enumerate(dirs):
            if (not isinstance(d, str) or not d.startswith("/") or d.rstrip("/") in ("", "/proc", "/sys", "/dev")
                    or ".." in d.split("/") or d.rstrip("/") in PRIVATE_FORBIDDEN):
                raise ctx.fail(path + ("dirs", i), f"must be an absolute directory other than /, /proc, /sys, /dev, "
                                                   f"{', '.join(PRIVATE_FORBIDDEN)} (got {d!r})")
        kw["dirs"] = tuple(d.rstrip("/") for d in dirs)
    if "scratch_mib" in raw:
        kw["scratch_mib"] = int(ctx.number(raw["scratch_mib"], path + ("scratch_mib",), minimum=0, maximum=65536,
                                           integer=True))
    return PrivateDirs(**kw)


#: Directories a node may not make private: edgelab itself runs from them.
PRIVATE_FORBIDDEN = ("/usr", "/etc", "/var/tmp", "/tmp", "/bin", "/lib", "/sbin", "/home", "/root", "/work")


def _station_rates(ctx: _Ctx, raw: dict, path: tuple, net: Network, count: int, uplink: bool) -> dict[str, tuple]:
    """``mcs`` / ``rssi_dbm`` of a group on a wifi network: one value, or one per node of the group."""
    if len(raw) > 1:
        raise ctx.fail(path, "give 'mcs' or 'rssi_dbm', not both")
    key, value = next(iter(raw.items()))
    kpath = path + (key,)
    if uplink:
        raise ctx.fail(kpath, f"'{key}' is a Wi-Fi station's rate; an uplink is wired to the access point")
    air = net.segments[0].airtime if net.kind == "wifi" else None
    if air is None:
        raise ctx.fail(kpath, f"'{key}' applies to a wifi network with airtime parameters; {net.name!r} is {net.kind!r}")
    table = air.mcs_rates_mbit if key == "mcs" else air.mcs_min_rssi_dbm
    if not table:
        raise ctx.fail(kpath, f"the airtime parameters of {net.name!r} have no "
                              f"{'mcs_rates_mbit' if key == 'mcs' else 'mcs_min_rssi_dbm'} table to look '{key}' up in")
    values = value if isinstance(value, list) else [value]
    if len(values) not in (1, count):
        raise ctx.fail(kpath, f"give one {key} for the whole group or one per node ({count}), not {len(values)}")
    out = []
    for i, v in enumerate(values):
        vpath = kpath + (i,) if isinstance(value, list) else kpath
        if key == "mcs":
            out.append(int(ctx.number(v, vpath, minimum=0, maximum=len(table) - 1, integer=True)))
        else:
            out.append(float(ctx.number(v, vpath, minimum=-200, maximum=0)))
    return {key: tuple(out)}


def _host(ctx: _Ctx, raw: Any, path: tuple) -> Host:
    raw = ctx.mapping(raw, path, {"name", "cpu", "memory_mib"}, {"name", "cpu", "memory_mib"})
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise ctx.fail(path + ("name",), "must be a non-empty string")
    return Host(
        name=raw["name"],
        cpu=float(ctx.number(raw["cpu"], path + ("cpu",), minimum=0, exclusive_min=True)),
        memory_mib=int(ctx.number(raw["memory_mib"], path + ("memory_mib",), minimum=1, integer=True)),
    )


def parse_topology(text: str, file: str = "<string>") -> Topology:
    """Parse and validate YAML text into a :class:`Topology`."""
    data, lines = load_with_lines(text, file)
    ctx = _Ctx(file, lines)
    raw = ctx.mapping(data if data is not None else {}, (), {"name", "networks", "nodes", "hosts", "address_base"},
                      {"name", "networks", "nodes"})
    name = ctx.name(raw["name"], ("name",), TESTBED_NAME_RE)
    if not isinstance(raw["networks"], list) or not raw["networks"]:
        raise ctx.fail(("networks",), "must be a non-empty list of networks")
    if len(raw["networks"]) > MAX_NETWORKS:
        raise ctx.fail(("networks",), f"{len(raw['networks'])} networks: at most {MAX_NETWORKS} are supported")
    networks: dict[str, Network] = {}
    for i, nraw in enumerate(raw["networks"]):
        net = _network(ctx, nraw, ("networks", i))
        if net.name in networks:
            raise ctx.fail(("networks", i, "name"), f"network name {net.name!r} is used twice")
        networks[net.name] = net
    if not isinstance(raw["nodes"], list) or not raw["nodes"]:
        raise ctx.fail(("nodes",), "must be a non-empty list of node groups")
    groups: list[NodeGroup] = []
    names: set[str] = set()
    total = 0
    for i, graw in enumerate(raw["nodes"]):
        group = _group(ctx, graw, ("nodes", i), networks)
        if group.name in names:  # a set: a file of many groups is checked in linear time
            raise ctx.fail(("nodes", i, "group"), f"group name {group.name!r} is used twice")
        names.add(group.name)
        total += group.count
        if total > MAX_NODES:
            raise ctx.fail(("nodes", i), f"more than {MAX_NODES} nodes in all; the local backend and the "
                                         "address plan are sized for that")
        groups.append(group)
    attached = {a.network for g in groups for a in g.attachments}
    for i, net in enumerate(networks.values()):
        if net.name not in attached:
            raise ctx.fail(("networks", i), f"network {net.name!r} has no members: list it under some group's 'networks'")
    hosts: tuple[Host, ...] = ()
    if "hosts" in raw:
        if not isinstance(raw["hosts"], list) or not raw["hosts"]:
            raise ctx.fail(("hosts",), "must be a non-empty list of {name, cpu, memory_mib}")
        hosts = tuple(_host(ctx, h, ("hosts", i)) for i, h in enumerate(raw["hosts"]))
    base = "10.77.0.0/16"
    if "address_base" in raw:
        base = _ipv4_net(ctx, raw["address_base"], ("address_base",), "10.77.0.0/16")
    return Topology(name=name, groups=tuple(groups), networks=tuple(networks.values()), hosts=hosts,
                    address_base=base, source=file)


def load_topology(path: str | Path) -> Topology:
    """Load a topology file; errors name this file. Never reads more than the size limit."""
    p = Path(path)
    try:
        with open(p, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise TopologyError(f"cannot read topology file: {exc.strerror}", file=str(p)) from None
    return parse_topology(decode(data, str(p)), file=str(p))
