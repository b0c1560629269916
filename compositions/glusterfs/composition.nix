# GlusterFS: glusterd on every server (nixpkgs services.glusterfs,
# nixos/modules/services/network-filesystems/glusterfs.nix), one brick each on
# its data disk; server-1 creates one distributed volume `edgelab` over every
# brick as a one-shot unit once every server answers a peer probe, and starts it.
# Clients mount it with the FUSE client on first access (systemd automount).
{ pkgs, lib, flavour ? { name = "vm"; }, servers ? 2, clients ? 2, disk ? null, iface ? null, ... }:
let
  d = import ../dfs-common.nix {
    inherit pkgs lib flavour iface disk;
    name = "glusterfs";
    counts = { server = servers; client = clients; };
  };
  brick = "/srv/edgelab-data/brick";
  serverNames = d.names "server";
  bricks = lib.concatMapStringsSep " " (s: "${d.addr s}:${brick}") serverNames;
in
{
  roles = {
    server = { config, ... }: {
      imports = [ d.ioNode ];
      services.glusterfs = {
        enable = true;
        # No NFS gateway: no rpcbind, no glustereventsd (one reflection vector less).
        useRpcbind = false;
        enableGlustereventsd = false;
      };
      systemd.services.glusterd = {
        after = [ "edgelab-dfs.target" ];
        wants = [ "edgelab-dfs.target" ];
        preStart = "mkdir -p ${brick}";
      };
      # The volume, once: only on server-1 (every server image has the unit; it
      # exits at once elsewhere), after every peer has joined.
      systemd.services.edgelab-glusterfs-volume = {
        description = "edgelab: create and start the GlusterFS volume once every brick is up";
        wantedBy = [ "multi-user.target" ];
        after = [ "glusterd.service" "edgelab-netem.service" ];
        requires = [ "glusterd.service" ];
        path = [ pkgs.glusterfs pkgs.gnugrep pkgs.coreutils pkgs.nettools ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; TimeoutStartSec = "900"; };
        script = ''
          set -eu
          [ "$(hostname)" = "server-1" ] || exit 0
          gluster --mode=script volume info edgelab >/dev/null 2>&1 && exit 0
          for peer in ${lib.concatMapStringsSep " " d.addr (lib.tail serverNames)}; do
            until gluster --mode=script peer probe "$peer"; do sleep 2; done
          done
          until [ "$(gluster --mode=script pool list | grep -c Connected)" -eq ${toString servers} ]; do sleep 2; done
          gluster --mode=script volume create edgelab transport tcp ${bricks} force
          gluster --mode=script volume start edgelab
        '';
      };
    };
    client = { ... }: {
      imports = [ d.clientNode ];
      # mount.glusterfs (the FUSE client) comes with the package.
      environment.systemPackages = [ pkgs.glusterfs ];
      fileSystems.${d.mountPoint} = {
        device = "${d.addr "server-1"}:/edgelab";
        fsType = "glusterfs";
        options = [ "noauto" "x-systemd.automount" "x-systemd.mount-timeout=60" "_netdev" ];
      };
    };
  };

  testNodes.server = d.testDisk;

  rolesDistribution = d.c.elib.rolesDistribution d.plan;

  testScript = d.testScript (builtins.replaceStrings [ "@SERVERS@" ] [ (builtins.toJSON serverNames) ]
    (builtins.readFile ./test.py));
}
