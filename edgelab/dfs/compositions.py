"""The distributed-file-system compositions as the Python side sees them (dry runs, experiments).

Each composition in ``compositions/<name>/`` has a topology whose groups are its
roles; the node counts of its I/O role(s) and of its clients are NixOS-Compose
setup parameters (``setup.toml``), read by ``compositions/compositions.nix``.
This table mirrors those names (tests/test_nix_eval.py checks them against the
evaluated compositions), and says where each composition's disks come from and
where clients mount the file system.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Sequence

from ..experiment import backend_options
from ..model import Topology
from .bench import IOLoad, ior_argv, mdtest_argv, shell

#: Where every composition's clients mount the file system (modules/dfs.nix edgelab.dfs.mountPoint).
MOUNT = "/mnt/edgelab-fs"
#: The data disk of each I/O node (modules/dfs.nix): nxc's vm flavours give a VM no block
#: device, so a loop file; the flake's NixOS tests a real empty disk (emptyDiskImages);
#: Grid'5000 the standard environment's /tmp partition, or a reserved disk (`dfs_disk`).
VM_DISK = "a 2048 MiB loop file (/var/lib/edgelab-dfs; nxc's vm flavour has no block device; the NixOS test " \
          "gives /dev/vdb from virtualisation.emptyDiskImages = [ 2048 ])"
G5K_DISK = "/dev/disk/by-label/KDPL_TMP_disk0 (the standard environment's /tmp partition; another disk: " \
           "--backend-opt dfs_disk=/dev/sdX, e.g. one reserved with OAR `-t destructive`)"


@dataclass(frozen=True)
class DfsComposition:
    name: str
    io_groups: tuple[str, ...]                 # groups that hold data (disks)
    io_param: str                              # setup parameter: count of the scaled I/O group
    io_group: str                              # the scaled I/O group
    client_param: str
    fixed: tuple[tuple[str, int], ...] = ()    # other groups and their fixed counts
    disk_mib: int = 4096
    fs_on_disk: str = "ext4 (user_xattr)"
    note: str = ""

    @property
    def topology_file(self) -> str:
        return f"compositions/{self.name}/topology.yaml"


COMPOSITIONS: dict[str, DfsComposition] = {
    "nfs": DfsComposition("nfs", ("server",), "nfs_servers", "server", "nfs_clients",
                          note="one export per server (nfs_servers > 1: each client mounts server-1; the "
                               "others serve their own export)"),
    "orangefs": DfsComposition("orangefs", ("server",), "orangefs_servers", "server", "orangefs_clients",
                               note="every server is metadata + data server (the paper's setup)"),
    "glusterfs": DfsComposition("glusterfs", ("server",), "glusterfs_servers", "server", "glusterfs_clients",
                                note="one distributed volume over every brick, created once all bricks are up"),
    "cephfs": DfsComposition("cephfs", ("osd",), "ceph_osds", "osd", "ceph_clients", fixed=(("mon", 1),),
                             fs_on_disk="bluestore (raw disk, no file system)",
                             note="mon-1 runs mon, mgr and mds; osd-1..N get ids 0..N-1"),
}


def get(name: str) -> DfsComposition:
    try:
        return COMPOSITIONS[name]
    except KeyError:
        raise ValueError(f"unknown file-system composition {name!r}; known: {', '.join(sorted(COMPOSITIONS))}") from None


def remote_topology(name: str, nb_cpu: int, nb_io: int) -> Topology:
    """The composition's topology with ``nb_io`` I/O nodes and ``nb_cpu`` clients."""
    from ..topology import load_topology

    c = get(name)
    return load_topology(c.topology_file).scaled(c.io_group, nb_io).scaled("client", nb_cpu)


def setup_params(name: str, nb_cpu: int, nb_io: int) -> dict[str, int]:
    c = get(name)
    return {c.io_param: nb_io, c.client_param: nb_cpu}


def remote_dry_run(name: str, backend: str, nb_cpu: int, nb_io: int, load: IOLoad,
                   backend_opt: Sequence[str] = ()) -> str:
    """What a point of the file-system folding experiment deploys and runs on nxc/g5k."""
    from ..backends import get_backend
    from ..plan import make_plan

    c = get(name)
    opts = backend_options(backend_opt)
    topo = remote_topology(name, nb_cpu, nb_io)
    plan = make_plan(topo)
    params = setup_params(name, nb_cpu, nb_io)
    flavour = opts.get("flavour", "vm" if backend == "nxc" else "g5k-ramdisk")
    disk = VM_DISK if flavour.startswith("vm") else opts.get("dfs_disk", G5K_DISK)
    if "dfs_disk" in opts and not flavour.startswith("vm"):
        params["dfs_disk"] = opts["dfs_disk"]
    io_nodes = [n.name for n in plan.nodes if n.group in c.io_groups]
    clients = [n.name for n in plan.nodes if n.group == "client"]
    lines = [f"### {name}: nb_cpu={nb_cpu} clients, nb_io={nb_io} I/O nodes, folding factor {nb_cpu + nb_io} "
             f"virtual nodes per host where folded onto one",
             f"composition: compositions/{name} ({flavour}); {c.note}",
             "setup parameters: " + " ".join(f"--setup-param {k}={v}" for k, v in params.items()),
             f"  nxc build -C {name}::{flavour} " + " ".join(f"--setup-param {k}={v}" for k, v in params.items()),
             f"disks: one per I/O node ({', '.join(io_nodes)}): {disk}, formatted {c.fs_on_disk}",
             f"clients mount {MOUNT}; per client:"]
    for cl in clients:
        lines.append(f"  {cl}: {shell(ior_argv(MOUNT, cl, load))}")
        lines.append(f"  {cl}: {shell(mdtest_argv(MOUNT, cl, load))}")
    try:
        be = get_backend(backend, **{k: v for k, v in opts.items() if k != "dfs_disk"},
                         **({"composition": name} if "composition" not in opts else {}))
        lines.append(f"backend ({backend}) dry run:")
        lines += ["  " + ln for ln in be.dry_run(plan).splitlines()]
    except Exception as exc:  # noqa: BLE001 - the dry run above stands on its own
        lines.append(f"backend ({backend}) dry run unavailable: {exc}")
    return "\n".join(lines) + "\n"


def quote(argv: Sequence[str]) -> str:
    return shlex.join(argv)
