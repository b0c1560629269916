# What the compositions share: the plan of their topology (computed by the
# Python planner, counts as parameters) and how plan interfaces map onto the
# devices of a NixOS-Compose flavour.
{ pkgs, flavour ? { name = "vm"; }, iface ? null }:
let
  elib = import ../nix/lib.nix;
  # nxc's vm flavours put every node on one virtual switch, as eth1 (see
  # nixos-compose nix/flavours/shared/nxc.nix); on Grid'5000 the testbed
  # interface depends on the cluster, so it is a parameter.
  dev = if iface != null then iface
    else if builtins.elem (flavour.name or "vm") [ "vm" "vm-ramdisk" ] then "eth1"
    else "eth0";
in
rec {
  inherit elib dev;
  mkPlan = args: import ../pkgs/plan.nix ({ inherit pkgs; } // args);
  # Every planned interface lands on the one testbed device.
  interfaceMap = plan:
    builtins.listToAttrs (map (i: { name = i.ifname; value = dev; })
      (builtins.concatLists (map (n: n.interfaces) plan.nodes)));
  # Container images k3s imports at start from its agent images directory,
  # so the test needs no registry: the testbed has no Internet access.
  echoImage = pkgs.dockerTools.buildImage {
    name = "edgelab-echo";
    tag = "v1";
    copyToRoot = [ pkgs.busybox ];
    config.Cmd = [ "sh" "-c" "while true; do printf 'HTTP/1.1 200 OK\\r\\n\\r\\nedgelab\\n' | nc -l -p 8080; done" ];
  };
  k3sImages = { lib, ... }: {
    systemd.tmpfiles.rules = [ "L+ /var/lib/rancher/k3s/agent/images/edgelab-echo.tar - - - - ${echoImage}" ]
      # The images of k3s's own components (pause, coredns, klipper-lb), where
      # this nixpkgs packages them.
      ++ lib.optional (pkgs.k3s ? airgapImages)
        "L+ /var/lib/rancher/k3s/agent/images/k3s-airgap-images.tar.zst - - - - ${pkgs.k3s.airgapImages}";
  };
  # Test-only join token: world-readable in the store, by design of a throwaway cluster.
  k3sToken = pkgs.writeText "edgelab-k3s-token" "edgelab-testbed-token";
}
