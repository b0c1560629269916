"""SSH devices on this machine: N network namespaces, each a real OpenSSH server.

This is how the ``ssh`` backend is proven without phones on the desk. Each
"device" is

* its own network namespace ``elsd-<lab>-d<i>`` with ``eth0`` on a bridge (in
  the lab's own namespace ``elsd-<lab>-sw``) that this machine reaches
  through one veth ``elsd<lab>`` (address ``.1`` of a /24 not routed here);
* a real ``/usr/sbin/sshd`` (Debian openssh-server) listening on the device's
  address with its own host key, accepting one key generated for the lab;
* its own cgroup ``/elsd-<lab>/d<i>`` (CPU quota optional) that sshd and so
  every session runs in, so the device's CPU accounting is real.

``<lab>`` is a random 4-hex-digit id: every kernel object, file and address
of a lab is named by it and recorded in its state file *before* it is
created, and ``down`` removes exactly those — never anything another
session made. Faults a real device may have can be built in per device:
``no_tc`` (tc absent from the session's PATH) and ``no_cpu_accounting``
(sshd sees an empty ``/sys/fs/cgroup``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from ..errors import BackendError
from .inventory import Device, inventory_yaml

LAB_ROOT = Path("/run/edgelab-sshlab")
SSHD = "/usr/sbin/sshd"
PREFIX = "elsd-"
SHELL_RCS = ("/root/.bashrc", "/root/.profile", "/root/.bash_profile", "/etc/bash.bashrc")
BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")


@dataclass(frozen=True)
class DeviceSpec:
    """One lab device: its plan node, CPU quota (cores, None = unlimited) and built-in faults."""

    node: str
    cpu: Optional[float] = None
    no_tc: bool = False
    no_cpu_accounting: bool = False


@dataclass
class Lab:
    """A running lab (see the module docstring); ``inventory`` is the file to give the ssh backend."""

    lab_id: str
    dir: Path
    subnet: str
    devices: list[Device] = field(default_factory=list)

    @property
    def inventory(self) -> Path:
        return self.dir / "inventory.yaml"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"


def _sh(argv: Sequence[str], **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise BackendError(f"{' '.join(argv)} failed: {r.stderr.strip() or r.stdout.strip()}")
    return r


def _free_subnet(rng: random.Random, lab_root: Path, lab_id: str) -> ipaddress.IPv4Network:
    """A /24 in 10.200-254.x that overlaps no route or address of this machine, claimed
    atomically (``<lab_root>/net-10.x.y`` holds the lab id) so that two labs started at the
    same moment never pick the same one."""
    used = []
    out = subprocess.run(["ip", "-4", "-o", "route", "show", "table", "all"], capture_output=True, text=True).stdout
    out += subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for word in out.split():
        try:
            net = ipaddress.ip_network(word, strict=False)
        except ValueError:
            continue
        if net.prefixlen > 0:
            used.append(net)
    for _ in range(200):
        cand = ipaddress.ip_network(f"10.{rng.randint(200, 254)}.{rng.randint(0, 255)}.0/24")
        if not any(cand.overlaps(u) for u in used):
            claim = lab_root / f"net-{cand.network_address}"
            try:
                claim.mkdir()
            except FileExistsError:
                continue
            (claim / "lab").write_text(lab_id)
            return cand
    raise BackendError("no free 10.x.y.0/24 for the SSH lab (every candidate overlaps a route here)")


def _save(lab: Lab, state: dict) -> None:
    tmp = lab.state_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=1))
    tmp.replace(lab.state_file)


def up(specs: Sequence[DeviceSpec], *, lab_root: Path = LAB_ROOT, python: Optional[str] = None,
       lab_id: Optional[str] = None) -> Lab:
    """Create the lab; on any failure, remove what was created and raise."""
    if os.geteuid() != 0:
        raise BackendError("ssh-devices needs root (network namespaces, cgroups, sshd)")
    if not os.access(SSHD, os.X_OK):
        raise BackendError(f"{SSHD} is missing: apt-get install openssh-server (scripts/bootstrap does)")
    if not specs or len(specs) > 200:
        raise BackendError(f"a lab has 1-200 devices (got {len(specs)})")
    rng = random.Random()
    for _ in range(50):
        lid = lab_id or f"{rng.randrange(16 ** 4):04x}"
        d = lab_root / lid
        try:
            lab_root.mkdir(parents=True, exist_ok=True)
            d.mkdir(mode=0o700)   # the claim on the id: atomic
            break
        except FileNotFoundError:
            continue   # another lab's down removed the empty root in between: make it again
        except FileExistsError:
            if lab_id:
                raise BackendError(f"lab {lab_id} exists ({d}); `scripts/ssh-devices down {lab_id}` first")
    else:
        raise BackendError("no free lab id")
    try:
        subnet = _free_subnet(rng, lab_root, lid)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise
    lab = Lab(lid, d, str(subnet))
    state = {"lab": lid, "subnet": str(subnet), "netns": [], "cgroups": [], "sshd": [], "pid": os.getpid()}
    _save(lab, state)
    try:
        _build(lab, state, specs, subnet, python or sys.executable)
    except BaseException:
        try:
            down(lid, lab_root=lab_root)
        except BackendError:
            pass
        raise
    return lab


def _build(lab: Lab, state: dict, specs: Sequence[DeviceSpec], subnet: ipaddress.IPv4Network, python: str) -> None:
    from ..backends.local import cgroups

    hosts = list(subnet.hosts())
    gw = hosts[0]
    sw = f"{PREFIX}{lab.lab_id}-sw"
    up_if = f"elsd{lab.lab_id}"
    key = lab.dir / "id_ed25519"
    _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"edgelab-sshlab-{lab.lab_id}", "-f", str(key)])
    (lab.dir / "empty").write_text("")
    (lab.dir / "authorized_keys").write_text(Path(f"{key}.pub").read_text())
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory

    state["netns"].append(sw)
    _save(lab, state)
    _sh(["ip", "netns", "add", sw])
    _sh(["ip", "-n", sw, "link", "add", "br0", "type", "bridge"])
    _sh(["ip", "-n", sw, "link", "set", "br0", "up"])
    _sh(["ip", "-n", sw, "link", "set", "lo", "up"])
    state["root_veth"] = up_if
    _save(lab, state)
    _sh(["ip", "link", "add", up_if, "type", "veth", "peer", "name", "uplink", "netns", sw])
    _sh(["ip", "-n", sw, "link", "set", "dev", "uplink", "master", "br0", "up"])
    _sh(["ip", "addr", "add", f"{gw}/{subnet.prefixlen}", "dev", up_if])
    _sh(["ip", "link", "set", up_if, "up"])

    layout = cgroups.detect_layout()
    state["cgroup_roots"] = layout.roots
    known_hosts = []
    for i, spec in enumerate(specs, start=1):
        ns = f"{PREFIX}{lab.lab_id}-d{i}"
        addr = hosts[9 + i] if 9 + i < len(hosts) else None
        if addr is None:
            raise BackendError("too many devices for one /24")
        ddir = lab.dir / f"d{i}"
        ddir.mkdir()
        state["netns"].append(ns)
        _save(lab, state)
        _sh(["ip", "netns", "add", ns])
        _sh(["ip", "-n", sw, "link", "add", f"d{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        _sh(["ip", "-n", sw, "link", "set", f"d{i}", "master", "br0", "up"])
        _sh(["ip", "-n", ns, "addr", "add", f"{addr}/{subnet.prefixlen}", "dev", "eth0"])
        _sh(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _sh(["ip", "-n", ns, "link", "set", "lo", "up"])
        # The device's own cgroup (sshd and its sessions) has no limits; its child "node" is what
        # experiments run in (the transport moves them there): the device's CPU quota and accounting.
        rel = f"{PREFIX}{lab.lab_id}/d{i}"
        node_rel = f"{rel}/node"
        state["cgroups"] += [node_rel, rel]
        _save(lab, state)
        cgroups.create(layout, rel, 1024.0, 1 << 20)
        _unlimit(layout, rel)
        cgroups.create(layout, node_rel, spec.cpu if spec.cpu else 1024.0, 1 << 20)
        if spec.cpu is None:
            _unlimit(layout, node_rel)
        hostkey = ddir / "ssh_host_ed25519_key"
        _sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{spec.node}@sshlab-{lab.lab_id}",
             "-f", str(hostkey)])
        known_hosts.append(f"{addr} {Path(f'{hostkey}.pub').read_text().split(' ')[0]} "
                           f"{Path(f'{hostkey}.pub').read_text().split(' ')[1]}")
        env_line = ""
        if spec.no_tc:
            bindir = ddir / "bin"
            bindir.mkdir()
            for b in BIN_DIRS:
                if not os.path.isdir(b):
                    continue
                for name in os.listdir(b):
                    if name != "tc" and not (bindir / name).exists():
                        (bindir / name).symlink_to(os.path.join(b, name))
            env_line = f"SetEnv PATH={bindir}\n"
        cfg = ddir / "sshd_config"
        cfg.write_text(
            f"ListenAddress {addr}\nPort 22\nHostKey {hostkey}\nPidFile {ddir}/sshd.pid\n"
            f"AuthorizedKeysFile {lab.dir}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "MaxSessions 200\nMaxStartups 200:30:400\nUseDNS no\nSubsystem sftp internal-sftp\n"
            f"AcceptEnv LANG\n{env_line}")
        # sshd gets a private mount namespace: a device is a fresh machine, so this machine's root
        # shell start-up files (here: a pyenv init costing 0.4 s per command) are hidden from it.
        mounts = [f"mount --bind {lab.dir}/empty {rc}" for rc in SHELL_RCS if os.path.isfile(rc)]
        if spec.no_cpu_accounting:
            # A device whose kernel has no cgroup CPU accounting: an empty /sys/fs/cgroup.
            mounts.append("mount -t tmpfs -o size=64k none /sys/fs/cgroup")
        argv = ["unshare", "--mount", "--propagation", "slave", "sh", "-c",
                " && ".join(mounts + ['exec "$@"']), "sh", SSHD, "-f", str(cfg), "-E", str(ddir / "sshd.log")]
        procs = cgroups.procs_files(layout, rel)
        r = subprocess.run(argv, preexec_fn=_enter(procs, f"/run/netns/{ns}"), capture_output=True, text=True)
        if r.returncode != 0:
            raise BackendError(f"sshd of device {spec.node} did not start: {r.stderr.strip()}")
        pid = _wait_pidfile(ddir / "sshd.pid")
        state["sshd"].append({"pid": pid, "cfg": str(cfg)})
        _save(lab, state)
        lab.devices.append(Device(name=spec.node, node=spec.node, host=str(addr), port=22, user="root",
                                  identity_file=str(key), interface="eth0", python=python, sudo=False,
                                  cgroup=f"/{node_rel}", workdir=f"/tmp/elsd-{lab.lab_id}/d{i}",
                                  connect_timeout_s=5.0))
    (lab.dir / "known_hosts").write_text("\n".join(known_hosts) + "\n")
    lab.inventory.write_text(f"# scripts/ssh-devices lab {lab.lab_id}: {len(specs)} devices on {subnet}\n"
                             + inventory_yaml(lab.devices, known_hosts=str(lab.dir / "known_hosts")))
    _wait_listening(lab)


def _unlimit(layout, rel: str) -> None:
    """No CPU quota and no memory cap on cgroup ``rel`` (v1 or v2)."""
    for dd in layout.dirs(rel):
        for f, v in (("cpu.cfs_quota_us", "-1"), ("cpu.max", "max"), ("memory.max", "max"),
                     ("memory.limit_in_bytes", "-1")):
            if (dd / f).exists():
                (dd / f).write_text(v)


def _enter(procs_files: list[str], ns_path: str):
    """Join a device's cgroup and netns between fork and exec: the local backend's own pre-exec."""
    from ..backends.local.backend import _preexec

    return _preexec(procs_files, ns_path)


def _wait_pidfile(p: Path, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return int(p.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            time.sleep(0.01)
    raise BackendError(f"sshd did not write {p} within {timeout:g} s")


def _wait_listening(lab: Lab, timeout: float = 10.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    for d in lab.devices:
        while True:
            try:
                with socket.create_connection((d.host, 22), timeout=1.0) as s:
                    s.recv(16)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise BackendError(f"sshd of lab device {d.node} ({d.host}) does not answer") from None
                time.sleep(0.05)


def _sshd_alive(pid: int, cfg: str) -> bool:
    try:
        return cfg in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def down(lab_id: str, *, lab_root: Path = LAB_ROOT) -> None:
    """Remove every object lab ``lab_id`` recorded; idempotent; raises listing what stayed."""
    from ..backends.local import cgroups

    d = lab_root / lab_id
    sf = d / "state.json"
    if not sf.exists():
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            return
        raise BackendError(f"no SSH lab {lab_id!r} (no {sf})")
    state = json.loads(sf.read_text())
    problems = []
    for s in state.get("sshd", []):
        if _sshd_alive(s["pid"], s["cfg"]):
            try:
                os.kill(s["pid"], signal.SIGTERM)
            except ProcessLookupError:
                pass
    roots = state.get("cgroup_roots") or {}
    dirs = cgroups.all_dirs(roots, state.get("cgroups", []))
    try:
        cgroups.kill_all(dirs)   # sessions and what they started (services, delayers) on the devices
        cgroups.remove(dirs)
        for r in dict.fromkeys(roots.values()):
            cgroups.remove_if_empty(Path(r) / f"{PREFIX}{lab_id}")
    except BackendError as exc:
        problems.append(str(exc))
    for ns in reversed(state.get("netns", [])):
        if os.path.exists(f"/run/netns/{ns}"):
            r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
            if r.returncode != 0:
                problems.append(f"netns {ns}: {r.stderr.strip()}")
    veth = state.get("root_veth")
    if veth and os.path.exists(f"/sys/class/net/{veth}"):
        subprocess.run(["ip", "link", "del", veth], capture_output=True)
    shutil.rmtree(f"/tmp/elsd-{lab_id}", ignore_errors=True)
    if state.get("subnet"):
        claim = lab_root / f"net-{state['subnet'].split('/')[0]}"
        if (claim / "lab").exists() and (claim / "lab").read_text() == lab_id:
            shutil.rmtree(claim, ignore_errors=True)
    if problems:
        raise BackendError(f"lab {lab_id}: teardown left: " + "; ".join(problems) + f"; state kept in {sf}")
    shutil.rmtree(d, ignore_errors=True)
    try:
        lab_root.rmdir()   # the last lab down leaves no empty root behind (another lab's files keep it)
    except OSError:
        pass


def list_labs(lab_root: Path = LAB_ROOT) -> list[str]:
    try:
        return sorted(p.name for p in lab_root.iterdir() if (p / "state.json").exists() and not p.name.startswith("net-"))
    except FileNotFoundError:
        return []
