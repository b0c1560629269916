# The plan of a topology, computed by the Python planner at build time
# (edgelab.plan.make_plan), so Nix never re-implements addressing or routing.
# `counts` overrides group sizes ({ phone = 8; }): role counts are parameters,
# handed to Topology.scaled. The result is a JSON file that nix/lib.nix
# `readPlan` reads (import from derivation).
{ pkgs
, edgelab ? pkgs.python3Packages.callPackage ./edgelab.nix { }
, topology
, counts ? { }
, name ? "edgelab-plan"
}:
let
  py = pkgs.python3.withPackages (_: [ edgelab ]);
  args = pkgs.lib.mapAttrsToList (g: n: "${g}=${toString n}") counts;
in
pkgs.runCommand "${name}.json" { } ''
  ${py}/bin/python - ${topology} ${pkgs.lib.escapeShellArgs args} > $out <<'PY'
  import json, sys
  from edgelab.plan import make_plan
  from edgelab.topology import load_topology
  topo = load_topology(sys.argv[1])
  for spec in sys.argv[2:]:
      group, count = spec.split("=")
      topo = topo.scaled(group, int(count))
  print(json.dumps(make_plan(topo).to_dict(), indent=1))
  PY
''
