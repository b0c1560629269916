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

      edgelab = pkgs.python3Packages.callPackage ./pkgs/edgelab.nix { };
      edgelabApp = pkgs.python3Packages.toPythonApplication edgelab;
      python = pkgs.python3.withPackages (ps: [ edgelab ps.pytest ps.pytest-timeout ]);

      # The flavours these compositions are made for: VMs on a workstation or
      # CI runner, and Grid'5000 nodes (in RAM, or a deployed image).
      flavours = { inherit (nxc.lib.flavours) vm vm-ramdisk g5k-ramdisk g5k-image; };

      # NixOS-Compose's convention: packages.<system>."<composition>::<flavour>".
      composed = nxc.lib.compose {
        inherit nixpkgs system flavours;
        compositions = ./compositions/compositions.nix;
        setup = ./setup.toml;
        extraConfigurations = [ self.nixosModules.default ];
      };

      # A NixOS configuration using every module, evaluated (not built) by
      # `nix flake check`: option names and types are checked against nixpkgs.
      allModules = lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.default
          ({ pkgs, ... }: {
            boot.loader.grub.enable = false;
            fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
            system.stateVersion = "23.11";
            edgelab.planFile = self.checks.${system}.plan;
            edgelab.node = "phone-1";
            edgelab.phone = { enable = true; memoryMiB = 512; cpuQuota = "50%"; };
            edgelab.k3s = {
              enable = true;
              role = "agent";
              serverAddr = "https://server-1:6443";
              tokenFile = pkgs.writeText "token" "check";
            };
            edgelab.beaglepaas = { enable = true; role = "worker"; };
            edgelab.powerMeter.enable = true;
          })
        ];
      };
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
        netem = ./modules/netem.nix;
      };

      packages.${system} = composed // {
        inherit edgelab;
        edgelab-app = edgelabApp;
        default = edgelabApp;
      };

      # nxc reads defaultPackage for `nxc build -L`.
      defaultPackage.${system} = self.packages.${system}."k3s-phones::vm";

      checks.${system} = {
        inherit edgelab;

        # The plan of the shipped example topology, by the Python planner.
        plan = import ./pkgs/plan.nix { inherit pkgs edgelab; topology = ./compositions/k3s-phones/topology.yaml; };

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
              })
              plan.nodes;
          in
          pkgs.runCommand "edgelab-plan-agreement"
            { nativeBuildInputs = [ python ]; view = builtins.toJSON view; passAsFile = [ "view" ]; } ''
            python ${./nix/check_agreement.py} ${./compositions/k3s-phones/topology.yaml} "$viewPath"
            touch $out
          '';

        modules-eval = pkgs.writeText "edgelab-modules-eval" (builtins.toJSON {
          units = builtins.filter (lib.hasPrefix "edgelab") (builtins.attrNames allModules.config.systemd.services);
          k3s = allModules.config.services.k3s.extraFlags;
          kernelPatches = map (p: p.name) allModules.config.boot.kernelPatches;
          firewall = allModules.config.networking.firewall.allowedTCPPorts;
        });
      };

      devShells.${system}.default = pkgs.mkShell {
        packages = [
          nxc.packages.${system}.nixos-compose
          python
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
