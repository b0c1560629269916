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
import time
from dataclasses import dataclass
from pathlib import Path

from ..backends import Testbed
from ..measure import percentile
from ..results import Measurement
from ..health import Measured, coverage, process_alive
from .app import POWER_MODEL, cpu_and_power, sample_coverage, write_power_samples
from .nodes import CpuMeter, python_of, start_service, start_services, stop
from .observe import Prom, export_series, prometheus_on_node

ORCH_PORT = 7000
PLUG_PORT = 8100
ORCH_METRICS_PORT = 9102     # modules/observability.nix orchestratorMetricsPort
PROM_PORT = 9090
#: MicroFaaS functions with default arguments, 10-120 ms each on one host core.
FUNCTIONS = ("float_operations", "cascading_sha256", "json_roundtrip", "image_resize", "matmul")


@dataclass(frozen=True)
class FaasLoad:
    per_worker: int = 20          # invocations per worker in the batch
    functions: tuple[str, ...] = FUNCTIONS
    meter_interval_s: float = 0.25
    power_source: str = "modelled"   # "modelled": device model on cgroup CPU; "plug": the nodes' Tasmota plugs
    plugs: tuple = ()                # ((node, "http://plug" | "mqtt://broker:port/topic"), ...) for "plug"
    slots: int = 1                   # worker processes per worker node (functions running at once)
    prometheus: bool = False         # run a Prometheus server scraping every plug and the orchestrator


def energy_sampler(tb: Testbed, load: FaasLoad, workers: list[str]):
    """(sampler, description per node) for the chosen power source; nodes without a source are
    left out (the energy coverage then says so)."""
    from ..services.power import PowerSampler
    from ..services.power.sources import ModelledSource, Utilisation, plug_source

    sources, described = {}, {}
    if load.power_source == "plug":
        plugs = dict(load.plugs)
        plug_of = getattr(tb, "power_plug", None)      # plugs the backend's device inventory names
        for w in workers:
            if w not in plugs and plug_of is not None and plug_of(w):
                plugs[w] = plug_of(w)
        for w in workers:
            if w in plugs:
                sources[w] = plug_source(plugs[w])
                described[w] = f"plug {plugs[w]}"
    elif load.power_source == "modelled":
        device = POWER_MODEL["beaglepaas-worker"]
        for w in workers:
            if tb.cpu_seconds(w) is not None:
                util = Utilisation(lambda w=w: tb.cpu_seconds(w), tb.plan.node(w).resources.host_cpu)
                sources[w] = ModelledSource(device, util)
                described[w] = f"modelled {device} from cgroup CPU"
    else:
        raise ValueError(f"power source must be 'modelled' or 'plug', not {load.power_source!r}")
    if not sources:
        return None, described
    return PowerSampler(sources, interval=load.meter_interval_s).start(), described


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
    sampler = prom = None
    try:
        # A real plug named in the inventory wins; otherwise a modelled Tasmota plug per worker,
        # fed by the worker's cgroup CPU time. Where cgroup directories are only readable on the
        # device itself (remote testbeds), that plug runs on the worker; else on the meter node.
        plug_of = getattr(tb, "power_plug", None)
        meter_urls = {w: u for w in workers if plug_of is not None and (u := plug_of(w))}
        modelled = [w for w in workers if w not in meter_urls]
        cg_dir = getattr(tb, "cpu_accounting_dir", None)
        if meters and modelled and cg_dir is not None and load.power_source == "modelled":
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
                "--port", str(ORCH_PORT), "--job-timeout", "60", "--meter-interval", f"{load.meter_interval_s:g}",
                "--metrics-port", str(ORCH_METRICS_PORT)]
        for w, url in meter_urls.items():      # one meter entry per worker process of the node
            for k in range(load.slots):
                argv += ["--meter", f"{w if load.slots == 1 else f'{w}/{k}'}={url}"]
        p, _ = start_service(tb, orch, argv, log_dir=raw)
        procs.append(p)
        watched[f"orchestrator on {orch}"] = p
        for w in workers:
            for k in range(load.slots):
                wid = w if load.slots == 1 else f"{w}/{k}"
                with open(raw / f"{w}-worker{k}.log", "ab") as log:
                    procs.append(tb.popen(w, [py, "-m", "edgelab.services.beaglepaas", "worker", "--connect",
                                              f"{orch_addr}:{ORCH_PORT}", "--id", wid],
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log))
                watched[f"worker {wid} on {w}"] = procs[-1]
        sampler, sources = energy_sampler(tb, load, workers)
        prom = start_prometheus(tb, load, workers, meters, orch_addr, raw) if load.prometheus else None
        if prom is not None:
            procs.append(prom)
        t_window = time.time()
        cpu = CpuMeter(tb, workers).start()
        res = tb.run(orch, [py, "-m", "edgelab.services.beaglepaas", "bench", "--connect",
                            f"{orch_addr}:{ORCH_PORT}", "--workers", str(len(workers) * load.slots),
                            "--functions", ",".join(load.functions), "--count", str(load.per_worker * len(workers)),
                            "--settle", f"{4 * load.meter_interval_s:g}"], timeout=600)
        cpu.stop()
        if prom is not None:
            time.sleep(2 * PROM_INTERVAL_S)          # one more scrape after the batch
            export_series(prom, t_window, time.time(), raw)
        checks = [process_alive(what, p) for what, p in watched.items()]
    finally:
        if sampler is not None:
            sampler.stop()
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
    if energies and len(energies) == len(done):
        # MicroFaaS' own accounting (the orchestrator charges the worker's whole draw during the run)
        rows.append(Measurement("energy_whole_draw_per_invocation_j", sum(energies) / len(energies), "J"))
    if meter_urls:   # metered: every done invocation must have been charged its energy
        checks.append(coverage("invocations charged an energy by the plugs", len(energies), len(done)))
    checks += sample_coverage(cpu, sampler)
    energy_rows = attributed_energy(sampler, sources, done, workers, raw, load.power_source)
    rows += energy_rows
    covered = next((m.value for m in energy_rows if m.metric == "energy_coverage"), 0.0)
    if sampler is not None or load.power_source == "plug":   # energy was to be measured: it must cover the batch
        checks.append(coverage(f"invocations whose node energy was measured ({load.power_source})",
                               round(covered * len(done)), len(done)))
    power = cpu_and_power(tb.plan, cpu) if load.power_source == "modelled" else \
        [Measurement("cpu_util", u, "fraction", n)
         for n, u in cpu.utilisation({n: tb.plan.node(n).resources.host_cpu for n in workers}).items()]
    rows += power
    total = [m.value for m in rows if m.metric == "power_w_total"]
    if total and done:
        # Whole-cluster view: every worker's draw over the batch, idle time included.
        rows.append(Measurement("power_w", total[0], "W"))
        rows.append(Measurement("energy_total_per_invocation_j", total[0] * cpu.wall / len(done), "J"))
    return Measured(rows, checks)


PROM_INTERVAL_S = 1.0


def start_prometheus(tb: Testbed, load: FaasLoad, workers: list[str], meters: list[str], orch_addr: str,
                     raw: Path) -> Prom:
    """A real Prometheus for this point: on the meter node scraping the emulated plugs and the
    orchestrator (modelled), or on this host scraping the inventory's HTTP plugs (plug)."""
    from urllib.parse import urlparse

    from ..prometheus import PrometheusServer, free_port

    workdir = raw / "prometheus"
    if load.power_source == "plug":
        targets = [urlparse(spec).netloc for _, spec in load.plugs if spec.startswith("http")]
        srv = PrometheusServer({"plugs": targets}, workdir, port=free_port(), interval_s=PROM_INTERVAL_S)
        return Prom(srv.start(), None)
    if not meters:
        raise ValueError("--prometheus needs the meter node of the topology (role power-meter)")
    jobs = {"plugs": [f"127.0.0.1:{PLUG_PORT + i}" for i in range(len(workers))],
            "faas": [f"{orch_addr}:{ORCH_METRICS_PORT}"]}
    return prometheus_on_node(tb, meters[0], jobs, workdir, PROM_INTERVAL_S)


def _node_of(worker_id: str) -> str:
    return worker_id.split("/", 1)[0]


def attributed_energy(sampler, sources: dict, done: list[dict], workers: list[str], raw: Path,
                      power_source: str) -> list[Measurement]:
    """Per-invocation joules by CPU-time share of each worker node's energy (Kepler's ratio model,
    :mod:`edgelab.services.power.attribution`), the energy coverage (fraction of invocations whose
    node energy was measured over their whole run), and each node's power from the same samples.

    ``energy_per_invocation_j`` is recorded only when the coverage is complete: a mean over the
    covered part would silently stand for the rest.  ``raw/power_sources.json`` says which source
    produced each node's figures; ``raw/power_samples.csv`` keeps every sample."""
    from ..services.power.attribution import Task, attribute

    (raw / "power_sources.json").write_text(json.dumps(
        {"power_source": power_source, "nodes": {w: sources.get(w, "none (no source: not measured)")
                                                 for w in workers}}, indent=1))
    samples = {}
    if sampler is not None:
        write_power_samples(sampler, raw)
        samples = {n: [(s.time, s.energy_j) for s in sampler.samples(n)] for n in sampler.sources}
    tasks = [Task(r["id"], _node_of(r["worker"] or ""), r["start"], r["end"],
                  r["cpu_s"] if r.get("cpu_s") is not None else (r["end"] - r["start"]))
             for r in done if r.get("start") is not None and r.get("end") is not None]
    att = attribute(samples, tasks)
    rows = [Measurement("energy_coverage", att.coverage if tasks else 0.0, "fraction")]
    mean = att.per_task_mean()
    if mean is not None:
        rows.append(Measurement("energy_per_invocation_j", mean, "J"))
    rows += [Measurement("energy_idle_j", j, "J", n) for n, j in att.idle_j.items()]
    total_w = 0.0
    for n, ss in (samples.items() if power_source == "plug" else ()):   # modelled: cpu_and_power has them
        if len(ss) >= 2 and ss[-1][0] > ss[0][0]:
            w = (ss[-1][1] - ss[0][1]) / (ss[-1][0] - ss[0][0])
            rows += [Measurement("power_w", w, "W", n), Measurement("energy_j", ss[-1][1] - ss[0][1], "J", n)]
            total_w += w
    if samples and power_source == "plug":
        rows.append(Measurement("power_w_total", total_w, "W"))
    return rows
