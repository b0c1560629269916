"""Per-node private directories: a mount namespace of its own for a node (Mininet's ``privateDirs``).

A node whose topology group says ``private: ...`` gets, besides its network
namespace and cgroup, a *persistent* mount namespace (bind-mounted on a file,
so it needs no process to stay alive) in which:

* each of its ``dirs`` (default ``/var/lib``, ``/var/log``, ``/run``) is an
  empty directory of the node's own, so daemons that keep state in fixed
  paths (glusterd's ``/var/lib/glusterd``, pid files in ``/run``) run once per node;
* ``/etc/hosts`` maps every plan node name to its first address, so the node
  can name its peers as NixOS-Compose machines do;
* with ``scratch_mib``, an ext4 file system on a loop file (``user_xattr``, which
  GlusterFS bricks and Ceph OSDs need) is mounted at the node's ``scratch`` path.

Everything lives under ``/var/tmp/edgelab/<testbed>`` (not under a directory a
node may make private), itself a private bind mount so that mounts made for one
node never propagate to the host or to another node. Every command a node runs
enters this namespace with ``setns`` (see :func:`open_fd` and the backend's
pre-exec hook); the namespace, its mounts (FUSE mounts of a client included)
and the loop devices go with :func:`teardown`, which needs only the state record.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ...errors import BackendError
from ...plan import Plan

PRIV_ROOT = "/var/tmp/edgelab"
CLONE_NEWNS = 0x00020000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True)
class NodePrivate:
    """What one node has: where its directories are on the host, its mount namespace."""

    node: str
    root: str                 # /var/tmp/edgelab/<testbed>/<node>
    dirs: tuple[str, ...]
    scratch_mib: int

    @property
    def mntns(self) -> str:
        return f"{self.root}/mntns"

    @property
    def hosts(self) -> str:
        return f"{self.root}/hosts"

    @property
    def scratch(self) -> Optional[str]:
        """Where the scratch disk is mounted, as the node sees it (None: no scratch disk)."""
        return f"{self.root}/scratch" if self.scratch_mib else None

    @property
    def image(self) -> str:
        return f"{self.root}/scratch.img"

    def host_dir(self, d: str) -> str:
        """The host directory behind the node's private ``d`` (e.g. its /var/lib)."""
        return f"{self.root}/dirs/{d.strip('/').replace('/', '_')}"


def base_dir(testbed: str) -> str:
    return f"{PRIV_ROOT}/{testbed}"


def planned(plan: Plan) -> dict[str, NodePrivate]:
    """Nodes of ``plan`` whose group asks for private directories (pure)."""
    out = {}
    for n in plan.nodes:
        p = plan.topology.group(n.group).private
        if p is not None:
            out[n.name] = NodePrivate(n.name, f"{base_dir(plan.topology.name)}/{n.name}", tuple(p.dirs), p.scratch_mib)
    return out


def hosts_file(plan: Plan) -> str:
    """``/etc/hosts`` of a private node: localhost, then each plan node's first address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for n in plan.nodes:
        if n.interfaces:
            lines.append(f"{n.interfaces[0].ip}\t{n.name}")
    return "\n".join(lines) + "\n"


def _is_mountpoint(path: str) -> bool:
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def _run(argv: list[str], what: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        raise BackendError(f"private directories: {what}: {' '.join(argv[:6])}... exited {p.returncode}: "
                           f"{p.stderr.strip()[-500:]}")


def state_record(plan: Plan) -> dict[str, Any]:
    """What the state file keeps so that :func:`teardown` works after a crash."""
    nodes = planned(plan)
    return {"base": base_dir(plan.topology.name),
            "nodes": {n: {"root": p.root, "image": p.image if p.scratch_mib else None} for n, p in nodes.items()}}


def setup(plan: Plan) -> dict[str, NodePrivate]:
    """Create every private node's mount namespace (record :func:`state_record` first)."""
    nodes = planned(plan)
    if not nodes:
        return {}
    base = base_dir(plan.topology.name)
    for attempt in range(5):
        try:
            os.makedirs(base, exist_ok=True)
            break
        except FileNotFoundError:   # another testbed's teardown removed PRIV_ROOT in between (rmdir below)
            if attempt == 4:
                raise
    if not _is_mountpoint(base):
        # unshare --mount=FILE needs FILE on a private mount; private also keeps
        # our mounts from propagating to the host.
        _run(["mount", "--bind", base, base], "bind the testbed's private root")
    _run(["mount", "--make-private", base], "make the private root private")
    hosts = hosts_file(plan)
    for p in nodes.values():
        os.makedirs(p.root, exist_ok=True)
        Path(p.hosts).write_text(hosts)
        Path(p.mntns).touch()
        script = ["set -e",
                  # Other nodes' namespace files (and this base's bind) must not be
                  # held by this namespace: drop the base's mount, the files stay.
                  f"umount -l {base}"]
        for d in p.dirs:
            hd = p.host_dir(d)
            os.makedirs(hd, exist_ok=True)
            if d == "/run":  # what programs expect to find there
                os.makedirs(f"{hd}/lock", exist_ok=True)
            script.append(f"mkdir -p {d} && mount --bind {hd} {d}")
        script.append(f"mount --bind {p.hosts} /etc/hosts")
        if p.scratch_mib:
            os.makedirs(p.scratch, exist_ok=True)
            with open(p.image, "wb") as f:
                f.truncate(p.scratch_mib << 20)
            _run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-O", "^has_journal", p.image],
                 f"format {p.node}'s scratch disk")
            script.append(f"mount -o loop,user_xattr {p.image} {p.scratch}")
        _run(["unshare", f"--mount={p.mntns}", "--propagation", "private", "sh", "-c", "\n".join(script)],
             f"mount namespace of node {p.node}")
    return nodes


def open_fd(p: NodePrivate) -> int:
    return os.open(p.mntns, os.O_RDONLY)


def setns_mount(fd: int) -> None:
    """Enter a mount namespace (in a freshly forked, single-threaded child)."""
    if _libc.setns(fd, CLONE_NEWNS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(mount) failed: {os.strerror(err)}")
    os.chdir("/")


def _loops_of(image: str) -> list[str]:
    p = subprocess.run(["losetup", "-j", image, "-O", "NAME", "-n"], capture_output=True, text=True)
    return [ln.strip() for ln in p.stdout.splitlines() if ln.strip()]


def teardown(record: Optional[dict[str, Any]]) -> list[str]:
    """Remove namespaces, mounts, loop devices and files (processes must be gone already)."""
    if not record:
        return []
    problems: list[str] = []
    base = record["base"]
    if not base.startswith(PRIV_ROOT + "/"):
        return [f"private directories: refusing to remove {base!r} (not under {PRIV_ROOT})"]
    for node, rec in record.get("nodes", {}).items():
        ns = f"{rec['root']}/mntns"
        if os.path.exists(ns) and _is_mountpoint(ns):
            p = subprocess.run(["umount", ns], capture_output=True, text=True)
            if p.returncode != 0:
                problems.append(f"cannot unmount node {node}'s mount namespace {ns}: {p.stderr.strip()}")
        if rec.get("image"):
            for loop in _loops_of(rec["image"]):
                subprocess.run(["losetup", "-d", loop], capture_output=True)
            left = _loops_of(rec["image"])
            if left:
                problems.append(f"loop devices {left} of node {node}'s scratch disk stay attached")
    if os.path.isdir(base):
        for _ in range(2):  # the self-bind, at most twice (a crash between bind and record)
            if _is_mountpoint(base):
                subprocess.run(["umount", base], capture_output=True)
        if _is_mountpoint(base):
            problems.append(f"cannot unmount {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
            if os.path.exists(base):
                problems.append(f"cannot remove {base}")
    try:
        os.rmdir(PRIV_ROOT)
    except OSError:
        pass
    return problems


def leftovers(testbed_prefix: str = "") -> list[str]:
    """Mounts, namespace files and loop devices under PRIV_ROOT (for the leak check)."""
    out = []
    with open("/proc/self/mountinfo") as f:
        out += [f"mount {line.split()[4]}" for line in f
                if line.split()[4].startswith(f"{PRIV_ROOT}/{testbed_prefix}")]
    p = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True)
    out += [f"loop {ln.split()[0]}" for ln in p.stdout.splitlines()
            if len(ln.split()) > 1 and ln.split()[1].startswith(f"{PRIV_ROOT}/{testbed_prefix}")]
    if os.path.isdir(PRIV_ROOT):
        out += [f"dir {PRIV_ROOT}/{d}" for d in os.listdir(PRIV_ROOT) if d.startswith(testbed_prefix)]
    return out


def discover(testbed: str) -> Optional[dict[str, Any]]:
    """A state record rebuilt from what exists on disk (``edgelab down`` without a state file)."""
    base = base_dir(testbed)
    if not os.path.isdir(base):
        return None
    nodes = {d.name: {"root": str(d), "image": str(d / "scratch.img") if (d / "scratch.img").exists() else None}
             for d in Path(base).iterdir() if d.is_dir()}
    return {"base": base, "nodes": nodes}
