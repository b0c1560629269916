# A k3s server or agent on nixpkgs' services.k3s
# (nixos/modules/services/cluster/k3s/default.nix), with the ports k3s needs.
{ config, lib, pkgs, ... }:
let
  cfg = config.edgelab.k3s;
in
{
  options.edgelab.k3s = {
    enable = lib.mkEnableOption "a k3s node of the edgelab testbed";

    role = lib.mkOption {
      type = lib.types.enum [ "server" "agent" ];
      default = "agent";
      description = "Whether this node runs the k3s control plane (server, which is also an agent) or only an agent.";
    };

    serverAddr = lib.mkOption {
      type = lib.types.str;
      default = "";
      example = "https://server-1:6443";
      description = "URL of the k3s server an agent joins. Required for agents.";
    };

    tokenFile = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        File holding the cluster join token (shared by server and agents).
        A token written with pkgs.writeText lands world-readable in the Nix
        store: fine for a throwaway testbed, not for anything else.
      '';
    };

    flannelIface = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "eth1";
      description = "Interface flannel (VXLAN) uses; set it where the default route is not the testbed network.";
    };

    disable = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ "traefik" "metrics-server" ];
      description = "k3s packaged components not to deploy (server only). ServiceLB stays on: experiments use LoadBalancer Services.";
    };

    extraFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "More flags for the k3s command line.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Open 6443/tcp (API server), 10250/tcp (kubelet) and 8472/udp (flannel VXLAN).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.role == "agent" -> cfg.serverAddr != "";
        message = "edgelab.k3s.serverAddr must be set on an agent (e.g. https://server-1:6443).";
      }
      {
        assertion = cfg.role == "agent" -> cfg.tokenFile != null;
        message = "edgelab.k3s.tokenFile must be set on an agent.";
      }
    ];

    services.k3s = {
      enable = true;
      inherit (cfg) role tokenFile;
      serverAddr = lib.mkIf (cfg.role == "agent") cfg.serverAddr;
      # A string: services.k3s.extraFlags is `str` in 23.11 (a list is only
      # accepted from 24.05 on), and a string works on both.
      extraFlags = lib.concatStringsSep " " (
        lib.optionals (cfg.role == "server") (map (c: "--disable ${c}") cfg.disable
          ++ [ "--write-kubeconfig-mode 0644" ])
        ++ lib.optional (cfg.flannelIface != null) "--flannel-iface ${cfg.flannelIface}"
        ++ cfg.extraFlags);
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ 10250 ] ++ lib.optional (cfg.role == "server") 6443;
      allowedUDPPorts = [ 8472 ];
      # Pod and service traffic arrives on the CNI bridge and the VXLAN device.
      trustedInterfaces = [ "cni0" "flannel.1" ];
    };

    boot.kernelModules = [ "br_netfilter" "overlay" ];
    boot.kernel.sysctl = {
      "net.ipv4.ip_forward" = 1;
      "net.bridge.bridge-nf-call-iptables" = 1;
    };
  };
}
