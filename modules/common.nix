# Options every edgelab module shares: which edgelab package the services run,
# and the plan (nodes, addresses, links) this machine is part of.
{ config, lib, pkgs, ... }:
let
  cfg = config.edgelab;
in
{
  options.edgelab = {
    package = lib.mkOption {
      type = lib.types.package;
      # execo is not in nixpkgs (see pkgs/edgelab.nix); flake.nix sets this
      # option to its `edgelab` package, built with nur-kapack's execo.
      default = pkgs.python3Packages.callPackage ../pkgs/edgelab.nix { execo = pkgs.python3Packages.execo or null; };
      defaultText = lib.literalExpression "pkgs.python3Packages.callPackage ./pkgs/edgelab.nix { execo = pkgs.python3Packages.execo or null; }";
      description = "The edgelab Python package (a buildPythonPackage) whose modules the services run; the flake's nixosModules set it to the flake's package.";
    };

    python = lib.mkOption {
      type = lib.types.package;
      readOnly = true;
      default = pkgs.python3.withPackages (_: [ cfg.package ]);
      defaultText = lib.literalExpression "pkgs.python3.withPackages (_: [ config.edgelab.package ])";
      description = "A Python interpreter that can import edgelab; services run `python -m edgelab...` with it.";
    };

    planFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      example = lib.literalExpression "pkgs.callPackage ./pkgs/plan.nix { ... } { topology = ./topology.yaml; }";
      description = ''
        The plan JSON of the testbed (edgelab.plan.make_plan(...).to_dict()).
        Node names, addresses, links and routes are read from it, so Python
        and Nix agree on them.
      '';
    };

    node = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "phone-1";
      description = ''
        This machine's node name in the plan. null means its hostname at boot,
        which is how NixOS-Compose names the nodes of a role that share one image.
      '';
    };

    nodeTools = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Put on PATH what edgelab's experiments run on a node over SSH: a
        `python3` that imports edgelab (`python3 -m edgelab.services...`),
        iperf3, iproute2 (ip, tc), nftables and iptables.
      '';
    };

    interfaceMap = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = { wlan0 = "eth1"; };
      description = ''
        Plan interface name -> device on this machine. The plan names
        interfaces by kind (wlan0, eth0, mesh0); a flavour may have others
        (NixOS-Compose's vm flavour puts every node on eth1).
      '';
    };
  };

  config = {
    environment.etc = lib.mkIf (cfg.planFile != null) {
      "edgelab/plan.json".source = cfg.planFile;
    };
    environment.systemPackages = lib.mkIf cfg.nodeTools
      [ cfg.python pkgs.iperf3 pkgs.iproute2 pkgs.nftables pkgs.iptables pkgs.procps ];
  };
}
