# Evaluate every composition role, per flavour, the way NixOS-Compose does,
# with nixpkgs' `lib` alone (no nixpkgs package set, no builds):
#
# - setup.toml goes through nxc's own nix/setup.nix (params, and the
#   [override-params] nxc writes for `--setup-param`), as compose.nix:76-80;
# - the flavour is nxc's own (nix/flavours.nix) value, as compose.nix passes it;
# - each composition is called with nxc's argument set
#   { pkgs lib system modulesPath helpers flavour setup nur }
#   (generate_one_composition_info.nix:32-34), and each role is evaluated
#   with the modules eval-config.nix gets there (lines 39-52): nxc's two
#   small modules, the role, then extraConfigurations (the flake's, from
#   nix/node-modules.nix, plus compose.nix's nixpkgs.overlays module).
#   The flavour's own module (qemu/netboot plumbing) needs all of NixOS and
#   is not evaluated here.
#
# Every role's `system.build.toplevel` is forced (nix/eval/nixos-options.nix),
# so unknown options, type errors and failed assertions fail the evaluation.
{ nixpkgsLib ? ../../../shared/nix/nixpkgs-lib/lib
, nxc ? ../../../shared/nix/nixos-compose
, root ? ../..
, planDir ? null
, setupFile ? root + "/setup.toml"
, flavours ? [ "vm" "g5k-ramdisk" ]
, only ? null            # a composition name, or null for all
, extraModules ? [ ]     # more modules for every role (tests add a misspelt option here)
}:
let
  lib = import nixpkgsLib;
  pkgs = import ./pkgs.nix { inherit lib planDir; };
  system = "x86_64-linux";
  setup = import (nxc + "/nix/setup.nix") setupFile { inherit lib; };
  nxcFlavours = import (nxc + "/nix/flavours.nix");
  helpers = import (nxc + "/nix/helpers.nix");
  compositions = import (root + "/compositions/compositions.nix");
  edgelab = pkgs.python3Packages.callPackage (root + "/pkgs/edgelab.nix") {
    execo = pkgs.python3Packages.buildPythonPackage { pname = "execo"; version = "2.8.1"; };
  };
  extraConfigurations = import (root + "/nix/node-modules.nix") { inherit edgelab; }
    ++ [{ nixpkgs.overlays = setup.overlays or [ ]; }];

  evalRole = compositionName: flavour: roleName: configuration:
    let
      evaluated = lib.evalModules {
        specialArgs = { modulesPath = "/nixos-modules-not-available"; };
        modules = [
          ./nixos-options.nix
          { _module.args = { inherit pkgs; }; }
          { environment.etc."nxc-composition" = { mode = "0644"; text = compositionName; }; }
          { system.stateVersion = lib.mkDefault lib.trivial.release; }
          configuration
        ] ++ extraConfigurations ++ extraModules;
      };
      cfg = evaluated.config;
      units = cfg.systemd.services;
    in
    builtins.seq cfg.system.build.toplevel.outPath {
      toplevel = cfg.system.build.toplevel.outPath;
      services = lib.mapAttrs
        (_: u: {
          inherit (u) wantedBy requiredBy after before requires bindsTo script preStop environment description;
          unitConfig = lib.mapAttrs (_: toString) u.unitConfig;
          serviceConfig = lib.mapAttrs (_: v: if builtins.isList v then map toString v else toString v) u.serviceConfig;
          path = map toString u.path;
        })
        (lib.filterAttrs (n: _: lib.hasPrefix "edgelab" n || n == "k3s") units);
      slices = lib.mapAttrs (_: s: lib.mapAttrs (_: toString) s.sliceConfig) cfg.systemd.slices;
      tmpfiles = cfg.systemd.tmpfiles.rules;
      k3s = { inherit (cfg.services.k3s) enable role serverAddr extraFlags; configPath = if cfg.services.k3s.configPath == null then null else toString cfg.services.k3s.configPath; };
      kernelModules = cfg.boot.kernelModules;
      kernelParams = cfg.boot.kernelParams;
      kernelPatches = map (p: p.name) cfg.boot.kernelPatches;
      consoleLogLevel = cfg.boot.consoleLogLevel;
      sysctl = cfg.boot.kernel.sysctl;
      firewall = { inherit (cfg.networking.firewall) enable allowedTCPPorts allowedUDPPorts trustedInterfaces; };
      packages = map (p: p.name) cfg.environment.systemPackages;
      etc = lib.mapAttrs (_: e: toString e.source) cfg.environment.etc;
      groups = builtins.attrNames cfg.users.groups;
      fileSystems = lib.mapAttrs (_: f: { inherit (f) device fsType options autoFormat; }) cfg.fileSystems;
      targets = builtins.attrNames cfg.systemd.targets;
      hosts = cfg.networking.hosts;
      dfs = {
        nfsExports = if cfg.services.nfs.server.enable then cfg.services.nfs.server.exports else null;
        orangefsServers = if cfg.services.orangefs.server.enable then cfg.services.orangefs.server.servers else null;
        orangefsClient = if cfg.services.orangefs.client.enable then cfg.services.orangefs.client.fileSystems else null;
        glusterfs = cfg.services.glusterfs.enable;
        ceph = if cfg.services.ceph.enable then {
          inherit (cfg.services.ceph.global) fsid monHost monInitialMembers publicNetwork;
          mon = cfg.services.ceph.mon.daemons; mgr = cfg.services.ceph.mgr.daemons;
          mds = cfg.services.ceph.mds.daemons; osd = cfg.services.ceph.osd.daemons;
          client = cfg.services.ceph.client.enable;
        } else null;
      };
      inherit (cfg) warnings;
    };

  evalComposition = name: composition: flavourName:
    let
      flavour = nxcFlavours.${flavourName};
      set = composition { inherit pkgs lib system helpers flavour setup; modulesPath = "/nixos-modules-not-available"; nur = { }; };
      roles = set.roles or set.nodes;
    in
    {
      roles = lib.mapAttrs (evalRole name flavour) roles;
      rolesDistribution = set.rolesDistribution or { };
      testScript = set.testScript or "";
    };
in
{
  params = setup.params or { };
  compositions = lib.mapAttrs
    (name: composition: lib.genAttrs flavours (evalComposition name composition))
    (if only == null then compositions else { ${only} = compositions.${only}; });
}
