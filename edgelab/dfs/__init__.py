"""Distributed file systems on a testbed and the I/O benchmarks run against them.

- :mod:`.glusterfs`: GlusterFS on the local backend (glusterd per server node in its
  private directories, bricks on the nodes' scratch disks, FUSE clients);
- :mod:`.bench`: the I/O workload as command lines: fio (local), IOR and mdtest
  (NixOS compositions, Grid'5000), and their parsers.

The NixOS side (NFS, OrangeFS, GlusterFS, CephFS compositions) is in
``compositions/`` and ``modules/dfs.nix``.
"""
