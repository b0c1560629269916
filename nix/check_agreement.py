"""Check that what nix/lib.nix derived from a plan matches edgelab's planner.

Used by the flake check `plan-agreement` (inside the Nix sandbox) and by
tests/test_nix_lib.py (outside it): argv is the topology YAML, a JSON file
holding, per node, ``{name, settings: nodeSettings, commands: linkCommands}``,
and optional GROUP=COUNT resizings (0 drops a group, as pkgs/plan.nix does).
Exits non-zero with a message naming the first disagreement.
"""

from __future__ import annotations

import json
import shlex
import sys

from edgelab.plan import make_plan
from make_plan import parse_counts, scaled_topology


def disagreements(topology_path: str, view: list[dict], counts: dict[str, int] | None = None) -> list[str]:
    """Every way the Nix view differs from the plan of the topology (scaled by ``counts``)."""
    plan = make_plan(scaled_topology(topology_path, counts or {}))
    errors: list[str] = []
    if [v["name"] for v in view] != [n.name for n in plan.nodes]:
        return [f"node names differ: nix {[v['name'] for v in view]} python {[n.name for n in plan.nodes]}"]
    for v, node in zip(view, plan.nodes):
        s = v["settings"]
        for key in ("group", "role", "index"):
            if s[key] != getattr(node, key):
                errors.append(f"{node.name}: {key} nix={s[key]!r} python={getattr(node, key)!r}")
        nix_addrs = [f"{a['ip']}/{a['prefixLength']}" for a in s["addresses"]]
        if nix_addrs != [i.address for i in node.interfaces]:
            errors.append(f"{node.name}: addresses nix={nix_addrs} python={[i.address for i in node.interfaces]}")
        nix_routes = [(r["destination"], r["via"], r["dev"]) for r in s["routes"]]
        if nix_routes != [(r.destination, r.via, r.dev) for r in node.routes]:
            errors.append(f"{node.name}: routes differ: nix={nix_routes}")
        # One linkemu command per distinct device, with the plan's parameters.
        seen: dict[str, object] = {}
        for itf in node.interfaces:
            seen.setdefault(itf.ifname, itf.link)
        if len(v["commands"]) != len(seen):
            errors.append(f"{node.name}: {len(v['commands'])} link commands for {len(seen)} devices")
        for cmd, (dev, link) in zip(v["commands"], seen.items()):
            argv = shlex.split(cmd)
            opts = dict(zip(argv[4::2], argv[5::2]))
            expect = {"--dev": dev, "--rate-mbit": link.rate_mbit, "--delay-ms": link.delay_ms,
                      "--jitter-ms": link.jitter_ms, "--loss-pct": link.loss_pct}
            if argv[1:4] != ["-m", "edgelab.linkemu", "apply"]:
                errors.append(f"{node.name}: not a linkemu apply command: {cmd}")
            for k, want in expect.items():
                got = opts.get(k)
                ok = got == want if isinstance(want, str) else got is not None and abs(float(got) - want) < 1e-9
                if not ok:
                    errors.append(f"{node.name}: {k} nix={got!r} python={want!r} in {cmd!r}")
        # The Wi-Fi cells' routes through their AP (nix/lib.nix cellRouteCommands), where the view has
        # them: the same as edgelab.remote.ap.route_cmds with the network's uplink as the AP.
        if "ap_routes" in v:
            want = [f"ip route replace {r}" for r in ap_routes(plan).get(node.name, [])]
            if v["ap_routes"] != want:
                errors.append(f"{node.name}: AP routes nix={v['ap_routes']} python={want}")
    return errors


def ap_routes(plan) -> dict[str, list[str]]:
    """node -> ``route_cmds`` of every Wi-Fi cell, its AP the network's uplink (plan addresses and
    plan interface names); none when a cell has no uplink (Nix has no AP for it either)."""
    from edgelab.errors import BackendError
    from edgelab.remote import ap as apmod

    try:
        cells = apmod.ap_plan(plan, lambda n: False)
    except BackendError:
        return {}
    out: dict[str, list[str]] = {}
    for c in cells:
        addr = {n.name: i.ip for n in plan.nodes for i in n.interfaces if i.network == c.network}
        dev = {n.name: i.ifname for n in plan.nodes for i in n.interfaces if i.network == c.network}
        for node, routes in apmod.route_cmds(c, addr.__getitem__, dev.__getitem__).items():
            out.setdefault(node, []).extend(routes)
    return out


def main(argv: list[str]) -> int:
    with open(argv[2]) as f:
        view = json.load(f)
    errors = disagreements(argv[1], view, parse_counts(argv[3:]))
    for e in errors:
        print("disagreement:", e, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
