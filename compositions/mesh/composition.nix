# N phones in a multi-hop chain. Forwarding follows the plan's static routes
# (edgelab.netem adds them), so traffic between non-neighbours really crosses
# the relays even where every VM shares one virtual switch. With
# `batman = true` batman-adv (an in-tree NixOS kernel module) also runs, on
# bat0 over the testbed device: on real radios it finds the chain itself.
{ pkgs, lib, flavour ? { name = "vm"; }, phones ? 4, batman ? false, iface ? null, ... }:
let
  c = import ../common.nix { inherit pkgs flavour iface; };
  planFile = c.mkPlan { topology = ./topology.yaml; counts = { phone = phones; }; name = "mesh"; };
  plan = c.elib.readPlan planFile;
  first = builtins.head plan.nodes;
  last = lib.last plan.nodes;
in
{
  roles = {
    phone = { ... }: {
      imports = [ (c.base planFile plan) ];
      edgelab.phone.enable = true;
      boot.kernel.sysctl = {
        "net.ipv4.ip_forward" = 1;
        # All hops share one device here: without this the relays would tell
        # senders (ICMP redirect) to skip them, and the chain would collapse.
        "net.ipv4.conf.all.send_redirects" = 0;
        "net.ipv4.conf.default.send_redirects" = 0;
        "net.ipv4.conf.all.accept_redirects" = 0;
        "net.ipv4.conf.default.accept_redirects" = 0;
        "net.ipv4.conf.all.rp_filter" = 0;
        "net.ipv4.conf.default.rp_filter" = 0;
      };
      networking.firewall.enable = false;
      environment.systemPackages = [ pkgs.iputils pkgs.traceroute ]
        ++ lib.optional batman pkgs.batctl;
      # batman_adv is a module of the NixOS kernel (nothing to rebuild);
      # systemd-modules-load fails loudly on a kernel without it.
      boot.kernelModules = lib.optionals batman c.elib.requiredKernelModules.batman;
      systemd.services.edgelab-batman = lib.mkIf batman {
        description = "batman-adv on the testbed device";
        wantedBy = [ "multi-user.target" ];
        after = [ "edgelab-netem.service" ];
        path = [ pkgs.batctl pkgs.iproute2 ];
        serviceConfig = { Type = "oneshot"; RemainAfterExit = true; };
        script = ''
          batctl meshif bat0 interface add ${c.dev}
          ip link set up dev bat0
        '';
      };
    };
  };

  rolesDistribution = c.elib.rolesDistribution plan;

  testScript = builtins.replaceStrings
    [ "@PHONES@" "@FIRST@" "@LAST@" "@LAST_IP@" "@SECOND_IP@" "@BATMAN@" ]
    [ (toString phones) first.name last.name
      (c.elib.addressOf plan last.name "mesh")
      (c.elib.addressOf plan (builtins.elemAt plan.nodes 1).name "mesh")
      (if batman then "True" else "False") ]
    (builtins.readFile ./test.py);
}
