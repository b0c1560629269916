# The plan of a topology, computed by the Python planner at build time
# (nix/make_plan.py: edgelab.plan.make_plan), so Nix never re-implements
# addressing or routing. `counts` resizes groups ({ phone = 8; }; 0 drops
# the group): role counts are parameters, handed to Topology.scaled. The
# result is a JSON file that nix/lib.nix `readPlan` reads (import from
# derivation). Its name carries the counts, e.g. k3s-phones-phone3-relay0.json.
#
# The planner needs only the standard library and PyYAML, so it runs from the
# source of the `edgelab` directory, not the full package (no OpenCV build,
# no execo, for a plan).
{ pkgs
, topology
, counts ? { }
, name ? "edgelab-plan"
}:
let
  py = pkgs.python3.withPackages (ps: [ ps.pyyaml ]);
  args = pkgs.lib.mapAttrsToList (g: n: "${g}=${toString n}") counts;
in
pkgs.runCommand (import ../nix/plan-name.nix { inherit name counts; }) { } ''
  mkdir src
  cp -r ${../edgelab} src/edgelab
  PYTHONPATH=src ${py}/bin/python ${../nix/make_plan.py} ${topology} ${pkgs.lib.escapeShellArgs args} > $out
''
