# BeaglePaaS: orchestrator, N workers, a Tasmota-compatible power meter.
# `workers` is the number of workers, a parameter (setup.toml `workers`).
#
# The services are installed but not started at boot: the FaaS experiment
# (edgelab/scenarios/faas.py) starts its own orchestrator, workers and
# emulated plugs on these nodes, on the same ports. The testScript starts the
# installed units. Both listen on the node's plan address only (no
# authentication, see docs/nix.md).
{ pkgs, lib, flavour ? { name = "vm"; }, workers ? 2, iface ? null, ... }:
let
  c = import ../common.nix { inherit pkgs flavour iface; };
  planFile = c.mkPlan { topology = ./topology.yaml; counts = { worker = workers; }; name = "beaglepaas"; };
  plan = c.elib.readPlan planFile;
  orchIp = c.elib.addressOf plan "orchestrator-1" "lan";
  powerIp = c.elib.addressOf plan "power-1" "lan";
  base = {
    imports = [ (c.base planFile plan) ];
    edgelab.netem.enable = true;
  };
in
{
  roles = {
    orchestrator = { ... }: {
      imports = [ base ];
      edgelab.beaglepaas = {
        enable = true;
        role = "orchestrator";
        startAtBoot = false;
        bind = orchIp;
        # The one emulated plug stands for every worker here.
        meters = lib.genAttrs (map (n: n.name) (c.elib.nodesOfGroup plan "worker")) (_: "http://${powerIp}");
      };
    };
    worker = { ... }: {
      imports = [ base ];
      edgelab.beaglepaas = {
        enable = true;
        role = "worker";
        startAtBoot = false;
        orchestrator = orchIp;
      };
    };
    power = { ... }: {
      imports = [ base ];
      edgelab.powerMeter = {
        enable = true;
        startAtBoot = false;
        bind = powerIp;
        watts = 2.3;
      };
    };
  };

  rolesDistribution = c.elib.rolesDistribution plan;

  testScript = builtins.replaceStrings [ "@WORKERS@" "@ORCH@" "@POWER@" ] [ (toString workers) orchIp powerIp ]
    (builtins.readFile ./test.py);
}
