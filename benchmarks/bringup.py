"""Bring-up / teardown time of the local backend against Mininet, N Wi-Fi stations.

    apt-get install mininet bridge-utils   # the comparison only; LinuxBridge needs brctl
    sudo .venv/bin/python benchmarks/bringup.py [--sizes 100,200,500,1000] [--reps 3] [--no-mininet]

edgelab: topologies/wifi-phones.yaml scaled to N phones (+1 server on the
uplink), *with* link emulation (per-station rate/delay/jitter/loss, the
shared airtime budget); above 100 stations the network is a hybrid of
ceil(N/100) Wi-Fi cells (one airtime budget each, one access point).
Memory per node: the growth of the kernel's slab + per-CPU memory (the
namespaces, veths, qdiscs, rules) plus the delayer's PSS, divided by the
node count; workloads excluded (none run). Mininet: N hosts on one LinuxBridge, plain veths
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


def topology(n: int, cell: int = 100):
    """N phones on ceil(N/cell) Wi-Fi cells of one hybrid network (one cell: the plain wifi file)."""
    cells = max(1, -(-n // cell))
    if cells == 1:
        return dataclasses.replace(load_topology(ROOT / "topologies/wifi-phones.yaml").scaled("phone", n), name=NAME)
    import tempfile
    segs = "".join(f"      - {{profile: wifi-80211n-2.4ghz, share: {1 / cells!r}}}\n" for _ in range(cells))
    share_fix = 1 - (cells - 1) * (1 / cells)
    segs = segs.rsplit(f"share: {1 / cells!r}", 1)[0] + f"share: {share_fix!r}}}\n"
    text = (f"name: {NAME}\nnetworks:\n  - name: wlan\n    kind: hybrid\n    subnet: 10.96.0.0/19\n"
            f"    segments:\n{segs}"
            "nodes:\n  - group: server\n    role: k3s-server\n    resources: {cpu: 0.5, memory_mib: 512}\n"
            "    networks: [{name: wlan, uplink: true}]\n  - group: phone\n    role: phone\n"
            f"    count: {n}\n    resources: {{cpu: 0.25, memory_mib: 256, speed: 1.0}}\n    networks: [wlan]\n")
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(text)
    try:
        return load_topology(f.name)
    finally:
        os.unlink(f.name)


def _kernel_kib() -> int:
    """Slab + per-CPU memory (kernel objects: namespaces, veths, qdiscs, rules), KiB."""
    m = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        k, v = line.split(":", 1)
        m[k] = int(v.split()[0])
    return m.get("Slab", 0) + m.get("Percpu", 0) + m.get("KernelStack", 0)


def _pss_kib(pid) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, TypeError):
        pass
    return 0


def edgelab_once(n: int, bridge_delay: bool = True) -> dict:
    plan = make_plan(topology(n))
    k0 = _kernel_kib()
    t0 = time.monotonic()
    tb = LocalBackend(bridge_delay=bridge_delay).up(plan)
    up = time.monotonic() - t0
    try:
        ok = tb.run("phone-1", ["ping", "-c1", "-W2", tb.address("server-1")], check=False).returncode == 0
        timings = dict(tb.timings)
        engine = tb.emulator.engine
        nodes = len(plan.nodes) if hasattr(plan, "nodes") else n + 1
        dl = tb.delayer_facts() or {}
        dl_pss = _pss_kib(dl.get("pid"))
        mem_kib = (_kernel_kib() - k0) + dl_pss
        procs = len(tb.blueprint.namespaces)
        print(f"  N={n}: up {up:.2f}s (cgroups {timings['cgroups']:.2f} network {timings['network']:.2f} "
              f"linkemu {timings['link_emulation']:.2f}); delayer {dl.get('queues')} queues, "
              f"PSS {dl_pss / 1024:.1f} MiB", file=sys.stderr)
    finally:
        t1 = time.monotonic()
        tb.down()
        down = time.monotonic() - t1
    return {"n": n, "up_s": up, "down_s": down, "network_s": timings["network"],
            "link_emulation_s": timings["link_emulation"], "ping_ok": ok, "engine": engine,
            "namespaces": procs, "mem_per_node_mib": mem_kib / 1024 / nodes,
            "delayer_pss_mib": dl_pss / 1024,
            "delayer_cpu_s": dl.get("cpu_s"), "delayer_queues": dl.get("queues")}


def mininet_once(n: int) -> dict:
    cp = subprocess.run(["/usr/bin/python3", str(Path(__file__).with_name("mininet_bringup.py")), str(n)],
                        capture_output=True, text=True, timeout=900)
    if cp.returncode != 0:
        return {"n": n, "error": cp.stderr.strip()[-300:]}
    return json.loads(cp.stdout.strip().splitlines()[-1])


def _median_row(runs: list[dict]) -> dict:
    """Median of every numeric field over repetitions (the other fields from the first run)."""
    runs = [r for r in runs if r]
    if not runs:
        return {}
    out = dict(runs[0])
    for k, v in runs[0].items():
        if isinstance(v, float):
            vals = sorted(r[k] for r in runs if isinstance(r.get(k), float))
            out[k] = vals[len(vals) // 2]
    out["ping_ok"] = all(r.get("ping_ok") for r in runs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,200,500,1000", help="comma-separated station counts")
    ap.add_argument("--reps", type=int, default=1, help="repetitions per size (alternating); medians printed")
    ap.add_argument("--no-mininet", action="store_true")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--station-delay", action="store_true",
                    help="stations' incoming delay in their namespaces (LocalBackend(bridge_delay=False)): "
                         "an iptables-restore per station")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        es, ms = [], []
        for _ in range(args.reps):
            es.append(edgelab_once(n, not args.station_delay))
            ms.append({} if args.no_mininet else mininet_once(n))
        e = _median_row(es)
        m = _median_row(ms)
        rows.append({"n": n, "edgelab": e, "mininet": m, "runs": {"edgelab": es, "mininet": ms}})
        print(f"N={n}: edgelab up {e['up_s']:.2f}s down {e['down_s']:.2f}s; "
              f"mininet {m.get('up_s', float('nan')):.2f}s/{m.get('down_s', float('nan')):.2f}s", file=sys.stderr)
    print(f"\nload average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; edgelab link engine "
          f"{rows[0]['edgelab']['engine']}")
    print(f"medians of {args.reps} run(s) per size")
    hdr = (f"{'N':>5} | {'edgelab up':>10} {'(network':>9} {'+ linkemu)':>10} {'down':>6} {'MiB/node':>8} | "
           f"{'mininet up':>10} {'down':>6} | {'up/mininet':>10} | ping e/m")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        e, m = r["edgelab"], r["mininet"]
        ratio = e["up_s"] / m["up_s"] if m.get("up_s") else float("nan")
        print(f"{r['n']:>5} | {e['up_s']:>10.2f} {e['network_s']:>9.2f} {e['link_emulation_s']:>10.2f} "
              f"{e['down_s']:>6.3f} {e['mem_per_node_mib']:>8.2f} | {m.get('up_s', float('nan')):>10.2f} "
              f"{m.get('down_s', float('nan')):>6.2f} | {ratio:>10.2f} | "
              f"{'ok' if e['ping_ok'] else 'FAIL'}/{'ok' if m.get('ping_ok') else '-'}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
