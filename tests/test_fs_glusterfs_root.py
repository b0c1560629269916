"""GlusterFS on the local backend (edgelab/dfs/glusterfs.py, edgelab/scenarios/fsio.py):
servers and clients are nodes with private directories, one volume over the servers'
scratch bricks, every client mounts it with FUSE, writes, reads every client's file
back, and fio measures write/read bandwidth and file creations on every client.
Teardown leaves no glusterd, mount, loop device or directory.

Root, under the shared lock:
  flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_fs_glusterfs_root.py
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from edgelab.backends.local import LocalBackend, privdirs
from edgelab.dfs import bench, glusterfs
from edgelab.plan import make_plan
from edgelab.scenarios.fsio import JUDGED, fs_topology, run_fsio
from local_helpers import leftovers

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (namespaces, mounts, FUSE)"),
    pytest.mark.skipif(glusterfs.available() is not None, reason=str(glusterfs.available())),
]

NAME = "elgfs"


def _glusterd_pids() -> list[int]:
    out = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                cmd = Path(f"/proc/{e.name}/cmdline").read_bytes()
            except OSError:
                continue
            if f"/var/tmp/edgelab/{NAME}/".encode() in cmd or (b"gluster" in cmd and NAME.encode() in cmd):
                out.append(int(e.name))
    return out


def test_glusterfs_two_servers_two_clients_end_to_end(tmp_path):
    plan = make_plan(fs_topology(2, 2, name=NAME, scratch_mib=96))
    tb = LocalBackend().up(plan)
    try:
        rows = run_fsio(tb, bench.IOLoad(size_mib=16, seconds=1.0, md_files=50), tmp_path)
        # Both bricks hold data (a distributed volume spreads the files by name hash).
        fs = (tmp_path / "fs.json").read_text()
        assert "io-1" in fs and "io-2" in fs
    finally:
        tb.down()
    by = {(r.metric, r.node): r.value for r in rows}
    for metric in JUDGED:
        per_client = [by[(metric, c)] for c in ("cpu-1", "cpu-2")]
        assert all(v > 0 for v in per_client), (metric, per_client)
        assert by[(metric, "")] == pytest.approx(sum(per_client) / 2)
    assert by[("host_cpu_busy", "")] > 0
    assert privdirs.leftovers(NAME) == [] and leftovers(NAME) == {}
    assert subprocess.run(["findmnt", "-t", "fuse.glusterfs"], capture_output=True, text=True).stdout.count(NAME) == 0


def test_glusterfs_refuses_nodes_without_private_dirs():
    from edgelab.errors import EdgelabError
    from edgelab.topology import parse_topology

    topo = parse_topology(f"""
name: {NAME}
networks: [{{name: lan, profile: gigabit-ethernet}}]
nodes:
  - {{group: io, role: storage, networks: [lan]}}
  - {{group: cpu, role: client, networks: [lan]}}
""")
    with LocalBackend().up(make_plan(topo)) as tb:
        with pytest.raises(EdgelabError, match="private"):
            glusterfs.start(tb, ["io-1"], ["cpu-1"], "lan")
    assert leftovers(NAME) == {}
