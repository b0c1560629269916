"""Which impairment engine this kernel supports, found by trying for real.

Kernel configs differ (this project's CI kernel has no sch_netem, users'
kernels do), and /proc/modules may not even exist, so the only reliable
answer is to create the qdisc in a throwaway namespace and see.
"""

from __future__ import annotations

import functools
import os
import subprocess

ENGINES = ("netem", "fallback")


def _probe_inprocess(kind: str, **options) -> bool:
    """Try to create qdisc ``kind`` on a veth of a throwaway namespace, in-process: this thread
    unshares a new network namespace (nameless: it is freed when the thread leaves it), makes
    the veth and the qdisc over netlink (``nlbatch``), and returns to its own. OSError if the
    thread cannot (no CAP_SYS_ADMIN...): the caller then runs the tc processes."""
    import ctypes
    import threading

    from ..errors import BackendError
    from . import nlbatch

    libc = ctypes.CDLL(None, use_errno=True)
    result: list = []

    def probe() -> None:   # a thread of its own: it never has to return to another namespace
        try:
            if libc.unshare(0x40000000) != 0:   # CLONE_NEWNET
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET)")
            me = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                sock = nlbatch.open_socket()
                try:
                    b = nlbatch.Batch("a probe namespace")
                    b.add(nlbatch.veth_add("p0", 2, "p1", me, 3), "veth")
                    b.send(sock)
                    b.add(nlbatch.with_index(nlbatch.tc_template("add", kind, 0x10000, **options), 2), kind)
                    try:
                        b.send(sock)
                        result.append(True)
                    except BackendError:
                        result.append(False)
                finally:
                    sock.close()
            finally:
                os.close(me)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            result.append(e)

    t = threading.Thread(target=probe, name="edgelab-qdisc-probe")
    t.start()
    t.join()
    if isinstance(result[0], BaseException):
        raise OSError(f"in-process qdisc probe: {result[0]}")
    return result[0]


def _probe_qdisc(qdisc_argv: list[str]) -> bool:
    """Try ``tc qdisc add dev <veth> root <qdisc_argv>`` in a throwaway netns."""
    if not qdisc_argv[1:]:
        try:
            return _probe_inprocess(qdisc_argv[0])
        except (OSError, ImportError):
            pass
    ns = f"edgelab-probe-{os.getpid()}"
    try:
        if subprocess.run(["ip", "netns", "add", ns], capture_output=True).returncode != 0:
            return False
        if subprocess.run(["ip", "-n", ns, "link", "add", "p0", "type", "veth", "peer", "name", "p1"],
                          capture_output=True).returncode != 0:
            return False
        cp = subprocess.run(["tc", "-n", ns, "qdisc", "add", "dev", "p0", "root", *qdisc_argv],
                            capture_output=True)
        return cp.returncode == 0
    except FileNotFoundError:
        return False
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@functools.lru_cache(maxsize=None)
def has_qdisc(kind: str) -> bool:
    """True if the kernel can instantiate qdisc ``kind`` with default options."""
    return _probe_qdisc([kind])


@functools.lru_cache(maxsize=None)
def detect_engine() -> str:
    """'netem' if the running kernel can create a netem qdisc, else 'fallback'. Cached."""
    try:
        return "netem" if _probe_inprocess("netem", delay=1000) else "fallback"
    except (OSError, ImportError):
        return "netem" if _probe_qdisc(["netem", "delay", "1ms"]) else "fallback"


def shared_leaf(fifo_limit: int = 1000) -> list[str]:
    """Best flow-fair leaf qdisc available for the shared medium, FIFO as a last resort.

    fq_codel and sfq give per-flow fairness between one station's flows; on
    a kernel with neither (like this project's CI kernel) a pfifo of
    ``fifo_limit`` packets is used. Fairness *between* stations does not
    depend on this choice: it comes from their HTB classes
    (``commands.shared_medium_cmds``).
    """
    if has_qdisc("fq_codel"):
        return ["fq_codel"]
    if has_qdisc("sfq"):
        return ["sfq", "perturb", "10"]
    return ["pfifo", "limit", str(fifo_limit)]
