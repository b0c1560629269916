# The observation stack of the seeds (Prometheus + Grafana) on the server/observer node:
# Prometheus scrapes every target the plan implies (each worker's plug on the meter node, the
# BeaglePaaS orchestrator, the phone services, node exporters) and Grafana comes up with that
# Prometheus as its datasource and the dashboards kept as JSON in ../dashboards.
#
# Not imported by modules/default.nix on purpose (that file is shared): add
#   imports = [ ../../modules/observability.nix ];  edgelab.observability.enable = true;
# to the observer node of a composition (docs/observability.md).
#
# nixpkgs options used (nixos-23.11):
# - nixos/modules/services/monitoring/prometheus/default.nix: services.prometheus.{enable, port,
#   globalConfig.scrape_interval, scrapeConfigs} (scrapeConfigs: list of promTypes.scrape_config,
#   each with job_name and static_configs = [ { targets = [ "host:port" ]; } ]).
# - nixos/modules/services/monitoring/grafana.nix: services.grafana.{enable, settings.server.http_addr,
#   settings.server.http_port, provision.enable, provision.datasources.settings.{apiVersion,datasources},
#   provision.dashboards.settings.{apiVersion,providers}} (providers[].options.path: a directory of
#   dashboard JSON files, copied to the store).
{ config, lib, ... }:
let
  inherit (lib) mkOption types;
  cfg = config.edgelab.observability;
  planFile = if cfg.planFile != null then cfg.planFile else (config.edgelab.planFile or null);
  plan = if planFile == null then { nodes = [ ]; } else builtins.fromJSON (builtins.readFile planFile);
  address = n: builtins.head (lib.splitString "/" (builtins.head n.interfaces).address);
  ofRole = role: builtins.filter (n: n.role == role) plan.nodes;
  target = port: n: "${address n}:${toString port}";
  workers = ofRole "beaglepaas-worker";
  # edgelab.scenarios.faas: the meter node serves worker i's plug on PLUG_PORT + i
  plugTargets = lib.concatMap (m: lib.imap0 (i: _: "${address m}:${toString (cfg.plugBasePort + i)}") workers)
    (ofRole "power-meter");
  phones = builtins.filter (n: n.group == "phone" || n.role == "phone") plan.nodes;
  job = name: targets: { job_name = name; static_configs = [ { inherit targets; } ]; };
  planned = [
    (job "plugs" plugTargets)
    (job "faas" (map (target cfg.orchestratorMetricsPort) (ofRole "beaglepaas-orchestrator")))
    (job "phones" (map (target cfg.phoneMetricsPort) phones))
  ] ++ lib.optional cfg.nodeExporters (job "nodes" (map (target cfg.nodeExporterPort) plan.nodes));
  extra = lib.mapAttrsToList job cfg.extraTargets;
  jobs = builtins.filter (j: (builtins.head j.static_configs).targets != [ ]) (planned ++ extra);
in
{
  options.edgelab.observability = {
    enable = lib.mkEnableOption "Prometheus and Grafana scraping the testbed's plugs, services and nodes";

    planFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      description = "Plan JSON the scrape targets come from (default: edgelab.planFile).";
    };

    scrapeInterval = mkOption {
      type = types.str;
      default = "5s";
      description = "Prometheus scrape interval (a plug samples every second).";
    };

    plugBasePort = mkOption {
      type = types.port;
      default = 8100;
      description = "Port of the first worker's plug on the meter node (edgelab.scenarios.faas.PLUG_PORT).";
    };

    orchestratorMetricsPort = mkOption {
      type = types.port;
      default = 9102;
      description = "Port of the BeaglePaaS orchestrator's /metrics (its --metrics-port).";
    };

    phoneMetricsPort = mkOption {
      type = types.port;
      default = 9101;
      description = "Port of the phone service's /metrics (its --metrics-port).";
    };

    nodeExporters = mkOption {
      type = types.bool;
      default = false;
      description = "Also scrape a node exporter on every node (enable services.prometheus.exporters.node there).";
    };

    nodeExporterPort = mkOption {
      type = types.port;
      default = 9100;
      description = "Node exporter port.";
    };

    extraTargets = mkOption {
      type = types.attrsOf (types.listOf types.str);
      default = { };
      example = { lab-plugs = [ "192.168.1.60:8081" ]; };
      description = ''
        More scrape jobs, name -> host:port targets. A real Tasmota plug serves no /metrics: put an
        edgelab meter in front of it (--source tasmota-http --plug-url http://PLUG) and scrape that.
      '';
    };

    prometheusPort = mkOption { type = types.port; default = 9090; description = "Prometheus port."; };
    grafanaPort = mkOption { type = types.port; default = 3000; description = "Grafana port."; };

    scrapeJobs = mkOption {
      type = types.listOf types.attrs;
      readOnly = true;
      default = jobs;
      description = "The scrape jobs computed from the plan (what services.prometheus.scrapeConfigs gets).";
    };
  };

  config = lib.mkIf cfg.enable {
    services.prometheus = {
      enable = true;
      port = cfg.prometheusPort;
      globalConfig.scrape_interval = cfg.scrapeInterval;
      scrapeConfigs = jobs;
    };
    services.grafana = {
      enable = true;
      settings.server = { http_addr = "0.0.0.0"; http_port = cfg.grafanaPort; };
      provision = {
        enable = true;
        datasources.settings = {
          apiVersion = 1;
          datasources = [ {
            name = "Prometheus"; uid = "edgelab-prometheus"; type = "prometheus"; access = "proxy";
            url = "http://127.0.0.1:${toString cfg.prometheusPort}"; isDefault = true;
          } ];
        };
        dashboards.settings = {
          apiVersion = 1;
          providers = [ { name = "edgelab"; type = "file"; options.path = ../dashboards; } ];
        };
      };
    };
    networking.firewall.allowedTCPPorts = [ cfg.prometheusPort cfg.grafanaPort ];
  };
}
