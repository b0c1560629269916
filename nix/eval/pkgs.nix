# A stand-in for nixpkgs 23.11's package set, for evaluating the modules and
# compositions with only nixpkgs' `lib`: packages are derivation-shaped
# attribute sets (what types.package and string interpolation accept), and
# only names that exist in nixpkgs 23.11 are here, so a module that uses a
# package nixpkgs does not have fails as it would for real ("attribute
# missing"). Builders keep the real ones' naming where the modules depend on
# it (dockerTools.buildImage: `docker-image-<name>.tar.gz`,
# pkgs/build-support/docker/default.nix). `python3Packages.callPackage`
# really calls the package function with its arguments, as nixpkgs does, so
# pkgs/edgelab.nix is evaluated too.
#
# planDir: a directory of plan JSON files named as pkgs/plan.nix names its
# output (nix/plan-name.nix); `runCommand` returns the file for those names,
# standing in for the build of the Python planner (tests write them with
# nix/make_plan.py, the script that build runs).
{ lib, planDir ? null }:
let
  storePath = name: seed:
    "/nix/store/${builtins.substring 0 32 (builtins.hashString "sha256" (name + "\n" + builtins.unsafeDiscardStringContext seed))}-${name}";

  mkDrv = name: seed: extra: {
    type = "derivation";
    inherit name;
    outPath = storePath name seed;
    drvPath = storePath "${name}.drv" seed;
    outputs = [ "out" ];
    passthru = { };
    meta = { };
  } // extra;

  pkg = name: version: mkDrv "${name}-${version}" "" { pname = name; inherit version; };

  # Python packages: the nixpkgs 23.11 attribute names edgelab uses.
  pyPkg = name: version: pkg "python3.11-${name}" version // {
    pname = name;
    overridePythonAttrs = f:
      let new = f { inherit version; src = null; };
      in pyPkg name (new.version or version) // { overridden = true; };
  };

  python3Packages = {
    python = python3;
    callPackage = fn: args:
      let
        f = if builtins.isFunction fn then fn else import fn;
        auto = builtins.intersectAttrs (builtins.functionArgs f) (python3Packages // { inherit lib; });
      in f (auto // args);
    buildPythonPackage = attrs:
      # Force what a build would read: the source filter, the inputs.
      builtins.deepSeq [ (attrs.propagatedBuildInputs or [ ]) (attrs.nativeBuildInputs or [ ]) ]
        (pyPkg attrs.pname attrs.version // { propagatedBuildInputs = attrs.propagatedBuildInputs or [ ]; });
    toPythonApplication = p: p // { application = true; };
    fetchPypi = { pname, version, hash ? null, sha256 ? null, ... }: mkDrv "${pname}-${version}.tar.gz" (toString hash) { };
    pythonRelaxDepsHook = pkg "python-relax-deps-hook" "0";
    setuptools = pyPkg "setuptools" "68.2.2";
    hatchling = pyPkg "hatchling" "1.18.0";
    pyyaml = pyPkg "pyyaml" "6.0.1";
    click = pyPkg "click" "8.1.7";
    rich = pyPkg "rich" "13.6.0";
    pandas = pyPkg "pandas" "2.1.1";
    numpy = pyPkg "numpy" "1.26.1";
    matplotlib = pyPkg "matplotlib" "3.8.0";
    pyroute2 = pyPkg "pyroute2" "0.7.9";
    prometheus-client = pyPkg "prometheus-client" "0.17.1";
    paho-mqtt = pyPkg "paho-mqtt" "1.6.1";
    requests = pyPkg "requests" "2.31.0";
    pillow = pyPkg "pillow" "10.0.1";
    opencv4 = pyPkg "opencv" "4.7.0";
    # The phone service's HTTP server. In nixpkgs for years; 2.1.2 is the version
    # believed to be in 23.11 (3.0 came in 2024), not read from the pinned tree.
    waitress = pyPkg "waitress" "2.1.2";
    pytest = pyPkg "pytest" "7.4.3";
    pytest-timeout = pyPkg "pytest-timeout" "2.1.0";
  };

  python3 = pkg "python3" "3.11.6" // {
    pkgs = python3Packages;
    withPackages = f: builtins.deepSeq (f python3Packages) (mkDrv "python3-3.11.6-env" (toString (f python3Packages)) { });
  };

  writeTextFile = { name, text, executable ? false, destination ? "", ... }: mkDrv name text { inherit text; };
in
{
  inherit lib python3 python3Packages;
  system = "x86_64-linux";

  writeText = name: text: writeTextFile { inherit name text; };
  inherit writeTextFile;
  writeShellScript = name: text: writeTextFile { inherit name text; executable = true; };
  writeShellScriptBin = name: text: writeTextFile { inherit name text; executable = true; destination = "/bin/${name}"; };
  writeScript = name: text: writeTextFile { inherit name text; executable = true; };

  runCommand = name: env: script:
    if planDir != null && builtins.pathExists (planDir + "/${name}")
    then planDir + "/${name}"
    else mkDrv name script { };

  buildEnv = { name, paths, ... }: mkDrv name (toString paths) { inherit paths; };

  dockerTools = {
    # pkgs/build-support/docker/default.nix: gzip unless told otherwise,
    # output `docker-image-${baseNameOf name}.tar${ext}`.
    # A store path the image's command names is only in the image when it is
    # in copyToRoot's closure (the layer is built from copyToRoot alone):
    # checked here for commands given as store paths.
    buildImage = args@{ name, tag ? null, compressor ? "gz", copyToRoot ? null, ... }:
      let
        ext = { none = ""; gz = ".gz"; zstd = ".zst"; }.${compressor}
          or (throw "in docker image ${name}: compressor must be one of: [none gz zstd]");
        roots = map toString (lib.toList (copyToRoot.paths or copyToRoot));
        commands = map toString ((args.config.Entrypoint or [ ]) ++ (args.config.Cmd or [ ]));
        missing = builtins.filter
          (c: lib.hasPrefix builtins.storeDir c && !(builtins.any (r: lib.hasPrefix r c) roots))
          commands;
      in
      if missing != [ ] then throw "in docker image ${name}: ${builtins.head missing} is not in copyToRoot, so it is not in the image"
      else builtins.deepSeq (args.config or { })
        (mkDrv "docker-image-${baseNameOf name}.tar${ext}" (builtins.toJSON (args.config or { }))
          { imageName = lib.toLower name; imageTag = if tag == null then "hash" else tag; });
  };

  # nixos/lib/testing: the NixOS test framework; here it only keeps its arguments.
  testers.runNixOSTest = args: mkDrv "vm-test-run-${args.name}" "" { inherit (args) nodes testScript; };
  mkShell = args@{ packages ? [ ], ... }: mkDrv "nix-shell" "" { inherit packages; };
  nixpkgs-fmt = pkg "nixpkgs-fmt" "1.3.0";

  k3s = pkg "k3s" "1.27.6+k3s1";
  kubectl = pkg "kubectl" "1.28.3";
  busybox = pkg "busybox" "1.36.1";
  tini = pkg "tini" "0.19.0";
  iptables = pkg "iptables" "1.8.9";
  nftables = pkg "nftables" "1.0.9";
  iproute2 = pkg "iproute2" "6.5.0";
  iperf3 = pkg "iperf" "3.15";
  procps = pkg "procps" "3.3.17";
  jq = pkg "jq" "1.7";
  curl = pkg "curl" "8.4.0";
  nettools = pkg "net-tools" "2.10";
  gnugrep = pkg "gnugrep" "3.11";
  coreutils = pkg "coreutils" "9.3";
  iputils = pkg "iputils" "20221126";
  traceroute = pkg "traceroute" "2.1.3";
  batctl = pkg "batctl" "2023.1";
  qemu_kvm = pkg "qemu" "8.1.2";
  vde2 = pkg "vde2" "2.3.3";
  openssh = pkg "openssh" "9.5p1";
  # Distributed file systems and I/O benchmarks (compositions/{nfs,orangefs,glusterfs,cephfs}).
  ior = pkg "ior" "3.3.0";
  fio = pkg "fio" "3.36";
  e2fsprogs = pkg "e2fsprogs" "1.47.0";
  xfsprogs = pkg "xfsprogs" "6.4.0";
  util-linux = pkg "util-linux" "2.39.2";
  lvm2 = pkg "lvm2" "2.03.22";
  glusterfs = pkg "glusterfs" "11.1";
  orangefs = pkg "orangefs" "2.9.8";
  ceph = pkg "ceph" "18.2.1";
  ceph-client = pkg "ceph-client" "18.2.1";
}
