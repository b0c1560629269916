# What the distributed-file-system compositions (nfs, orangefs, glusterfs,
# cephfs) share: their plan on one gigabit LAN (I/O role(s) + clients, counts
# as setup parameters), planned addresses on the testbed device, /etc/hosts
# with every node, the data disk of the I/O nodes (modules/dfs.nix: a loop
# file on nxc's vm flavours, `disk` on Grid'5000), IOR/mdtest/fio on clients,
# and the testScript's common part (dfs-test.py: mount, write from every
# client, read everything back, check, then a small IOR and mdtest run).
{ pkgs, lib, flavour ? { name = "vm"; }, iface ? null, name, counts, disk ? null }:
let
  c = import ./common.nix { inherit pkgs flavour iface; };
  vm = builtins.elem (flavour.name or "vm") [ "vm" "vm-ramdisk" ];
  planFile = c.mkPlan { topology = ./. + "/${name}/topology.yaml"; inherit counts name; };
  plan = c.elib.readPlan planFile;
  names = group: map (n: n.name) (c.elib.nodesOfGroup plan group);
  # Grid'5000: the standard environment's /tmp partition (kadeploy labels it
  # KDPL_TMP_disk0) is free scratch space once NixOS is kexec'ed; a disk
  # reserved with OAR can be named with the `dfs_disk` setup parameter.
  g5kDisk = if disk != null then disk else "/dev/disk/by-label/KDPL_TMP_disk0";
in
rec {
  inherit c plan planFile names vm;
  addr = node: c.elib.addressOf plan node "lan";
  mountPoint = "/mnt/edgelab-fs";
  base = {
    imports = [ (c.base planFile plan) ];
    edgelab.netem.enable = true;
    networking.hosts = c.elib.hostsEntries plan;
    # File-system daemons listen on many ports (portmapper, bricks 49152+,
    # ceph 6789/6800+): a closed testbed network, no firewall.
    networking.firewall.enable = false;
  };
  # An I/O node: the data disk at /srv/edgelab-data.
  ioNode = {
    imports = [ base ];
    edgelab.dfs.disk = {
      enable = true;
      device = if vm then null else g5kDisk;
    };
  };
  clientNode = {
    imports = [ base ];
    edgelab.dfs.benchTools = true;
    systemd.tmpfiles.rules = [ "d ${mountPoint} 0755 root root -" ];
  };
  # Roles run under the NixOS test framework (qemu-vm.nix): a real empty disk.
  testDisk = { edgelab.dfs.disk.device = "/dev/vdb"; virtualisation.emptyDiskImages = [ 2048 ]; };

  testScript = extra: builtins.replaceStrings
    [ "@CLIENTS@" "@MOUNT@" ]
    [ (builtins.toJSON (names "client")) mountPoint ]
    (extra + builtins.readFile ./dfs-test.py);
}
