{
  description = "edgelab: reproducible testbeds for low-cost edge computing research";

  inputs = {
    # NixOS release branch; pinned in flake.lock (see docs/nix.md).
    nixpkgs.url = "github:NixOS/nixpkgs/23.11";
    # NixOS-Compose, on the branch that follows the same NixOS release.
    nxc.url = "github:oar-team/nixos-compose/23.11";
    nxc.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, nxc }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      lib = nixpkgs.lib;
      elib = import ./nix/lib.nix;

      # execo is not in nixpkgs; nur-kapack (an input of nxc's flake, which
      # builds nxc itself with `kapack.packages.${system}.execo`) has it.
      execo = nxc.inputs.kapack.packages.${system}.execo;
      edgelab = pkgs.python3Packages.callPackage ./pkgs/edgelab.nix { inherit execo; };
      edgelabApp = pkgs.python3Packages.toPythonApplication edgelab;
      python = pkgs.python3.withPackages (ps: [ edgelab ps.pytest ps.pytest-timeout ]);

      # The flavours these compositions are made for: VMs on a workstation or
      # CI runner, and Grid'5000 nodes (in RAM, or a deployed image).
      flavours = { inherit (nxc.lib.flavours) vm vm-ramdisk g5k-ramdisk g5k-image; };

      # What every node gets on top of its role (also what nix/eval evaluates).
      extraConfigurations = import ./nix/node-modules.nix { inherit edgelab; };

      # NixOS-Compose's convention: packages.<system>."<composition>::<flavour>".
      composed = nxc.lib.compose {
        inherit nixpkgs system flavours extraConfigurations;
        compositions = ./compositions/compositions.nix;
        setup = ./setup.toml;
      };

      # `nxc build -f <flavour>` (no -C) builds `composition::<flavour>`
      # (nixos-compose nixos_compose/commands/cmd_build.py:248-251): the
      # default composition, k3s-phones, under that name too. (setup.toml's
      # [options] composition-flavour would also be read, but it overrides
      # -f: `nxc build -f g5k-ramdisk` would then build the vm flavour.)
      defaultComposition = "k3s-phones";
      defaultAliases = lib.mapAttrs' (f: _: lib.nameValuePair "composition::${f}" composed."${defaultComposition}::${f}") flavours;

      # Each composition's roles as NixOS systems, built the way nxc builds
      # them (nixos-compose nix/generate_one_composition_info.nix:32-52).
      setup = nxc.lib.setup ./setup.toml { inherit lib; };
      compositions = import ./compositions/compositions.nix;
      compositionSet = name: flavour: compositions.${name} {
        inherit pkgs lib system setup flavour;
        helpers = import "${nxc}/nix/helpers.nix";
        modulesPath = "${nixpkgs}/nixos";
        nur = { };
      };
      roleSystems = name: flavourName:
        let flavour = flavours.${flavourName};
        in lib.mapAttrs
          (_: role: lib.nixosSystem {
            inherit system;
            modules = [
              { environment.etc."nxc-composition" = { mode = "0644"; text = name; }; }
              { system.stateVersion = lib.mkDefault lib.trivial.release; }
              role
              flavour.module
            ] ++ extraConfigurations;
          })
          (compositionSet name flavour).roles;

      # The same testScript under nixpkgs' NixOS test framework: one VM per
      # planned node, named as the plan names it, on the test's vlan 1, which
      # is eth1 as on nxc's vm flavour. A k3s server and its images do not
      # fit in the default 1 GiB (with nxc: MEM=3072, docs/nix.md).
      nixosTest = name:
        let
          set = compositionSet name { name = "vm"; };
          memory = role: if name == "cephfs" then 2048 else if name != "k3s-phones" then 1024 else if role == "server" then 3072 else 2048;
        in
        pkgs.testers.runNixOSTest {
          name = "edgelab-${name}";
          nodes = lib.listToAttrs (lib.concatLists (lib.mapAttrsToList
            (role: hosts: map
              (host: lib.nameValuePair host {
                # testNodes: what a role needs only under qemu-vm.nix (e.g. an
                # empty disk, virtualisation.emptyDiskImages), which nxc's
                # flavours do not import.
                imports = [ set.roles.${role} (set.testNodes.${role} or { }) ] ++ extraConfigurations;
                virtualisation.memorySize = memory role;
                virtualisation.cores = 2;
              })
              hosts)
            set.rolesDistribution));
          # The NixOS driver boots a machine on its first command; boot them
          # all at once (under nxc they are already up: `nxc start`).
          testScript = "start_all()\n" + set.testScript;
        };
      compositionNames = builtins.attrNames compositions;
    in
    {
      lib = elib;

      nixosModules = {
        default = ./modules;
        common = ./modules/common.nix;
        k3s = ./modules/k3s.nix;
        phone = ./modules/phone.nix;
        beaglepaas = ./modules/beaglepaas.nix;
        powerMeter = ./modules/power-meter.nix;
        dfs = ./modules/dfs.nix;
        netem = ./modules/netem.nix;
      };

      packages.${system} = composed // defaultAliases // {
        inherit edgelab;
        edgelab-app = edgelabApp;
        default = edgelabApp;
      };

      # nxc reads defaultPackage for `nxc build -L`.
      defaultPackage.${system} = self.packages.${system}."${defaultComposition}::vm";

      checks.${system} = {
        inherit edgelab;

        # The plan of the shipped example topology, by the Python planner.
        plan = import ./pkgs/plan.nix { inherit pkgs; topology = ./compositions/k3s-phones/topology.yaml; counts = { relay = 0; }; };

        # Python and Nix agree: what nix/lib.nix derives from the plan is
        # checked against edgelab's own objects.
        plan-agreement =
          let
            plan = elib.readPlan self.checks.${system}.plan;
            view = map
              (n: {
                inherit (n) name;
                settings = elib.nodeSettings { inherit plan; inherit (n) name; };
                commands = elib.linkCommands { inherit plan; inherit (n) name; };
                ap_routes = elib.cellRouteCommands { inherit plan; inherit (n) name; };
              })
              plan.nodes;
          in
          pkgs.runCommand "edgelab-plan-agreement"
            { nativeBuildInputs = [ python ]; view = builtins.toJSON view; passAsFile = [ "view" ]; } ''
            cp ${./nix/check_agreement.py} check_agreement.py
            cp ${./nix/make_plan.py} make_plan.py
            python check_agreement.py ${./compositions/k3s-phones/topology.yaml} "$viewPath" relay=0
            touch $out
          '';

        # Every role of every composition, for the vm and g5k-ramdisk
        # flavours, evaluated as the NixOS system nxc builds: forcing
        # toplevel.drvPath runs every module, type check and assertion
        # (without building anything).
        modules-eval = pkgs.writeText "edgelab-modules-eval.json" (builtins.toJSON (lib.genAttrs compositionNames (c:
          lib.genAttrs [ "vm" "g5k-ramdisk" ] (f:
            lib.mapAttrs (_: s: builtins.unsafeDiscardStringContext s.config.system.build.toplevel.drvPath) (roleSystems c f)))));
      } // lib.listToAttrs (map (c: lib.nameValuePair "nixos-test-${c}" (nixosTest c)) compositionNames);

      devShells.${system}.default = pkgs.mkShell {
        packages = [
          nxc.packages.${system}.nixos-compose
          python
          # `nxc start` on the vm flavours runs qemu-kvm and vde_switch
          # (nixos-compose nixos_compose/driver/vlan.py:41), as nxc's own
          # nxcShell provides them.
          pkgs.qemu_kvm
          pkgs.vde2
          pkgs.openssh
          pkgs.iproute2
          pkgs.iperf3
          pkgs.jq
          pkgs.kubectl
          pkgs.nixpkgs-fmt
        ];
      };
      # The attribute nxc's templates use.
      devShell.${system} = self.devShells.${system}.default;

      formatter.${system} = pkgs.nixpkgs-fmt;
    };
}
