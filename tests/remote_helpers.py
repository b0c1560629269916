"""What the remote-backend tests share: the Wi-Fi plan they scale, and the SSH lab (real sshd per
network namespace, :mod:`edgelab.remote.lab`) brought up for a module and always taken down."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Sequence

import pytest

from edgelab.plan import Plan, make_plan
from edgelab.topology import load_topology

REPO = Path(__file__).resolve().parents[1]

#: Marks of a test module that needs the SSH lab.
SSH_LAB_MARKS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, cgroups, sshd)"),
    pytest.mark.skipif(not os.access("/usr/sbin/sshd", os.X_OK),
                       reason="needs Debian openssh-server (/usr/sbin/sshd): scripts/bootstrap installs it"),
]


def wifi_plan(phones: int = 4) -> Plan:
    """topologies/wifi-phones.yaml with ``phones`` phones."""
    return make_plan(load_topology(REPO / "topologies" / "wifi-phones.yaml").scaled("phone", phones))


@contextlib.contextmanager
def ssh_lab(specs: Sequence) -> Iterator:
    """An SSH lab of ``specs`` (:class:`edgelab.remote.lab.DeviceSpec`) with this interpreter; taken
    down whatever happens, and nothing of it may be left in /run/netns."""
    from edgelab.remote import lab as labmod

    lb = labmod.up(list(specs), python=sys.executable)
    try:
        yield lb
    finally:
        labmod.down(lb.lab_id)
        assert not any(n.startswith(f"elsd-{lb.lab_id}") for n in os.listdir("/run/netns"))
