"""The file-system folding workload: a distributed file system, I/O from every client.

The testbed has ``nb_io`` storage nodes (I/O nodes: GlusterFS servers with a
brick each) and ``nb_cpu`` clients (CPU nodes) on gigabit Ethernet; every node
has private directories (:mod:`edgelab.backends.local.privdirs`). Each client
runs the same fixed per-client workload (:class:`edgelab.dfs.bench.IOLoad`):
all clients write at once, then all read back, then all create files, so the
per-client bandwidths and metadata rate of a faithful host stay what they are
with the fewest nodes, and drift once the host is overloaded.

Local backend: GlusterFS + fio. On nxc/g5k the same topology maps onto a
composition (``glusterfs``, ``nfs``, ``orangefs``, ``cephfs``) whose clients run
IOR and mdtest (:func:`remote_commands`).
"""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

from ..backends import Testbed
from ..dfs import bench, glusterfs
from ..hostload import HostLoadSampler, active_warmer, testbed_cpu_counter
from ..model import Topology
from ..results import Measurement
from ..topology import parse_topology

NETWORK = "lan"
#: Metrics judged by the folding verdict: per client, higher is better (analysis.folding
#: treats the ``throughput`` prefix so).
JUDGED = ["throughput_write_mib_s", "throughput_read_mib_s", "throughput_create_ops_s"]


def fs_topology(nb_cpu: int, nb_io: int, *, name: str = "fsfold", scratch_mib: int = 256,
                client_cpu: float = 0.25, server_cpu: float = 0.5) -> Topology:
    """``nb_io`` storage nodes + ``nb_cpu`` clients, every one with private directories."""
    if nb_cpu < 1 or nb_io < 1:
        raise ValueError(f"a file system needs at least one client and one server (nb_cpu={nb_cpu}, nb_io={nb_io})")
    return parse_topology(textwrap.dedent(f"""\
        name: {name}
        networks:
          - {{name: {NETWORK}, profile: gigabit-ethernet}}
        nodes:
          - {{group: io, role: storage, count: {nb_io}, resources: {{cpu: {server_cpu}, memory_mib: 512}},
              private: {{scratch_mib: {scratch_mib}}}, networks: [{NETWORK}]}}
          - {{group: cpu, role: client, count: {nb_cpu}, resources: {{cpu: {client_cpu}, memory_mib: 512}},
              private: true, networks: [{NETWORK}]}}
        """), "<generated fs folding>")


def roles(tb: Testbed) -> tuple[list[str], list[str]]:
    plan = tb.plan
    return ([n.name for n in plan.nodes if n.group == "io"], [n.name for n in plan.nodes if n.group == "cpu"])


def _all_clients(tb: Testbed, clients: list[str], argvs: dict[str, list[str]], timeout: float) -> dict[str, str]:
    """Start the same phase on every client at once, wait for all; stdout per client."""
    procs = {c: tb.popen(c, argvs[c], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for c in clients}
    out = {}
    deadline = time.monotonic() + timeout
    for c, p in procs.items():
        try:
            stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for q in procs.values():
                q.kill()
            raise RuntimeError(f"{argvs[c][0]} on {c} did not finish within {timeout:g} s")
        if p.returncode != 0:
            raise RuntimeError(f"{' '.join(argvs[c][:3])}... on {c} exited {p.returncode}: {stderr.strip()[-400:]}")
        out[c] = stdout
    return out


def run_fsio(tb: Testbed, load: bench.IOLoad, raw: Path) -> list[Measurement]:
    """GlusterFS up, the check every composition's testScript makes, then write/read/create."""
    servers, clients = roles(tb)
    fs = glusterfs.start(tb, servers, clients, NETWORK)
    rows: list[Measurement] = []
    try:
        glusterfs.check(tb, fs)
        (raw / "fs.json").write_text(json.dumps({**fs.describe(), "load": bench.describe(load)}, indent=1))
        host = HostLoadSampler(warmer=active_warmer(), own_cpu=testbed_cpu_counter(tb)).start() if tb.facts().get("backend") == "local" else None
        results: dict[str, dict[str, dict[str, float]]] = {}
        for phase, metric, key, unit in (("write", "throughput_write_mib_s", "mib_per_s", "MiB/s"),
                                         ("read", "throughput_read_mib_s", "mib_per_s", "MiB/s"),
                                         ("create", "throughput_create_ops_s", "ops_per_s", "ops/s")):
            if phase == "create":  # fio's filecreate engine does not create its directory
                for c in clients:
                    tb.run(c, ["mkdir", "-p", f"{fs.mount}/md-{c}"])
            argvs = {c: bench.fio_argv(phase, fs.mount, c, load) for c in clients}
            outs = _all_clients(tb, clients, argvs, timeout=load.seconds * 4 + 120)
            (raw / f"fio-{phase}.json").write_text(json.dumps(outs))
            vals = {c: bench.parse_fio(o, phase) for c, o in outs.items()}
            results[phase] = vals
            rows += [Measurement(metric, v[key], unit, c) for c, v in vals.items()]
            rows.append(Measurement(metric, sum(v[key] for v in vals.values()) / len(vals), unit))
            rows.append(Measurement(metric.replace("throughput_", "aggregate_"), sum(v[key] for v in vals.values()), unit))
        if host is not None:
            host.stop()
            rows += host.measurements()
        rows += [Measurement("fs_setup_s", sum(fs.timings.values()), "s")]
    finally:
        glusterfs.stop(tb, fs)
    return rows


def remote_commands(composition: str, clients: list[str], mount: str, load: bench.IOLoad) -> dict[str, list[str]]:
    """What each client of a NixOS composition runs (dry run and nxc/g5k): IOR then mdtest."""
    return {c: [bench.shell(bench.ior_argv(mount, c, load)), bench.shell(bench.mdtest_argv(mount, c, load))]
            for c in clients}


def describe_point(tb: Any) -> dict:
    servers, clients = roles(tb)
    return {"nb_io": len(servers), "nb_cpu": len(clients)}
