"""GlusterFS on the local backend: servers and clients are nodes with private directories.

Each server node runs its own ``glusterd`` (its ``/var/lib/glusterd``, ``/var/log``
and ``/run`` are the node's own: :mod:`edgelab.backends.local.privdirs`) with
its brick on the node's scratch disk (ext4 with ``user_xattr``: GlusterFS keeps
its metadata in ``trusted.*`` xattrs). The first server probes the others and
creates one distributed volume across every brick once all are peers; each
client mounts it with the FUSE client (this kernel has FUSE, not NFS).

Needs Debian ``glusterfs-server`` (glusterd, gluster, glusterfs): scripts/bootstrap.
glusterd refuses loopback addresses for bricks, so every brick is named by the
server's plan address (a veth: glusterd finds it among its interfaces).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import BackendError, EdgelabError

VOLUME = "edgelab"
#: Where a client mounts the volume, inside its private /run (so each client has its own).
MOUNT = "/run/edgelab-fs"


def available() -> Optional[str]:
    """None when GlusterFS can run here, else why not (for a clear skip / error)."""
    missing = [b for b in ("glusterd", "gluster", "glusterfs") if shutil.which(b) is None]
    if missing:
        return f"GlusterFS is not installed ({', '.join(missing)} missing): apt-get install glusterfs-server (scripts/bootstrap)"
    if not Path("/dev/fuse").exists():
        return "no /dev/fuse: the GlusterFS client needs FUSE (modprobe fuse)"
    return None


@dataclass
class GlusterCluster:
    """A running volume: who serves, who mounts, and where."""

    servers: list[str]
    clients: list[str]
    network: str
    volume: str = VOLUME
    mount: str = MOUNT
    bricks: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"fs": "glusterfs", "volume": self.volume, "servers": self.servers, "clients": self.clients,
                "bricks": self.bricks, "mount": self.mount, "timings_s": self.timings}


def _private(tb: Any, node: str):
    p = getattr(tb, "private", {}).get(node)
    if p is None:
        raise EdgelabError(f"GlusterFS node {node} has no private directories: give its group "
                           "`private: {scratch_mib: N}` in the topology (servers need a scratch disk)")
    return p


def _wait(tb: Any, node: str, argv: list[str], what: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        p = tb.run(node, argv, check=False, timeout=timeout)
        if p.returncode == 0:
            return p.stdout
        last = (p.stderr or p.stdout).strip()
        if time.monotonic() > deadline:
            raise BackendError(f"GlusterFS: {what} on {node} did not succeed within {timeout:g} s: {last[-400:]}")
        time.sleep(0.2)


def start(tb: Any, servers: list[str], clients: list[str], network: str, *, timeout: float = 60.0) -> GlusterCluster:
    """glusterd on every server, one distributed volume over their scratch bricks, FUSE mounts on clients."""
    why = available()
    if why:
        raise EdgelabError(why)
    if not servers or not clients:
        raise EdgelabError("GlusterFS needs at least one server and one client node")
    c = GlusterCluster(servers, clients, network)
    t0 = time.monotonic()
    for s in servers:
        p = _private(tb, s)
        if not p.scratch:
            raise EdgelabError(f"GlusterFS server {s} has no scratch disk: set `private: {{scratch_mib: N}}`")
        tb.run(s, ["mkdir", "-p", "/var/lib/glusterd", "/var/log/glusterfs", f"{p.scratch}/brick"])
        # -N would keep it in the foreground; daemonised it stays in the node's cgroup and
        # namespaces (teardown kills the cgroup), and its pid file is in the node's /run.
        tb.run(s, ["glusterd", "-p", "/run/glusterd.pid", "--log-level", "WARNING"])
        c.bricks[s] = f"{tb.address(s, network)}:{p.scratch}/brick"
    first = servers[0]
    for s in servers:
        _wait(tb, s, ["gluster", "--mode=script", "pool", "list"], "glusterd start", timeout)
    for s in servers[1:]:
        _wait(tb, first, ["gluster", "--mode=script", "peer", "probe", tb.address(s, network)], f"peer probe {s}", timeout)
    if len(servers) > 1:
        _wait(tb, first, ["sh", "-c", f"test $(gluster --mode=script pool list | grep -c Connected) -eq {len(servers)}"],
              "every peer connected", timeout)
    c.timings["glusterd"] = time.monotonic() - t0
    # `force`: a brick on a mount point's root is refused otherwise (we own the whole scratch disk).
    _wait(tb, first, ["gluster", "--mode=script", "volume", "create", c.volume, "transport", "tcp",
                      *c.bricks.values(), "force"], "volume create", timeout)
    tb.run(first, ["gluster", "--mode=script", "volume", "start", c.volume])
    c.timings["volume"] = time.monotonic() - t0 - c.timings["glusterd"]
    server_addr = tb.address(first, network)
    for cl in clients:
        _private(tb, cl)
        tb.run(cl, ["mkdir", "-p", c.mount])
        tb.run(cl, ["glusterfs", f"--volfile-server={server_addr}", f"--volfile-id={c.volume}",
                    "--log-file=/var/log/glusterfs-client.log", c.mount])
        _wait(tb, cl, ["sh", "-c", f"grep -q ' {c.mount} fuse.glusterfs ' /proc/self/mounts && stat -f {c.mount}"],
              "FUSE mount", timeout)
    c.timings["mount"] = time.monotonic() - t0 - c.timings["glusterd"] - c.timings["volume"]
    return c


def check(tb: Any, c: GlusterCluster) -> None:
    """Every client writes a file, every client reads every file back (what the compositions' testScripts do)."""
    for cl in c.clients:
        tb.run(cl, ["sh", "-c", f"echo written-by-{cl} > {c.mount}/check-{cl}"])
    for reader in c.clients:
        for cl in c.clients:
            got = tb.run(reader, ["cat", f"{c.mount}/check-{cl}"]).stdout.strip()
            if got != f"written-by-{cl}":
                raise BackendError(f"GlusterFS: {reader} read {got!r} from {cl}'s file")


def stop(tb: Any, c: GlusterCluster) -> None:
    """Unmount clients and stop the volume (teardown would also do it, this keeps logs clean)."""
    for cl in c.clients:
        tb.run(cl, ["umount", "-l", c.mount], check=False, timeout=30)
    tb.run(c.servers[0], ["gluster", "--mode=script", "volume", "stop", c.volume, "force"], check=False, timeout=60)
