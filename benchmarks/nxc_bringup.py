"""Bring-up time of the nxc backend through the REAL nixos-compose CLI, with the
test shims standing in for Nix builds and QEMU guests (tests/nxc_shims: each
"guest" is a real sshd on its forwarded port). What it measures is the
backend's own cost around nxc -- build call, `nxc start -w`, reading the
deployment file, waiting for every node over SSH, device facts -- and
teardown; a real VM's boot time comes on top on a user's machine.

Run as root: .venv/bin/python benchmarks/nxc_bringup.py [phones ...]  (at most 6 phones: the vm
flavours take 7 nodes, see edgelab.backends.nxc.NXC_MAX_VMS)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _pytest.monkeypatch import MonkeyPatch  # noqa: E402

import nxc_real  # noqa: E402
from edgelab.backends import get_backend  # noqa: E402
from edgelab.plan import make_plan  # noqa: E402
from edgelab.topology import load_topology  # noqa: E402


def main(counts: list[int]) -> None:
    why = nxc_real.nxc_available() or nxc_real.sshd_available()
    if why:
        sys.exit(f"cannot run: {why}")
    topo = load_topology(ROOT / "topologies" / "wifi-phones.yaml")
    print(f"{'nodes':>5} {'up_s':>6} {'ready_s':>8} {'down_s':>7}")
    for phones in counts:
        mp = MonkeyPatch()
        with tempfile.TemporaryDirectory() as tmp:
            env = nxc_real.ShimEnv(Path(tmp), mp)
            try:
                plan = make_plan(topo.scaled("phone", phones))
                # guests in this machine's own network namespace: no AP routes or forwarding here
                backend = get_backend("nxc", flake_dir=str(env.project), ready_timeout=120, airtime=False)
                t0 = time.monotonic()
                tb = backend.up(plan)
                t1 = time.monotonic()
                tb.down()
                t2 = time.monotonic()
                print(f"{len(plan.nodes):>5} {t1 - t0:>6.2f} {tb.timings['ready']:>8.2f} {t2 - t1:>7.2f}", flush=True)
            finally:
                env.kill_leftovers()
                mp.undo()


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 3, 6])
