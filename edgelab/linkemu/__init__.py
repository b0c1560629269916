"""Link emulation: the only code in edgelab that runs tc / nft / iptables and the NFQUEUE delayer.

Two engines: ``netem`` (HTB rate + netem delay/jitter/loss on each egress)
where the kernel has sch_netem, else ``fallback`` (HTB rate, nftables
``numgen random`` loss, userspace NFQUEUE delayer). The fallback applies a
link's outgoing loss and delay on the peer side, where the frames arrive (see
:meth:`LinkEmulator.apply_link`). The same API serves the local backend
(veth pairs, with a peer namespace) and real nodes (``python -m
edgelab.linkemu apply --dev D ...``, no peer: everything on the device).
"""

from ..model import LinkParams
from .emulator import LinkEmulator, cleanup
from .engine import detect_engine

__all__ = ["LinkParams", "LinkEmulator", "cleanup", "detect_engine"]
