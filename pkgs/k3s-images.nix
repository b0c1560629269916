# Container images k3s runs on the testbed, built with dockerTools so that no
# node ever pulls from a registry (nixos-test VMs and restricted Grid'5000
# jobs have none).
#
# - pause: the sandbox image of every pod (k3s `--pause-image`), as nixpkgs'
#   own k3s NixOS tests build it (nixos/tests/k3s/single-node.nix).
# - serviceLB: what k3s ServiceLB (klipper-lb) runs on each node for a
#   LoadBalancer Service. nixpkgs 23.11's k3s ships no airgap images (they
#   appear in later releases as `k3s.passthru.airgapImages`, used when
#   present by modules/k3s.nix), so this image implements klipper-lb's
#   documented environment contract (SRC_PORT, DEST_PROTO, DEST_PORT,
#   DEST_IPS, set by k3s pkg/cloudprovider/servicelb.go) with iptables DNAT.
#   modules/k3s.nix tags it, at boot, with the exact name the node's k3s
#   binary asks for (nixpkgs builds that name in with
#   `-X .../pkg/cloudprovider.DefaultLBImage=...`, k3s/builder.nix), so pods
#   start from the local copy.
# - phone: the edgelab phone workload (`python -m edgelab.services.phone`,
#   POST /detect) as a k3s Deployment.
#
# dockerTools.buildImage compresses with gzip by default and names its output
# `docker-image-<name>.tar.gz` (nixpkgs pkgs/build-support/docker/default.nix,
# buildImage: `compressor ? "gz"`, `runCommand "docker-image-${baseName}.tar${compress.ext}"`);
# k3s picks the decompressor of a file in agent/images by its suffix, so
# `imageFile` below keeps the output's own suffix.
{ pkgs, python ? null }:
let
  inherit (pkgs) lib dockerTools;

  # A bin/ package, so that it (and the bash it runs on) is in copyToRoot's
  # closure and thus in the image: the config's Entrypoint alone would not
  # bring a store path into the layer.
  entry = pkgs.writeShellScriptBin "edgelab-servicelb-entry" ''
    # klipper-lb's contract: forward SRC_PORT on this node to DEST_PORT of
    # each address in DEST_IPS (the Service's cluster IPs), protocol DEST_PROTO.
    set -eu
    : "''${SRC_PORT:?}" "''${DEST_PROTO:?}" "''${DEST_PORT:?}" "''${DEST_IPS:?}"
    if [ "$(cat /proc/sys/net/ipv4/ip_forward)" != 1 ]; then
      echo "edgelab-servicelb: net.ipv4.ip_forward is off" >&2
      exit 1
    fi
    for ip in $DEST_IPS; do
      case "$ip" in *:*) continue ;; esac
      iptables -t nat -I PREROUTING ! -s "$ip/32" -p "$DEST_PROTO" --dport "$SRC_PORT" \
        -j DNAT --to-destination "$ip:$DEST_PORT"
      iptables -t nat -I POSTROUTING -d "$ip/32" -p "$DEST_PROTO" -j MASQUERADE
    done
    # Stay up until the pod is stopped (PID 1 of the container: an explicit
    # handler, and no sleep left behind).
    sleeper=
    trap 'kill $sleeper 2>/dev/null; exit 0' TERM INT
    while :; do sleep 3600 & sleeper=$!; wait $sleeper || true; done
  '';
  # iptables' lock file and Python's temporary files need these.
  scratchDirs = "mkdir -p run tmp && chmod 1777 tmp";
in
rec {
  pause = dockerTools.buildImage {
    name = "edgelab.local/pause";
    tag = "local";
    copyToRoot = pkgs.buildEnv { name = "edgelab-pause-root"; paths = [ pkgs.tini pkgs.busybox ]; };
    extraCommands = scratchDirs;
    config.Entrypoint = [ "/bin/tini" "--" "/bin/sleep" "inf" ];
  };

  serviceLB = dockerTools.buildImage {
    name = "edgelab.local/servicelb";
    tag = "local";
    copyToRoot = pkgs.buildEnv { name = "edgelab-servicelb-root"; paths = [ entry pkgs.busybox pkgs.iptables ]; };
    extraCommands = scratchDirs;
    config.Entrypoint = [ "/bin/edgelab-servicelb-entry" ];
  };

  phone = dockerTools.buildImage {
    name = "edgelab.local/phone";
    tag = "local";
    copyToRoot = pkgs.buildEnv { name = "edgelab-phone-root"; paths = [ python pkgs.busybox ]; };
    extraCommands = scratchDirs;
    config = {
      Cmd = [ "${python}/bin/python" "-m" "edgelab.services.phone" "--bind" "0.0.0.0" "--port" "8080" ];
      ExposedPorts."8080/tcp" = { };
    };
  };

  # The ServiceLB entry script (tests run it in a private network namespace).
  serviceLBEntry = entry;

  # "<image name>:<tag>" as containerd lists them once imported.
  refs = {
    pause = "edgelab.local/pause:local";
    serviceLB = "edgelab.local/servicelb:local";
    phone = "edgelab.local/phone:local";
  };

  # The file name to give an image in k3s's agent/images directory: the
  # output's own name without the docker-image- prefix, so the suffix
  # (.tar.gz) matches the compression.
  imageFile = image: lib.removePrefix "docker-image-" image.name;
}
