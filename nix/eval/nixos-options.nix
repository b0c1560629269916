# Declarations of the NixOS options the edgelab modules and compositions
# set, mirroring nixpkgs 23.11's names and types (and the parts of their
# implementation that check or merge them), so that `lib.evalModules` with
# only nixpkgs' `lib` (../shared/nix/nixpkgs-lib) rejects what a real NixOS
# evaluation would: an option name that does not exist, a value of the wrong
# type, a failed assertion. Used by nix/eval/default.nix and
# tests/test_nix_eval.py; the real thing is `nix flake check` (docs/nix.md).
#
# A module that sets a nixpkgs option not declared here fails the evaluation
# test ("option does not exist"): declare it here, with its 23.11 type, citing
# the nixpkgs file.
#
# Sources (nixpkgs 23.11 tree):
#   nixos/lib/systemd-unit-options.nix   unitOption, sharedOptions, serviceOptions, checkService
#   nixos/lib/systemd-lib.nix            unitNameType
#   nixos/modules/system/boot/systemd.nix  systemd.services / slices
#   nixos/modules/system/boot/systemd/tmpfiles.nix  systemd.tmpfiles.rules
#   nixos/modules/system/boot/kernel.nix  boot.kernelModules, kernelParams (kernelParam type),
#                                         kernelPatches (listOf attrs), consoleLogLevel (int), kernel.sysctl
#   nixos/modules/services/networking/firewall.nix  networking.firewall.*
#   nixos/modules/services/cluster/k3s/default.nix  services.k3s (23.11: extraFlags is `str`)
#   nixos/modules/config/zram.nix        zramSwap.enable, memoryPercent (int)
#   nixos/modules/config/system-path.nix environment.systemPackages
#   nixos/modules/system/etc/etc.nix     environment.etc.<name>.{source,text,mode,...}
#   nixos/modules/config/users-groups.nix  users.groups
#   nixos/modules/misc/assertions.nix    assertions, warnings
#   nixos/modules/system/activation/top-level.nix  failed assertions abort system.build.toplevel
#   nixos/modules/tasks/filesystems.nix  fileSystems.<name> (coreFileSystemOpts + fileSystemOpts)
#   nixos/modules/config/networking.nix  networking.hosts (attrsOf (listOf str))
#   nixos/modules/system/boot/systemd.nix  systemd.targets (targetOptions = sharedUnitOptions)
#   nixos/modules/services/network-filesystems/nfsd.nix  services.nfs.server
#   nixos/modules/services/network-filesystems/orangefs/{server,client}.nix  services.orangefs.*
#   nixos/modules/services/network-filesystems/glusterfs.nix  services.glusterfs
#   nixos/modules/services/network-filesystems/ceph.nix  services.ceph (+ its assertions)
#   nixos/modules/virtualisation/qemu-vm.nix  virtualisation.emptyDiskImages: NOT declared
#     here on purpose: nxc's flavours do not import qemu-vm.nix (their qemu
#     script adds no disk, nixos-compose nix/flavours/shared/common.nix:120-139),
#     so a role that set it would fail under nxc; only the flake's NixOS tests
#     (`testNodes`) set it.
# Of the file-system services only the options are mirrored (names, types,
# defaults) plus ceph's assertions; their units are nixpkgs' business.
{ config, lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # systemd-unit-options.nix: lists concatenate, other values must agree.
  unitOption = lib.mkOptionType {
    name = "systemd option";
    check = v:
      let ok = x: builtins.isBool x || builtins.isInt x || builtins.isString x || builtins.isPath x || lib.isDerivation x;
      in ok v || (builtins.isList v && builtins.all ok v);
    merge = loc: defs:
      let defs' = lib.filterOverrides defs;
      in if builtins.isList (builtins.head defs').value
      then lib.concatMap
        (def: if builtins.isList def.value then def.value
          else throw "The definitions for systemd unit options should be either all lists, representing repeatable options, or all non-lists, but for the option ${lib.showOption loc}, the definitions are a mix of list and non-list ${lib.options.showDefs defs'}")
        defs'
      else lib.mergeEqualOption loc defs';
  };

  # systemd-lib.nix: a unit name has a known suffix.
  unitNameType = types.strMatching "[a-zA-Z0-9@%:_.\\-]+[.](service|socket|device|mount|automount|swap|target|path|timer|scope|slice)";

  # systemd-unit-options.nix checkService (systemd-lib.nix checkUnitConfig,
  # which looks through mkOverride wrappers): Type and Restart values.
  checkService = attrs:
    let
      v = lib.mapAttrs (_: x: if (x._type or "") == "override" then x.content else x) attrs;
      oneOf = name: values:
        lib.optional (v ? ${name} && !(builtins.elem v.${name} values))
          "Systemd service field `${name}' cannot have value `${toString v.${name}}'.";
      errors = oneOf "Type" [ "exec" "simple" "forking" "oneshot" "dbus" "notify" "idle" ]
        ++ oneOf "Restart" [ "no" "on-success" "on-failure" "on-abnormal" "on-abort" "always" ];
    in if errors == [ ] then true else builtins.trace (lib.concatStringsSep "\n" errors) false;

  unitDeps = lib.genAttrs [ "requiredBy" "wantedBy" "upheldBy" "requires" "wants" "upholds" "after" "before" "bindsTo" "partOf" "conflicts" "requisite" "onFailure" "onSuccess" ]
    (_: mkOption { type = types.listOf unitNameType; default = [ ]; });

  sharedUnitOptions = unitDeps // {
    enable = mkOption { type = types.bool; default = true; };
    description = mkOption { type = types.singleLineStr; default = ""; };
    documentation = mkOption { type = types.listOf types.str; default = [ ]; };
    unitConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    overrideStrategy = mkOption { type = types.enum [ "asDropinIfExists" "asDropin" ]; default = "asDropinIfExists"; };
  };

  serviceSubmodule = types.submodule {
    options = sharedUnitOptions // {
      environment = mkOption { type = with types; attrsOf (nullOr (oneOf [ str path package ])); default = { }; };
      path = mkOption { type = with types; listOf (oneOf [ package str ]); default = [ ]; };
      serviceConfig = mkOption { type = types.addCheck (types.attrsOf unitOption) checkService; default = { }; };
      script = mkOption { type = types.lines; default = ""; };
      scriptArgs = mkOption { type = types.str; default = ""; };
      preStart = mkOption { type = types.lines; default = ""; };
      postStart = mkOption { type = types.lines; default = ""; };
      reload = mkOption { type = types.lines; default = ""; };
      preStop = mkOption { type = types.lines; default = ""; };
      postStop = mkOption { type = types.lines; default = ""; };
      restartIfChanged = mkOption { type = types.bool; default = true; };
      reloadIfChanged = mkOption { type = types.bool; default = false; };
      stopIfChanged = mkOption { type = types.bool; default = true; };
      startAt = mkOption { type = with types; either str (listOf str); default = [ ]; };
      restartTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      reloadTriggers = mkOption { type = types.listOf types.unspecified; default = [ ]; };
      startLimitIntervalSec = mkOption { type = types.nullOr types.int; default = null; };
      startLimitBurst = mkOption { type = types.nullOr types.int; default = null; };
      confinement.enable = mkOption { type = types.bool; default = false; };
    };
  };

  targetSubmodule = types.submodule { options = sharedUnitOptions; };

  # tasks/filesystems.nix: coreFileSystemOpts + fileSystemOpts.
  fileSystemSubmodule = types.submodule ({ name, ... }: {
    options = {
      mountPoint = mkOption { type = types.str; default = name; };
      device = mkOption { type = types.nullOr types.nonEmptyStr; default = null; };
      fsType = mkOption { type = types.nonEmptyStr; default = "auto"; };
      options = mkOption { type = types.nonEmptyListOf types.nonEmptyStr; default = [ "defaults" ]; };
      label = mkOption { type = types.nullOr types.str; default = null; };
      autoFormat = mkOption { type = types.bool; default = false; };
      formatOptions = mkOption { type = types.nullOr types.str; default = null; };
      autoResize = mkOption { type = types.bool; default = false; };
      noCheck = mkOption { type = types.bool; default = false; };
      neededForBoot = mkOption { type = types.bool; default = false; };
      depends = mkOption { type = types.listOf types.nonEmptyStr; default = [ ]; };
    };
  });

  cephDaemon = {
    enable = lib.mkEnableOption "daemon";
    daemons = mkOption { type = types.listOf types.str; default = [ ]; };
    extraConfig = mkOption { type = types.attrsOf types.str; default = { }; };
  };

  sliceSubmodule = types.submodule {
    options = sharedUnitOptions // {
      sliceConfig = mkOption { type = types.attrsOf unitOption; default = { }; };
    };
  };

  etcSubmodule = types.submodule ({ name, config, ... }: {
    # etc.nix: `text` becomes a store file that is the source.
    config.source = lib.mkIf (config.text != null) (lib.mkDefault (pkgs.writeText "etc-${baseNameOf name}" config.text));
    options = {
      enable = mkOption { type = types.bool; default = true; };
      target = mkOption { type = types.str; default = name; };
      text = mkOption { type = types.nullOr types.lines; default = null; };
      source = mkOption { type = types.path; };
      mode = mkOption { type = types.str; default = "symlink"; };
      uid = mkOption { type = types.int; default = 0; };
      gid = mkOption { type = types.int; default = 0; };
      user = mkOption { type = types.str; default = "+0"; };
      group = mkOption { type = types.str; default = "+0"; };
    };
  });

  kernelParam = types.strMatching ''([^"[:space:]]|"[^"]*")+'';

  # The parts of a unit the evaluation reads, forced like a build would.
  forced = {
    inherit (config.systemd) services slices tmpfiles;
    inherit (config.boot) kernelModules kernelParams kernelPatches consoleLogLevel;
    sysctl = config.boot.kernel.sysctl;
    inherit (config.networking) firewall;
    k3s = config.services.k3s;
    inherit (config) zramSwap;
    etc = config.environment.etc;
    packages = config.environment.systemPackages;
    groups = config.users.groups;
    inherit (config) fileSystems;
    targets = config.systemd.targets;
    hosts = config.networking.hosts;
    dfs = lib.filterAttrs (_: v: v.enable) {
      inherit (config.services.nfs) server;
      orangefs-server = config.services.orangefs.server;
      orangefs-client = config.services.orangefs.client;
      inherit (config.services) glusterfs ceph;
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (types.submodule {
        options.assertion = mkOption { type = types.bool; };
        options.message = mkOption { type = types.str; };
      });
      default = [ ];
    };
    warnings = mkOption { type = types.listOf types.str; default = [ ]; };

    system.stateVersion = mkOption { type = types.str; default = lib.trivial.release; };
    system.build = mkOption { type = types.submoduleWith { modules = [{ freeformType = with types; lazyAttrsOf (uniq unspecified); }]; }; default = { }; };
    nixpkgs.overlays = mkOption { type = types.listOf (types.mkOptionType { name = "nixpkgs-overlay"; check = lib.isFunction; merge = lib.mergeOneOption; }); default = [ ]; };

    networking.hostName = mkOption { type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$"; default = "nixos"; };
    networking.firewall = {
      enable = mkOption { type = types.bool; default = true; };
      allowedTCPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      allowedUDPPorts = mkOption { type = types.listOf types.port; default = [ ]; };
      allowedTCPPortRanges = mkOption { type = types.listOf (types.attrsOf types.port); default = [ ]; };
      trustedInterfaces = mkOption { type = types.listOf types.str; default = [ ]; };
      extraCommands = mkOption { type = types.lines; default = ""; };
    };

    boot.kernelModules = mkOption { type = types.listOf types.str; default = [ ]; };
    boot.kernelParams = mkOption { type = types.listOf kernelParam; default = [ ]; };
    boot.kernelPatches = mkOption { type = types.listOf types.attrs; default = [ ]; };
    boot.consoleLogLevel = mkOption { type = types.int; default = 4; };
    boot.kernel.sysctl = mkOption { type = with types; attrsOf (nullOr (oneOf [ bool str int ])); default = { }; };
    boot.loader.grub.enable = mkOption { type = types.bool; default = true; };

    systemd.services = mkOption { type = types.attrsOf serviceSubmodule; default = { }; };
    systemd.slices = mkOption { type = types.attrsOf sliceSubmodule; default = { }; };
    systemd.targets = mkOption { type = types.attrsOf targetSubmodule; default = { }; };

    fileSystems = mkOption { type = types.attrsOf fileSystemSubmodule; default = { }; };
    networking.hosts = mkOption { type = types.attrsOf (types.listOf types.str); default = { }; };

    services.nfs.server = {
      enable = mkOption { type = types.bool; default = false; };
      exports = mkOption { type = types.lines; default = ""; };
      hostName = mkOption { type = types.nullOr types.str; default = null; };
      nproc = mkOption { type = types.int; default = 8; };
      createMountPoints = mkOption { type = types.bool; default = false; };
      statdPort = mkOption { type = types.nullOr types.int; default = null; };
      lockdPort = mkOption { type = types.nullOr types.int; default = null; };
      mountdPort = mkOption { type = types.nullOr types.int; default = null; };
    };

    services.orangefs.server = {
      enable = lib.mkEnableOption "OrangeFS server";
      logType = mkOption { type = types.enum [ "file" "syslog" ]; default = "syslog"; };
      # types.str with default null in nixpkgs: unset, it fails when the config file is built.
      dataStorageSpace = mkOption { type = types.str; };
      metadataStorageSpace = mkOption { type = types.str; };
      BMIModules = mkOption { type = types.listOf types.str; default = [ "bmi_tcp" ]; };
      extraDefaults = mkOption { type = types.lines; default = ""; };
      extraConfig = mkOption { type = types.lines; default = ""; };
      servers = mkOption { type = types.attrsOf types.str; default = { }; };
      fileSystems = mkOption {
        type = types.attrsOf (types.submodule {
          options = {
            id = mkOption { type = types.int; default = 1; };
            rootHandle = mkOption { type = types.int; default = 3; };
            extraConfig = mkOption { type = types.lines; default = ""; };
            troveSyncMeta = mkOption { type = types.bool; default = true; };
            troveSyncData = mkOption { type = types.bool; default = false; };
            extraStorageHints = mkOption { type = types.lines; default = ""; };
          };
        });
        default = { orangefs = { }; };
      };
    };
    services.orangefs.client = {
      enable = lib.mkEnableOption "OrangeFS client daemon";
      extraOptions = mkOption { type = types.listOf types.str; default = [ ]; };
      fileSystems = mkOption {
        type = types.listOf (types.submodule {
          options = {
            mountPoint = mkOption { type = types.str; default = "/orangefs"; };
            options = mkOption { type = types.listOf types.str; default = [ ]; };
            target = mkOption { type = types.str; };
          };
        });
      };
    };

    services.glusterfs = {
      enable = lib.mkEnableOption "GlusterFS Daemon";
      logLevel = mkOption { type = types.enum [ "DEBUG" "INFO" "WARNING" "ERROR" "CRITICAL" "TRACE" "NONE" ]; default = "INFO"; };
      useRpcbind = mkOption { type = types.bool; default = true; };
      enableGlustereventsd = mkOption { type = types.bool; default = true; };
      killMode = mkOption { type = types.enum [ "control-group" "process" "mixed" "none" ]; default = "control-group"; };
      stopKillTimeout = mkOption { type = types.str; default = "5s"; };
      extraFlags = mkOption { type = types.listOf types.str; default = [ ]; };
      tlsSettings = mkOption { type = types.nullOr types.attrs; default = null; };
    };

    services.ceph = {
      enable = lib.mkEnableOption "Ceph global configuration";
      global = {
        fsid = mkOption { type = types.str; };
        clusterName = mkOption { type = types.str; default = "ceph"; };
        monInitialMembers = mkOption { type = types.nullOr types.commas; default = null; };
        monHost = mkOption { type = types.nullOr types.commas; default = null; };
        maxOpenFiles = mkOption { type = types.int; default = 131072; };
        authClusterRequired = mkOption { type = types.enum [ "cephx" "none" ]; default = "cephx"; };
        authServiceRequired = mkOption { type = types.enum [ "cephx" "none" ]; default = "cephx"; };
        authClientRequired = mkOption { type = types.enum [ "cephx" "none" ]; default = "cephx"; };
        publicNetwork = mkOption { type = types.nullOr types.commas; default = null; };
        clusterNetwork = mkOption { type = types.nullOr types.commas; default = null; };
      };
      extraConfig = mkOption { type = types.attrsOf types.str; default = { }; };
      mgr = cephDaemon;
      mon = cephDaemon;
      osd = cephDaemon;
      mds = cephDaemon;
      rgw = { enable = lib.mkEnableOption "Ceph RadosGW daemon"; daemons = mkOption { type = types.listOf types.str; default = [ ]; }; };
      client = {
        enable = lib.mkEnableOption "Ceph client configuration";
        extraConfig = mkOption { type = types.attrsOf (types.attrsOf types.str); default = { }; };
      };
    };
    systemd.tmpfiles.rules = mkOption { type = types.listOf types.str; default = [ ]; };

    environment.systemPackages = mkOption { type = types.listOf types.package; default = [ ]; };
    environment.etc = mkOption { type = types.attrsOf etcSubmodule; default = { }; };

    users.groups = mkOption {
      type = types.attrsOf (types.submodule ({ name, ... }: {
        options.name = mkOption { type = types.str; default = name; };
        options.gid = mkOption { type = types.nullOr types.int; default = null; };
        options.members = mkOption { type = types.listOf types.str; default = [ ]; };
      }));
      default = { };
    };

    zramSwap = {
      enable = mkOption { type = types.bool; default = false; };
      memoryPercent = mkOption { type = types.int; default = 50; };
      algorithm = mkOption { type = types.str; default = "zstd"; };
    };

    services.k3s = {
      enable = lib.mkEnableOption "k3s";
      package = mkOption { type = types.package; default = pkgs.k3s; };
      role = mkOption { type = types.enum [ "server" "agent" ]; default = "server"; };
      serverAddr = mkOption { type = types.str; default = ""; };
      token = mkOption { type = types.str; default = ""; };
      tokenFile = mkOption { type = types.nullOr types.path; default = null; };
      extraFlags = mkOption { type = types.str; default = ""; };
      disableAgent = mkOption { type = types.bool; default = false; };
      environmentFile = mkOption { type = types.nullOr types.path; default = null; };
      configPath = mkOption { type = types.nullOr types.path; default = null; };
    };
  };

  config = lib.mkMerge [
    # nixpkgs 23.11 services.ceph: its assertions (ceph.nix `assertions`) and warning.
    (lib.mkIf config.services.ceph.enable (let cfg = config.services.ceph; in {
      assertions = [
        { assertion = cfg.global.fsid != ""; message = "fsid has to be set to a valid uuid for the cluster to function"; }
        { assertion = cfg.mon.enable -> cfg.mon.daemons != [ ]; message = "have to set id of atleast one MON if you're going to enable Monitor"; }
        { assertion = cfg.mds.enable -> cfg.mds.daemons != [ ]; message = "have to set id of atleast one MDS if you're going to enable Metadata Service"; }
        { assertion = cfg.osd.enable -> cfg.osd.daemons != [ ]; message = "have to set id of atleast one OSD if you're going to enable OSD"; }
        { assertion = cfg.mgr.enable -> cfg.mgr.daemons != [ ]; message = "have to set id of atleast one MGR if you're going to enable MGR"; }
      ];
      warnings = lib.optional (cfg.global.monInitialMembers == null)
        "Not setting up a list of members in monInitialMembers requires that you set the host variable for each mon daemon or else the cluster won't function";
    }))

    # nixpkgs 23.11 services.k3s implementation (its assertions and unit).
    (lib.mkIf config.services.k3s.enable (let cfg = config.services.k3s; in {
      assertions = [
        {
          assertion = cfg.role == "agent" -> (cfg.configPath != null || cfg.serverAddr != "");
          message = "serverAddr or configPath (with 'server' key) should be set if role is 'agent'";
        }
        {
          assertion = cfg.role == "agent" -> cfg.configPath != null || cfg.tokenFile != null || cfg.token != "";
          message = "token or tokenFile or configPath (with 'token' or 'token-file' keys) should be set if role is 'agent'";
        }
      ];
      environment.systemPackages = [ cfg.package ];
      systemd.services.k3s = {
        description = "k3s service";
        after = [ "network.service" "firewall.service" ];
        wants = [ "network.service" "firewall.service" ];
        wantedBy = [ "multi-user.target" ];
        serviceConfig = {
          Type = if cfg.role == "agent" then "exec" else "notify";
          KillMode = "process";
          Delegate = "yes";
          Restart = "always";
          RestartSec = "5s";
          ExecStart = lib.concatStringsSep " \\\n " (
            [ "${cfg.package}/bin/k3s ${cfg.role}" ]
            ++ lib.optional cfg.disableAgent "--disable-agent"
            ++ lib.optional (cfg.serverAddr != "") "--server ${cfg.serverAddr}"
            ++ lib.optional (cfg.token != "") "--token ${cfg.token}"
            ++ lib.optional (cfg.tokenFile != null) "--token-file ${cfg.tokenFile}"
            ++ lib.optional (cfg.configPath != null) "--config ${cfg.configPath}"
            ++ [ cfg.extraFlags ]);
        };
      };
    }))

    {
      # top-level.nix: the system is only built when every assertion holds;
      # warnings are printed. Here toplevel forces every value a build reads.
      system.build.toplevel =
        let failed = map (x: x.message) (builtins.filter (x: !x.assertion) config.assertions);
        in if failed != [ ] then throw "\nFailed assertions:\n${lib.concatMapStrings (m: "- ${m}\n") failed}"
        else lib.foldr (w: x: lib.warn w x)
          (builtins.deepSeq forced {
            type = "derivation";
            name = "nixos-system-${config.networking.hostName}";
            outPath = "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" (builtins.unsafeDiscardStringContext (builtins.toJSON (lib.mapAttrs (_: s: s.script) forced.services))))}-nixos-system";
          })
          config.warnings;
    }
  ];
}
