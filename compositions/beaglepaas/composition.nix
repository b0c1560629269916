# BeaglePaaS: orchestrator, N workers, a Tasmota-compatible power meter.
# `workers` is the number of workers, a parameter.
{ pkgs, lib, flavour ? { name = "vm"; }, workers ? 2, iface ? null, ... }:
let
  c = import ../common.nix { inherit pkgs flavour iface; };
  planFile = c.mkPlan { topology = ./topology.yaml; counts = { worker = workers; }; name = "beaglepaas"; };
  plan = c.elib.readPlan planFile;
  orchIp = c.elib.addressOf plan "orchestrator-1" "lan";
  powerIp = c.elib.addressOf plan "power-1" "lan";
  base = {
    edgelab.planFile = planFile;
    edgelab.interfaceMap = c.interfaceMap plan;
    edgelab.netem.enable = true;
    environment.systemPackages = [ pkgs.curl pkgs.jq pkgs.iproute2 ];
  };
in
{
  roles = {
    orchestrator = { config, ... }: {
      imports = [ base ];
      edgelab.beaglepaas = {
        enable = true;
        role = "orchestrator";
        # The one emulated plug stands for every worker here.
        meters = lib.genAttrs (map (n: n.name) (c.elib.nodesOfGroup plan "worker")) (_: "http://${powerIp}");
      };
      environment.systemPackages = [ config.edgelab.python ];
    };
    worker = { ... }: {
      imports = [ base ];
      edgelab.beaglepaas = {
        enable = true;
        role = "worker";
        orchestrator = orchIp;
      };
    };
    power = { ... }: {
      imports = [ base ];
      edgelab.powerMeter = {
        enable = true;
        watts = 2.3;
      };
    };
  };

  rolesDistribution = c.elib.rolesDistribution plan;

  testScript = builtins.replaceStrings [ "@WORKERS@" "@ORCH@" "@POWER@" ] [ (toString workers) orchIp powerIp ]
    (builtins.readFile ./test.py);
}
