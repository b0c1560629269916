"""The image-offloading application measured on a running testbed.

An edge server runs the phone workload service (``POST /detect``); every
phone runs the open-loop load generator uploading a JPEG at a fixed rate
(constant inter-arrival time, each phone's schedule shifted by a different
fraction of it so that phones do not fire in lockstep). All generators are
released at the same instant. Then, separately, every phone runs a saturating iperf3 upload
to the server at once, which measures each phone's share of the network.

Goodput is the application's: image bytes the server accepted, per second,
over the time it took to deliver them (so a saturated network shows as a
plateau, not as a longer run). CPU is each node's cgroup CPU time relative
to its quota; phone power comes from the phone device model applied to it,
sampled every 0.5 s during the load (the samples are kept in the point's raw
directory, ``power_samples.csv``).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..backends import Testbed
from ..errors import BackendError
from ..health import Check, Measured, coverage, process_alive, service_errors
from ..measure import concurrent_goodput, percentile
from ..plan import Plan
from ..results import Measurement
from ..services.power import PowerSampler
from ..services.power.sources import ModelledSource, Utilisation, device_class
from .nodes import CpuMeter, Gate, python_of, start_services, stop
from .observe import export_series, prometheus_on_node

APP_PORT = 8080
METRICS_PORT = 9101          # modules/observability.nix phoneMetricsPort
#: Device power model per role (edgelab.services.power.sources.DEVICE_CLASSES).
POWER_MODEL = {"phone": "phone", "beaglepaas-worker": "bbb"}


@dataclass(frozen=True)
class AppLoad:
    seconds: float = 4.0          # send window of the load generators
    rate_rps: float = 4.0         # requests per second per phone
    image_bytes: int = 125_000    # upload size
    mode: str = "gray"            # processing per image (gray: cheap resize; tflite: LiteRT BlazeFace; faces: Haar)
    inference: str = "server"     # where it runs: "server" (phones offload), "phone" (on each phone, as the
                                  # seeds) or "k3s" (the k3s-phones composition's LoadBalancer Service)
    iperf: bool = True            # also measure each phone's saturated TCP share
    prometheus: bool = False      # a Prometheus server on the server node scraping every phone service
    power_source: str = "modelled"   # phones' power: "modelled" (device model on cgroup CPU) or "plug"
    plugs: tuple = ()                # ((node, "http://plug" | "mqtt://broker:port/topic"), ...) for "plug"
    seed: int = 1

    @property
    def offered_mbit(self) -> float:
        return self.rate_rps * self.image_bytes * 8 / 1e6


def _server(plan: Plan) -> str:
    servers = plan.nodes_of(group="server") or plan.nodes_of(role="k3s-server")
    if not servers:
        raise ValueError("the application needs a node in group 'server' (or role k3s-server)")
    return servers[0].name


def _phones(plan: Plan) -> list[str]:
    return [n.name for n in plan.nodes_of(group="phone")]


def delivery_seconds(summary: dict, go: float, window: float) -> float:
    """How long a load generator's requests took to be delivered: its send window, or
    longer when the backlog took longer to drain (so a saturated link shows as a plateau)."""
    return max(window, (summary.get("last_end") or go) - go)


#: Where the k3s-phones composition describes its LoadBalancer Service on every node
#: (compositions/k3s-phones/composition.nix, ``environment.etc."edgelab/k3s-services.json"``).
K3S_SERVICES = "/etc/edgelab/k3s-services.json"


def parse_k3s_services(text: str, node: str) -> tuple[int, str, Optional[str]]:
    """(port, path, plan network) of the ``edgelab-phone`` Service in a node's k3s-services.json."""
    try:
        svc = json.loads(text)["edgelab-phone"]
        port, path = int(svc["port"]), str(svc.get("path", "/detect"))
    except (ValueError, KeyError, TypeError) as exc:
        raise BackendError(f"{node}:{K3S_SERVICES} does not describe the edgelab-phone Service "
                           f"({type(exc).__name__}: {exc})") from None
    if not 0 < port < 65536 or not path.startswith("/"):
        raise BackendError(f"{node}:{K3S_SERVICES}: edgelab-phone has port {port} and path {path!r}")
    return port, path, svc.get("network")


def k3s_service(tb: Testbed, node: str) -> tuple[int, str, Optional[str]]:
    """The k3s workload's Service as ``node`` describes it; a clear error where there is no k3s cluster."""
    r = tb.run(node, ["cat", K3S_SERVICES], check=False)
    if r.returncode != 0:
        raise BackendError(f"--inference k3s: node {node} has no {K3S_SERVICES}; the k3s workload exists only "
                           "on the k3s-phones composition (nxc and g5k backends)")
    return parse_k3s_services(r.stdout, node)


def run_app(tb: Testbed, load: AppLoad, raw: Path) -> list[Measurement]:
    """One measurement of the application on a running testbed; raw outputs go to ``raw``."""
    plan = tb.plan
    server, phones = _server(plan), _phones(plan)
    if not phones:
        raise ValueError("the application needs a group named 'phone'")
    network = plan.node(phones[0]).interfaces[0].network
    py = python_of(tb)
    rows: list[Measurement] = []

    if load.inference not in ("server", "phone", "k3s"):
        raise ValueError(f"inference must run on 'server', 'phone' or 'k3s', not {load.inference!r}")
    hosts = {"phone": phones, "server": [server], "k3s": []}[load.inference]
    target_port, target_path = APP_PORT, "/detect"
    if load.inference == "k3s":   # the cluster serves it: nothing to start, the Service is the target
        target_port, target_path, svc_net = k3s_service(tb, server)
        network = svc_net or network
    svc_argv = [py, "-m", "edgelab.services.phone", "--bind", "0.0.0.0", "--port", str(APP_PORT),
                "--metrics-port", str(METRICS_PORT)]
    # Start-up is not measured: services and generators start without the nodes' CPU caps (a phone
    # capped at 0.25 core spends a second importing the generator), which are back before "go".
    uncapped = contextlib.ExitStack()   # closed (caps back) before "go", and whatever happens
    uncapped.enter_context(tb.full_speed([server, *phones]))
    try:
        started = start_services(tb, {h: (h, svc_argv) for h in hosts}, log_dir=raw, timeout=120.0)
    except BaseException:
        uncapped.close()
        raise
    svcs = [p for p, _ in started.values()]
    gate = Gate()
    try:
        timeout = max(10.0, 3 * load.seconds)
        for i, ph in enumerate(phones):
            target = "127.0.0.1" if load.inference == "phone" else tb.address(server, network)
            url = f"http://{target}:{target_port}{target_path}?mode={load.mode}"
            gate.add(tb, ph, [py, "-m", "edgelab.workload.loadgen", "--url", url, "--mode", "open",
                              "--rate", f"{load.rate_rps:g}", "--duration", f"{load.seconds:g}",
                              "--arrivals", "constant", "--seed", str(load.seed * 1000 + i),
                              "--offset", f"{i / (len(phones) * load.rate_rps):.6f}",
                              "--synthetic-jpeg", str(load.image_bytes), "--timeout", f"{timeout:g}",
                              "--wait-go", "--latencies"])
        prom = None
        if load.prometheus:
            targets = [f"{'127.0.0.1' if h == server else tb.address(h, network)}:{METRICS_PORT}" for h in hosts]
            prom = prometheus_on_node(tb, server, {"phones": targets}, raw / "prometheus")
            svcs.append(prom)
        gate.ready()
        uncapped.close()
        go = gate.release()
        cpu = CpuMeter(tb, [server, *phones]).start()
        sampler = power_sampler(tb, phones, plugs=dict(load.plugs) if load.power_source == "plug" else None)
        try:
            outputs = gate.collect(timeout=load.seconds + timeout + 30)
            if prom is not None:
                time.sleep(2.0)                      # one more scrape after the last request
                export_series(prom, go, time.time(), raw)
        finally:
            if sampler:
                sampler.stop()
        cpu.stop()
        checks = [process_alive(f"phone service on {h}", p) for h, (p, _) in started.items()]
    finally:
        uncapped.close()   # a no-op once the caps are back
        gate.kill()
        stop(svcs)
    if sampler:
        write_power_samples(sampler, raw)
    (raw / "power_sources.json").write_text(json.dumps(
        {"power_source": load.power_source,
         "nodes": {ph: (f"plug {dict(load.plugs)[ph]}" if load.power_source == "plug" and ph in dict(load.plugs)
                        else f"modelled {POWER_MODEL['phone']} from cgroup CPU" if load.power_source == "modelled"
                        else "none (no plug in the inventory: not measured)") for ph in phones}}, indent=1))

    summaries = {ph: json.loads(out) for ph, out in outputs.items()}
    (raw / "loadgen.json").write_text(json.dumps(summaries, indent=1))
    checks.append(service_errors(f"requests to {server}", sum_kinds(summaries.values()),
                                 sum(s["requests"] for s in summaries.values())))
    checks += sample_coverage(cpu, sampler)
    all_lat: list[float] = []
    total_req = total_ok = 0
    total_goodput = total_rps = 0.0
    for ph, s in summaries.items():
        t = s["targets"][0]
        lat = t.get("latencies_ms", [])
        all_lat.extend(lat)
        duration = delivery_seconds(s, go, load.seconds)
        goodput = s["ok"] * s["body_bytes"] * 8 / duration / 1e6
        total_goodput += goodput
        total_rps += s["ok"] / duration
        total_req += s["requests"]
        total_ok += s["ok"]
        rows += [Measurement("goodput_mbit", goodput, "Mbit/s", ph),
                 Measurement("latency_ms_p95", percentile(lat, 95), "ms", ph)]
    rows += [
        Measurement("goodput_mbit", total_goodput, "Mbit/s"),
        Measurement("offered_mbit", load.offered_mbit * len(phones), "Mbit/s"),
        Measurement("requests_per_s", total_rps, "1/s"),
        Measurement("error_rate", (total_req - total_ok) / total_req if total_req else math.nan, "fraction"),
        Measurement("latency_ms_p50", percentile(all_lat, 50), "ms"),
        Measurement("latency_ms_p95", percentile(all_lat, 95), "ms"),
        Measurement("latency_ms_p99", percentile(all_lat, 99), "ms"),
    ]
    rows += cpu_and_power(plan, cpu, sampler, fallback_to_model=load.power_source == "modelled")
    measured = [ph for ph in phones if sampler and ph in sampler.sources and len(sampler.samples(ph)) >= 2]
    rows.append(Measurement("energy_coverage", len(measured) / len(phones), "fraction"))
    if load.power_source == "plug":          # the figures were to come from plugs: all phones' must be there
        checks.append(coverage("phones whose power a plug measured", len(measured), len(phones)))
    rows += phone_cpu_per_request(cpu.seconds, {ph: s["ok"] for ph, s in summaries.items()})
    capacity = [s.capacity_mbit for s in plan.network(network).segments if s.capacity_mbit]
    if capacity:
        rows.append(Measurement("airtime_capacity_mbit", min(capacity), "Mbit/s"))
    rows += station_model_rows(plan, network, phones)
    if load.iperf:
        shares = concurrent_goodput(tb, phones, server, seconds=load.seconds, network=network)
        (raw / "iperf.json").write_text(json.dumps(shares, indent=1))
        rows += [Measurement("iperf_goodput_mbit", r["goodput_mbit"], "Mbit/s", ph) for ph, r in shares.items()]
        rows.append(Measurement("iperf_goodput_mbit", sum(r["goodput_mbit"] for r in shares.values()), "Mbit/s"))
    return Measured(rows, checks)


def sum_kinds(summaries) -> dict[str, int]:
    """Failed requests per kind (loadgen's ``error_kinds``) over several load generators."""
    out: dict[str, int] = {}
    for s in summaries:
        for k, v in (s.get("error_kinds") or {}).items():
            out[k] = out.get(k, 0) + int(v)
    return out


def sample_coverage(cpu: CpuMeter, sampler: Optional[PowerSampler] = None) -> list[Check]:
    """CPU readings of every node readable at the start also at the end; power samples of
    every sampled node on at least :data:`~edgelab.health.MIN_COVERAGE` of the sampler's attempts."""
    checks = [coverage("CPU readings at the end of the point", len(cpu.seconds), len(cpu.readable_at_start))]
    if sampler:
        for node in sampler.sources:
            got = len(sampler.samples(node))
            checks.append(coverage(f"power samples of {node}", got, got + sampler.errors.get(node, 0)))
    return checks


def station_model_rows(plan: Plan, network: str, phones: list[str]) -> list[Measurement]:
    """Per phone on a shared Wi-Fi segment: its PHY rate, MCS (-1: the profile's rate) and
    its modelled DCF share; and what each phone's share would be were all at the profile's
    rate, so a report can show how much a slow phone costs the others (Heusse et al.)."""
    from ..airtime import saturation

    rows: list[Measurement] = []
    for seg in plan.network(network).segments:
        if seg.capacity_mbit is None:
            continue
        for i, node in enumerate(seg.stations):
            if node not in phones:
                continue
            mcs = seg.station_mcs[i] if i < len(seg.station_mcs) else None
            rows += [Measurement("station_phy_mbit", seg.station_rate(i), "Mbit/s", node),
                     Measurement("station_mcs", -1 if mcs is None else mcs, "index", node),
                     Measurement("model_share_mbit", seg.station_shares_mbit[i], "Mbit/s", node)]
        rows.append(Measurement("model_share_all_fast_mbit",
                                saturation(seg.airtime, len(seg.stations)).per_station_mbit, "Mbit/s"))
        break
    return rows


def phone_cpu_per_request(cpu_seconds: dict[str, float], ok: dict[str, int]) -> list[Measurement]:
    """CPU time each phone spent per successful request (its cgroup's CPU over the load window:
    the load generator and, with on-phone inference, the detector), per phone and over all."""
    rows = [Measurement("phone_cpu_ms_per_request", 1000 * cpu_seconds[ph] / n, "ms", ph)
            for ph, n in ok.items() if n and ph in cpu_seconds]
    total_ok = sum(n for ph, n in ok.items() if ph in cpu_seconds)
    if total_ok:
        rows.append(Measurement("phone_cpu_ms_per_request",
                                1000 * sum(cpu_seconds[ph] for ph in ok if ph in cpu_seconds) / total_ok, "ms"))
    return rows


def power_sampler(tb: Testbed, nodes: list[str], interval: float = 0.5,
                  plugs: Optional[dict] = None) -> Optional[PowerSampler]:
    """A started sampler of the modelled power of ``nodes`` that have a device model
    (from their cgroup CPU time), or None where the backend cannot read node CPU.
    With ``plugs`` ({node: plug}), the nodes' real plugs instead, and only those."""
    from ..services.power.sources import plug_source

    sources = {}
    if plugs is not None:
        sources = {n: plug_source(plugs[n]) for n in nodes if n in plugs}
        return PowerSampler(sources, interval=interval).start() if sources else None
    for n in nodes:
        node = tb.plan.node(n)
        model = POWER_MODEL.get(node.role)
        if model and tb.cpu_seconds(n) is not None:
            util = Utilisation(lambda n=n: tb.cpu_seconds(n), node.resources.host_cpu)
            sources[n] = ModelledSource(model, util)
    return PowerSampler(sources, interval=interval).start() if sources else None


def write_power_samples(sampler: PowerSampler, raw: Path) -> None:
    """Every power sample (time, node, W, cumulative J) into ``raw/power_samples.csv``."""
    import csv

    with open(raw / "power_samples.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["time", "node", "power_w", "energy_j"])
        w.writeheader()
        w.writerows(sampler.records())


def cpu_and_power(plan: Plan, cpu: CpuMeter, sampler: Optional[PowerSampler] = None,
                  fallback_to_model: bool = True) -> list[Measurement]:
    """cpu_util per node; power_w and energy_j per node with a device model (from the
    sampler's samples when given, else — unless ``fallback_to_model`` is False, as when the
    figures must come from plugs — from the mean utilisation), and their sum."""
    quotas = {n: plan.node(n).resources.host_cpu for n in cpu.nodes}
    rows: list[Measurement] = []
    total_w: Optional[float] = None
    missing = False
    for node, u in cpu.utilisation(quotas).items():
        rows.append(Measurement("cpu_util", u, "fraction", node))
        model = POWER_MODEL.get(plan.node(node).role)
        if not model:
            continue
        samples = sampler.samples(node) if sampler and node in sampler.sources else []
        if len(samples) >= 2:
            energy = samples[-1].energy_j - samples[0].energy_j
            w = energy / (samples[-1].time - samples[0].time)
            rows.append(Measurement("energy_j", energy, "J", node))
        elif fallback_to_model:
            w = device_class(model).power(u)
        else:
            missing = True                # no plug reading for this node: no figure, coverage says so
            continue
        rows.append(Measurement("power_w", w, "W", node))
        total_w = (total_w or 0.0) + w
    if total_w is not None and not missing:   # a sum over part of the nodes would pass for the whole
        rows.append(Measurement("power_w_total", total_w, "W"))
    return rows
