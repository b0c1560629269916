"""Inventory: which machine runs each plan node, and how to reach it.

Every non-local backend ends up with one of these: the ``ssh`` backend reads
it from the researcher's YAML file, ``nxc`` builds it from the deployment file
nixos-compose writes, ``g5k`` from the job's nodes. The transport
(:mod:`edgelab.remote.transport`) only ever sees an :class:`Inventory`.

File format (unknown keys are errors; errors give ``file:line: key.path``)::

    defaults:                    # optional; any device key, applied to every device
      user: root
      identity_file: ~/.ssh/edgelab_ed25519
    known_hosts: ./known_hosts   # optional; default: ssh's own (~/.ssh/known_hosts)
    devices:
      - node: server-1           # the plan node this machine runs
        host: 192.168.1.10       # how ssh reaches it (name or address)
        port: 22
        address: 192.168.1.10    # data-plane address other nodes use (default: host)
        interface: wlan0         # its network interface (default: the plan's name)
        interfaces: {eth0: end0} # plan interface name -> device interface name
        python: python3          # interpreter with edgelab's node-side deps
        sudo: false              # run privileged commands with `sudo -n`
        cgroup: /                # cgroup whose CPU time is the device's (default: root = whole device)
        power: {url: http://192.168.1.50}   # a real Tasmota plug (or {mqtt: tasmota/plug1})

A device is named after its plan node unless it has ``name:``. A device runs
exactly one plan node today; :attr:`Inventory.placement` maps plan nodes to
device names so that a later version can put several plan nodes on one device
without changing the transport's interface.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..errors import BackendError, TopologyError
from ..yamlsrc import fmt_path, load_with_lines

DEVICE_KEYS = {"name", "node", "host", "port", "user", "identity_file", "address", "interface", "interfaces",
               "python", "sudo", "cgroup", "power", "connect_timeout_s", "workdir", "addresses"}
TOP_KEYS = {"defaults", "devices", "known_hosts", "strict_host_keys"}
NODE_RE = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")
HOST_RE = re.compile(r"^[A-Za-z0-9_.:%\[\]-]{1,253}$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_.-]{0,31}$")


@dataclass(frozen=True)
class PowerPlug:
    """A real power meter in front of a device: a Tasmota HTTP URL or an MQTT topic."""

    url: Optional[str] = None
    mqtt: Optional[str] = None

    def describe(self) -> str:
        return self.url or f"mqtt:{self.mqtt}"


@dataclass(frozen=True)
class Device:
    """One machine reachable over SSH that runs a plan node.

    ``cgroup`` is a path in the device's cgroup hierarchy (``/`` = the whole
    device): its CPU time is the node's CPU time, read by the transport and by
    the modelled power plug running on the device.
    """

    name: str
    node: str
    host: str
    port: int = 22
    user: str = "root"
    identity_file: Optional[str] = None
    address: Optional[str] = None
    addresses: Mapping[str, str] = field(default_factory=dict)  # plan network -> data-plane address
    interface: Optional[str] = None
    interfaces: Mapping[str, str] = field(default_factory=dict)
    python: str = "python3"
    sudo: bool = False
    cgroup: str = "/"
    power: Optional[PowerPlug] = None
    connect_timeout_s: float = 5.0
    workdir: str = "/tmp/edgelab"

    @property
    def data_address(self) -> str:
        return self.address or self.host

    def ifname(self, plan_ifname: str) -> str:
        """The device's name for the plan's interface ``plan_ifname``."""
        return self.interfaces.get(plan_ifname) or self.interface or plan_ifname

    def where(self) -> str:
        """``node (user@host:port)``: how errors name a device."""
        return f"{self.node} ({self.user}@{self.host}:{self.port})"


@dataclass(frozen=True)
class Inventory:
    """Devices by name, and which device runs each plan node."""

    devices: Mapping[str, Device]
    known_hosts: Optional[str] = None
    strict_host_keys: str = "accept-new"   # ssh StrictHostKeyChecking: yes | accept-new | no
    source: str = "<inventory>"

    @property
    def placement(self) -> dict[str, str]:
        """plan node -> device name."""
        return {d.node: d.name for d in self.devices.values()}

    def device(self, node: str) -> Device:
        name = self.placement.get(node)
        if name is None:
            raise BackendError(f"{self.source}: no device runs plan node {node!r}; "
                               f"devices run: {', '.join(sorted(self.placement)) or '(none)'}")
        return self.devices[name]

    def check_covers(self, nodes: Sequence[str]) -> None:
        """Every plan node has a device (the inventory may list more, which stay unused)."""
        missing = [n for n in nodes if n not in self.placement]
        if missing:
            raise BackendError(f"{self.source}: no device for plan node(s) {', '.join(missing)}; add a "
                               f"`- node: {missing[0]}` entry with its host (devices run: "
                               f"{', '.join(sorted(self.placement)) or 'nothing'})")

    def subset(self, nodes: Sequence[str]) -> "Inventory":
        """Only the devices that run ``nodes`` (for a plan smaller than the inventory)."""
        self.check_covers(nodes)
        keep = {self.placement[n] for n in nodes}
        return replace(self, devices={k: v for k, v in self.devices.items() if k in keep})

    def to_dict(self) -> dict:
        """The inventory as plain data (for the manifest; no secrets: key paths, not keys)."""
        out = {}
        for name, d in self.devices.items():
            out[name] = {"node": d.node, "host": d.host, "port": d.port, "user": d.user, "address": d.data_address,
                         "sudo": d.sudo, "cgroup": d.cgroup, "power": d.power.describe() if d.power else None}
        return out


# ----------------------------------------------------------------- loading
class _Ctx:
    def __init__(self, file: str, lines: dict):
        self.file, self.lines = file, lines

    def fail(self, path: tuple, message: str) -> TopologyError:
        probe: Optional[tuple] = path
        line = None
        while probe is not None:
            if probe in self.lines:
                line = self.lines[probe]
                break
            probe = probe[:-1] if probe else None
        return TopologyError(message, file=self.file, path=fmt_path(path), line=line)

    def mapping(self, value: Any, path: tuple, allowed: set[str]) -> dict:
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a mapping with keys among {', '.join(sorted(allowed))} "
                                  f"(got {type(value).__name__})")
        for key in value:
            if key not in allowed:
                raise self.fail(path + (key,), f"unknown key {key!r}; allowed keys: {', '.join(sorted(allowed))}")
        return value

    def string(self, value: Any, path: tuple, regex: Optional[re.Pattern] = None, what: str = "a string") -> str:
        if not isinstance(value, str) or not value or (regex is not None and not regex.match(value)):
            raise self.fail(path, f"must be {what} (got {value!r})")
        return value


def _device(ctx: _Ctx, raw: Any, path: tuple, defaults: dict, base_dir: Path) -> Device:
    entry = ctx.mapping(raw, path, DEVICE_KEYS)
    merged = {**defaults, **entry}
    where = {k: (path + (k,) if k in entry else ("defaults", k)) for k in merged}
    for key in ("node", "host"):
        if key not in merged:
            raise ctx.fail(path, f"missing required key {key!r}")
    node = ctx.string(merged["node"], where["node"], NODE_RE, "a plan node name such as phone-1")
    host = ctx.string(merged["host"], where["host"], HOST_RE, "a host name or IP address")
    kw: dict[str, Any] = {"node": node, "host": host, "name": node}
    if "name" in merged:
        kw["name"] = ctx.string(merged["name"], where["name"], NODE_RE, "a device name (lowercase, digits, '-')")
    if "port" in merged:
        port = merged["port"]
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ctx.fail(where["port"], f"must be a TCP port 1-65535 (got {port!r})")
        kw["port"] = port
    if "user" in merged:
        kw["user"] = ctx.string(merged["user"], where["user"], USER_RE, "a user name")
    if "identity_file" in merged:
        p = Path(os.path.expanduser(ctx.string(merged["identity_file"], where["identity_file"])))
        p = p if p.is_absolute() else base_dir / p
        if not p.is_file():
            raise ctx.fail(where["identity_file"], f"identity file {p} does not exist (a private SSH key; "
                                                   "create one with ssh-keygen -t ed25519)")
        kw["identity_file"] = str(p)
    for key in ("address", "python", "workdir"):
        if key in merged:
            kw[key] = ctx.string(merged[key], where[key])
    if "address" in kw:
        ctx.string(kw["address"], where["address"], HOST_RE, "an IP address or host name")
    if "interface" in merged:
        kw["interface"] = ctx.string(merged["interface"], where["interface"], IFNAME_RE, "an interface name")
    for key, regex, what in (("interfaces", IFNAME_RE, "an interface name"), ("addresses", HOST_RE, "an address")):
        if key in merged:
            m = merged[key]
            if not isinstance(m, dict):
                raise ctx.fail(where[key], "must map plan names to device names, e.g. {wlan0: wlan0}")
            for k, v in m.items():
                ctx.string(k, where[key] + (k,), what="a plan name")
                ctx.string(v, where[key] + (k,), regex, what)
            kw[key] = dict(m)
    if "sudo" in merged:
        if not isinstance(merged["sudo"], bool):
            raise ctx.fail(where["sudo"], f"must be true or false (got {merged['sudo']!r})")
        kw["sudo"] = merged["sudo"]
    if "cgroup" in merged:
        cg = ctx.string(merged["cgroup"], where["cgroup"], what="an absolute cgroup path such as / or /edgelab")
        if not cg.startswith("/") or ".." in cg.split("/"):
            raise ctx.fail(where["cgroup"], f"must be an absolute cgroup path without '..' (got {cg!r})")
        kw["cgroup"] = cg
    if "connect_timeout_s" in merged:
        t = merged["connect_timeout_s"]
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 120:
            raise ctx.fail(where["connect_timeout_s"], f"must be seconds in (0, 120] (got {t!r})")
        kw["connect_timeout_s"] = float(t)
    if "power" in merged and merged["power"] is not None:
        pw = ctx.mapping(merged["power"], where["power"], {"url", "mqtt"})
        if len(pw) != 1:
            raise ctx.fail(where["power"], "give exactly one of url: (Tasmota HTTP) or mqtt: (topic)")
        if "url" in pw:
            url = ctx.string(pw["url"], where["power"] + ("url",))
            if not re.match(r"^https?://[^\s/]+", url):
                raise ctx.fail(where["power"] + ("url",), f"must be an http(s) URL such as http://192.168.1.50 "
                                                          f"(got {url!r})")
            kw["power"] = PowerPlug(url=url.rstrip("/"))
        else:
            kw["power"] = PowerPlug(mqtt=ctx.string(pw["mqtt"], where["power"] + ("mqtt",),
                                                    re.compile(r"^[^#+\s]{1,200}$"), "an MQTT topic without wildcards"))
    return Device(**kw)


def parse_inventory(text: str, file: str = "<inventory>", base_dir: Optional[Path] = None) -> Inventory:
    """Validate an inventory document; every error names ``file:line: key.path`` and the fix."""
    data, lines = load_with_lines(text, file)
    ctx = _Ctx(file, lines)
    base = base_dir or Path(file).resolve().parent
    top = ctx.mapping(data, (), TOP_KEYS)
    defaults = ctx.mapping(top.get("defaults") or {}, ("defaults",), DEVICE_KEYS - {"node", "name", "host"})
    raw_devices = top.get("devices")
    if not isinstance(raw_devices, list) or not raw_devices:
        raise ctx.fail(("devices",) if "devices" in top else (), "needs `devices:`, a non-empty list of "
                                                                 "{node: <plan node>, host: <address>}")
    devices: dict[str, Device] = {}
    nodes: dict[str, int] = {}
    for i, raw in enumerate(raw_devices):
        d = _device(ctx, raw, ("devices", i), defaults, base)
        if d.node in nodes:
            raise ctx.fail(("devices", i, "node"), f"plan node {d.node!r} is already on devices[{nodes[d.node]}]")
        if d.name in devices:
            raise ctx.fail(("devices", i, "name"), f"device name {d.name!r} is used twice")
        devices[d.name] = d
        nodes[d.node] = i
    known = top.get("known_hosts")
    if known is not None:
        known = ctx.string(known, ("known_hosts",))
        kp = Path(os.path.expanduser(known))
        known = str(kp if kp.is_absolute() else base / kp)
    strict = top.get("strict_host_keys", "accept-new")
    if strict not in ("yes", "accept-new", "no"):
        raise ctx.fail(("strict_host_keys",), f"must be yes, accept-new or no (got {strict!r})")
    return Inventory(devices=devices, known_hosts=known, strict_host_keys=strict, source=file)


def load_inventory(path: str | os.PathLike) -> Inventory:
    """Read and validate an inventory file (see the module docstring for the format)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise BackendError(f"cannot read inventory {p}: {exc.strerror or exc}") from None
    return parse_inventory(text, str(p), p.resolve().parent)


def inventory_yaml(devices: Sequence[Device], *, known_hosts: Optional[str] = None) -> str:
    """An inventory file for ``devices`` (what ``scripts/ssh-devices`` and the nxc backend write)."""
    import yaml

    out: dict[str, Any] = {}
    if known_hosts:
        out["known_hosts"] = known_hosts
        out["strict_host_keys"] = "yes"
    items = []
    for d in devices:
        e: dict[str, Any] = {"node": d.node, "host": d.host, "port": d.port, "user": d.user}
        if d.name != d.node:
            e["name"] = d.name
        for key in ("identity_file", "address", "interface"):
            if getattr(d, key):
                e[key] = getattr(d, key)
        for key in ("interfaces", "addresses"):
            if getattr(d, key):
                e[key] = dict(getattr(d, key))
        e.update(python=d.python, sudo=d.sudo, cgroup=d.cgroup, workdir=d.workdir)
        if d.power:
            e["power"] = {"url": d.power.url} if d.power.url else {"mqtt": d.power.mqtt}
        items.append(e)
    out["devices"] = items
    return yaml.safe_dump(out, sort_keys=False)
