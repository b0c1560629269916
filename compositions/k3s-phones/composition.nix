# 1 k3s server + N phone agents (+ optional relay phones) on an emulated
# Wi-Fi cell; the phone workload (edgelab.services.phone, POST /detect) runs
# as a k3s Deployment on the phones behind a LoadBalancer Service
# (ServiceLB), every image loaded offline.
#
# NixOS-Compose composition: one image per group (`roles`), the plan's node
# names as hostnames (`rolesDistribution`), links applied at boot by
# edgelab.netem, each node's k3s node-ip chosen at boot from the plan.
# `phones` and `relays` are parameters (setup.toml k3s_phones, relays);
# `wifiAp` (setup.toml wifi_ap) makes the server the cell's access point at boot.
{ pkgs, lib, flavour ? { name = "vm"; }, phones ? 3, relays ? 0, wifiAp ? false, iface ? null, ... }:
let
  c = import ../common.nix { inherit pkgs flavour iface; };
  planFile = c.mkPlan { topology = ./topology.yaml; counts = { phone = phones; relay = relays; }; name = "k3s-phones"; };
  plan = c.elib.readPlan planFile;
  server = "server-1";
  network = "wlan";
  serverIp = c.elib.addressOf plan server network;
  phone = builtins.head (c.elib.nodesOfGroup plan "phone");
  # The Service's port on every node. Not 8080: the experiments' own phone
  # service (edgelab/scenarios/app.py APP_PORT) listens there on the server,
  # and ServiceLB would capture that port on every node.
  port = 8081;
  # What the Service is, for tools on the nodes (and the nxc backend):
  # http://<any node's plan address>:<port>/detect.
  serviceInfo = { edgelab-phone = { type = "LoadBalancer"; inherit port network; path = "/detect"; health = "/healthz"; }; };
  ipOf = n: c.elib.addressOf plan n.name network;

  # The workload, applied by the k3s server at start (server/manifests).
  # One replica per phone (required anti-affinity on the hostname), limited
  # to the phone's planned CPU and memory: kubelet enforces pod limits in
  # its kubepods cgroup, which is where the workload runs.
  workload = [
    {
      apiVersion = "apps/v1";
      kind = "Deployment";
      metadata = { name = "edgelab-phone"; namespace = "default"; labels.app = "edgelab-phone"; };
      spec = {
        replicas = phones;
        selector.matchLabels.app = "edgelab-phone";
        template = {
          metadata.labels.app = "edgelab-phone";
          spec = {
            nodeSelector."edgelab/group" = "phone";
            affinity.podAntiAffinity.requiredDuringSchedulingIgnoredDuringExecution = [{
              labelSelector.matchLabels.app = "edgelab-phone";
              topologyKey = "kubernetes.io/hostname";
            }];
            containers = [{
              name = "phone";
              image = c.images.refs.phone;
              imagePullPolicy = "Never";
              # The image's command listens on 8080 (pkgs/k3s-images.nix).
              ports = [{ containerPort = 8080; }];
              readinessProbe = { httpGet = { path = "/healthz"; port = 8080; }; periodSeconds = 2; };
              resources = {
                requests = { cpu = "100m"; memory = "128Mi"; };
                limits = {
                  cpu = "${toString (builtins.floor (phone.resources.cpu * phone.resources.speed * 1000 + 0.5))}m";
                  memory = "${toString phone.resources.memory_mib}Mi";
                };
              };
            }];
          };
        };
      };
    }
    {
      apiVersion = "v1";
      kind = "Service";
      metadata = { name = "edgelab-phone"; namespace = "default"; };
      spec = {
        type = "LoadBalancer";
        selector.app = "edgelab-phone";
        ports = [{ name = "http"; inherit port; targetPort = 8080; protocol = "TCP"; }];
      };
    }
  ];
  # JSON documents are YAML documents; k3s reads multi-document files.
  workloadManifest = pkgs.writeText "edgelab-phone.yaml"
    (lib.concatMapStrings (o: "---\n" + builtins.toJSON o + "\n") workload);

  k3sBase = {
    imports = [ (c.base planFile plan) ];
    environment.etc."edgelab/k3s-services.json".text = builtins.toJSON serviceInfo;
    # wifi_ap=true: the Wi-Fi cell's access point as a node at boot (the server, the
    # network's uplink): every node routes its cell peers through it (modules/netem.nix).
    # Leave it false under the nxc/g5k backends, which make the AP themselves after deployment.
    edgelab.netem.routeViaAccessPoint = wifiAp;
  };

  k3sNode = role: group: {
    enable = true;
    inherit role;
    tokenFile = c.k3sToken;
    inherit (c) flannelIface;
    planNetwork = network;
    loadBalancerPorts = [ port ];
    extraFlags = [ "--node-label edgelab/group=${group}" ];
  };

  # A phone (or relay) node: small-device profile, k3s agent, the workload image.
  phoneRole = group: { config, ... }: {
    imports = [ k3sBase ];
    edgelab.phone = {
      enable = true;
      memoryMiB = phone.resources.memory_mib;
      cpuQuota = c.elib.cpuQuota phone.resources;
    };
    edgelab.k3s = k3sNode "agent" group // {
      serverAddr = "https://${serverIp}:6443";
      images = [ (import ../../pkgs/k3s-images.nix { inherit pkgs; inherit (config.edgelab) python; }).phone ];
    };
  };
in
{
  roles = {
    server = { ... }: {
      imports = [ k3sBase ];
      edgelab.netem.enable = true;
      edgelab.netem.accessPoint.enable = wifiAp;
      edgelab.k3s = k3sNode "server" "server" // {
        manifests.edgelab-phone = workloadManifest;
      };
    };
    phone = phoneRole "phone";
  } // lib.optionalAttrs (relays > 0) {
    # Relays forward traffic between the server and the phones beyond them
    # (experiments/network_topologies, batman-mesh); with every VM on one
    # switch, ICMP redirects would let senders skip them.
    relay = { ... }: {
      imports = [ (phoneRole "relay") ];
      boot.kernel.sysctl = {
        "net.ipv4.conf.all.send_redirects" = 0;
        "net.ipv4.conf.default.send_redirects" = 0;
      };
    };
  };

  rolesDistribution = c.elib.rolesDistribution plan;

  testScript = builtins.replaceStrings [ "@PHONES@" "@SERVER@" "@NODE_IPS@" "@PORT@" ]
    [ (toString phones) server
      (builtins.toJSON (builtins.listToAttrs (map (n: { inherit (n) name; value = ipOf n; }) plan.nodes)))
      (toString port) ]
    (builtins.readFile ./test.py);
}
