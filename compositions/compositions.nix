# The compositions NixOS-Compose builds (`nxc build -C <name>::<flavour>`).
# Each is a function of nxc's arguments ({ pkgs, lib, flavour, setup, ... });
# node counts come from setup.toml [params] (`--setup-param k3s_phones=8`).
let
  param = setup: name: default: ((setup.params or { }).${name} or default);
in
{
  k3s-phones = args@{ setup ? { }, ... }:
    import ./k3s-phones/composition.nix (args // { phones = param setup "k3s_phones" 3; });
  beaglepaas = args@{ setup ? { }, ... }:
    import ./beaglepaas/composition.nix (args // { workers = param setup "workers" 2; });
  mesh = args@{ setup ? { }, ... }:
    import ./mesh/composition.nix (args // {
      phones = param setup "mesh_phones" 4;
      batman = param setup "batman" false;
    });
}
