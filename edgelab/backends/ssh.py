"""The ``ssh`` backend: plan nodes on real devices (phones, boards) listed in an inventory file.

Bring-up, in order, each step on all devices at once:

1. **preflight** — one SSH command per device checks Python >= 3.9, ``ip`` and
   ``tc`` (iproute2), ``iperf3``, root or password-less sudo and cgroup CPU
   accounting; anything missing stops here, *before anything is applied*, with
   one line per device naming what is missing and the install line for
   postmarketOS (apk), Debian / Raspberry Pi OS (apt) and NixOS;
2. **install** — this edgelab's package is copied to each device (once per
   content digest) and used by every command;
3. **link emulation** — ``python3 -m edgelab.linkemu apply`` on each device's
   interface (rolled back on every device if one fails), then each Wi-Fi
   cell's access point as a node (:mod:`edgelab.remote.ap`: stations routed
   through it, the airtime budget on its interface; ``airtime=false`` for
   real phones whose real radio is the medium);
4. **facts** — kernel, CPU model, cores, memory, OS per device, for the manifest.

Teardown stops every service started on the devices and clears the link
emulation. The result is a :class:`~edgelab.remote.testbed.RemoteTestbed`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Optional, Sequence, Union

from ..errors import BackendError
from ..plan import Plan
from ..remote import ap as apmod
from ..remote.inventory import Device, Inventory, load_inventory
from ..remote.testbed import RemoteTestbed, link_plan, link_tag, linkemu_argv
from ..remote.transport import RemoteError, Transport, cpu_read_script
from .base import Backend

MIN_PYTHON = (3, 9)

#: What to install for each missing requirement: (apk, apt, NixOS attribute).
INSTALL = {
    "python": ("python3", "python3", "python3"),
    "ip": ("iproute2", "iproute2", "iproute2"),
    "tc": ("iproute2-tc", "iproute2", "iproute2"),
    "iperf3": ("iperf3", "iperf3", "iperf3"),
    "root": ("sudo", "sudo", "sudo"),
}


def preflight_script(d: Device) -> str:
    """POSIX sh printing ``key=value`` lines about what the node side of edgelab needs."""
    import shlex

    py = shlex.quote(d.python)
    priv = "id -u" if d.user == "root" or not d.sudo else "sudo -n id -u"
    return (f"echo python=$({py} -c 'import sys;print(\"%d.%d\" % sys.version_info[:2])' 2>/dev/null); "
            "for c in ip tc iperf3; do echo $c=$(command -v $c); done; "
            f"echo uid=$({priv} 2>/dev/null); "
            f"echo cpu=$( ( {cpu_read_script(d.cgroup)} ) 2>/dev/null | cut -d' ' -f1); "
            "[ -r /etc/os-release ] && . /etc/os-release && echo os_id=$ID; true")


def missing_from(facts: dict) -> list[str]:
    """Requirement names missing on a device, from its preflight output."""
    out = []
    try:
        major, minor = (int(x) for x in facts.get("python", "").split("."))
        if (major, minor) < MIN_PYTHON:
            out.append("python")
    except ValueError:
        out.append("python")
    out += [c for c in ("ip", "tc", "iperf3") if not facts.get(c)]
    if facts.get("uid") != "0":
        out.append("root")
    if facts.get("cpu") not in ("v1", "v2"):
        out.append("cpu-accounting")
    return out


def install_lines(missing: Sequence[str]) -> dict[str, str]:
    """Install commands per distribution for ``missing`` (cpu-accounting is a kernel matter)."""
    pk = [INSTALL[m] for m in missing if m in INSTALL]
    if not pk:
        return {}
    uniq = lambda xs: list(dict.fromkeys(xs))  # noqa: E731
    return {
        "postmarketOS": "apk add " + " ".join(uniq(p[0] for p in pk)),
        "Debian/Raspberry Pi OS": "apt install " + " ".join(uniq(p[1] for p in pk)),
        "NixOS": "environment.systemPackages = with pkgs; [ " + " ".join(uniq(p[2] for p in pk)) + " ];",
    }


WHY = {
    "python": f"Python >= {MIN_PYTHON[0]}.{MIN_PYTHON[1]} (set `python:` in the inventory if it is elsewhere)",
    "ip": "ip (iproute2)", "tc": "tc (iproute2)", "iperf3": "iperf3",
    "root": "root or password-less sudo (user: root, or sudo: true with NOPASSWD)",
    "cpu-accounting": "cgroup CPU accounting (kernel CONFIG_CGROUP_CPUACCT or the cgroup v2 cpu controller)",
}


@dataclass
class PreflightRow:
    node: str
    device: Device
    missing: list[str]
    error: Optional[str] = None   # the device could not be checked at all (ssh failed)
    os_id: str = ""

    def line(self) -> str:
        """One line naming the device and what to do."""
        if self.error:
            return self.error
        what = "; ".join(WHY[m] for m in self.missing)
        lines = install_lines(self.missing)
        pick = {"postmarketos": "postmarketOS", "alpine": "postmarketOS", "debian": "Debian/Raspberry Pi OS",
                "raspbian": "Debian/Raspberry Pi OS", "ubuntu": "Debian/Raspberry Pi OS", "nixos": "NixOS"}
        distro = pick.get(self.os_id)
        fixes = {distro: lines[distro]} if distro in lines else lines
        fix = " | ".join(f"{k}: {v}" for k, v in fixes.items())
        return f"node {self.device.where()}: missing {what}" + (f" — install: {fix}" if fix else "")


def preflight(transport: Transport, nodes: Sequence[str], *, timeout: float = 12.0) -> list[PreflightRow]:
    """Check every node's device at once; rows for all of them (``missing`` empty = ready)."""
    cmds = {n: preflight_script(transport.device(n)) for n in nodes}
    res = transport.run_many(cmds, timeout=timeout, check=False)
    rows = []
    for n, r in res.items():
        d = transport.device(n)
        if isinstance(r, RemoteError):
            rows.append(PreflightRow(n, d, ["ssh"], error=str(r)))
            continue
        facts = {}
        for line in r.stdout.splitlines():
            k, sep, v = line.partition("=")
            if sep:
                facts[k.strip()] = v.strip()
        rows.append(PreflightRow(n, d, missing_from(facts), os_id=facts.get("os_id", "")))
    return rows


def preflight_table(rows: Sequence[PreflightRow]) -> str:
    """The whole picture, one row per device (``edgelab`` prints it before failing)."""
    checks = ["ssh", "python", "ip", "tc", "iperf3", "root", "cpu-accounting"]
    out = [f"{'plan node':14s} {'device':28s} " + " ".join(f"{c:>7s}" for c in checks)]
    for r in rows:
        if r.error:
            marks = ["FAIL"] + ["?"] * (len(checks) - 1)
        else:
            marks = ["ok"] + ["MISSING" if c in r.missing else "ok" for c in checks[1:]]
        out.append(f"{r.node:14s} {r.device.user + '@' + r.device.host:28s} " + " ".join(f"{m:>7s}" for m in marks))
    return "\n".join(out)


def _routed(plan: Plan) -> str:
    """Why the plan cannot run on devices as they are wired, or "" (multi-hop routes)."""
    routed = [n.name for n in plan.nodes if n.routes]
    if not routed:
        return ""
    return (f"plan {plan.topology.name!r} forwards traffic through relay nodes ({', '.join(routed[:3])} have "
            "multi-hop routes: a batman-mesh); the ssh backend does not re-route real devices' networks: "
            "run mesh points on local or nxc")


class SshBackend(Backend):
    """Plan nodes on the devices of an inventory file (see the module docstring).

    Options (``--backend-opt``): ``inventory`` (required), ``engine``
    (auto|netem|fallback), ``linkemu`` (false: leave the real links alone),
    ``install`` (false: the devices already have edgelab on their Python path),
    ``airtime`` (false: no access point as a node, e.g. phones on a real Wi-Fi).
    """

    name = "ssh"

    def __init__(self, inventory: Union[str, os.PathLike, Inventory, None] = None, engine: str = "auto",
                 linkemu: bool = True, install: bool = True, workers: int = 32, airtime: bool = True) -> None:
        if inventory is None:
            raise BackendError("the ssh backend needs an inventory: --backend ssh --inventory FILE "
                               "(docs/backends.md shows one; scripts/ssh-devices writes one for local test devices)")
        self.inventory_path = None if isinstance(inventory, Inventory) else str(inventory)
        self.inventory = inventory if isinstance(inventory, Inventory) else load_inventory(inventory)
        self.engine, self.linkemu, self.install, self.workers = engine, linkemu, install, workers
        self.airtime = airtime if isinstance(airtime, bool) else str(airtime).lower() not in ("0", "false", "no")

    def cells(self, plan: Plan) -> list[apmod.Cell]:
        """The Wi-Fi cells whose access point this backend makes a node (none with airtime off)."""
        return apmod.cells_for(plan, lambda n: n in self.inventory.placement, self.airtime and self.linkemu)

    def nodes_and_aps(self, plan: Plan) -> list[str]:
        """Plan nodes plus the dedicated access-point devices (infra elements) the cells use."""
        nodes = [n.name for n in plan.nodes]
        return nodes + sorted({c.ap for c in self.cells(plan)} - set(nodes))

    def dry_run(self, plan: Plan) -> str:
        inv = self.inventory.subset(self.nodes_and_aps(plan))
        tr = Transport(inv)
        try:
            lines = [f"ssh backend: {len(plan.nodes)} nodes on devices of {self.inventory.source}"]
            if _routed(plan):
                lines.append(f"  would refuse: {_routed(plan)}")
            for n in plan.nodes:
                lines.append(f"  {n.name:14s} -> {inv.device(n.name).where()}")
            if self.linkemu:
                for node, links in link_plan(plan, tr, plan.topology.name).items():
                    for dev, link in links:
                        argv = linkemu_argv('apply', dev, link_tag(plan.topology.name, node), link, self.engine,
                                            keep_tcp_port=inv.device(node).port)
                        lines.append(f"  on {node}: {' '.join(argv)}")
            def ifname(n: str) -> str:   # as RemoteTestbed.data_ifname
                d = inv.device(n)
                itfs = plan.node(n).interfaces if n in {x.name for x in plan.nodes} else ()
                return d.ifname(itfs[0].ifname if itfs else (d.interface or "eth0"))

            lines += apmod.shaping_lines(self.cells(plan), lambda n: inv.device(n).data_address, ifname,
                                         lambda n: link_tag(plan.topology.name, n), "python3")
            return "\n".join(lines) + "\n"
        finally:
            import shutil

            shutil.rmtree(tr._ctl, ignore_errors=True)

    def up(self, plan: Plan) -> RemoteTestbed:
        if _routed(plan):
            raise BackendError(_routed(plan))
        nodes = self.nodes_and_aps(plan)
        inv = self.inventory.subset(nodes)
        tr = Transport(inv, workers=self.workers)
        tb = RemoteTestbed(plan, tr, backend="ssh", engine=self.engine,
                           extra_facts={"inventory": self.inventory_path or self.inventory.source},
                           airtime=self.airtime and self.linkemu)
        t0 = time.monotonic()
        try:
            rows = preflight(tr, nodes)
            bad = [r for r in rows if r.missing]
            t1 = time.monotonic()
            if bad:
                raise BackendError(f"{len(bad)} of {len(rows)} devices are not ready (nothing was applied):\n"
                                   + "\n".join(r.line() for r in bad) + "\n" + preflight_table(rows))
            if self.install:
                tr.install_edgelab(nodes)
            t2 = time.monotonic()
            if self.linkemu:
                tb.apply_links()
                tb.apply_cells()
            tb.collect_facts()
            tb.timings.update(preflight=t1 - t0, install=t2 - t1, up=time.monotonic() - t0)
            return tb
        except BaseException:
            try:
                tb.down()
            except BackendError:
                pass
            raise

    def down(self, testbed_name: str) -> None:
        """Clear what a crashed run of ``testbed_name`` left on the inventory's devices:
        its link emulation (tags are derived from the names) and the processes edgelab
        started there (every pid recorded under each device's ``workdir``).

        A testbed folded over the inventory's hosts (:mod:`edgelab.remote.folded`) is found by
        this controller's record of it and each host's share removed; without a record, the
        devices are also swept for shares of that name (each checked on its host)."""
        from ..remote.folded import FoldedBackend
        from ..remote.foldedstate import FoldedRecord

        folded = FoldedBackend(self.inventory)
        if FoldedRecord(testbed_name).exists():
            self.report = folded.down(testbed_name)
            return
        sweep_error: Optional[BackendError] = None
        try:   # shares of a folded run whose record is gone (checked on each host)
            self.report = folded.down(testbed_name)
        except BackendError as exc:
            sweep_error = exc
        tr = Transport(self.inventory, workers=self.workers)
        try:
            cmds = {}
            for d in self.inventory.devices.values():
                tag = link_tag(testbed_name, d.node)
                devs = sorted({d.interface or "eth0", *d.interfaces.values()})
                import shlex

                py = shlex.quote(d.python)
                pp = shlex.quote(f"{d.workdir}/edgelab-")
                pids = shlex.quote(f"{d.workdir}/pids")
                # processes a crashed controller started (no ssh pty, so nothing hung them up)
                kill = (f"for f in {pids}/*; do [ -f \"$f\" ] || continue; p=$(cat \"$f\"); "
                        "kill -9 -- -$p 2>/dev/null || kill -9 $p 2>/dev/null; rm -f \"$f\"; done; ")
                cmds[d.node] = (kill + "for p in " + pp + "*; do [ -d \"$p\" ] && export PYTHONPATH=$p; done; "
                                + "; ".join(f"{py} -m edgelab.linkemu clear --dev {shlex.quote(x)} --tag {tag} "
                                            f"--engine {self.engine} >/dev/null 2>&1" for x in devs)
                                # what the Wi-Fi cells changed here (AP budget, routes, sysctls): the undo
                                # script apply_cells wrote on this device before changing anything
                                + "; " + apmod.undo_crashed_cmd(d.workdir, tag)
                                # an AP budget of a run older than undo scripts (by its tag: this testbed's only)
                                + "; " + "; ".join(f"{py} -m edgelab.linkemu unshared --dev {shlex.quote(x)} --name air0 "
                                                   f"--tag {tag} >/dev/null 2>&1" for x in devs)
                                + "; true")
            res = tr.run_many(cmds, timeout=30, check=False, sudo=True)
            errors = [str(r) for r in res.values() if isinstance(r, RemoteError)]
            if sweep_error is not None:
                errors.append(str(sweep_error))
            if errors:
                raise BackendError("; ".join(errors))
        finally:
            tr.close()
