# A Tasmota-compatible power meter (`python -m edgelab.services.power`):
# answers /cm?cmnd=Status%208 like a real smart plug, so the same
# measurement code reads emulated and real plugs. Like a real plug it has no
# authentication: bind it to the testbed (plan) address.
{ config, lib, pkgs, ... }:
let
  top = config.edgelab;
  cfg = config.edgelab.powerMeter;
in
{
  options.edgelab.powerMeter = {
    enable = lib.mkEnableOption "the Tasmota-compatible power meter service";

    port = lib.mkOption {
      type = lib.types.port;
      default = 80;
      description = "HTTP port (a real Tasmota plug answers on 80).";
    };

    bind = lib.mkOption {
      type = lib.types.str;
      default = "0.0.0.0";
      example = "10.0.0.3";
      description = "Address to listen on; give the node's testbed (plan) address so the unauthenticated API stays on the testbed network.";
    };

    startAtBoot = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Start at boot; false installs the unit stopped (for experiments that run their own meters on this port).";
    };

    source = lib.mkOption {
      type = lib.types.enum [ "constant" "modelled" "tasmota-http" "tasmota-mqtt" ];
      default = "constant";
      description = "Where readings come from: a constant, a CPU-utilisation model, or a real plug (HTTP or MQTT).";
    };

    watts = lib.mkOption {
      type = lib.types.float;
      default = 2.5;
      description = "Power reported by the constant source, in W.";
    };

    device = lib.mkOption {
      type = lib.types.str;
      default = "bbb";
      description = "Device class of the modelled source (see edgelab.services.power.sources.DEVICE_CLASSES).";
    };

    topic = lib.mkOption {
      type = lib.types.str;
      default = "edgelab_plug";
      description = "Tasmota topic (tele/<topic>/SENSOR).";
    };

    extraArgs = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--plug-url" "http://192.168.1.50" ];
      description = "More arguments for the service (e.g. --plug-url, --mqtt-host, --pids).";
    };
  };

  config = lib.mkIf cfg.enable {
    systemd.services.edgelab-power-meter = {
      description = "edgelab Tasmota-compatible power meter";
      wantedBy = lib.optional cfg.startAtBoot "multi-user.target";
      # Its bind address may be a plan address, which edgelab-netem adds.
      after = [ "network.target" "edgelab-netem.service" ];
      serviceConfig = {
        ExecStart = lib.escapeShellArgs ([ "${top.python}/bin/python" "-m" "edgelab.services.power"
          "--bind" cfg.bind "--port" (toString cfg.port) "--topic" cfg.topic
          "--source" cfg.source "--watts" (toString cfg.watts) "--device" cfg.device
          "--state-file" "/var/lib/edgelab-power/state.json" ] ++ cfg.extraArgs);
        StateDirectory = "edgelab-power";
        Restart = "always";
        # Port 80 without running as root.
        DynamicUser = true;
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
      };
    };
    networking.firewall.allowedTCPPorts = [ cfg.port ];
  };
}
