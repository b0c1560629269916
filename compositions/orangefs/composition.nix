# OrangeFS, as in the folding paper (Guilloteau et al., hal-04038000): every
# server is a metadata and data server of one file system `orangefs`
# (nixpkgs services.orangefs.server, nixos/modules/services/network-filesystems/
# orangefs/server.nix: the config lists every server as an alias with its URL and
# splits handle ranges between them); storage on the data disk, formatted once
# (`pvfs2-server -f`, as nixpkgs' nixos/tests/orangefs.nix does by hand) before
# the server starts. Clients: services.orangefs.client (orangefs/client.nix), the
# kernel module and pvfs2-client-core, mounting tcp://server-1:3334/orangefs.
{ pkgs, lib, flavour ? { name = "vm"; }, servers ? 1, clients ? 2, disk ? null, iface ? null, ... }:
let
  d = import ../dfs-common.nix {
    inherit pkgs lib flavour iface disk;
    name = "orangefs";
    counts = { server = servers; client = clients; };
  };
  data = "/srv/edgelab-data/orangefs";
  url = node: "tcp://${d.addr node}:3334";
in
{
  roles = {
    server = { ... }: {
      imports = [ d.ioNode ];
      services.orangefs.server = {
        enable = true;
        dataStorageSpace = "${data}/storage";
        metadataStorageSpace = "${data}/meta";
        servers = lib.genAttrs (d.names "server") url;
      };
      # Aliases are the plan's node names = hostnames (nxc's rolesDistribution), which
      # is how pvfs2-server finds which alias it is.
      systemd.services.edgelab-orangefs-format = {
        description = "edgelab: create this server's OrangeFS storage space once";
        wantedBy = [ "orangefs-server.service" ];
        before = [ "orangefs-server.service" ];
        after = [ "edgelab-dfs.target" ];
        wants = [ "edgelab-dfs.target" ];
        path = [ pkgs.orangefs pkgs.util-linux ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
        script = ''
          set -eu
          mkdir -p ${data}/storage ${data}/meta
          chown -R orangefs:orangefs ${data}
          chmod 0770 ${data}/storage ${data}/meta
          if [ ! -e ${data}/.formatted ]; then
            setpriv --reuid=orangefs --regid=orangefs --init-groups pvfs2-server -f /etc/orangefs/server.conf
            touch ${data}/.formatted
          fi
        '';
      };
    };
    client = { ... }: {
      imports = [ d.clientNode ];
      services.orangefs.client = {
        enable = true;
        fileSystems = [{ mountPoint = d.mountPoint; target = "${url "server-1"}/orangefs"; }];
      };
    };
  };

  testNodes.server = d.testDisk;

  rolesDistribution = d.c.elib.rolesDistribution d.plan;

  testScript = d.testScript (builtins.replaceStrings [ "@SERVERS@" ] [ (builtins.toJSON (d.names "server")) ]
    (builtins.readFile ./test.py));
}
