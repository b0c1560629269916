# What the compositions share: the plan of their topology (computed by the
# Python planner, counts as parameters), how plan interfaces map onto the
# devices of a NixOS-Compose flavour, and what every node carries.
{ pkgs, flavour ? { name = "vm"; }, iface ? null }:
let
  elib = import ../nix/lib.nix;
  vm = builtins.elem (flavour.name or "vm") [ "vm" "vm-ramdisk" ];
  # nxc's vm flavours put every node on one virtual switch, as eth1 (its
  # qemu script: `ip=192.168.1.$VM_ID:::::eth1`, nixos-compose
  # nix/flavours/shared/common.nix:78). On Grid'5000 the interface name
  # depends on the cluster (predictable names: eno1, enp24s0f0np0...; the
  # g5k flavours do not set net.ifnames=0), so, unless `iface` is given, the
  # device of the default route is found at boot (nix/lib.nix defaultRouteDev).
  dev = if iface != null then iface
    else if vm then "eth1"
    else elib.defaultRouteDev;
in
rec {
  inherit elib dev;
  # k3s's flannel uses the default route's interface unless told: right on
  # Grid'5000, wrong on the vm flavours (the default route is QEMU's
  # user-mode eth0).
  flannelIface = if iface != null then iface else if vm then "eth1" else null;
  mkPlan = args: import ../pkgs/plan.nix ({ inherit pkgs; } // args);
  # Every planned interface lands on the one testbed device.
  interfaceMap = plan:
    builtins.listToAttrs (map (i: { name = i.ifname; value = dev; })
      (builtins.concatLists (map (n: n.interfaces) plan.nodes)));
  # What every node of every composition has: the plan, the interface map,
  # and the tools experiments run on nodes (python3 with edgelab, iperf3,
  # tc...), see modules/common.nix nodeTools.
  base = planFile: plan: {
    edgelab.planFile = planFile;
    edgelab.interfaceMap = interfaceMap plan;
    edgelab.nodeTools = true;
    environment.systemPackages = [ pkgs.jq pkgs.curl ];
  };
  images = import ../pkgs/k3s-images.nix { inherit pkgs; };
  # Test-only join token: world-readable in the store, by design of a throwaway cluster.
  k3sToken = pkgs.writeText "edgelab-k3s-token" "edgelab-testbed-token";
}
