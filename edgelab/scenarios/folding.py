"""The folding workload: identical phones, each serving requests at a fixed rate.

Every phone runs the phone workload service; the server node runs one
open-loop generator that sends each phone the same request stream
(``rate_rps`` small images, processed in the cheap ``gray`` mode). The
per-phone demand never changes with the number of phones, so on a faithful
host the per-phone latency and CPU cost per request stay what they are with
one phone; when the host runs out of CPU (or the kernel of softirq time),
they drift. The folding experiment compares them against the least folded
configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..backends import Testbed
from ..hostload import HostLoadSampler, active_warmer, testbed_cpu_counter, testbed_delayer_counters
from ..measure import percentile
from ..results import Measurement
from ..health import Measured, process_alive, service_errors
from .app import APP_PORT, _phones, _server, delivery_seconds, sample_coverage, sum_kinds
from .nodes import CpuMeter, Gate, python_of, start_services, stop


@dataclass(frozen=True)
class FoldLoad:
    seconds: float = 4.0
    rate_rps: float = 10.0        # per phone
    image_bytes: int = 20_000
    seed: int = 1
    #: Requests each phone serves before the measured load (one after the other, not measured):
    #: a phone's first request pays its service's one-time costs (hundreds of ms at 0.1 core,
    #: with the next requests queued behind it), which would bias and scatter every point.
    warmup: int = 2


def run_fold(tb: Testbed, load: FoldLoad, raw: Path) -> list[Measurement]:
    plan = tb.plan
    server, phones = _server(plan), _phones(plan)
    network = plan.node(phones[0]).interfaces[0].network
    py = python_of(tb)
    urls = [f"http://{tb.address(ph, network)}:{APP_PORT}/detect?mode=gray" for ph in phones]
    gate = Gate()
    svcs: dict = {}
    try:
        # Start-up and warm-up are not measured: the phones run them without their CPU cap
        # (seconds of imports at 0.1 core otherwise), and the cap is back before "go".
        with tb.full_speed(phones):
            svcs = start_services(tb, {ph: (ph, [py, "-m", "edgelab.services.phone", "--bind", "0.0.0.0",
                                                 "--port", str(APP_PORT)]) for ph in phones},
                                  log_dir=raw, timeout=120.0)
            argv = [py, "-m", "edgelab.workload.loadgen", "--mode", "open", "--rate", f"{load.rate_rps:g}",
                    "--duration", f"{load.seconds:g}", "--arrivals", "constant", "--seed", str(load.seed),
                    "--synthetic-jpeg", str(load.image_bytes), "--timeout", "10", "--wait-go", "--latencies",
                    "--warmup", str(load.warmup)]
            for u in urls:
                argv += ["--url", u]
            gate.add(tb, server, argv)
            gate.ready()
        go = gate.release()
        cpu = CpuMeter(tb, phones).start()
        remote_hosts = getattr(tb, "host_load_sampler", None)   # a testbed folded over several hosts
        host = (remote_hosts().start() if remote_hosts is not None else
                HostLoadSampler(warmer=active_warmer(), own_cpu=testbed_cpu_counter(tb),
                                delayer=testbed_delayer_counters(tb)).start() if _host_is_here(tb)
                else None)
        summary = json.loads(gate.collect(timeout=load.seconds + 60)[server])
        cpu.stop()
        if host is not None:
            host.stop()
        checks = [process_alive(f"phone service on {ph}", p) for ph, (p, _) in svcs.items()]
    finally:
        gate.kill()
        with tb.full_speed(phones):   # measured already: let them exit at the host's speed
            stop([p for p, _ in svcs.values()])
    (raw / "loadgen.json").write_text(json.dumps(summary, indent=1))
    checks.append(service_errors("requests to the phones", sum_kinds([summary]), summary["requests"]))
    checks += sample_coverage(cpu)

    rows: list[Measurement] = []
    all_lat: list[float] = []
    total_ok = 0
    duration = delivery_seconds(summary, go, load.seconds)
    for ph, t in zip(phones, summary["targets"]):
        lat = t.get("latencies_ms", [])
        all_lat += lat
        total_ok += t["ok"]
        rows += [Measurement("latency_ms_p50", percentile(lat, 50), "ms", ph),
                 Measurement("latency_ms_p95", percentile(lat, 95), "ms", ph)]
        if ph in cpu.seconds and t["ok"]:
            rows.append(Measurement("cpu_time_ms_per_request", 1000 * cpu.seconds[ph] / t["ok"], "ms", ph))
    rows += [Measurement("latency_ms_p50", percentile(all_lat, 50), "ms"),
             Measurement("latency_ms_p95", percentile(all_lat, 95), "ms"),
             Measurement("requests_per_s_per_node", total_ok / duration / len(phones), "1/s"),
             Measurement("error_rate", 1 - total_ok / summary["requests"] if summary["requests"] else math.nan,
                         "fraction")]
    if cpu.seconds and total_ok:
        rows.append(Measurement("cpu_time_ms_per_request", 1000 * sum(cpu.seconds.values()) / total_ok, "ms"))
    if host is not None:
        rows += host.measurements()
    return Measured(rows, checks)


def _host_is_here(tb: Testbed) -> bool:
    """The host's overload signals are this machine's when every node runs here (local backend)."""
    return tb.facts().get("backend") == "local"
