# Turn the string fragments of nix/lib.nix ("y"/"m"/"n") into the
# lib.kernel values that `boot.kernelPatches.*.extraStructuredConfig` takes.
# `force` wraps them in mkForce + `option`, for options the distribution
# kernel config already answers (or may not have in every kernel version).
lib:
{ fragment, force ? false }:
let
  value = s:
    if s == "y" then lib.kernel.yes
    else if s == "m" then lib.kernel.module
    else if s == "n" then lib.kernel.no
    else throw "edgelab: kernel config value must be y, m or n (got ${s})";
in
builtins.mapAttrs
  (_: s: if force then lib.mkForce (lib.kernel.option (value s)) else value s)
  fragment
