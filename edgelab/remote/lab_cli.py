"""``scripts/ssh-devices``: bring a lab of SSH devices up or down (see :mod:`edgelab.remote.lab`)."""

from __future__ import annotations

import argparse
import sys

from ..errors import EdgelabError
from . import lab


def specs_from_args(n: int, nodes: str | None, cpu: str | None, no_tc: str | None = None,
                    no_cpu_accounting: str | None = None) -> list[lab.DeviceSpec]:
    names = nodes.split(",") if nodes else (["server-1"] + [f"phone-{i}" for i in range(1, n)])
    if len(names) != n:
        raise EdgelabError(f"--nodes names {len(names)} nodes but N is {n}")
    cpus = [float(c) if c not in ("", "none") else None for c in cpu.split(",")] if cpu else [None] * n
    if len(cpus) == 1:
        cpus *= n
    if len(cpus) != n:
        raise EdgelabError(f"--cpu gives {len(cpus)} values for {n} devices (give 1 or {n})")
    bad_tc = set((no_tc or "").split(",")) - {""}
    bad_cg = set((no_cpu_accounting or "").split(",")) - {""}
    for s in bad_tc | bad_cg:
        if s not in names:
            raise EdgelabError(f"{s!r} is not one of the lab's nodes {', '.join(names)}")
    return [lab.DeviceSpec(node=nm, cpu=c, no_tc=nm in bad_tc, no_cpu_accounting=nm in bad_cg)
            for nm, c in zip(names, cpus)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/ssh-devices", description=lab.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("up", help="create N devices and write their inventory")
    u.add_argument("n", type=int)
    u.add_argument("--nodes", help="comma-separated plan node names (default: server-1, phone-1 .. phone-N-1)")
    u.add_argument("--cpu", help="CPU quota in cores, one value for all or one per device (default: unlimited)")
    u.add_argument("--no-tc", metavar="NODES", help="devices whose PATH lacks tc (a fault to test preflight)")
    u.add_argument("--no-cpu-accounting", metavar="NODES", help="devices without cgroup CPU accounting")
    d = sub.add_parser("down", help="remove a lab")
    d.add_argument("lab_id", nargs="?")
    d.add_argument("--all", action="store_true", help="every lab under /run/edgelab-sshlab")
    sub.add_parser("list", help="labs that are up")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "up":
            lb = lab.up(specs_from_args(a.n, a.nodes, a.cpu, a.no_tc, a.no_cpu_accounting))
            print(f"lab {lb.lab_id}: {len(lb.devices)} devices on {lb.subnet}", file=sys.stderr)
            for dv in lb.devices:
                print(f"  {dv.node:12s} root@{dv.host}  (ssh -i {dv.identity_file} root@{dv.host})", file=sys.stderr)
            print(f"down with: scripts/ssh-devices down {lb.lab_id}", file=sys.stderr)
            print(lb.inventory)
        elif a.cmd == "down":
            ids = lab.list_labs() if a.all else [a.lab_id] if a.lab_id else []
            if not ids:
                raise EdgelabError("give a LAB_ID (see `scripts/ssh-devices list`) or --all")
            for i in ids:
                lab.down(i)
                print(f"lab {i} removed", file=sys.stderr)
        else:
            for i in lab.list_labs():
                print(i, lab.LAB_ROOT / i / "inventory.yaml")
        return 0
    except EdgelabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
