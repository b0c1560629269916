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


def _probe_qdisc(qdisc_argv: list[str]) -> bool:
    """Try ``tc qdisc add dev <veth> root <qdisc_argv>`` in a throwaway netns."""
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
