# NFS: server-1..S export their data disk over NFSv4 (nixpkgs services.nfs.server,
# nixos/modules/services/network-filesystems/nfsd.nix); clients mount server-1's
# export at /mnt/edgelab-fs on first access (systemd automount), so a client that
# boots before the server does not fail its boot.
{ pkgs, lib, flavour ? { name = "vm"; }, servers ? 1, clients ? 2, disk ? null, iface ? null, ... }:
let
  d = import ../dfs-common.nix {
    inherit pkgs lib flavour iface disk;
    name = "nfs";
    counts = { server = servers; client = clients; };
  };
  export = "/srv/edgelab-data";
in
{
  roles = {
    server = { ... }: {
      imports = [ d.ioNode ];
      services.nfs.server = {
        enable = true;
        # fsid=0: the NFSv4 pseudo-root, so clients mount `server:/`.
        exports = "${export} *(rw,no_root_squash,no_subtree_check,fsid=0,insecure)";
      };
      # The export is the data disk: serve it only once it is mounted.
      systemd.services.nfs-server = {
        after = [ "edgelab-dfs.target" ];
        wants = [ "edgelab-dfs.target" ];
      };
    };
    client = { ... }: {
      imports = [ d.clientNode ];
      fileSystems.${d.mountPoint} = {
        device = "${d.addr "server-1"}:/";
        fsType = "nfs";
        options = [ "nfsvers=4.2" "noauto" "x-systemd.automount" "x-systemd.mount-timeout=60" "_netdev" ];
      };
    };
  };

  # NixOS tests (qemu-vm.nix): a real empty disk on the servers.
  testNodes.server = d.testDisk;

  rolesDistribution = d.c.elib.rolesDistribution d.plan;

  testScript = d.testScript (builtins.replaceStrings [ "@SERVERS@" ] [ (builtins.toJSON (d.names "server")) ]
    (builtins.readFile ./test.py));
}
