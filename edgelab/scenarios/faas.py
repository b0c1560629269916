"""BeaglePaaS on a running testbed: throughput, latency and joules per invocation.

The orchestrator runs on its node, one worker per worker node connects to it,
and the meter node runs one emulated Tasmota plug per worker, whose power
comes from the worker's measured CPU (BeagleBone Black model) — the same
path a real plug on a real board would take: the orchestrator samples the
plugs and charges each invocation the energy its worker drew while running it.
A batch of invocations (MicroFaaS functions, round-robin) is submitted at once
and drained, so the measured rate is the cluster's saturated throughput.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..backends import Testbed
from ..measure import percentile
from ..results import Measurement
from ..health import Measured, coverage, process_alive
from .app import POWER_MODEL, cpu_and_power, sample_coverage
from .nodes import CpuMeter, python_of, start_service, start_services, stop

ORCH_PORT = 7000
PLUG_PORT = 8100
#: MicroFaaS functions with default arguments, 10-120 ms each on one host core.
FUNCTIONS = ("float_operations", "cascading_sha256", "json_roundtrip", "image_resize", "matmul")


@dataclass(frozen=True)
class FaasLoad:
    per_worker: int = 20          # invocations per worker in the batch
    functions: tuple[str, ...] = FUNCTIONS
    meter_interval_s: float = 0.25


def _by_role(tb: Testbed, role: str) -> list[str]:
    return [n.name for n in tb.plan.nodes_of(role=role)]


def run_faas(tb: Testbed, load: FaasLoad, raw: Path) -> list[Measurement]:
    orch = _by_role(tb, "beaglepaas-orchestrator")[0]
    workers = _by_role(tb, "beaglepaas-worker")
    meters = _by_role(tb, "power-meter")
    py = python_of(tb)
    orch_addr = tb.address(orch)
    procs = []
    watched: dict[str, subprocess.Popen] = {}   # what must run for the whole point, by description
    try:
        # A real plug named in the inventory wins; otherwise a modelled Tasmota plug per worker,
        # fed by the worker's cgroup CPU time. Where cgroup directories are only readable on the
        # device itself (remote testbeds), that plug runs on the worker; else on the meter node.
        plug_of = getattr(tb, "power_plug", None)
        meter_urls = {w: u for w in workers if plug_of is not None and (u := plug_of(w))}
        modelled = [w for w in workers if w not in meter_urls]
        cg_dir = getattr(tb, "cpu_accounting_dir", None)
        if meters and modelled and cg_dir is not None:
            shared_fs = getattr(tb, "cgroups_visible_from_all_nodes", True)
            host_of = {w: meters[0] if shared_fs else w for w in modelled}
            device = POWER_MODEL["beaglepaas-worker"]   # the same model cpu_and_power uses
            specs = {w: (host_of[w], [py, "-m", "edgelab.services.power", "--source", "modelled", "--device", device,
                                      "--cores", f"{tb.plan.node(w).resources.host_cpu:g}", "--cgroup", str(cg_dir(w)),
                                      "--bind", "0.0.0.0", "--port", str(PLUG_PORT + i), "--topic", f"plug_{w}",
                                      "--interval", f"{load.meter_interval_s:g}"])
                     for i, w in enumerate(modelled)}
            # A plug on the worker stands in for equipment outside it: not in the worker's cgroup.
            plugs = start_services(tb, specs, log_dir=raw, timeout=120.0,
                                   popen_kw=None if shared_fs else {"confine": False})
            procs += [p for p, _ in plugs.values()]
            meter_urls.update({w: f"http://{tb.address(host_of[w])}:{PLUG_PORT + i}" for i, w in enumerate(modelled)})
            watched.update({f"power meter (plug) of {w} on {host_of[w]}": p for w, (p, _) in plugs.items()})
        argv = [py, "-m", "edgelab.services.beaglepaas", "orchestrator", "--bind", "0.0.0.0",
                "--port", str(ORCH_PORT), "--job-timeout", "60", "--meter-interval", f"{load.meter_interval_s:g}"]
        for w, url in meter_urls.items():
            argv += ["--meter", f"{w}={url}"]
        p, _ = start_service(tb, orch, argv, log_dir=raw)
        procs.append(p)
        watched[f"orchestrator on {orch}"] = p
        for w in workers:
            with open(raw / f"{w}-worker.log", "ab") as log:
                procs.append(tb.popen(w, [py, "-m", "edgelab.services.beaglepaas", "worker", "--connect",
                                          f"{orch_addr}:{ORCH_PORT}", "--id", w],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))
            watched[f"worker on {w}"] = procs[-1]
        cpu = CpuMeter(tb, workers).start()
        res = tb.run(orch, [py, "-m", "edgelab.services.beaglepaas", "bench", "--connect",
                            f"{orch_addr}:{ORCH_PORT}", "--workers", str(len(workers)),
                            "--functions", ",".join(load.functions), "--count", str(load.per_worker * len(workers)),
                            "--settle", f"{4 * load.meter_interval_s:g}"], timeout=600)
        cpu.stop()
        checks = [process_alive(what, p) for what, p in watched.items()]
    finally:
        stop(procs)
    out = json.loads(res.stdout)
    (raw / "bench.json").write_text(json.dumps(out, indent=1))
    recs = out["records"]
    done = [r for r in recs if r["status"] == "done"]
    span = out["t_done"] - out["t_submit"]
    lat = [1000 * (r["done"] - r["submit"]) for r in done]
    rows = [
        Measurement("invocations_per_s", len(done) / span if span > 0 else math.nan, "1/s"),
        Measurement("latency_ms_p50", percentile(lat, 50), "ms"),
        Measurement("latency_ms_p95", percentile(lat, 95), "ms"),
        Measurement("exec_ms_p50", percentile([1000 * r["exec_s"] for r in done], 50), "ms"),
        Measurement("queue_ms_p50", percentile([1000 * r["queue_s"] for r in done], 50), "ms"),
        Measurement("failed", float(len(recs) - len(done)), "invocations"),
    ]
    energies = [r["energy_j"] for r in done if r.get("energy_j") is not None]
    if meter_urls:   # metered: every done invocation must have been charged its energy
        checks.append(coverage("invocations charged an energy by the plugs", len(energies), len(done)))
    checks += sample_coverage(cpu)
    if energies:
        rows.append(Measurement("energy_per_invocation_j", sum(energies) / len(energies), "J"))
    power = cpu_and_power(tb.plan, cpu)
    rows += power
    total = [m.value for m in power if m.metric == "power_w_total"]
    if total and done:
        # Whole-cluster view: every worker's draw over the batch, idle time included.
        rows.append(Measurement("power_w", total[0], "W"))
        rows.append(Measurement("energy_total_per_invocation_j", total[0] * cpu.wall / len(done), "J"))
    return Measured(rows, checks)
