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
    ++ elib.linkCommands { inherit plan name python; ifmap = top.interfaceMap; inherit (cfg) engine; }
    ++ lib.optionals cfg.routeViaAccessPoint (elib.cellRouteCommands { inherit plan name; ifmap = top.interfaceMap; })
    # The AP's unit reads its testbed device from here (on Grid'5000 found at boot: $EDGELAB_DEV).
    ++ lib.optional (apCfg.enable && (elib.node plan name).interfaces != [ ])
      "mkdir -p /run/edgelab && echo \"EDGELAB_DEV=${elib.realDev top.interfaceMap (builtins.head (elib.node plan name).interfaces).ifname}\" > ${devEnv}";

  # -- the Wi-Fi access point as a node (edgelab/remote/ap.py, here at boot) --
  apCfg = cfg.accessPoint;
  devEnv = "/run/edgelab/testbed-dev.env";
  cells = if top.planFile == null then [ ] else elib.wifiCells plan;
  # The AP's device for a cell: its interface on the cell's network, mapped as
  # the composition maps it; "$EDGELAB_DEV" (Grid'5000) becomes systemd's
  # ${EDGELAB_DEV}, read from devEnv (systemd.exec(5) EnvironmentFile=,
  # systemd.service(5) "Command lines": ${VAR} is one word).
  apDev = c:
    let
      itfs = builtins.filter (i: i.network == c.network) (elib.node plan c.ap).interfaces;
      dev = elib.realDev top.interfaceMap (builtins.head itfs).ifname;
    in if dev == elib.defaultRouteDev then "\${EDGELAB_DEV}" else dev;
  stationIps = c: map (s: elib.addressOf plan s c.network) c.stations;
  # The same argv as edgelab/remote/ap.py shared_argv, the stations by address
  # (their MACs are resolved at boot: VMs' and Grid'5000 NICs' are not known here).
  sharedArgv = c: [ python "-m" "edgelab.linkemu" "shared" "--dev" (apDev c) "--name" c.name
    "--capacity-mbit" (builtins.toJSON c.capacity) "--tag" (elib.linkTag plan.name c.ap) ]
    ++ lib.concatMap (ip: [ "--station-ip" ip ]) (stationIps c)
    ++ [ "--resolve-timeout" (toString apCfg.resolveTimeout) ];
  unsharedArgv = c: [ python "-m" "edgelab.linkemu" "unshared" "--dev" (apDev c) "--name" c.name
    "--tag" (elib.linkTag plan.name c.ap) ];
  apUnit = c: lib.nameValuePair "edgelab-ap-${c.network}-${toString c.segment}" {
    description = "edgelab: Wi-Fi cell ${c.network}/${toString c.segment} airtime budget on its access point ${c.ap}";
    wantedBy = [ "multi-user.target" ];
    requires = [ "edgelab-netem.service" ];
    after = [ "edgelab-netem.service" ];
    before = [ "k3s.service" "edgelab-beaglepaas-worker.service" "edgelab-beaglepaas-orchestrator.service" ];
    path = [ pkgs.iproute2 pkgs.procps ];
    # One image may serve several hosts of a role: only the cell's AP runs it (systemd.unit(5) ConditionHost=).
    unitConfig.ConditionHost = c.ap;
    serviceConfig = {
      Type = "oneshot";
      RemainAfterExit = true;
      EnvironmentFile = devEnv;
      # The kernel ORs conf.all and conf.<dev> send_redirects: the device's own must be 0 as well.
      ExecStartPre = "${pkgs.procps}/bin/sysctl -qw net.ipv4.conf.${apDev c}.send_redirects=0";
      ExecStart = lib.concatStringsSep " " (sharedArgv c);
      ExecStop = lib.concatStringsSep " " (unsharedArgv c);
    };
  };
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

    # The Wi-Fi access point as a node, as the remote backends make it
    # (edgelab/remote/ap.py): every station's traffic crosses the AP, which
    # carries the cell's airtime budget with one HTB class per station.
    routeViaAccessPoint = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Route this node's Wi-Fi peers through the cell's access point (the
        network's first uplink node, as edgelab.remote.ap.ap_plan picks it):
        a station reaches every other station and uplink via the AP, an uplink
        that is not the AP reaches every station via it. Added at boot by
        edgelab-netem: `ip route replace <peer>/32 via <AP> dev <dev>`.
        Set it on every node of the cell, and accessPoint.enable on the AP's role.
      '';
    };

    accessPoint = {
      enable = lib.mkEnableOption ''
        this machine as the access point of the plan's Wi-Fi cells: it forwards
        (net.ipv4.ip_forward = 1) without ICMP redirects (which would let
        stations bypass it), and a unit per cell runs
        `python -m edgelab.linkemu shared` on its testbed device -- the airtime
        budget of the cell (Bianchi's capacity for its station count), one HTB
        class per station, the same apply_shared_medium code as the local
        backend. Units are conditioned on the AP's hostname, so the role's
        image may serve other hosts too'';

      resolveTimeout = lib.mkOption {
        type = lib.types.ints.positive;
        default = 300;
        description = ''
          Seconds the AP's unit waits at boot for every station's MAC address.
          The stations' plan addresses are known when the image is evaluated,
          their MACs are not (nxc's VMs and Grid'5000 NICs get theirs at boot):
          `linkemu shared --station-ip` resolves them by ARP on the AP's device.
        '';
      };
    };
  };

  config = lib.mkMerge [{
    # Everything of the AP lives in edgelab-netem's boot script and after its unit.
    assertions = [{
      assertion = !(apCfg.enable || cfg.routeViaAccessPoint) || cfg.enable;
      message = "edgelab.netem.accessPoint.enable / routeViaAccessPoint need edgelab.netem.enable = true.";
    }];
  } (lib.mkIf cfg.enable (lib.mkMerge [{
    assertions = [{
      assertion = top.planFile != null;
      message = "edgelab.netem needs edgelab.planFile (the plan JSON of the testbed).";
    } {
      assertion = !(apCfg.enable || cfg.routeViaAccessPoint) || cells != [ ];
      message = "edgelab.netem.accessPoint / routeViaAccessPoint: plan ${plan.name} has no Wi-Fi cell (no segment with an airtime capacity).";
    }];

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
  }
  {
    # boot.kernel.sysctl: nixpkgs nixos/modules/config/sysctl.nix:23-52 (the option), :58-66
    # (written to /etc/sysctl.d/60-nixos.conf, applied by systemd-sysctl at boot; stored
    # revision 05924f7). "default" covers devices that appear after it runs; the testbed
    # device's own key is set by each cell's unit (ExecStartPre).
    boot.kernel.sysctl = lib.mkIf apCfg.enable {
      "net.ipv4.ip_forward" = 1;
      "net.ipv4.conf.all.send_redirects" = 0;
      "net.ipv4.conf.default.send_redirects" = 0;
    };

    # systemd.services.<name>: nixpkgs nixos/modules/system/boot/systemd.nix; its unitConfig
    # ([Unit]: ConditionHost) nixos/lib/systemd-unit-options.nix:188, serviceConfig ([Service]:
    # ExecStart/ExecStartPre/ExecStop/EnvironmentFile, Type checked by checkService :7-14) :281
    # (stored revision 01f31c2; the same options in 23.11, mirrored in nix/eval/nixos-options.nix).
    systemd.services = lib.mkIf apCfg.enable (builtins.listToAttrs (map apUnit cells));

    boot.kernelModules = [ "sch_netem" "sch_htb" "ifb" ];
  }]))];
}
