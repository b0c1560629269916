# BeaglePaaS (MicroFaaS-style FaaS): an orchestrator and workers, run as
# `python -m edgelab.services.beaglepaas orchestrator|worker` from the edgelab
# package, plus a trimmed kernel config for fast boot on small boards.
{ config, lib, pkgs, ... }:
let
  top = config.edgelab;
  cfg = config.edgelab.beaglepaas;
  elib = import ../nix/lib.nix;
  kernelConfig = import ../nix/kernel.nix lib;
  py = "${top.python}/bin/python";
  common = {
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "edgelab-netem.service" ];
    wantedBy = [ "multi-user.target" ];
    serviceConfig = {
      Restart = "always";
      RestartSec = "2s";
      DynamicUser = true;
    };
  };
in
{
  options.edgelab.beaglepaas = {
    enable = lib.mkEnableOption "a BeaglePaaS (FaaS) node";

    role = lib.mkOption {
      type = lib.types.enum [ "orchestrator" "worker" ];
      default = "worker";
      description = "Which BeaglePaaS service this node runs.";
    };

    port = lib.mkOption {
      type = lib.types.port;
      default = 7000;
      description = "TCP port the orchestrator listens on (workers and clients connect to it).";
    };

    orchestrator = lib.mkOption {
      type = lib.types.str;
      default = "orchestrator-1";
      description = "Host name or address of the orchestrator, for workers.";
    };

    workerId = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      description = "Worker id reported to the orchestrator; null means the hostname (the plan's node name).";
    };

    meters = lib.mkOption {
      type = lib.types.attrsOf lib.types.str;
      default = { };
      example = { worker-1 = "http://power-1"; };
      description = "Worker id -> base URL of the Tasmota plug measuring it; the orchestrator charges each invocation its energy.";
    };

    jobTimeout = lib.mkOption {
      type = lib.types.nullOr lib.types.float;
      default = null;
      description = ''
        Seconds a job may run (orchestrator). Past it the invocation fails and is
        never dispatched again (at most once); its worker gets no new job until it
        reports the late result.
      '';
    };

    fastBoot = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Boot like a small board should: a kernel with leaf debug/boot-time
        options trimmed (nix/lib.nix kernelFragments.fastBoot; costs a kernel
        build) and a quiet console.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    (lib.mkIf (cfg.role == "orchestrator") {
      systemd.services.edgelab-beaglepaas-orchestrator = common // {
        description = "BeaglePaaS orchestrator";
        script = lib.escapeShellArgs ([ py "-m" "edgelab.services.beaglepaas" "orchestrator"
          "--bind" "0.0.0.0" "--port" (toString cfg.port) ]
          ++ lib.concatLists (lib.mapAttrsToList (w: url: [ "--meter" "${w}=${url}" ]) cfg.meters)
          ++ lib.optionals (cfg.jobTimeout != null) [ "--job-timeout" (toString cfg.jobTimeout) ]);
      };
      networking.firewall.allowedTCPPorts = [ cfg.port ];
    })

    (lib.mkIf (cfg.role == "worker") {
      systemd.services.edgelab-beaglepaas-worker = common // {
        description = "BeaglePaaS worker";
        path = [ pkgs.nettools ];
        script = ''
          exec ${lib.escapeShellArgs [ py "-m" "edgelab.services.beaglepaas" "worker"
            "--connect" "${cfg.orchestrator}:${toString cfg.port}" "--connect-timeout" "120" ]} \
            --id "${if cfg.workerId != null then cfg.workerId else "$(hostname)"}"
        '';
      };
    })

    (lib.mkIf cfg.fastBoot {
      boot.kernelPatches = [{
        name = "edgelab-fast-boot";
        patch = null;
        extraStructuredConfig = kernelConfig { fragment = elib.kernelFragments.fastBoot; force = true; };
      }];
      boot.kernelParams = [ "quiet" "loglevel=3" ];
    })
  ]);
}
