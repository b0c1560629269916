"""Thin adapter: run builder argv lists inside a network namespace.

``tc -n``/``ip -n`` (and ``ip netns exec`` for nft, iptables, sysctl) are used
(rather than pyroute2's NetNS) because tc, nft and iptables are the reference
tools for the qdiscs/rules we build, and their argv form is what the unit tests
check and ``--dry-run`` prints. Callers batch: one ``tc -batch``, one ``nft -f``,
one ``iptables-restore`` per namespace and step, not one process per object.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import subprocess
from typing import Iterator, Optional, Sequence

from ..errors import BackendError


#: Tools that enter a namespace themselves (``-n NS``: one setns, no ``ip netns exec``
#: process with its mount-namespace set-up in front of them).
_NETNS_OPTION = ("tc", "ip")


CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_BATCH_UNSAFE = re.compile(r"[\s\"'#]")


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def entered(ns: Optional[str]) -> Iterator[None]:
    """Run the body with the calling *thread* in namespace ``ns`` (None: stay where it is).

    Netlink sockets (libnftables', ``nlbatch``'s) and ``/proc/sys/net`` belong to the
    namespace of the thread that opens them, so in-process work needs no child process."""
    if not ns:
        yield
        return
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(fd)
        finally:
            os.close(fd)
        try:
            yield
        finally:
            _setns(back)
    finally:
        os.close(back)


def write_sysctl(ns: Optional[str], key: str, value: str) -> bool:
    """Write one ``net.*`` sysctl inside ``ns`` without a process; False if it does not exist."""
    with entered(ns):
        try:
            with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
                f.write(value)
            return True
        except OSError:
            return False


def in_ns(ns: Optional[str], argv: Sequence[str]) -> list[str]:
    """Prefix ``argv`` so it runs in namespace ``ns`` (None: the current one)."""
    if not ns:
        return list(argv)
    if argv and argv[0] in _NETNS_OPTION:
        return [argv[0], "-n", ns, *argv[1:]]
    return ["ip", "netns", "exec", ns, *argv]


def run(ns: Optional[str], argv: Sequence[str], *, check: bool = True,
        timeout: float = 20) -> subprocess.CompletedProcess:
    """Run one command; on failure raise BackendError naming the command and its stderr."""
    full = in_ns(ns, argv)
    try:
        cp = subprocess.run(full, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as e:
        raise BackendError(f"cannot run {full[0]!r}: {e}; install iproute2/nftables/iptables") from e
    if check and cp.returncode != 0:
        where = f"in namespace {ns!r}" if ns else "in the current namespace"
        raise BackendError(
            f"link emulation command failed {where}: {' '.join(full)}\n"
            f"  exit {cp.returncode}: {cp.stderr.strip() or cp.stdout.strip()}")
    return cp


def run_all(ns: Optional[str], cmds: Sequence[Sequence[str]], *, check: bool = True) -> None:
    for c in cmds:
        run(ns, c, check=check)


def run_batched(ns: Optional[str], cmds: Sequence[Sequence[str]]) -> None:
    """Like ``run_all`` (check=True), but each run of consecutive ``tc`` commands
    goes through one ``tc -batch -`` process instead of one process per command.

    A shared medium with 200 stations is ~1400 tc commands; one process each
    would dominate bring-up. ``tc -batch`` stops at the first failing line and
    names it, which the error below passes on.
    """
    i = 0
    while i < len(cmds):
        if cmds[i][0] != "tc":
            run(ns, cmds[i])
            i += 1
            continue
        j = i
        while j < len(cmds) and cmds[j][0] == "tc":
            j += 1
        # An argument that is empty or holds a blank, a quote or a comment sign would be split
        # or cut by tc's batch parser (iproute2 lib/utils.c makeargs): one regex search per
        # command (its words joined by NUL, which none holds), not a test per character.
        for c in cmds[i:j]:
            if not all(c) or _BATCH_UNSAFE.search("\0".join(c)):
                bad = next(a for a in c if not a or _BATCH_UNSAFE.search(a))
                raise ValueError(f"tc argument {bad!r} cannot be passed through tc -batch")
        script = "".join(" ".join(c[1:]) + "\n" for c in cmds[i:j])
        full = in_ns(ns, ["tc", "-batch", "-"])
        cp = subprocess.run(full, input=script, capture_output=True, text=True, timeout=60)
        if cp.returncode != 0:
            where = f"in namespace {ns!r}" if ns else "in the current namespace"
            raise BackendError(f"link emulation command failed {where}: {' '.join(full)}\n"
                               f"  exit {cp.returncode}: {cp.stderr.strip() or cp.stdout.strip()}\n"
                               f"  batch (first lines):\n{script[:1500]}")
        i = j
