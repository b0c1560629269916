"""A folded testbed over 1, 2 and 3 SSH-lab hosts: bring-up, teardown, and what the tunnel costs.

    sudo flock /tmp/edgelab-bench.lock .venv/bin/python benchmarks/multihost_bringup.py [--phones 11] [--reps 2]

One server and ``--phones`` phones on a 100 Mbit/s, 1 ms Ethernet, spread over the
first M hosts of a fresh SSH lab (real sshd per host) by ``FoldedBackend``: each host
builds its share with the local backend (``edgelab share-up``), VXLAN joins them. Per
host count: the bring-up (preflight + install + shares), the teardown, the median
ping RTT and the iperf3 TCP goodput from a phone to the server (on another host than the
server's when M > 1, i.e. through the tunnel). Lab hosts are namespaces of this kernel:
the figures show the tunnel's and the transport's cost, not more CPU. Prints one line
per repetition and the machine's load.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgelab.plan import make_plan  # noqa: E402
from edgelab.remote import lab as labmod  # noqa: E402
from edgelab.remote.folded import FoldedBackend  # noqa: E402
from edgelab.topology import parse_topology  # noqa: E402


def topology(phones: int):
    return parse_topology(textwrap.dedent(f"""\
        name: mhb{os.getpid() % 10000}
        networks:
          - {{name: lan, kind: ethernet, link: {{rate_mbit: 100, delay_ms: 1}}}}
        nodes:
          - {{group: server, role: k3s-server, resources: {{cpu: 0.5}}, networks: [lan]}}
          - {{group: phone, role: phone, count: {phones}, resources: {{cpu: 0.1, memory_mib: 64}}, networks: [lan]}}
        """))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phones", type=int, default=11)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--hosts", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 3])
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab's namespaces, sshd, the shares)", file=sys.stderr)
        return 2
    plan = make_plan(topology(a.phones))
    lab = labmod.up([labmod.DeviceSpec(node=f"h{i}") for i in range(1, max(a.hosts) + 1)], python=sys.executable)
    srv = plan.node("server-1").address("lan")
    try:
        for m in a.hosts:
            ups, downs, rtts, mbits = [], [], [], []
            for rep in range(a.reps):
                t0 = time.monotonic()
                tb = FoldedBackend(str(lab.inventory), m).up(plan)
                ups.append(time.monotonic() - t0)
                try:
                    place = tb.facts()["placement"]
                    far = next((n for n, h in place.items() if h != place["server-1"]), "phone-1")
                    ping = tb.run(far, ["ping", "-c", "10", "-i", "0.1", srv]).stdout
                    rtts.append(float(re.search(r"= [\d.]+/([\d.]+)/", ping).group(1)))
                    s = tb.popen("server-1", ["iperf3", "-s", "-1", "-p", "5310"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
                    time.sleep(0.8)
                    out = tb.run(far, ["iperf3", "-c", srv, "-p", "5310", "-t", "3", "-J"], timeout=30).stdout
                    mbits.append(json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6)
                    s.wait(timeout=10)
                    shares = tb.timings["shares_up"]
                finally:
                    t1 = time.monotonic()
                    tb.down()
                    downs.append(time.monotonic() - t1)
                print(f"{m} host(s), rep {rep}: {len(plan.nodes)} nodes up {ups[-1]:.2f} s (shares {shares:.2f} s), "
                      f"down {downs[-1]:.2f} s; {far} -> server-1: RTT {rtts[-1]:.2f} ms, iperf3 {mbits[-1]:.1f} "
                      f"Mbit/s (link 100 Mbit/s, 1 ms per end)")
            print(f"== {m} host(s): median up {statistics.median(ups):.2f} s, down {statistics.median(downs):.2f} s, "
                  f"RTT {statistics.median(rtts):.2f} ms, iperf3 {statistics.median(mbits):.1f} Mbit/s")
    finally:
        labmod.down(lab.lab_id)
    print("load:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
