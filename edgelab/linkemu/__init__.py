"""Link emulation: the only code in edgelab that runs tc / nft / iptables and the NFQUEUE delayer.

Two engines: ``netem`` (HTB rate + netem delay/jitter/loss on each egress)
where the kernel has sch_netem, else ``fallback`` (HTB rate, nftables
``numgen random`` loss, userspace NFQUEUE delayer). See LINKEMU_API.md.
"""

from ..model import LinkParams
from .emulator import LinkEmulator, cleanup
from .engine import detect_engine

__all__ = ["LinkParams", "LinkEmulator", "cleanup", "detect_engine"]
