# A smartphone-class node: little memory (zram stands in for the phone's
# compressed swap), a Wi-Fi link emulated by edgelab.netem, the tools the
# experiments run on nodes, and a check that the kernel has what k3s
# ServiceLB needs.
#
# Resource caps: processes the experiments start on the node go in
# `edgelab-workload.slice` (MemoryMax/CPUQuota below, e.g.
# `systemd-run --slice=edgelab-workload.slice ...`). k3s pods are NOT in that
# slice: kubelet puts them under its own `kubepods` cgroup, so a k3s workload
# is capped by its Pod's resources.limits (the k3s-phones composition sets
# them from the plan) and, as a whole, by the VM's size.
{ config, lib, pkgs, ... }:
let
  cfg = config.edgelab.phone;
  elib = import ../nix/lib.nix;
in
{
  options.edgelab.phone = {
    enable = lib.mkEnableOption "the small-device (smartphone) profile";

    memoryMiB = lib.mkOption {
      type = lib.types.nullOr lib.types.ints.positive;
      default = null;
      example = 256;
      description = "MemoryMax of edgelab-workload.slice (where experiments start node processes); null for no cap.";
    };

    cpuQuota = lib.mkOption {
      type = lib.types.nullOr (lib.types.strMatching "[0-9]+%");
      default = null;
      example = "50%";
      description = "CPUQuota of edgelab-workload.slice (100% = one core); null for no cap.";
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

    checkServiceLBKernel = lib.mkOption {
      type = lib.types.bool;
      default = config.edgelab.k3s.enable;
      defaultText = lib.literalExpression "config.edgelab.k3s.enable";
      description = ''
        Load the iptables matches k3s ServiceLB (klipper-lb) uses at boot
        (xt_multiport), so a kernel without them fails loudly at boot instead
        of leaving svclb pods in ContainerCreating. NixOS kernels build them
        as modules already; on a phone's own kernel run
        `edgelab kernel-check` on its config.
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

    # boot.kernelModules: systemd-modules-load.service fails (and says which)
    # when a module is missing from the booted kernel.
    boot.kernelModules = lib.optionals cfg.checkServiceLBKernel elib.requiredKernelModules.serviceLB;

    edgelab.netem.enable = lib.mkDefault cfg.emulateWifi;
  };
}
