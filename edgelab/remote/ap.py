"""The access point as a node on remote backends: every station's traffic crosses it.

On the local backend the Wi-Fi cell is an access-point namespace bridging the
stations' veths, and ``LinkEmulator.apply_shared_medium`` charges every frame
to one airtime budget (Bianchi's capacity for the cell's station count) with
one HTB class per station. On remote backends the stations are separate
machines (lab devices, nxc VMs, Grid'5000 nodes) on one wired L2 network, so
the cell needs a real hop:

* **the AP node** is the device of the network's infrastructure element
  (``wlan-ap`` for network ``wlan``) when the inventory has one, else the
  network's uplink node (the wired server behind the AP, as on a home router);
* **routing**: each station reaches every other member through the AP
  (``ip route replace <peer>/32 via <ap>``), the uplink nodes reach the
  stations through it, and the AP forwards (``net.ipv4.ip_forward=1``) without
  sending ICMP redirects that would let hosts bypass it;
* **airtime**: ``python -m edgelab.linkemu shared`` on the AP's interface —
  the same ``apply_shared_medium`` code, in its ``station_only`` form, so only
  frames a station sends or receives are charged (once per direction).

Planning is pure (:func:`ap_plan`); :func:`apply_cells` / :func:`clear_cells`
drive it through the one :class:`~edgelab.remote.transport.Transport`, for
every remote backend (:class:`~edgelab.remote.testbed.RemoteTestbed`: ssh,
nxc, g5k).

**Crash safety.** Before anything is changed, every device involved gets an
undo script, ``<workdir>/ap-undo-<tag>.sh`` (:func:`undo_path`; ``<tag>`` is the
node's link tag, unique per testbed and node): the routes to delete, the
AP's previous sysctl values, the ``linkemu unshared`` of its budget. A normal
teardown runs the same commands and removes the file; ``edgelab down
--inventory FILE NAME`` after a crashed controller runs whatever undo
scripts that testbed left (:func:`undo_crashed_cmd`), so routes, sysctls,
IFBs and filters go even though the controller's memory is lost.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..errors import BackendError
from ..plan import Plan


@dataclass(frozen=True)
class Cell:
    """One Wi-Fi segment on a remote backend (see the module docstring)."""

    network: str
    segment: int
    ap: str                      # plan node (or infra element) whose device carries the budget
    ap_is_node: bool             # False: a dedicated AP device (the infra element)
    stations: tuple[str, ...]
    uplinks: tuple[str, ...]
    capacity_mbit: float

    @property
    def name(self) -> str:
        """Cell name on the AP (its IFB is ``<tag>-<name>``)."""
        return f"air{self.segment}"


def ap_plan(plan: Plan, has_device: Callable[[str], bool]) -> list[Cell]:
    """Cells to emulate: one per shared Wi-Fi segment with an airtime capacity.

    ``has_device(name)``: whether the inventory places ``name`` on a device
    (used to pick a dedicated AP device for the network's infra element).
    """
    cells = []
    for net in plan.networks:
        for seg in net.segments:
            cap = seg.capacity_mbit
            if not cap:
                continue
            if net.infra and has_device(net.infra):
                ap, is_node = net.infra, False
            elif net.uplinks:
                ap, is_node = net.uplinks[0], True
            else:
                raise BackendError(
                    f"network {net.name!r}: a Wi-Fi cell needs an access point on this backend — add a "
                    f"device for `node: {net.infra}` to the inventory, or an uplink node to the network")
            cells.append(Cell(net.name, seg.index, ap, is_node, tuple(seg.stations),
                              tuple(u for u in net.uplinks if u != ap), float(cap)))
    return cells


@dataclass
class CellState:
    """What :func:`apply_cells` changed, so :func:`clear_cells` undoes exactly that."""

    routes: dict[str, list[str]] = field(default_factory=dict)      # node -> "dest/32 dev X"
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)  # ap -> {key: previous value}
    shared: dict[str, list[tuple[str, str, str]]] = field(default_factory=dict)  # ap -> [(dev, name, tag)]
    undo_files: dict[str, str] = field(default_factory=dict)    # node -> its undo script on the device


AP_SYSCTLS = ("net.ipv4.ip_forward", "net.ipv4.conf.all.send_redirects")
#: What the AP sets, by the key's last word: it forwards, and sends no ICMP redirect that would
#: let a station reach its peer directly (all *and* the interface: the kernel takes the OR).
AP_VALUES = {"ip_forward": "1", "send_redirects": "0"}


def ap_sysctls(dev: str) -> tuple[str, ...]:
    """The sysctls an AP on interface ``dev`` changes (read before, restored after)."""
    return AP_SYSCTLS + (f"net.ipv4.conf.{dev}.send_redirects",)


def cells_for(plan: Plan, placed: Callable[[str], bool], enabled: bool = True) -> list[Cell]:
    """The cells a remote backend emulates (none when ``enabled`` is false: real radios)."""
    return ap_plan(plan, placed) if enabled else []


def undo_path(workdir: str, tag: str) -> str:
    """Where a device keeps the undo script of what the cells changed on it (see the module docstring)."""
    return f"{workdir.rstrip('/')}/ap-undo-{tag}.sh"


def undo_crashed_cmd(workdir: str, tag: str) -> str:
    """Shell run by a crash-time ``down``: the testbed's undo script on this device, then gone."""
    f = shlex.quote(undo_path(workdir, tag))
    return f"if [ -f {f} ]; then sh {f} >/dev/null 2>&1; rm -f {f}; fi"


def _guard(address: str) -> list[str]:
    """First line of an undo script: do nothing unless this network namespace holds ``address``
    (none when the device is known by a host name only)."""
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        return []
    return [f"ip -o -4 addr show | grep -qF {shlex.quote(' ' + address + '/')} || exit 0"]


def _write_file_cmd(path: str, lines: Sequence[str]) -> str:
    """Shell that writes ``lines`` to ``path`` atomically (a crash mid-write leaves the old file or none)."""
    body = "".join(line + "\n" for line in lines)
    q = shlex.quote(path)
    tmp = shlex.quote(path + ".tmp")
    return (f"mkdir -p {shlex.quote(path.rsplit('/', 1)[0] or '/')} && printf %s {shlex.quote(body)} > {tmp} "
            f"&& mv -f {tmp} {q}")


def route_cmds(cell: Cell, address: Callable[[str], str], ifname: Callable[[str], str]) -> dict[str, list[str]]:
    """node -> ``ip route replace`` argv strings steering the cell's traffic through the AP."""
    gw = address(cell.ap)
    out: dict[str, list[str]] = {}
    members = list(cell.stations) + list(cell.uplinks) + ([cell.ap] if cell.ap_is_node else [])
    for st in cell.stations:
        for peer in members:
            if peer in (st, cell.ap):
                continue
            out.setdefault(st, []).append(f"{address(peer)}/32 via {gw} dev {ifname(st)}")
    for up in cell.uplinks:
        for st in cell.stations:
            out.setdefault(up, []).append(f"{address(st)}/32 via {gw} dev {ifname(up)}")
    return out


def shared_argv(python: str, dev: str, cell: Cell, macs: Sequence[str], tag: str) -> list[str]:
    argv = [python, "-m", "edgelab.linkemu", "shared", "--dev", dev, "--name", cell.name,
            "--capacity-mbit", f"{cell.capacity_mbit:.6g}", "--tag", tag]
    for m in macs:
        argv += ["--station-mac", m]
    return argv


def apply_cells(transport, cells: Sequence[Cell], tag_of: Callable[[str], str], state: CellState,
                dev: Callable[[str], str], *, timeout: float = 60.0) -> None:
    """Routes, forwarding and the airtime budget of every cell, all devices at once.

    ``state`` is filled and every device's undo script written *before* any
    change is made, so a failure half-way (or a crashed controller) is undone
    by :func:`clear_cells` (or :func:`undo_crashed_cmd`) like a complete
    bring-up. ``dev(node)``: the device interface that carries the cell's
    network on ``node``; ``tag_of(node)``: its link tag (names its IFB and undo script).
    """
    if not cells:
        return
    addr = lambda n: transport.device(n).data_address  # noqa: E731
    # 1. station MACs (the AP classifies the stations' frames by them)
    stations = sorted({s for c in cells for s in c.stations})
    # (``ip link``, not /sys/class/net: a device that is a network namespace sees the sysfs of
    # whoever mounted it)
    res = transport.run_many({s: f"ip -o link show dev {shlex.quote(dev(s))}" for s in stations},
                             timeout=timeout, check=True)
    _raise_errors(res, "reading the stations' MAC addresses")
    mac = {}
    for s, r in res.items():
        words = r.stdout.split()
        if "link/ether" not in words:
            raise BackendError(f"station {transport.device(s).where()}: interface {dev(s)} has no Ethernet "
                               f"address (`ip link` said: {r.stdout.strip()[:200]})")
        mac[s] = words[words.index("link/ether") + 1]
    # 2. the AP's previous sysctl values, for the restore
    aps = sorted({c.ap for c in cells})
    keys = {a: ap_sysctls(dev(a)) for a in aps}
    res = transport.run_many({a: "sysctl -n " + " ".join(map(shlex.quote, keys[a])) for a in aps},
                             timeout=timeout, check=True)
    _raise_errors(res, "reading the access points' sysctls")
    for a, r in res.items():
        state.sysctls[a] = dict(zip(keys[a], r.stdout.split()))
    # 3. everything that will change, recorded (here and on each device) before it changes
    cmds: dict[str, list[str]] = {}
    for c in cells:
        for node, routes in route_cmds(c, addr, dev).items():
            cmds.setdefault(node, []).extend(routes)
            state.routes.setdefault(node, []).extend(routes)
    per_ap: dict[str, list[str]] = {}
    for c in cells:
        tag = tag_of(c.ap)
        py = transport.device(c.ap).python
        per_ap.setdefault(c.ap, []).append(shlex.join(shared_argv(py, dev(c.ap), c, [mac[s] for s in c.stations], tag)))
        state.shared.setdefault(c.ap, []).append((dev(c.ap), c.name, tag))
    undo = undo_lines(transport, state)
    writes = {}
    for node, lines in undo.items():
        path = undo_path(transport.device(node).workdir, tag_of(node))
        state.undo_files[node] = path
        # Only where the change was made: a workdir may be seen from another network namespace
        # (lab devices and test guests share this machine's file system), where it must do nothing.
        writes[node] = _write_file_cmd(path, _guard(addr(node)) + lines)
    _raise_errors(transport.run_many(writes, timeout=timeout, check=True, sudo=True),
                  "recording the access points' undo scripts on the devices")
    # 4. the AP forwards, without redirects
    set_cmds = {a: "sysctl -qw " + " ".join(shlex.quote(f"{k}={AP_VALUES[k.split('.')[-1]]}") for k in keys[a])
                for a in aps}
    _raise_errors(transport.run_many(set_cmds, timeout=timeout, check=True, sudo=True), "enabling forwarding")
    # 5. routes through the AP
    if cmds:
        res = transport.run_many({n: " && ".join(f"ip route replace {r}" for r in rs) for n, rs in cmds.items()},
                                 timeout=timeout, check=True, sudo=True)
        _raise_errors(res, "routing the cells through their access points")
    # 6. the airtime budget on each AP
    res = transport.run_many({a: " && ".join(v) for a, v in per_ap.items()}, timeout=timeout, check=True, sudo=True)
    _raise_errors(res, "installing the airtime budget on the access points")


def undo_lines(transport, state: CellState) -> dict[str, list[str]]:
    """node -> shell lines undoing what ``state`` records (each harmless if its change never happened)."""
    cmds: dict[str, list[str]] = {}
    for ap, items in state.shared.items():
        py = shlex.quote(transport.device(ap).python)
        for dev, name, tag in items:
            cmds.setdefault(ap, []).append(f"{py} -m edgelab.linkemu unshared --dev {shlex.quote(dev)} "
                                           f"--name {shlex.quote(name)} --tag {shlex.quote(tag)} >/dev/null 2>&1")
    for node, routes in state.routes.items():
        cmds.setdefault(node, []).extend(f"ip route del {r} 2>/dev/null" for r in routes)
    for ap, prev in state.sysctls.items():
        if prev:
            cmds.setdefault(ap, []).append("sysctl -qw " + " ".join(shlex.quote(f"{k}={v}") for k, v in prev.items()))
    return cmds


def clear_cells(transport, state: CellState, *, timeout: float = 30.0) -> list[str]:
    """Undo :func:`apply_cells` (airtime, routes, sysctls, undo scripts); returns problems, raises nothing."""
    cmds = undo_lines(transport, state)
    for node, path in state.undo_files.items():
        cmds.setdefault(node, []).append(f"rm -f {shlex.quote(path)}")
    state.shared, state.routes, state.sysctls, state.undo_files = {}, {}, {}, {}
    if not cmds:
        return []
    res = transport.run_many({n: "; ".join(c) + "; true" for n, c in cmds.items()}, timeout=timeout,
                             check=True, sudo=True)
    return [str(r) for r in res.values() if isinstance(r, Exception)]


def _raise_errors(results: dict, what: str) -> None:
    errors = [str(r) for r in results.values() if isinstance(r, Exception)]
    if errors:
        raise BackendError(f"{what} failed:\n" + "\n".join(errors))


def describe(cells: Sequence[Cell], address: Optional[Callable[[str], str]] = None) -> list[str]:
    """Dry-run lines: each cell's AP, its budget and who routes through it."""
    out = []
    for c in cells:
        where = f" ({address(c.ap)})" if address else ""
        kind = "uplink node" if c.ap_is_node else "dedicated AP device"
        out.append(f"  Wi-Fi cell {c.network}/{c.segment}: access point {c.ap}{where} [{kind}], airtime budget "
                   f"{c.capacity_mbit:.1f} Mbit/s (Bianchi, {len(c.stations)} stations), one HTB class per station; "
                   f"stations {', '.join(c.stations[:6])}{'…' if len(c.stations) > 6 else ''} routed through it")
    return out


def shaping_lines(cells: Sequence[Cell], address: Callable[[str], str], ifname: Callable[[str], str],
                  tag_of: Callable[[str], str], python: str = "python3") -> list[str]:
    """Dry-run lines with the exact commands :func:`apply_cells` runs for ``cells``: the AP's
    sysctls and airtime budget (station MACs are read on the stations at bring-up, shown as
    ``<MAC of node>``), each station's HTB class and the routes through the AP."""
    from ..linkemu.commands import station_budgets

    out = describe(cells, address)
    for c in cells:
        sets = " ".join(f"{k}={AP_VALUES[k.split('.')[-1]]}" for k in ap_sysctls(ifname(c.ap)))
        out.append(f"  on {c.ap}: sysctl -qw {sets}")
        argv = shared_argv(python, ifname(c.ap), c, [f"<MAC of {s}>" for s in c.stations], tag_of(c.ap))
        out.append(f"  on {c.ap}: {shlex.join(argv)}")
        default, per = station_budgets(c.capacity_mbit, len(c.stations))
        out.append(f"    HTB a:1 {c.capacity_mbit:.1f} Mbit/s on the AP's IFB; default class {default:.1f} Mbit/s; "
                   "per station: " + ", ".join(f"{s} {g:.2f} Mbit/s (ceil {ceil:.1f})"
                                               for s, (g, ceil) in zip(c.stations, per)))
        for node, routes in route_cmds(c, address, ifname).items():
            for r in routes:
                out.append(f"  on {node}: ip route replace {r}")
    return out
