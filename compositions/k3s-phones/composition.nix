# 1 k3s server + N phone agents on an emulated Wi-Fi cell.
# NixOS-Compose composition: one image per group (`roles`), the plan's node
# names as hostnames (`rolesDistribution`), links applied at boot by
# edgelab.netem. `phones` is the number of phones, a parameter.
{ pkgs, lib, flavour ? { name = "vm"; }, phones ? 3, iface ? null, ... }:
let
  c = import ../common.nix { inherit pkgs flavour iface; };
  planFile = c.mkPlan { topology = ./topology.yaml; counts = { phone = phones; }; name = "k3s-phones"; };
  plan = c.elib.readPlan planFile;
  server = "server-1";
  serverIp = c.elib.addressOf plan server "wlan";
  phone = builtins.head (c.elib.nodesOfGroup plan "phone");
  base = {
    imports = [ c.k3sImages ];
    edgelab.planFile = planFile;
    edgelab.interfaceMap = c.interfaceMap plan;
    environment.systemPackages = [ pkgs.jq pkgs.curl pkgs.iproute2 ];
  };
in
{
  roles = {
    server = { ... }: {
      imports = [ base ];
      edgelab.netem.enable = true;
      edgelab.k3s = {
        enable = true;
        role = "server";
        tokenFile = c.k3sToken;
        flannelIface = c.dev;
        extraFlags = [ "--node-ip ${serverIp}" "--advertise-address ${serverIp}" ];
      };
    };
    phone = { ... }: {
      imports = [ base ];
      edgelab.phone = {
        enable = true;
        memoryMiB = phone.resources.memory_mib;
        cpuQuota = c.elib.cpuQuota phone.resources;
      };
      edgelab.k3s = {
        enable = true;
        role = "agent";
        serverAddr = "https://${serverIp}:6443";
        tokenFile = c.k3sToken;
        flannelIface = c.dev;
      };
    };
  };

  rolesDistribution = c.elib.rolesDistribution plan;

  testScript = builtins.replaceStrings [ "@PHONES@" "@SERVER@" ] [ (toString phones) server ]
    (builtins.readFile ./test.py);
}
