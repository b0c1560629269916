# What the distributed-file-system compositions share: a data disk for the
# daemons that store data (bricks, OSDs, NFS exports, OrangeFS storage space)
# and the I/O benchmarks on clients.
#
# The disk: on the NixOS tests (qemu-vm.nix) an empty disk from
# `virtualisation.emptyDiskImages` (/dev/vdb); on Grid'5000 the node's disk
# partition the standard environment labels KDPL_TMP_disk0 (its /tmp, free
# scratch space once a g5k flavour has kexec'ed NixOS) or a disk reserved with
# OAR; on nxc's vm flavours, which give a VM no disk but its tmpfs root (their
# qemu command line, nixos-compose nix/flavours/shared/common.nix:120-139,
# adds none; `virtualisation.*` is not even declared there), a loop file of
# `sizeMiB`. With a device, NixOS formats it at boot when it holds no file
# system (`fileSystems.<path>.autoFormat`, nixos/modules/tasks/filesystems.nix)
# and mounts it; with `user_xattr` on ext4 (GlusterFS keeps its metadata in
# xattrs).
{ config, lib, pkgs, ... }:
let
  cfg = config.edgelab.dfs;
  d = cfg.disk;
  mountOptions = if d.fsType == "ext4" then [ "user_xattr" "noatime" ] else [ "noatime" ];
  mkfs = if d.fsType == "ext4" then "mkfs.ext4 -q -F" else "mkfs.xfs -q -f -i size=512";
in
{
  options.edgelab.dfs = {
    disk = {
      enable = lib.mkEnableOption "a data disk for this node's file-system daemon";
      device = lib.mkOption {
        type = lib.types.nullOr lib.types.str;
        default = null;
        example = "/dev/disk/by-label/KDPL_TMP_disk0";
        description = ''
          Block device holding the data (formatted at boot if it has no
          file system: its contents are lost). null: a loop file of
          `sizeMiB` under /var/lib/edgelab-dfs (nxc's vm flavours have no
          extra disk).
        '';
      };
      sizeMiB = lib.mkOption {
        type = lib.types.ints.positive;
        default = 2048;
        description = "Size of the loop file when `device` is null.";
      };
      fsType = lib.mkOption {
        type = lib.types.enum [ "ext4" "xfs" ];
        default = "ext4";
        description = "File system of the data disk (ext4 is mounted with user_xattr).";
      };
      mountPoint = lib.mkOption {
        type = lib.types.str;
        default = "/srv/edgelab-data";
        description = "Where the data disk is mounted.";
      };
    };

    mountPoint = lib.mkOption {
      type = lib.types.str;
      default = "/mnt/edgelab-fs";
      description = "Where clients mount the distributed file system (edgelab.dfs.compositions.MOUNT).";
    };

    benchTools = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Put IOR and mdtest (nixpkgs `ior`, which builds both) and fio on PATH.";
    };
  };

  config = lib.mkMerge [
    (lib.mkIf (d.enable && d.device != null) {
      fileSystems.${d.mountPoint} = {
        device = d.device;
        fsType = d.fsType;
        autoFormat = true;
        options = mountOptions ++ [ "nofail" ];
      };
      environment.systemPackages = [ pkgs.e2fsprogs pkgs.xfsprogs ];
    })
    (lib.mkIf (d.enable && d.device == null) {
      systemd.services.edgelab-dfs-disk = {
        description = "edgelab: loop-file data disk (no block device on this flavour)";
        wantedBy = [ "multi-user.target" ];
        before = [ "edgelab-dfs.target" ];
        requiredBy = [ "edgelab-dfs.target" ];
        path = [ pkgs.util-linux pkgs.e2fsprogs pkgs.xfsprogs ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
        script = ''
          set -eu
          img=/var/lib/edgelab-dfs/disk.img
          mkdir -p /var/lib/edgelab-dfs ${d.mountPoint}
          if [ ! -e "$img" ]; then
            truncate -s ${toString d.sizeMiB}M "$img"
            ${mkfs} "$img"
          fi
          mountpoint -q ${d.mountPoint} || mount -o loop,${lib.concatStringsSep "," mountOptions} "$img" ${d.mountPoint}
        '';
      };
    })
    (lib.mkIf d.enable {
      # Units of the file-system daemons order themselves after this target.
      systemd.targets.edgelab-dfs = {
        description = "edgelab: the data disk is mounted";
        wantedBy = [ "multi-user.target" ];
        after = [ "local-fs.target" ];
      };
    })
    (lib.mkIf cfg.benchTools {
      environment.systemPackages = [ pkgs.ior pkgs.fio ];
    })
  ];
}
