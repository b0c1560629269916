"""Link emulation: the only code in edgelab that runs tc / nft / iptables and the NFQUEUE delayer.

Two engines: ``netem`` (HTB rate + netem delay/jitter/loss on each egress)
where the kernel has sch_netem, else ``fallback`` (HTB rate, nftables
``numgen random`` loss, userspace NFQUEUE delayer). The fallback applies a
link's outgoing loss and delay on the peer side, where the frames arrive (see
:meth:`LinkEmulator.apply_link`). The same API serves the local backend
(veth pairs, with a peer namespace) and real nodes (``python -m
edgelab.linkemu apply --dev D ...``, no peer: everything on the device).

The names below are imported lazily (PEP 562): ``python -m
edgelab.linkemu.delayer`` imports this package first, and the delayer must
bind its queues without paying for the emulator and the model (~90 ms).
"""

from __future__ import annotations

__all__ = ["LinkParams", "LinkEmulator", "cleanup", "detect_engine"]


def __getattr__(name: str) -> object:   # no typing import: see above
    if name == "LinkParams":
        from ..model import LinkParams
        return LinkParams
    if name in ("LinkEmulator", "cleanup"):
        from . import emulator
        return getattr(emulator, name)
    if name == "detect_engine":
        from .engine import detect_engine
        return detect_engine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
