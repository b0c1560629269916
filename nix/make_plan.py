"""Write the plan JSON of a topology scaled by group counts (pkgs/plan.nix runs
this at build time; tests/test_nix_eval.py runs it to stand in for that build).

argv: TOPOLOGY [GROUP=COUNT ...]. A count of 0 removes the group, so a
composition can offer an optional role (e.g. k3s-phones' `relay`) whose
topology group only exists when asked for.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from edgelab.plan import make_plan
from edgelab.topology import load_topology


def scaled_topology(topology: str, counts: dict[str, int]):
    """``topology`` with each group of ``counts`` resized (0 = dropped)."""
    topo = load_topology(topology)
    for group, n in counts.items():
        if n < 0:
            raise SystemExit(f"{topology}: count of group {group!r} must be >= 0, got {n}")
        topo = topo.scaled(group, n) if n > 0 else topo
    keep = tuple(g for g in topo.groups if counts.get(g.name, g.count) > 0)
    return dataclasses.replace(topo, groups=keep)


def plan_dict(topology: str, counts: dict[str, int]) -> dict:
    """The plan JSON of ``topology`` scaled by ``counts``."""
    return make_plan(scaled_topology(topology, counts)).to_dict()


def parse_counts(specs: list[str]) -> dict[str, int]:
    """["phone=3", "relay=0"] -> {"phone": 3, "relay": 0}."""
    counts = {}
    for spec in specs:
        group, _, n = spec.partition("=")
        counts[group] = int(n)
    return counts


def main(argv: list[str]) -> int:
    json.dump(plan_dict(argv[1], parse_counts(argv[2:])), sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
