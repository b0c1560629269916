"""Prometheus metrics the edgelab services export besides the plugs' (which live in
:mod:`edgelab.services.power.meter`), and the list of every exported name.

The Grafana dashboards in ``dashboards/`` may only query names listed in :data:`EXPORTED`
(tests/test_observability.py checks it, and checks the list against live /metrics pages).
"""

from __future__ import annotations

import threading
from typing import Callable, Iterable, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

#: metric family -> the component that exports it (names as Prometheus stores them).
EXPORTED = {
    # Tasmota plug (edgelab.services.power)
    "edgelab_power_watts": "power meter", "edgelab_apparent_power_voltamperes": "power meter",
    "edgelab_voltage_volts": "power meter", "edgelab_current_amperes": "power meter",
    "edgelab_power_factor_ratio": "power meter", "edgelab_energy_today_joules": "power meter",
    "edgelab_relay_on": "power meter", "edgelab_tele_period_seconds": "power meter",
    "edgelab_energy_joules_total": "power meter", "edgelab_power_read_errors_total": "power meter",
    # BeaglePaaS orchestrator (--metrics-port)
    "edgelab_faas_invocations_total": "orchestrator", "edgelab_faas_energy_joules_total": "orchestrator",
    "edgelab_faas_exec_seconds_total": "orchestrator", "edgelab_faas_queued": "orchestrator",
    "edgelab_faas_workers": "orchestrator",
    # phone image service (--metrics-port)
    "edgelab_phone_requests_total": "phone service", "edgelab_phone_received_bytes_total": "phone service",
    "edgelab_phone_request_seconds_bucket": "phone service", "edgelab_phone_request_seconds_sum": "phone service",
    "edgelab_phone_request_seconds_count": "phone service", "edgelab_phone_cpu_seconds_total": "phone service",
}
#: Series Prometheus itself adds to every scrape (allowed in dashboards too).
PROMETHEUS_BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


class OrchestratorCollector:
    """Counters of a BeaglePaaS orchestrator computed at scrape time from its records."""

    def __init__(self, records: Callable[[], Iterable[dict]], stats: Callable[[], dict]):
        self.records, self.stats = records, stats

    def collect(self):
        inv = CounterMetricFamily("edgelab_faas_invocations", "Finished invocations", labels=["function", "status"])
        energy = CounterMetricFamily("edgelab_faas_energy_joules", "Energy charged to done invocations",
                                     labels=["worker"])
        execs = CounterMetricFamily("edgelab_faas_exec_seconds", "Execution time of done invocations",
                                    labels=["worker"])
        counts: dict = {}
        joules: dict = {}
        secs: dict = {}
        for r in self.records():
            if r["status"] not in ("done", "failed"):
                continue
            key = (r["function"], r["status"])
            counts[key] = counts.get(key, 0) + 1
            if r["status"] == "done" and r.get("worker"):
                w = r["worker"]
                secs[w] = secs.get(w, 0.0) + (r.get("exec_s") or 0.0)
                if r.get("energy_j") is not None:
                    joules[w] = joules.get(w, 0.0) + r["energy_j"]
        for (f, s), n in sorted(counts.items()):
            inv.add_metric([f, s], n)
        for w, j in sorted(joules.items()):
            energy.add_metric([w], j)
        for w, t in sorted(secs.items()):
            execs.add_metric([w], t)
        st = self.stats()
        yield inv
        yield energy
        yield execs
        yield GaugeMetricFamily("edgelab_faas_queued", "Invocations waiting for a worker", value=st.get("queued", 0))
        yield GaugeMetricFamily("edgelab_faas_workers", "Connected workers", value=len(st.get("workers", {})))


class PhoneMetrics:
    """Per-request counters of the phone image service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("edgelab_phone_requests", "Processed images", ["mode"], registry=self.registry)
        self.bytes = Counter("edgelab_phone_received_bytes", "Image bytes accepted", ["mode"], registry=self.registry)
        self.cpu = Counter("edgelab_phone_cpu_seconds", "CPU time spent on images", ["mode"], registry=self.registry)
        self.latency = Histogram("edgelab_phone_request_seconds", "Processing time per image", ["mode"],
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                                 registry=self.registry)
        self._lock = threading.Lock()

    def observe(self, mode: str, nbytes: int, seconds: float, cpu_s: float) -> None:
        self.requests.labels(mode).inc()
        self.bytes.labels(mode).inc(nbytes)
        self.cpu.labels(mode).inc(max(cpu_s, 0.0))
        self.latency.labels(mode).observe(seconds)


#: The phone service's metrics (one per process, like the service).
PHONE = PhoneMetrics()


def serve_metrics(registry: CollectorRegistry, port: int, addr: str = "0.0.0.0") -> Optional[tuple]:
    """Expose ``registry`` on ``http://addr:port/metrics`` (prometheus_client's own server)."""
    if not port:
        return None
    return start_http_server(port, addr=addr, registry=registry)
