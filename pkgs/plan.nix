# The plan of a topology, computed by the Python planner at build time
# (nix/make_plan.py: edgelab.plan.make_plan), so Nix never re-implements
# addressing or routing. `counts` resizes groups ({ phone = 8; }; 0 drops
# the group): role counts are parameters, handed to Topology.scaled. The
# result is a JSON file that nix/lib.nix `readPlan` reads (import from
# derivation). Its name carries the counts, e.g. k3s-phones-phone3-relay0.json.
{ pkgs
, edgelab ? pkgs.python3Packages.callPackage ./edgelab.nix { execo = pkgs.python3Packages.execo or null; }
, topology
, counts ? { }
, name ? "edgelab-plan"
}:
let
  py = pkgs.python3.withPackages (_: [ edgelab ]);
  args = pkgs.lib.mapAttrsToList (g: n: "${g}=${toString n}") counts;
in
pkgs.runCommand (import ../nix/plan-name.nix { inherit name counts; }) { } ''
  ${py}/bin/python ${../nix/make_plan.py} ${topology} ${pkgs.lib.escapeShellArgs args} > $out
''
