"""``linkemu shared --station-ip``: a NixOS access point resolves its stations' MACs at boot.

Two network namespaces joined by a veth stand for the AP and a station; the
AP's budget must classify the station by the MAC the kernel resolved for its
address, and a station that never answers must be named in the error.
Root only; run under the shared lock:
``flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_linkemu_station_ip_root.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, tc)")


@pytest.fixture
def pair():
    tag = f"elsi{os.getpid() % 100000}"
    ap, st = f"{tag}-ap", f"{tag}-st"
    made = []
    try:
        for ns in (ap, st):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            made.append(ns)
        subprocess.run(["ip", "link", "add", "eth1", "netns", ap, "type", "veth", "peer", "name", "eth1", "netns", st],
                       check=True)
        for ns, addr in ((ap, "10.99.0.1/24"), (st, "10.99.0.2/24")):
            subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", "eth1"], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "eth1", "up"], check=True)
        yield ap, st
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def linkemu(ns: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "edgelab.linkemu", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_station_ip_is_resolved_to_its_mac_and_classified(pair):
    ap, st = pair
    mac = subprocess.run(["ip", "-n", st, "-o", "link", "show", "eth1"], capture_output=True, text=True).stdout.split()
    mac = mac[mac.index("link/ether") + 1]
    r = linkemu(ap, "shared", "--dev", "eth1", "--name", "air0", "--capacity-mbit", "30", "--tag", "elsi",
                "--station-ip", "10.99.0.2", "--resolve-timeout", "10")
    assert r.returncode == 0, r.stderr
    filters = subprocess.run(["ip", "netns", "exec", ap, "tc", "filter", "show", "dev", "eth1", "ingress"],
                             capture_output=True, text=True).stdout
    # u32 prints the MAC as the match's key bytes: its first 4 bytes, then the last 2
    hexmac = mac.replace(":", "")
    assert hexmac[:8] in filters and "mirred" in filters, (mac, filters)
    r = linkemu(ap, "unshared", "--dev", "eth1", "--name", "air0", "--tag", "elsi")
    assert r.returncode == 0, r.stderr
    assert "elsi-air0" not in subprocess.run(["ip", "-n", ap, "-o", "link"], capture_output=True, text=True).stdout
    # the clsact hook `shared` added goes too (no other filter uses it here)
    assert "clsact" not in subprocess.run(["ip", "netns", "exec", ap, "tc", "qdisc", "show", "dev", "eth1"],
                                          capture_output=True, text=True).stdout


def test_a_station_that_never_answers_is_named(pair):
    ap, _ = pair
    r = linkemu(ap, "shared", "--dev", "eth1", "--name", "air0", "--capacity-mbit", "30", "--tag", "elsi",
                "--station-ip", "10.99.0.2", "--station-ip", "10.99.0.77", "--resolve-timeout", "2")
    assert r.returncode != 0
    assert "10.99.0.77" in r.stderr and "10.99.0.2," not in r.stderr and "after 2 s" in r.stderr, r.stderr
    assert "elsi-air0" not in subprocess.run(["ip", "-n", ap, "-o", "link"], capture_output=True, text=True).stdout
