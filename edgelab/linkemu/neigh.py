"""Station MAC addresses from their IP addresses, at the access point's boot.

A NixOS access point (``edgelab.netem.accessPoint``) knows its stations'
plan addresses when the image is evaluated, but not their MACs: nxc's VMs
and Grid'5000 NICs get theirs at boot. ``linkemu shared --station-ip``
resolves them here: a datagram to the discard port makes the kernel ARP for
the address, then ``ip neigh`` says the answer. Stations that boot later are
waited for, up to a deadline, then named in the error.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import subprocess
import time
from typing import Callable, Sequence

from ..errors import EdgelabError

_LLADDR = re.compile(r"\blladdr ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})\b", re.I)


def neigh_mac(ip: str, dev: str) -> str | None:
    """The MAC the kernel's neighbour table holds for ``ip`` on ``dev`` (None while unresolved)."""
    out = subprocess.run(["ip", "-4", "neigh", "show", "to", ip, "dev", dev], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = _LLADDR.search(line)
        if m and "FAILED" not in line and "INCOMPLETE" not in line:
            return m.group(1).lower()
    return None


def _poke(ip: str) -> None:
    """Make the kernel resolve ``ip`` (an empty UDP datagram to the discard port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(b"", (ip, 9))
        except OSError:
            pass   # unreachable right now: the next round tries again


def resolve_macs(ips: Sequence[str], dev: str, timeout: float = 300.0, *,
                 lookup: Callable[[str, str], str | None] = neigh_mac,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """MACs of ``ips`` on ``dev``, in order; raises naming every address still unresolved at the deadline."""
    for ip in ips:
        try:
            ipaddress.IPv4Address(ip)
        except ValueError:
            raise EdgelabError(f"--station-ip {ip!r}: not an IPv4 address") from None
    found: dict[str, str] = {}
    deadline = clock() + timeout
    while True:
        for ip in ips:
            if ip not in found:
                mac = lookup(ip, dev)
                if mac:
                    found[ip] = mac
                else:
                    _poke(ip)
        if len(found) == len(set(ips)):
            return [found[ip] for ip in ips]
        if clock() >= deadline:
            missing = [ip for ip in ips if ip not in found]
            raise EdgelabError(f"no MAC address for station(s) {', '.join(missing)} on {dev} after {timeout:g} s "
                               "(not booted, or not on this interface's network)")
        sleep(0.5)
