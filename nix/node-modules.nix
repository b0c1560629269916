# The modules every composition node gets on top of its role (nxc's
# `extraConfigurations`, flake.nix): edgelab's NixOS modules, and the flake's
# edgelab package (built with nur-kapack's execo, pkgs/edgelab.nix) as the
# package the services and node tools run. nix/eval/default.nix uses the same
# list, so what is evaluated here is what the flake builds.
{ edgelab }:
[
  ../modules
  { edgelab.package = edgelab; }
]
