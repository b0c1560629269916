# A smartphone-class node: little memory (a systemd slice caps the workload,
# zram stands in for the phone's compressed swap), a Wi-Fi link emulated by
# edgelab.netem, and a kernel that has what k3s ServiceLB needs.
{ config, lib, pkgs, ... }:
let
  cfg = config.edgelab.phone;
  elib = import ../nix/lib.nix;
  kernelConfig = import ../nix/kernel.nix lib;
in
{
  options.edgelab.phone = {
    enable = lib.mkEnableOption "the small-device (smartphone) profile";

    memoryMiB = lib.mkOption {
      type = lib.types.nullOr lib.types.ints.positive;
      default = null;
      example = 256;
      description = "MemoryMax of the edgelab-workload slice (k3s and its pods run in it); null for no cap.";
    };

    cpuQuota = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "50%";
      description = "CPUQuota of the edgelab-workload slice (100% = one core); null for no cap.";
    };

    zram = {
      enable = lib.mkOption {
        type = lib.types.bool;
        default = true;
        description = "Swap on zram, as Android phones do.";
      };
      memoryPercent = lib.mkOption {
        type = lib.types.ints.between 1 100;
        default = 50;
        description = "zram device size as a percentage of RAM.";
      };
    };

    emulateWifi = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Impair this node's links as planned (enables edgelab.netem).";
    };

    serviceLBKernelFix = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Build the kernel with NETFILTER_XT_MATCH_MULTIPORT (and the other
        iptables matches klipper-lb uses). Without it k3s ServiceLB pods hang
        in ContainerCreating. Costs a kernel build.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    zramSwap = lib.mkIf cfg.zram.enable {
      enable = true;
      inherit (cfg.zram) memoryPercent;
    };

    systemd.slices.edgelab-workload = {
      description = "edgelab workload of a small device";
      sliceConfig = lib.filterAttrs (_: v: v != null) {
        MemoryAccounting = true;
        MemoryMax = if cfg.memoryMiB == null then null else "${toString cfg.memoryMiB}M";
        CPUAccounting = true;
        CPUQuota = cfg.cpuQuota;
      };
    };
    systemd.services.k3s.serviceConfig.Slice = lib.mkIf config.services.k3s.enable "edgelab-workload.slice";

    boot.kernelPatches = lib.optional cfg.serviceLBKernelFix {
      name = "edgelab-servicelb-iptables-matches";
      patch = null;
      extraStructuredConfig = kernelConfig { fragment = elib.kernelFragments.serviceLB; };
    };

    edgelab.netem.enable = lib.mkDefault cfg.emulateWifi;
  };
}
