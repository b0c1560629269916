"""Network namespaces: create, enter (per thread), find their processes, delete.

Creation is in-process (unshare + bind mount from the calling thread), netlink
goes through pyroute2 (no ``ip`` process per object).
Sysctls are written from a thread that has ``setns``-ed into the namespace:
``/proc/sys/net`` resolves against the calling thread's namespace, so this
needs no child process either.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import signal
import time
from pathlib import Path
from typing import Iterable, Iterator


from ...errors import BackendError
from .naming import NETNS_DIR, owns_netns

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def setns_fd(fd: int) -> None:
    """Move the calling thread (or a freshly forked child) into the namespace of ``fd``."""
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns failed: {os.strerror(err)}")


def path(ns: str) -> str:
    return f"{NETNS_DIR}/{ns}"


def exists(ns: str) -> bool:
    return os.path.exists(path(ns))


MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2
_rundir_shared = False


def _errno_error(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def _share_rundir() -> None:
    """Make /run/netns a shared mount point, as ``ip netns add`` does (iproute2 ip/ipnetns.c),
    so the bind mounts below propagate to other mount namespaces."""
    global _rundir_shared
    if _rundir_shared:
        return
    os.makedirs(NETNS_DIR, exist_ok=True)
    d = NETNS_DIR.encode()
    if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
        if _libc.mount(d, d, b"none", MS_BIND | MS_REC, None) != 0:
            raise _errno_error(f"bind-mounting {NETNS_DIR} on itself")
        if _libc.mount(b"", d, b"none", MS_SHARED | MS_REC, None) != 0:
            raise _errno_error(f"making {NETNS_DIR} a shared mount")
    _rundir_shared = True


def create(ns: str) -> None:
    """Create and name a network namespace in-process: the calling *thread* unshares a new
    one, bind-mounts it on /run/netns/NS and returns to its own. pyroute2's ``netns.create``
    forks a child for this (and finds libc with ``ldconfig -p``): two processes per node."""
    if exists(ns):
        raise BackendError(f"network namespace {ns} already exists; another testbed of that name is up, "
                           "or a crashed run left it: run `edgelab down <testbed>`")
    _share_rundir()
    p = path(ns)
    os.close(os.open(p, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise _errno_error(f"unshare(CLONE_NEWNET) for {ns}")
        try:
            if _libc.mount(b"/proc/thread-self/ns/net", p.encode(), b"none", MS_BIND, None) != 0:
                raise _errno_error(f"bind-mounting the new namespace on {p}")
        finally:
            setns_fd(back)
    except OSError:
        try:
            os.unlink(p)
        except OSError:
            pass
        raise
    finally:
        os.close(back)


def remove(ns: str) -> None:
    """Unmount and delete the namespace's name; the kernel frees it (and its
    veths, bridges, qdiscs, rules) once no process holds it.

    No ``exists`` check first: umount2 says ENOENT for a name already gone and
    EINVAL for a file that is not mounted (a name whose creation was interrupted),
    one system call fewer per namespace in a teardown.
    """
    p = path(ns)
    if _libc.umount2(p.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err == errno.ENOENT:
            return
        if err != errno.EINVAL:
            raise OSError(err, f"unmounting {p}: {os.strerror(err)}")
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass


def list_owned(testbed: str) -> list[str]:
    """Namespaces named as ``testbed``'s (whole testbed name, see ``naming``), and no other testbed's."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if owns_netns(testbed, n))
    except FileNotFoundError:
        return []


@contextlib.contextmanager
def entered(ns: str) -> Iterator[None]:
    """Run the body with the *current thread* inside namespace ``ns``."""
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    fd = os.open(path(ns), os.O_RDONLY)
    try:
        setns_fd(fd)
        try:
            yield
        finally:
            setns_fd(back)
    finally:
        os.close(fd)
        os.close(back)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write ``net.*`` sysctls (dotted names) inside ``ns``."""
    with entered(ns):
        for key, val in values.items():
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(val)


def inode(ns: str) -> int | None:
    try:
        return os.stat(path(ns)).st_ino
    except OSError:
        return None


def pids_in(namespaces: Iterable[str]) -> dict[int, str]:
    """Every process whose network namespace is one of ``namespaces`` (pid -> ns).

    One scan of /proc for all namespaces: cheaper than ``ip netns pids`` each.
    """
    by_inode = {ino: ns for ns in namespaces if (ino := inode(ns)) is not None}
    out: dict[int, str] = {}
    if not by_inode:
        return out
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            link = os.readlink(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        ino = int(link[link.index("[") + 1: -1])
        if ino in by_inode:
            out[int(entry.name)] = by_inode[ino]
    return out


def kill_pids(pids: Iterable[int], timeout: float = 5.0) -> list[int]:
    """SIGTERM, then SIGKILL after ``timeout``; returns pids that survived."""
    pids = set(pids)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + (timeout if sig == signal.SIGTERM else 2.0)
        pause = 0.0005   # most exit within a millisecond: poll fast first
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if _alive(p)}
            if pids:
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
        if not pids:
            break
    return sorted(pids)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (not a zombie, not gone)."""
    return _alive(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def nsfd_path(ns: str) -> str:
    return str(Path(NETNS_DIR) / ns)
