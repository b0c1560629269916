"""Per-node private directories on the local backend (edgelab/backends/local/privdirs.py):
each private node sees its own /var/lib, /run and /etc/hosts and a scratch disk with
user_xattr, the host and other nodes do not, and teardown (also after SIGKILL,
through `edgelab down`) leaves no mount, loop device or directory.

Root, under the shared lock: flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_privdirs_root.py
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edgelab.backends.local import LocalBackend, privdirs
from edgelab.errors import TopologyError
from edgelab.topology import parse_topology
from local_helpers import leftovers, running_testbed

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, loop devices)"),
    pytest.mark.skipif(not shutil.which("unshare") or not shutil.which("mkfs.ext4") or not shutil.which("losetup"),
                       reason="needs util-linux unshare/losetup and e2fsprogs mkfs.ext4"),
]

NAME = "elpriv"
TOPO = f"""
name: {NAME}
networks:
  - name: lan
    profile: gigabit-ethernet
nodes:
  - group: srv
    role: storage
    count: 2
    private: {{scratch_mib: 16}}
    networks: [lan]
  - group: cli
    role: client
    networks: [lan]
"""


def test_private_dirs_are_per_node_and_leave_nothing():
    with running_testbed(TOPO) as tb:
        assert set(tb.private) == {"srv-1", "srv-2"}
        for n in ("srv-1", "srv-2"):
            tb.run(n, ["sh", "-c", f"echo {n} > /var/lib/who && echo {n} > /run/who"])
        for n in ("srv-1", "srv-2"):
            assert tb.run(n, ["cat", "/var/lib/who", "/run/who"]).stdout.split() == [n, n]
        # Not on the host, not on a node without private dirs.
        assert not Path("/var/lib/who").exists()
        assert tb.run("cli-1", ["test", "-e", "/var/lib/who"], check=False).returncode == 1
        # /etc/hosts: plan names -> addresses, and the name resolves to the peer.
        hosts = tb.run("srv-1", ["cat", "/etc/hosts"]).stdout
        assert f"{tb.address('srv-2', 'lan')}\tsrv-2" in hosts and f"{tb.address('cli-1', 'lan')}\tcli-1" in hosts
        got = tb.run("srv-1", ["getent", "hosts", "srv-2"]).stdout.split()[0]
        assert got == tb.address("srv-2", "lan")
        # Scratch disk: an ext4 mount of its own, with user xattrs (bricks, OSDs need them).
        scratch = tb.private["srv-1"].scratch
        out = tb.run("srv-1", ["sh", "-c", f"findmnt -n -o FSTYPE,OPTIONS {scratch}; "
                                           f"touch {scratch}/f && setfattr -n user.edgelab -v 1 {scratch}/f "
                                           f"&& getfattr -n user.edgelab --only-values {scratch}/f"]).stdout
        assert out.startswith("ext4") and out.rstrip().endswith("1"), out
        assert tb.run("srv-2", ["test", "-e", f"{scratch}/f"], check=False).returncode == 1
        assert subprocess.run(["findmnt", scratch], capture_output=True).returncode == 1  # host: not mounted
        tb.popen("srv-2", ["sleep", "600"])
        assert privdirs.leftovers(NAME)
    assert privdirs.leftovers(NAME) == [] and leftovers(NAME) == {}


def test_down_after_sigkill_removes_private_dirs():
    child = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from edgelab.backends.local import LocalBackend
from edgelab.plan import make_plan
from edgelab.topology import parse_topology
tb = LocalBackend().up(make_plan(parse_topology(sys.stdin.read())))
tb.popen("srv-1", ["sleep", "600"])
print("UP", flush=True)
time.sleep(600)
"""
    p = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        p.stdin.write(TOPO)
        p.stdin.close()
        assert p.stdout.readline().strip() == "UP"
        assert any(x.startswith("loop ") for x in privdirs.leftovers(NAME))
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
        LocalBackend().down(NAME)
    assert privdirs.leftovers(NAME) == [] and leftovers(NAME) == {}


@pytest.mark.parametrize("bad,msg", [
    ("private: {dirs: [/etc]}", "absolute directory other than"),
    ("private: {dirs: [var/lib]}", "absolute directory"),
    ("private: {scratch_mib: -1}", "scratch_mib"),
    ("private: {quota: 1}", "quota"),
])
def test_bad_private_option_is_an_error(bad, msg):
    with pytest.raises(TopologyError) as e:
        parse_topology(TOPO.replace("private: {scratch_mib: 16}", bad), "t.yaml")
    assert msg in str(e.value) and "t.yaml:" in str(e.value)
