# The compositions NixOS-Compose builds (`nxc build -C <name>::<flavour>`).
# Each is a function of nxc's arguments ({ pkgs, lib, flavour, setup, ... },
# nixos-compose nix/generate_one_composition_info.nix:32-34); node counts come
# from setup.toml [params] (`--setup-param k3s_phones=8`).
#
# nxc writes `--setup-param NAME=VALUE` into setup.toml's [override-params]
# and converts only integers (nixos-compose nixos_compose/setup.py:58-64):
# `batman=true` arrives as the string "true". Values are coerced here, with an
# error naming the parameter when they cannot be.
let
  raw = setup: name: default: ((setup.params or { }).${name} or default);

  count = min: setup: name: default:
    let
      v = raw setup name default;
      n = if builtins.isInt v then v
        else if builtins.isString v && builtins.match "[0-9]+" v != null then builtins.fromJSON v
        else null;
    in if n != null && n >= min then n
    else throw "setup parameter ${name} must be a whole number >= ${toString min}, got ${builtins.toJSON v}";

  flag = setup: name: default:
    let v = raw setup name default;
    in if builtins.isBool v then v
    else if builtins.elem v [ "true" "1" 1 "yes" "on" ] then true
    else if builtins.elem v [ "false" "0" 0 "no" "off" "" ] then false
    else throw "setup parameter ${name} must be true or false, got ${builtins.toJSON v}";
in
{
  k3s-phones = args@{ setup ? { }, ... }:
    import ./k3s-phones/composition.nix (args // {
      phones = count 1 setup "k3s_phones" 3;
      relays = count 0 setup "relays" 0;
    });
  beaglepaas = args@{ setup ? { }, ... }:
    import ./beaglepaas/composition.nix (args // { workers = count 1 setup "workers" 2; });
  mesh = args@{ setup ? { }, ... }:
    import ./mesh/composition.nix (args // {
      phones = count 2 setup "mesh_phones" 4;
      batman = flag setup "batman" false;
    });
}
