"""Network namespaces: create, enter (per thread), find their processes, delete.

Creation and netlink go through pyroute2 (no ``ip`` process per object).
Sysctls are written from a thread that has ``setns``-ed into the namespace:
``/proc/sys/net`` resolves against the calling thread's namespace, so this
needs no child process either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path
from typing import Iterable, Iterator

from pyroute2 import netns as pr_netns

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


def create(ns: str) -> None:
    if exists(ns):
        raise BackendError(f"network namespace {ns} already exists; another testbed of that name is up, "
                           "or a crashed run left it: run `edgelab down <testbed>`")
    pr_netns.create(ns)


def remove(ns: str) -> None:
    """Unmount and delete the namespace's name; the kernel frees it (and its
    veths, bridges, qdiscs, rules) once no process holds it."""
    if exists(ns):
        pr_netns.remove(ns)


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
        while pids and time.monotonic() < deadline:
            pids = {p for p in pids if _alive(p)}
            if pids:
                time.sleep(0.01)
        if not pids:
            break
    return sorted(pids)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def nsfd_path(ns: str) -> str:
    return str(Path(NETNS_DIR) / ns)
