# Link emulation on a real node: at boot, impair each of this node's
# interfaces as the plan says, by calling the same Python code the local
# backend uses (`python -m edgelab.linkemu apply ...`, see LINKEMU_API.md).
{ config, lib, pkgs, ... }:
let
  top = config.edgelab;
  cfg = config.edgelab.netem;
  elib = import ../nix/lib.nix;
  plan = elib.readPlan top.planFile;
  names = if top.node != null then [ top.node ] else elib.nodeNames plan;
  python = "${top.python}/bin/python";
  # A device found at boot (nix/lib.nix defaultRouteDev) must be found.
  requireDev = builtins.elem elib.defaultRouteDev (builtins.attrValues top.interfaceMap);
  commandsFor = name:
    lib.optionals cfg.addresses (elib.addressCommands { inherit plan name; ifmap = top.interfaceMap; })
    ++ elib.linkCommands { inherit plan name python; ifmap = top.interfaceMap; inherit (cfg) engine; };
in
{
  options.edgelab.netem = {
    enable = lib.mkEnableOption "link emulation of this node's planned links at boot (edgelab.linkemu)";

    engine = lib.mkOption {
      type = lib.types.enum [ "auto" "netem" "fallback" ];
      default = "netem";
      description = ''
        linkemu engine. NixOS kernels have sch_netem, so `netem` by default;
        `auto` probes, `fallback` uses HTB/TBF + nftables + the NFQUEUE delayer.
      '';
    };

    addresses = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Also add the plan's addresses and static routes to the devices before impairing them.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = top.planFile != null;
      message = "edgelab.netem needs edgelab.planFile (the plan JSON of the testbed).";
    }];

    boot.kernelModules = [ "sch_netem" "sch_htb" "ifb" ];

    systemd.services.edgelab-netem = {
      description = "edgelab link emulation of this node's planned links";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      # Services measured over the emulated links start after it.
      before = [ "k3s.service" "edgelab-beaglepaas-worker.service" "edgelab-beaglepaas-orchestrator.service" ];
      path = [ pkgs.iproute2 pkgs.nettools pkgs.nftables pkgs.iptables ];
      environment = lib.optionalAttrs (top.node != null) { EDGELAB_NODE = top.node; };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = elib.perNodeScript { inherit plan names commandsFor requireDev; };
      preStop = elib.perNodeScript {
        inherit plan names requireDev;
        commandsFor = name: map
          (l: "${python} -m edgelab.linkemu clear --dev ${l.dev} || true")
          (elib.nodeSettings { inherit plan name; ifmap = top.interfaceMap; }).links;
      };
    };
  };
}
