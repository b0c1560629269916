# A k3s server or agent on nixpkgs' services.k3s
# (nixos/modules/services/cluster/k3s/default.nix in nixpkgs 23.11), with
# the ports k3s needs, its node address taken from the plan, and every image
# it runs present offline.
{ config, lib, pkgs, ... }:
let
  top = config.edgelab;
  cfg = config.edgelab.k3s;
  elib = import ../nix/lib.nix;
  images = import ../pkgs/k3s-images.nix { inherit pkgs; };
  plan = elib.readPlan top.planFile;
  names = if top.node != null then [ top.node ] else elib.nodeNames plan;
  configFile = "/run/edgelab/k3s-config.yaml";
  imagesDir = "/var/lib/rancher/k3s/agent/images";
  # nixpkgs >= 24.05 packages k3s's own airgap images; 23.11 does not.
  airgap = cfg.package.passthru.airgapImages or null;

  # k3s reads flags from its YAML config file too (one key per flag), so the
  # per-node values chosen at boot go there: all nodes of a role share one
  # image (nxc), only the hostname tells them apart.
  nodeConfig = name:
    let
      onNet = builtins.filter (i: i.network == cfg.planNetwork) (elib.node plan name).interfaces;
      ip = elib.addressOf plan name cfg.planNetwork;
    in
    if onNet == [ ] then [
      "echo ${elib.shQuote "edgelab: node ${name} is not on network ${cfg.planNetwork}; k3s needs an address there"} >&2"
      "exit 1"
    ] else [
      "{"
      "  echo ${elib.shQuote "node-ip: ${ip}"}"
    ] ++ lib.optionals (cfg.role == "server") [
      "  echo ${elib.shQuote "advertise-address: ${ip}"}"
    ] ++ [
      "} > \"$out\""
    ];
in
{
  options.edgelab.k3s = {
    enable = lib.mkEnableOption "a k3s node of the edgelab testbed";

    package = lib.mkOption {
      type = lib.types.package;
      default = pkgs.k3s;
      defaultText = lib.literalExpression "pkgs.k3s";
      description = "The k3s package (also given to services.k3s.package).";
    };

    role = lib.mkOption {
      type = lib.types.enum [ "server" "agent" ];
      default = "agent";
      description = "Whether this node runs the k3s control plane (server, which is also an agent) or only an agent.";
    };

    serverAddr = lib.mkOption {
      type = lib.types.str;
      default = "";
      example = "https://10.0.0.1:6443";
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

    planNetwork = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "wlan";
      description = ''
        Plan network whose address is this node's k3s `node-ip` (and, on the
        server, `advertise-address`), chosen at boot by hostname from
        edgelab.planFile. Without it k3s registers the address of the default
        route, which on nxc's vm flavour is QEMU's user-mode 10.0.2.15 on
        every node.
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
      default = [ "traefik" "metrics-server" "coredns" "local-storage" ];
      description = ''
        k3s packaged components not to deploy (server only). Their images
        would be pulled from a registry, which the testbed does not have;
        ServiceLB stays on: experiments use LoadBalancer Services.
      '';
    };

    offlineImages = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Run k3s with no registry: a dockerTools pause image (`--pause-image`),
        a ServiceLB image tagged at boot with the name this k3s asks for (or
        k3s's own airgap images where the package has them), and
        edgelab.k3s.images, all imported from k3s's agent images directory.
      '';
    };

    images = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [ ];
      description = "More image tarballs (dockerTools) for the agent images directory, e.g. the workload's.";
    };

    manifests = lib.mkOption {
      type = lib.types.attrsOf lib.types.path;
      default = { };
      example = lib.literalExpression ''{ phone = ./phone.yaml; }'';
      description = ''
        Kubernetes manifests the server applies at start (k3s's
        server/manifests directory; server only).
      '';
    };

    loadBalancerPorts = lib.mkOption {
      type = lib.types.listOf lib.types.port;
      default = [ ];
      description = "TCP ports of the LoadBalancer Services served on every node (opened in the firewall).";
    };

    kubeconfigGroup = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "k3s-admin";
      description = ''
        Group allowed to read the server's kubeconfig (mode 0640). The file
        holds cluster-admin credentials: by default only root reads it
        (0600); `k3s kubectl` as root always works.
      '';
    };

    extraFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "More flags for the k3s command line.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Open 6443/tcp (API server), 10250/tcp (kubelet), 8472/udp (flannel VXLAN) and loadBalancerPorts.";
    };
  };

  config = lib.mkIf cfg.enable (lib.mkMerge [
    {
      assertions = [
        {
          assertion = cfg.role == "agent" -> cfg.serverAddr != "";
          message = "edgelab.k3s.serverAddr must be set on an agent (e.g. https://10.0.0.1:6443).";
        }
        {
          assertion = cfg.role == "agent" -> cfg.tokenFile != null;
          message = "edgelab.k3s.tokenFile must be set on an agent.";
        }
        {
          assertion = cfg.planNetwork != null -> top.planFile != null;
          message = "edgelab.k3s.planNetwork needs edgelab.planFile (the plan JSON of the testbed).";
        }
        {
          assertion = cfg.manifests != { } -> cfg.role == "server";
          message = "edgelab.k3s.manifests are applied by the server; set them on the server role.";
        }
      ];

      # nixpkgs 23.11 services.k3s (nixos/modules/services/cluster/k3s/default.nix,
      # read at nixpkgs 01f31c2e): role enum :25-32, serverAddr str :34-39,
      # tokenFile nullOr path :51-55, extraFlags `str` :57-62 (a list only
      # from 24.05 on; a string works on both), configPath nullOr path :70-74
      # (-> `--config`, ExecStart :107-117), agent assertions :80-89.
      # Mirrored with these types in nix/eval/nixos-options.nix.
      services.k3s = {
        enable = true;
        inherit (cfg) role tokenFile package;
        serverAddr = lib.mkIf (cfg.role == "agent") cfg.serverAddr;
        configPath = lib.mkIf (cfg.planNetwork != null) configFile;
        extraFlags = lib.concatStringsSep " " (
          lib.optionals (cfg.role == "server") (map (c: "--disable ${c}") cfg.disable
            # The kubeconfig holds cluster-admin credentials.
            ++ [ "--write-kubeconfig-mode 0600" ])
          ++ lib.optional (cfg.flannelIface != null) "--flannel-iface ${cfg.flannelIface}"
          ++ lib.optional cfg.offlineImages "--pause-image ${images.refs.pause}"
          ++ cfg.extraFlags);
      };

      networking.firewall = lib.mkIf cfg.openFirewall {
        allowedTCPPorts = [ 10250 ] ++ lib.optional (cfg.role == "server") 6443 ++ cfg.loadBalancerPorts;
        allowedUDPPorts = [ 8472 ];
        # Pod and service traffic arrives on the CNI bridge and the VXLAN device.
        trustedInterfaces = [ "cni0" "flannel.1" ];
      };

      boot.kernelModules = [ "br_netfilter" "overlay" ];
      boot.kernel.sysctl = {
        "net.ipv4.ip_forward" = 1;
        "net.bridge.bridge-nf-call-iptables" = 1;
      };

      # Images k3s imports when its agent starts (k3s docs, "air-gap
      # install"): the decompressor is chosen by the file's suffix, so every
      # link keeps its image's own suffix (pkgs/k3s-images.nix imageFile).
      systemd.tmpfiles.rules =
        [ "d ${imagesDir} 0755 root root -" ]
        ++ lib.optional (cfg.manifests != { }) "d /var/lib/rancher/k3s/server/manifests 0755 root root -"
        ++ map (img: "L+ ${imagesDir}/${images.imageFile img} - - - - ${img}")
          (cfg.images ++ lib.optionals cfg.offlineImages
            ([ images.pause ] ++ (if airgap != null then [ airgap ] else [ images.serviceLB ])))
        ++ lib.mapAttrsToList (n: m: "L+ /var/lib/rancher/k3s/server/manifests/${n}.yaml - - - - ${m}") cfg.manifests;
    }

    (lib.mkIf (cfg.planNetwork != null) {
      systemd.services.edgelab-k3s-config = {
        description = "k3s settings of this node from the edgelab plan";
        wantedBy = [ "k3s.service" ];
        before = [ "k3s.service" ];
        # The plan's addresses are added by edgelab-netem (when enabled).
        after = [ "edgelab-netem.service" ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        environment = lib.optionalAttrs (top.node != null) { EDGELAB_NODE = top.node; };
        path = [ pkgs.iproute2 pkgs.coreutils pkgs.nettools ];
        # EDGELAB_K3S_CONFIG: where to write instead (tests run this script).
        script = ''
          out="''${EDGELAB_K3S_CONFIG:-${configFile}}"
          mkdir -p "$(dirname "$out")"
        '' + elib.perNodeScript { inherit plan names; commandsFor = nodeConfig; };
      };
      systemd.services.k3s = {
        requires = [ "edgelab-k3s-config.service" ];
        after = [ "edgelab-k3s-config.service" ];
      };
    })

    (lib.mkIf (cfg.offlineImages && airgap == null) {
      # Give the local ServiceLB image the name this k3s binary's ServiceLB
      # controller asks for (built in with -X ...DefaultLBImage, nixpkgs
      # k3s/builder.nix), once k3s has imported it.
      systemd.services.edgelab-k3s-servicelb-image = {
        description = "Tag the offline ServiceLB image with the name k3s uses";
        wantedBy = [ "k3s.service" ];
        after = [ "k3s.service" ];
        bindsTo = [ "k3s.service" ];
        path = [ cfg.package pkgs.gnugrep pkgs.coreutils ];
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          want=$(grep -rhaoE 'rancher/(mirrored-)?klipper-lb:v[0-9][0-9A-Za-z.+-]*' ${cfg.package}/bin | head -n1)
          if [ -z "$want" ]; then
            echo "edgelab: no klipper-lb image name found in ${cfg.package}/bin; ServiceLB will try a registry" >&2
            exit 1
          fi
          for _ in $(seq 1 300); do
            if k3s ctr -n k8s.io images ls -q 2>/dev/null | grep -qx '${images.refs.serviceLB}'; then
              k3s ctr -n k8s.io images tag --force '${images.refs.serviceLB}' "docker.io/$want"
              echo "edgelab: ServiceLB image is docker.io/$want"
              exit 0
            fi
            sleep 2
          done
          echo "edgelab: k3s did not import ${images.refs.serviceLB} within 600 s" >&2
          exit 1
        '';
      };
    })

    (lib.mkIf (cfg.kubeconfigGroup != null && cfg.role == "server") {
      users.groups.${cfg.kubeconfigGroup} = { };
      systemd.services.k3s.serviceConfig.ExecStartPost = [
        "${pkgs.coreutils}/bin/chgrp ${cfg.kubeconfigGroup} /etc/rancher/k3s/k3s.yaml"
        "${pkgs.coreutils}/bin/chmod 0640 /etc/rancher/k3s/k3s.yaml"
      ];
    })
  ]);
}
