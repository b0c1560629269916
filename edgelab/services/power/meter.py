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

from .energy import J_PER_KWH, EnergyIntegrator
from .sources import PowerSource, Reading, SourceError
from . import console
from .tasmota import (DeviceInfo, EnergySnapshot, Resolution, discovery_config, discovery_sensors, info_messages,
                      sensor_object, stable_mac, state_object, status_parts)

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
        self.device = DeviceInfo(topic=topic, mac=stable_mac(topic), mqtt_host=mqtt_host or "",
                                 mqtt_port=mqtt_port, tele_period=max(int(round(tele_period_s)), 1) if tele_period_s > 0 else 0, started=time.time())
        self._tele_now = threading.Event()
        self._cmd_lock = threading.Lock()
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
    @property
    def friendly_names(self) -> list:
        return self.device.friendly_names

    @property
    def tele_period(self) -> int:
        return self.device.tele_period

    def set_relay(self, on: bool) -> None:
        self.relay_on = on

    def set_tele_period(self, value: int) -> None:
        """CmndTeleperiod: store the setting and restart the telemetry timer so the next
        STATE/SENSOR pair goes out at once (Tasmota sets its counter to the period)."""
        self.device.tele_period = value
        self.tele_period_s = float(value)
        self._tele_now.set()

    def status(self) -> dict[int, dict]:
        now = datetime.now()
        return status_parts(self.device, now, self.relay_on, sensor_object(now, self.snapshot(), self.resolution),
                            state_object(self.device, now, self.relay_on))

    def command(self, cmnd: str) -> dict:
        """Execute a Tasmota console command; its MQTT answers go to ``stat/<topic>/`` too."""
        with self._cmd_lock:
            reply = console.execute(self, cmnd)
        self._publish_stat(reply.mqtt)
        return reply.http

    # ------------------------------------------------------------------ MQTT
    def telemetry(self) -> dict:
        return sensor_object(datetime.now(), self.snapshot(), self.resolution,
                             period_wh=self.integrator.take_period_wh())

    def _publish(self, topic: str, payload: str, retain: bool = False) -> None:
        if self._mqtt is not None:
            self._mqtt.publish(topic, payload, retain=retain)

    def _publish_stat(self, messages) -> None:
        for suffix, payload in messages:
            self._publish(f"stat/{self.topic}/{suffix}", payload)

    def _on_connect(self, client, userdata, flags, rc, props=None) -> None:
        """What Tasmota's MqttConnected does: LWT Online, subscribe cmnd/<topic>/#, INFO1-3,
        then discovery (retained config + sensors)."""
        d = self.device
        client.publish(f"tele/{self.topic}/LWT", "Online", retain=True)
        client.subscribe(f"cmnd/{self.topic}/#")
        for suffix, obj in info_messages(d):
            client.publish(f"tele/{self.topic}/{suffix}", json.dumps(obj))
        now = datetime.now()
        client.publish(f"tasmota/discovery/{d.mac_id}/config", json.dumps(discovery_config(d)), retain=True)
        client.publish(f"tasmota/discovery/{d.mac_id}/sensors",
                       json.dumps(discovery_sensors(sensor_object(now, self.snapshot(), self.resolution))),
                       retain=True)

    def _on_message(self, client, userdata, msg) -> None:
        """``cmnd/<topic>/<Command>`` with the data as payload (empty payload = query)."""
        try:
            cmd = msg.topic.split("/", 2)[2]
            data = msg.payload[:4096].decode("utf-8", "replace")
            self.command(f"{cmd} {data}")
        except Exception:   # a malformed command must never take the MQTT loop down
            log.exception("MQTT command on %s failed", msg.topic)

    def _mqtt_start(self) -> None:
        import paho.mqtt.client as mqtt

        host, port = self._mqtt_addr
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{self.device.client_id}-{self.topic}")
        c.will_set(f"tele/{self.topic}/LWT", "Offline", retain=True)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        self._mqtt = c
        c.connect(host, port)
        c.loop_start()

    def _tele_loop(self) -> None:
        """STATE then SENSOR every TelePeriod (ST, PerformEverySecond); the first 9 s after start
        as Tasmota after connecting; ``TelePeriod`` restarts the timer and, with 0, sends one
        last pair then stops."""
        wait = min(self.tele_period_s, 9.0) if self.tele_period_s > 0 else None
        while not self._stop.is_set():
            woke = self._tele_now.wait(wait)
            if self._stop.is_set():
                return
            self._tele_now.clear()
            if woke or wait is not None:
                self._publish(f"tele/{self.topic}/STATE",
                              json.dumps(state_object(self.device, datetime.now(), self.relay_on)))
                self._publish(f"tele/{self.topic}/SENSOR", json.dumps(self.telemetry()))
            wait = self.tele_period_s if self.tele_period_s > 0 else None

    # ------------------------------------------------------------------ lifecycle
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start sampling, HTTP and (if configured) MQTT; returns the bound address."""
        self.sample_once()
        self._http = ThreadingHTTPServer((host, port), _handler_for(self))
        self._http.daemon_threads = True
        if host not in ("0.0.0.0", "::", ""):
            self.device.ip = host
        if self._mqtt_addr:
            self._mqtt_start()
        for target in (self._sample_loop, self._tele_loop, self._http.serve_forever):
            th = threading.Thread(target=target, daemon=True)
            th.start()
            self._threads.append(th)
        return self._http.server_address[:2]

    def close(self) -> None:
        self._stop.set()
        self._tele_now.set()
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
        """Prometheus base units (joules, watts, volts, amperes, ``_ratio``).  The energy counter
        exported is the total *persisted* before this scrape, so a meter killed at any instant
        restarts from a value at least as large as any it ever exported: the counter never goes
        backwards across SIGKILL (Prometheus would read that as a reset and rate() would spike)."""
        m = self.meter
        saved = m.integrator.persist()
        s = m.snapshot()
        labels = ["topic"]

        def gauge(name, doc, value):
            g = GaugeMetricFamily(name, doc, labels=labels)
            g.add_metric([m.topic], value)
            return g
        yield gauge("edgelab_power_watts", "Active power at the plug", s.power_w)
        yield gauge("edgelab_apparent_power_voltamperes", "Apparent power at the plug", s.apparent_va or 0.0)
        yield gauge("edgelab_voltage_volts", "Mains voltage", s.voltage_v)
        yield gauge("edgelab_current_amperes", "Current drawn", s.current_a)
        yield gauge("edgelab_power_factor_ratio", "Power factor (active / apparent power)", s.factor)
        yield gauge("edgelab_energy_today_joules", "Energy since local midnight (Tasmota Today)",
                    saved.today_kwh * J_PER_KWH)
        yield gauge("edgelab_relay_on", "1 when the plug relay is on", 1.0 if m.relay_on else 0.0)
        yield gauge("edgelab_tele_period_seconds", "Tasmota TelePeriod (0 = telemetry off)", m.tele_period)
        c = CounterMetricFamily("edgelab_energy_joules", "Energy since TotalStartTime (persisted before export)",
                                labels=labels, created=saved.total_start_time)
        c.add_metric([m.topic], saved.total_kwh * J_PER_KWH, created=saved.total_start_time)
        yield c
        e = CounterMetricFamily("edgelab_power_read_errors", "Failed reads of the power source", labels=labels)
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
