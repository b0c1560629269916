"""The emulated smart plug: samples a source, keeps Tasmota counters, serves them.

One ``PowerMeter`` = one plug = one metered node.  It serves the Tasmota HTTP
API (``/cm?cmnd=...``) and Prometheus metrics (``/metrics``) on one port and,
when given a broker, publishes ``tele/<topic>/SENSOR`` every TelePeriod, so tools
written for real Athom/Tasmota plugs work unchanged against the testbed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlparse

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .energy import EnergyIntegrator
from .sources import PowerSource, Reading, SourceError
from .tasmota import EnergySnapshot, Resolution, power_state, sensor_object, status_sns

log = logging.getLogger(__name__)


class PowerMeter:
    def __init__(self, source: PowerSource, *, topic: str = "edgelab_plug", interval_s: float = 1.0,
                 state_file: Optional[str] = None, resolution: Resolution = Resolution(),
                 tele_period_s: float = 300.0, mqtt_host: Optional[str] = None, mqtt_port: int = 1883,
                 save_every_s: float = 10.0):
        self.source = source
        self.topic = topic
        self.interval_s = interval_s
        self.resolution = resolution
        self.tele_period_s = tele_period_s
        self.integrator = EnergyIntegrator(state_file, save_every_s=save_every_s)
        self.relay_on = True
        self.last: Reading = Reading(0.0).completed()
        self.last_time: Optional[float] = None
        self.read_errors = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mqtt = None
        self._mqtt_addr = (mqtt_host, mqtt_port) if mqtt_host else None
        self._http: Optional[ThreadingHTTPServer] = None
        self.registry = CollectorRegistry()
        self.registry.register(_MeterCollector(self))

    # ------------------------------------------------------------------ sampling
    def sample_once(self) -> Reading:
        """Read the source and integrate.  A relay switched off reads 0 W."""
        t = time.time()
        try:
            reading = self.source.read().completed()
        except SourceError as exc:
            self.read_errors += 1
            log.warning("power source read failed: %s", exc)
            return self.last
        if not self.relay_on:
            reading = Reading(0.0, reading.voltage_v, 0.0, 0.0, 0.0, 0.0)
        self.integrator.add(t, reading.power_w)
        with self._lock:
            self.last, self.last_time = reading, t
        return reading

    def _sample_loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.sample_once()
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:                      # fell behind: do not burst to catch up
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def snapshot(self) -> EnergySnapshot:
        with self._lock:
            r = self.last
        st = self.integrator.state
        return EnergySnapshot(self.integrator.start_time(), st.total_kwh, st.yesterday_kwh, st.today_kwh,
                              r.power_w, r.voltage_v, r.current_a or 0.0, r.factor, r.apparent_va, r.reactive_var)

    # ------------------------------------------------------------------ tasmota commands
    def command(self, cmnd: str) -> dict:
        """Execute a Tasmota console command (the subset a power meter needs)."""
        parts = cmnd.strip().split()
        if not parts:
            return {"Command": "Unknown"}
        name, args = parts[0].lower(), parts[1:]
        if name.startswith("status") and name != "status":     # "Status8" spelling
            args, name = [name[6:]] + args, "status"
        if name == "status" and args and args[0] in ("8", "10"):
            return status_sns(datetime.now(), self.snapshot(), self.resolution)
        if name in ("power", "power1"):
            if args:
                arg = args[0].lower()
                if arg in ("on", "1"):
                    self.relay_on = True
                elif arg in ("off", "0"):
                    self.relay_on = False
                elif arg in ("toggle", "2"):
                    self.relay_on = not self.relay_on
                else:
                    return {"Command": "Error"}
            return power_state(self.relay_on)
        if name == "teleperiod":
            if args:
                self.tele_period_s = max(10.0, float(args[0]))   # Tasmota's minimum is 10 s
            return {"TelePeriod": int(self.tele_period_s)}
        return {"Command": "Unknown"}

    # ------------------------------------------------------------------ MQTT
    def telemetry(self) -> dict:
        return sensor_object(datetime.now(), self.snapshot(), self.resolution,
                             period_wh=self.integrator.take_period_wh())

    def _mqtt_start(self) -> None:
        import paho.mqtt.client as mqtt

        host, port = self._mqtt_addr
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgelab-{self.topic}")
        c.will_set(f"tele/{self.topic}/LWT", "Offline", retain=True)
        c.on_connect = lambda cl, u, f, rc, p=None: cl.publish(f"tele/{self.topic}/LWT", "Online", retain=True)
        c.connect(host, port)
        c.loop_start()
        self._mqtt = c

    def _tele_loop(self) -> None:
        while not self._stop.wait(self.tele_period_s):
            if self._mqtt is not None:
                self._mqtt.publish(f"tele/{self.topic}/SENSOR", json.dumps(self.telemetry()))

    # ------------------------------------------------------------------ lifecycle
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start sampling, HTTP and (if configured) MQTT; returns the bound address."""
        self.sample_once()
        self._http = ThreadingHTTPServer((host, port), _handler_for(self))
        self._http.daemon_threads = True
        if self._mqtt_addr:
            self._mqtt_start()
        for target in (self._sample_loop, self._tele_loop, self._http.serve_forever):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self._http.server_address[:2]

    def close(self) -> None:
        self._stop.set()
        if self._http:
            self._http.shutdown()
            self._http.server_close()
        if self._mqtt is not None:
            self._mqtt.publish(f"tele/{self.topic}/LWT", "Offline", retain=True).wait_for_publish(2)
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
        self.integrator.save()


class _MeterCollector:
    """Prometheus view of a meter, computed at scrape time (never stale)."""

    def __init__(self, meter: PowerMeter):
        self.meter = meter

    def collect(self):
        m, s = self.meter, self.meter.snapshot()
        labels = ["topic"]
        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([m.topic], value)
            return g
        yield gauge("edgelab_power_watts", "Active power at the plug (W)", s.power_w)
        yield gauge("edgelab_apparent_power_va", "Apparent power (VA)", s.apparent_va or 0.0)
        yield gauge("edgelab_voltage_volts", "Mains voltage (V)", s.voltage_v)
        yield gauge("edgelab_current_amperes", "Current (A)", s.current_a)
        yield gauge("edgelab_power_factor", "Power factor", s.factor)
        yield gauge("edgelab_energy_today_kwh", "Energy today (kWh)", s.today_kwh)
        yield gauge("edgelab_relay_on", "1 when the plug relay is on", 1.0 if m.relay_on else 0.0)
        c = CounterMetricFamily("edgelab_energy_kwh", "Energy since TotalStartTime (kWh)", labels=labels)
        c.add_metric([m.topic], s.total_kwh)
        yield c
        e = CounterMetricFamily("edgelab_power_read_errors", "Failed source reads", labels=labels)
        e.add_metric([m.topic], m.read_errors)
        yield e


def _handler_for(meter: PowerMeter):
    class Handler(BaseHTTPRequestHandler):
        disable_nagle_algorithm = True   # separate header/body writes must not wait for delayed ACKs
        def log_message(self, fmt, *args):  # keep test output clean; use logging
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/cm":
                cmnd = parse_qs(url.query).get("cmnd", [""])[0]
                self._send(200, json.dumps(meter.command(cmnd)).encode(), "application/json")
            elif url.path == "/metrics":
                self._send(200, generate_latest(meter.registry), CONTENT_TYPE_LATEST)
            else:
                self._send(404, b'{"error":"not found; use /cm?cmnd=Status%208 or /metrics"}', "application/json")
    return Handler
