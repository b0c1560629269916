# BeaglePaaS (MicroFaaS-style FaaS): an orchestrator and workers, run as
# `python -m edgelab.services.beaglepaas orchestrator|worker` from the edgelab
# package. The units are always installed; `startAtBoot = false` leaves them
# stopped, for testbeds whose experiments start these services themselves
# (edgelab/scenarios/faas.py does) on the same ports.
{ config, lib, pkgs, ... }:
let
  top = config.edgelab;
  cfg = config.edgelab.beaglepaas;
  elib = import ../nix/lib.nix;
  py = "${top.python}/bin/python";
  common = {
    wants = [ "network-online.target" ];
    after = [ "network-online.target" "edgelab-netem.service" ];
    wantedBy = lib.optional cfg.startAtBoot "multi-user.target";
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

    startAtBoot = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Start the service at boot; false installs it stopped (`systemctl start` it, or let an experiment run its own).";
    };

    bind = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      example = "10.0.0.1";
      description = ''
        Address the orchestrator listens on. It has no authentication: give
        it the node's testbed (plan) address so it is not reachable from the
        flavour's other networks.
      '';
    };

    quietBoot = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Boot like a small board should: a quiet console (kernel `quiet`,
        console log level 3). Kernel *configuration* is not changed here:
        nxc's all-in-one flavours boot the base configuration's kernel, not
        a role's (nixos-compose nix/multiple_compositions.nix:122-136), so
        kernel choices belong to the composition.
      '';
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    (lib.mkIf (cfg.role == "orchestrator") {
      systemd.services.edgelab-beaglepaas-orchestrator = common // {
        description = "BeaglePaaS orchestrator";
        script = lib.escapeShellArgs ([ py "-m" "edgelab.services.beaglepaas" "orchestrator"
          "--bind" cfg.bind "--port" (toString cfg.port) ]
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
            --id ${if cfg.workerId != null then lib.escapeShellArg cfg.workerId else ''"$(hostname)"''}
        '';
      };
    })

    (lib.mkIf cfg.quietBoot {
      boot.kernelParams = [ "quiet" ];
      # NixOS already passes loglevel=<consoleLogLevel>
      # (nixos/modules/system/boot/kernel.nix); a second loglevel= would
      # be a duplicate.
      boot.consoleLogLevel = 3;
    })
  ]);
}
