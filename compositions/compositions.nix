# The compositions NixOS-Compose builds (`nxc build -C <name>::<flavour>`).
# Each is a function of nxc's arguments ({ pkgs, lib, flavour, setup, ... },
# nixos-compose nix/generate_one_composition_info.nix:32-34); node counts come
# from setup.toml [params] (`--setup-param k3s_phones=8`).
#
# nxc writes `--setup-param NAME=VALUE` into setup.toml's [override-params]
# and converts only integers (nixos-compose nixos_compose/setup.py:58-64):
# `batman=true` arrives as the string "true". Values are coerced here, with an
# error naming the parameter when they cannot be.
let
  raw = setup: name: default: ((setup.params or { }).${name} or default);

  count = min: setup: name: default:
    let
      v = raw setup name default;
      n = if builtins.isInt v then v
        else if builtins.isString v && builtins.match "[0-9]+" v != null then builtins.fromJSON v
        else null;
    in if n != null && n >= min then n
    else throw "setup parameter ${name} must be a whole number >= ${toString min}, got ${builtins.toJSON v}";

  flag = setup: name: default:
    let v = raw setup name default;
    in if builtins.isBool v then v
    else if builtins.elem v [ "true" "1" 1 "yes" "on" ] then true
    else if builtins.elem v [ "false" "0" 0 "no" "off" "" ] then false
    else throw "setup parameter ${name} must be true or false, got ${builtins.toJSON v}";

  # A device path, or null when unset/empty.
  str = setup: name:
    let v = raw setup name ""; in
    if v == "" || v == null then null
    else if builtins.isString v && builtins.substring 0 5 v == "/dev/" then v
    else throw "setup parameter ${name} must be a device path under /dev/, got ${builtins.toJSON v}";
in
{
  k3s-phones = args@{ setup ? { }, ... }:
    import ./k3s-phones/composition.nix (args // {
      phones = count 1 setup "k3s_phones" 3;
      relays = count 0 setup "relays" 0;
      wifiAp = flag setup "wifi_ap" false;
    });
  beaglepaas = args@{ setup ? { }, ... }:
    import ./beaglepaas/composition.nix (args // { workers = count 1 setup "workers" 2; });
  # Distributed file systems (compositions/dfs-common.nix): I/O nodes and clients
  # as parameters; `dfs_disk` names the data disk on Grid'5000 (default: the
  # standard environment's KDPL_TMP_disk0 partition).
  nfs = args@{ setup ? { }, ... }:
    import ./nfs/composition.nix (args // {
      servers = count 1 setup "nfs_servers" 1;
      clients = count 1 setup "nfs_clients" 2;
      disk = str setup "dfs_disk";
    });
  orangefs = args@{ setup ? { }, ... }:
    import ./orangefs/composition.nix (args // {
      servers = count 1 setup "orangefs_servers" 1;
      clients = count 1 setup "orangefs_clients" 2;
      disk = str setup "dfs_disk";
    });
  glusterfs = args@{ setup ? { }, ... }:
    import ./glusterfs/composition.nix (args // {
      servers = count 1 setup "glusterfs_servers" 2;
      clients = count 1 setup "glusterfs_clients" 2;
      disk = str setup "dfs_disk";
    });
  cephfs = args@{ setup ? { }, ... }:
    import ./cephfs/composition.nix (args // {
      osds = count 1 setup "ceph_osds" 3;
      clients = count 1 setup "ceph_clients" 2;
      disk = str setup "dfs_disk";
    });
  mesh = args@{ setup ? { }, ... }:
    import ./mesh/composition.nix (args // {
      phones = count 2 setup "mesh_phones" 4;
      batman = flag setup "batman" false;
    });
}
