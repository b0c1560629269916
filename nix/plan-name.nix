# The file name of a plan: the topology name and its counts, in attribute
# order (attrNames is sorted), e.g. { name = "mesh"; counts = { phone = 4; }; }
# -> "mesh-phone4.json". pkgs/plan.nix names its output so; the evaluation
# test finds precomputed plans by it.
{ name, counts ? { } }:
builtins.concatStringsSep "-" ([ name ] ++ map (g: "${g}${toString counts.${g}}") (builtins.attrNames counts)) + ".json"
