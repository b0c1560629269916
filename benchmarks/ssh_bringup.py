"""Bring-up of a 20-device inventory over SSH, link emulation on every device (target: < 10 s).

    sudo .venv/bin/python benchmarks/ssh_bringup.py [--devices 20] [--reps 3]

The devices are real OpenSSH servers in network namespaces (scripts/ssh-devices):
server-1 and phone-1 .. phone-19 of topologies/wifi-phones.yaml. Bring-up is
what ``SshBackend.up`` does for an experiment point: connect to every device
(new ssh connections: each repetition is a new transport), preflight, install
edgelab (first repetition: copy; later: already there, checked), apply
``edgelab.linkemu`` on every device, collect device facts. The lab itself is
not timed. Prints one line per repetition and the median.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgelab.backends.ssh import SshBackend  # noqa: E402
from edgelab.plan import make_plan  # noqa: E402
from edgelab.remote import lab as labmod  # noqa: E402
from edgelab.topology import load_topology  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab's namespaces and sshd)", file=sys.stderr)
        return 2
    n = a.devices
    plan = make_plan(load_topology(ROOT / "topologies/wifi-phones.yaml").scaled("phone", n - 1))
    lab = labmod.up([labmod.DeviceSpec(node=x.name) for x in plan.nodes], python=sys.executable)
    ups = []
    try:
        for rep in range(a.reps):
            be = SshBackend(lab.inventory)
            t0 = time.monotonic()
            tb = be.up(plan)
            up = time.monotonic() - t0
            engine = tb.facts()["link_engine"]
            links = sum(len(v) for v in tb.applied.values())
            t1 = time.monotonic()
            tb.down()
            down = time.monotonic() - t1
            ups.append(up)
            t = tb.timings
            print(f"rep {rep}: {n} devices, {links} links ({engine}) up {up:.2f} s "
                  f"(preflight {t['preflight']:.2f}, install {t['install']:.2f}, "
                  f"link emulation {t['link_emulation']:.2f}), down {down:.2f} s")
    finally:
        labmod.down(lab.lab_id)
    print(f"ssh bring-up, {n} devices with linkemu on each: median {statistics.median(ups):.2f} s "
          f"(max {max(ups):.2f} s; target < 10 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
