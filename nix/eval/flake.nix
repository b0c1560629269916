# The flake's outputs, evaluated with stand-in inputs: nixpkgs is nixpkgs'
# `lib` plus nix/eval/pkgs.nix, nxc is the pinned nixos-compose source tree
# (its real nix/lib.nix, compose.nix, setup.nix, flavours). What needs the
# real nixpkgs (building, nixosSystem) stays lazy; names, aliases, the NixOS
# tests' nodes and testScripts, and the dev shell are evaluated.
{ root ? ../.., nixpkgsLib, nxcSrc, planDir ? null }:
let
  lib = import nixpkgsLib;
  pkgs = import ./pkgs.nix { inherit lib planDir; };
  nixpkgs = { inherit lib; legacyPackages.x86_64-linux = pkgs; outPath = "/nixpkgs-not-available"; };
  nxc = {
    lib = import (nxcSrc + "/nix/lib.nix");
    packages.x86_64-linux.nixos-compose = pkgs.python3Packages.buildPythonPackage { pname = "nixos-compose"; version = "0.7.11"; };
    inputs.kapack.packages.x86_64-linux.execo = pkgs.python3Packages.buildPythonPackage { pname = "execo"; version = "2.8.1"; };
    outPath = toString nxcSrc;
  };
  self = (import (root + "/flake.nix")).outputs { inherit self nixpkgs nxc; };
  tests = lib.filterAttrs (n: _: lib.hasPrefix "nixos-test-" n) self.checks.x86_64-linux;
in
{
  packages = builtins.attrNames self.packages.x86_64-linux;
  checks = builtins.attrNames self.checks.x86_64-linux;
  shell = map (p: p.name) self.devShells.x86_64-linux.default.packages;
  nixosTests = lib.mapAttrs
    (_: t: {
      nodes = lib.mapAttrs (_: n: n.virtualisation.memorySize) t.nodes;
      inherit (t) testScript;
    })
    tests;
}
