"""Bring-up / teardown time of the local backend against Mininet, N Wi-Fi stations.

    apt-get install mininet bridge-utils   # the comparison only; LinuxBridge needs brctl
    sudo .venv/bin/python benchmarks/bringup.py [--sizes 10,50,100,200] [--no-mininet]

edgelab: topologies/wifi-phones.yaml scaled to N phones (+1 server on the
uplink), *with* link emulation (per-station rate/delay/jitter/loss, the
shared airtime budget). Mininet: N hosts on one LinuxBridge, plain veths
(its TCLink needs sch_netem, and it has no shared-medium model), so Mininet
does strictly less work. Both in the same run, alternating, on the same
machine; the columns break edgelab's time down so the comparison of the
network part alone is visible too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgelab.backends.local import LocalBackend  # noqa: E402
from edgelab.plan import make_plan  # noqa: E402
from edgelab.topology import load_topology  # noqa: E402

NAME = "lbbench"


def edgelab_once(n: int) -> dict:
    topo = dataclasses.replace(load_topology(ROOT / "topologies/wifi-phones.yaml").scaled("phone", n), name=NAME)
    plan = make_plan(topo)
    t0 = time.monotonic()
    tb = LocalBackend().up(plan)
    up = time.monotonic() - t0
    try:
        ok = tb.run("phone-1", ["ping", "-c1", "-W2", tb.address("server-1")], check=False).returncode == 0
        timings = dict(tb.timings)
        engine = tb.emulator.engine
    finally:
        t1 = time.monotonic()
        tb.down()
        down = time.monotonic() - t1
    return {"n": n, "up_s": up, "down_s": down, "network_s": timings["network"],
            "link_emulation_s": timings["link_emulation"], "ping_ok": ok, "engine": engine}


def mininet_once(n: int) -> dict:
    cp = subprocess.run(["/usr/bin/python3", str(Path(__file__).with_name("mininet_bringup.py")), str(n)],
                        capture_output=True, text=True, timeout=900)
    if cp.returncode != 0:
        return {"n": n, "error": cp.stderr.strip()[-300:]}
    return json.loads(cp.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10,50,100,200", help="comma-separated station counts")
    ap.add_argument("--no-mininet", action="store_true")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        e = edgelab_once(n)
        m = {} if args.no_mininet else mininet_once(n)
        rows.append({"n": n, "edgelab": e, "mininet": m})
        print(f"N={n}: edgelab up {e['up_s']:.2f}s down {e['down_s']:.2f}s; "
              f"mininet {m.get('up_s', float('nan')):.2f}s/{m.get('down_s', float('nan')):.2f}s", file=sys.stderr)
    print(f"\nload average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; edgelab link engine "
          f"{rows[0]['edgelab']['engine']}")
    hdr = (f"{'N':>5} | {'edgelab up':>10} {'(network':>9} {'+ linkemu)':>10} {'down':>6} | "
           f"{'mininet up':>10} {'down':>6} | ping e/m")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        e, m = r["edgelab"], r["mininet"]
        print(f"{r['n']:>5} | {e['up_s']:>10.2f} {e['network_s']:>9.2f} {e['link_emulation_s']:>10.2f} "
              f"{e['down_s']:>6.2f} | {m.get('up_s', float('nan')):>10.2f} {m.get('down_s', float('nan')):>6.2f} | "
              f"{'ok' if e['ping_ok'] else 'FAIL'}/{'ok' if m.get('ping_ok') else '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
