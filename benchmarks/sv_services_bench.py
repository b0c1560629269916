"""Quick timings of the node services on this machine (run: python benchmarks/sv_services_bench.py).

Measures: phone face-detection and gray-mode latency (closed loop, 1 client), and
BeaglePaaS dispatch overhead (no-op jobs through one worker over loopback TCP; the
worker as a thread of the benchmark, then as its own process).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import matplotlib.cbook as cbook  # noqa: E402

from edgelab.services.beaglepaas import Orchestrator, run_worker  # noqa: E402
from edgelab.services.phone import make_server  # noqa: E402
from edgelab.workload.loadgen import Target, closed_loop, summarise  # noqa: E402


def phone() -> dict:
    srv = make_server("127.0.0.1", 0)
    threading.Thread(target=srv.run, daemon=True).start()
    body = open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()
    out = {}
    for mode in ("faces", "gray"):
        url = f"http://127.0.0.1:{srv.server_address[1]}/detect?mode={mode}"
        s = summarise(closed_loop(Target(url, "POST", body, "image/jpeg"), clients=1, duration=3.0))
        out[mode] = {"rps": round(s["throughput_rps"], 1), "p50_ms": round(s["latency_ms"]["p50"], 1),
                     "p99_ms": round(s["latency_ms"]["p99"], 1)}
    srv.close()
    return out


def faas(n: int = 500) -> dict:
    o = Orchestrator()
    _, port = o.serve("127.0.0.1", 0)
    threading.Thread(target=run_worker, args=("127.0.0.1", port, "bench"), daemon=True).start()
    time.sleep(0.3)
    t = time.perf_counter()
    ids = [o.submit("sleep", {"seconds": 0}) for _ in range(n)]
    o.wait(ids, timeout=120)
    dt = time.perf_counter() - t
    recs = o.results()
    overhead = sorted((r["done"] - r["dispatch"]) - r["exec_s"] for r in recs)
    o.stop()
    return {"jobs": n, "jobs_per_s": round(n / dt, 1),
            "dispatch_roundtrip_overhead_ms_p50": round(overhead[len(overhead) // 2] * 1000, 3)}


def faas_process(n: int = 1000) -> dict:
    """As faas(), with the worker in its own process (as on a node): no GIL shared with the orchestrator."""
    import os
    import subprocess

    o = Orchestrator()
    _, port = o.serve("127.0.0.1", 0)
    root = str(Path(__file__).resolve().parents[1])
    w = subprocess.Popen([sys.executable, "-m", "edgelab.services.beaglepaas", "worker", "--connect",
                          f"127.0.0.1:{port}", "--id", "bench"], env=dict(os.environ, PYTHONPATH=root),
                         stderr=subprocess.DEVNULL)
    try:
        while "bench" not in o.stats()["workers"]:
            time.sleep(0.05)
        t = time.perf_counter()
        ids = [o.submit("sleep", {"seconds": 0}) for _ in range(n)]
        o.wait(ids, timeout=120)
        dt = time.perf_counter() - t
        overhead = sorted((r["done"] - r["dispatch"]) - r["exec_s"] for r in o.results())
    finally:
        o.stop()
        w.kill()
        w.wait()
    return {"jobs": n, "jobs_per_s": round(n / dt, 1),
            "dispatch_roundtrip_overhead_ms_p50": round(overhead[len(overhead) // 2] * 1000, 3)}


if __name__ == "__main__":
    print(json.dumps({"phone": phone(), "beaglepaas": faas(), "beaglepaas_worker_process": faas_process()},
                     indent=1))
