# CephFS: mon-1 runs the monitor, manager and metadata server (ids `a`), osd-1..N
# one bluestore OSD each with distinct ids 0..N-1 (picked at boot from the
# hostname: one image serves every OSD), clients mount with the kernel client.
# nixpkgs services.ceph (nixos/modules/services/network-filesystems/ceph.nix)
# writes /etc/ceph/ceph.conf and one `ceph-<type>-<id>` unit per daemon id, each
# started only once its keyring exists (ConditionPathExists); the daemons'
# bootstrap is left to the user there (nixpkgs' nixos/tests/ceph-multi-node.nix
# does it in its testScript), so it is done here by one-shot units.
#
# Keys: test-only fixed keys in the store (world-readable, like the k3s token
# of k3s-phones: a throwaway cluster, docs/nix.md). Every node has the admin and
# bootstrap-osd keyrings; the monitor's keyring is built from them at its mkfs.
{ pkgs, lib, flavour ? { name = "vm"; }, osds ? 3, clients ? 2, disk ? null, iface ? null, ... }:
let
  d = import ../dfs-common.nix {
    inherit pkgs lib flavour iface disk;
    name = "cephfs";
    counts = { osd = osds; client = clients; };
  };
  fsid = "6b5cf0a6-4f4e-4c1b-9b3e-2f3ed6f0e1a7";
  monIp = d.addr "mon-1";
  keys = {
    mon = "AQAAAAAAAAAAABAAXtxASTszmfVYeESYEf/pBg==";
    admin = "AQAAAAAAAAAAABAAFLbIW0zBMKSeZiGfMfFMLA==";
    bootstrapOsd = "AQAAAAAAAAAAABAAkw12ZhEy+xZu2lLruCywtw==";
  };
  adminKeyring = pkgs.writeText "ceph.client.admin.keyring" ''
    [client.admin]
        key = ${keys.admin}
        caps mds = "allow *"
        caps mgr = "allow *"
        caps mon = "allow *"
        caps osd = "allow *"
  '';
  osdKeyring = pkgs.writeText "ceph.bootstrap-osd.keyring" ''
    [client.bootstrap-osd]
        key = ${keys.bootstrapOsd}
        caps mgr = "allow r"
        caps mon = "profile bootstrap-osd"
  '';
  cephBase = {
    services.ceph = {
      enable = true;
      global = {
        inherit fsid;
        monInitialMembers = "a";
        monHost = monIp;
        publicNetwork = (lib.findFirst (n: n.name == "lan") null d.plan.networks).subnet;
      };
      # A small cluster: one copy of each object, few placement groups.
      extraConfig = {
        "osd pool default size" = "1";
        "osd pool default min size" = "1";
        "osd pool default pg num" = "16";
        "mon allow pool size one" = "true";
      };
    };
    environment.etc."ceph/ceph.client.admin.keyring".source = adminKeyring;
    environment.systemPackages = [ pkgs.ceph ];
  };
  osdIds = map (i: toString (i - 1)) (lib.range 1 osds);
in
{
  roles = {
    mon = { ... }: {
      imports = [ d.base cephBase ];
      services.ceph = {
        mon = { enable = true; daemons = [ "a" ]; };
        mgr = { enable = true; daemons = [ "a" ]; };
        mds = { enable = true; daemons = [ "a" ]; };
      };
      systemd.services.edgelab-ceph-bootstrap = {
        description = "edgelab: create the monitor, manager, metadata server and the file system once";
        wantedBy = [ "multi-user.target" ];
        after = [ "edgelab-netem.service" ];
        path = [ pkgs.ceph pkgs.util-linux pkgs.coreutils ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; TimeoutStartSec = "600"; };
        script = ''
          set -eu
          mon=/var/lib/ceph/mon/ceph-a
          if [ ! -e $mon/keyring ]; then
            tmp=$(mktemp -d)
            ceph-authtool --create-keyring $tmp/keyring --name mon. --add-key ${keys.mon} --cap mon 'allow *'
            ceph-authtool $tmp/keyring --import-keyring ${adminKeyring}
            ceph-authtool $tmp/keyring --import-keyring ${osdKeyring}
            monmaptool --create --fsid ${fsid} --add a ${monIp} $tmp/monmap
            mkdir -p $mon && chown ceph:ceph $mon
            setpriv --reuid=ceph --regid=ceph --init-groups ceph-mon --mkfs -i a --monmap $tmp/monmap --keyring $tmp/keyring
            cp $tmp/keyring $mon/keyring && chown ceph:ceph $mon/keyring
            rm -rf $tmp
          fi
          systemctl start ceph-mon-a.service
          until ceph -s >/dev/null 2>&1; do sleep 2; done
          for t in mgr mds; do
            dir=/var/lib/ceph/$t/ceph-a
            mkdir -p $dir
            if [ ! -e $dir/keyring ]; then
              if [ $t = mgr ]; then caps="mon 'allow profile mgr' osd 'allow *' mds 'allow *'"
              else caps="mon 'allow profile mds' osd 'allow rwx' mds 'allow' mgr 'allow profile mds'"; fi
              eval ceph auth get-or-create $t.a $caps > $dir/keyring
            fi
            chown -R ceph:ceph $dir
            systemctl start ceph-$t-a.service
          done
          if ! ceph fs ls | grep -q 'name: edgelab'; then
            ceph osd pool create edgelab_data 16
            ceph osd pool create edgelab_metadata 16
            ceph fs new edgelab edgelab_metadata edgelab_data
          fi
        '';
      };
    };
    osd = { ... }: {
      imports = [ d.base cephBase ];
      # Every OSD id of the composition has its unit in this shared image; only the
      # one whose keyring exists (this node's, made below) starts.
      services.ceph.osd = {
        enable = true;
        daemons = osdIds;
        extraConfig = { "osd crush chooseleaf type" = "0"; };
      };
      environment.etc."ceph/ceph.bootstrap-osd.keyring".source = osdKeyring;
      systemd.services.edgelab-ceph-osd = {
        description = "edgelab: this node's OSD (id = osd-<n> - 1) on its data disk, once";
        wantedBy = [ "multi-user.target" ];
        after = [ "edgelab-netem.service" ];
        path = [ pkgs.ceph pkgs.util-linux pkgs.coreutils pkgs.lvm2 pkgs.nettools ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; TimeoutStartSec = "900"; };
        script = ''
          set -eu
          host=$(hostname)
          id=$(( ''${host#osd-} - 1 ))
          mkdir -p /var/lib/ceph/bootstrap-osd
          cp /etc/ceph/ceph.bootstrap-osd.keyring /var/lib/ceph/bootstrap-osd/ceph.keyring
          if [ ! -e /var/lib/ceph/osd/ceph-$id/keyring ]; then
            ${if d.vm then ''
              # nxc vm flavours: no block device; a loop file stands in for the disk.
              mkdir -p /var/lib/edgelab-dfs
              [ -e /var/lib/edgelab-dfs/osd.img ] || truncate -s 4G /var/lib/edgelab-dfs/osd.img
              dev=''${EDGELAB_CEPH_DEVICE:-$(losetup --find --show /var/lib/edgelab-dfs/osd.img)}
            '' else ''
              dev=''${EDGELAB_CEPH_DEVICE:-${if disk != null then disk else "/dev/disk/by-label/KDPL_TMP_disk0"}}
            ''}
            until ceph --name client.bootstrap-osd --keyring /var/lib/ceph/bootstrap-osd/ceph.keyring -s >/dev/null 2>&1; do sleep 2; done
            ceph-volume lvm create --bluestore --data "$dev" --osd-id $id --no-systemd
          fi
          chown -R ceph:ceph /var/lib/ceph/osd
          systemctl start ceph-osd-$id.service
        '';
      };
    };
    client = { ... }: {
      imports = [ d.clientNode cephBase ];
      services.ceph.client.enable = true;
      environment.systemPackages = [ pkgs.ceph-client ];
      environment.etc."ceph/admin.secret".text = keys.admin;
      fileSystems.${d.mountPoint} = {
        device = "${monIp}:/";
        fsType = "ceph";
        options = [ "name=admin" "secretfile=/etc/ceph/admin.secret" "fs=edgelab" "noauto" "x-systemd.automount"
                    "x-systemd.mount-timeout=60" "_netdev" ];
      };
    };
  };

  # NixOS tests: each OSD on a real empty disk.
  testNodes.osd = { virtualisation.emptyDiskImages = [ 4096 ]; systemd.services.edgelab-ceph-osd.environment.EDGELAB_CEPH_DEVICE = "/dev/vdb"; };

  rolesDistribution = d.c.elib.rolesDistribution d.plan;

  testScript = d.testScript (builtins.replaceStrings [ "@OSDS@" ] [ (toString osds) ] (builtins.readFile ./test.py));
}
