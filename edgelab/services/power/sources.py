"""Where power readings come from: a real Tasmota plug, or a CPU-utilisation model.

Every source has ``read() -> Reading``; the meter server and ``PowerSampler``
do not care which one they hold.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional, Protocol

import requests

from .tasmota import parse_energy


@dataclass
class Reading:
    power_w: float
    voltage_v: float = 230.0
    current_a: Optional[float] = None
    factor: float = 1.0
    apparent_va: Optional[float] = None
    reactive_var: Optional[float] = None
    extra: dict = field(default_factory=dict)

    def completed(self) -> "Reading":
        """Fill apparent power and current from P, PF and V when not measured."""
        apparent = self.apparent_va
        if apparent is None:
            apparent = self.power_w / self.factor if self.factor > 0 else self.power_w
        current = self.current_a
        if current is None:
            current = apparent / self.voltage_v if self.voltage_v > 0 else 0.0
        return Reading(self.power_w, self.voltage_v, current, self.factor, apparent,
                       self.reactive_var, dict(self.extra))


class PowerSource(Protocol):
    def read(self) -> Reading: ...


class SourceError(RuntimeError):
    """A power source could not produce a reading (plug unreachable, no telemetry yet)."""


# --------------------------------------------------------------------------- constant
@dataclass
class ConstantSource:
    """A fixed load: calibration, tests, or a node whose draw is known from a datasheet."""

    watts: float
    voltage_v: float = 230.0
    factor: float = 1.0

    def read(self) -> Reading:
        return Reading(self.watts, self.voltage_v, factor=self.factor).completed()


# --------------------------------------------------------------------------- model
@dataclass(frozen=True)
class DeviceClass:
    """Linear power model P = idle + (max - idle) * utilisation, at the wall plug."""

    name: str
    idle_w: float
    max_w: float
    cores: int
    source: str

    def power(self, utilisation: float) -> float:
        u = min(max(utilisation, 0.0), 1.0)
        return self.idle_w + (self.max_w - self.idle_w) * u


DEVICE_CLASSES: dict[str, DeviceClass] = {
    # Raspberry Pi figures: Jeff Geerling's Pi Dramble power benchmarks
    # (pidramble.com/wikis/benchmarks/power-consumption), Raspbian Lite, no
    # peripherals, 5 V: Pi 4 B idle 540 mA (2.7 W), `stress --cpu 4` 1280 mA (6.4 W);
    # Pi 3 B+ idle 350 mA (1.9 W), max CPU 980 mA (5.1 W); Pi 3 B idle 260 mA (1.4 W),
    # max CPU 730 mA (3.7 W).
    "rpi4": DeviceClass("rpi4", 2.7, 6.4, 4, "pidramble: Pi 4 B idle 540 mA / stress 1280 mA @5V"),
    "rpi3b+": DeviceClass("rpi3b+", 1.9, 5.1, 4, "pidramble: Pi 3 B+ idle 350 mA / max 980 mA @5V"),
    "rpi3": DeviceClass("rpi3", 1.4, 3.7, 4, "pidramble: Pi 3 B idle 260 mA / max 730 mA @5V"),
    # BeagleBone Black System Reference Manual, sec. 6.1.7, Table "BeagleBone Black
    # Power Consumption (mA@5V)": kernel idling, display blank 280 mA (1.4 W); kernel
    # booting peak 460 mA (2.3 W), used as the single-core full-load figure.
    "bbb": DeviceClass("bbb", 1.4, 2.3, 1, "BBB SRM 6.1.7: idle (display blank) 280 mA / boot peak 460 mA @5V"),
    # Smartphone used as a server (screen off, Wi-Fi on).  NOT from a verified
    # measurement: an order-of-magnitude estimate for a mid-range 8-core phone
    # (e.g. the Pixel 3a cloudlet of Switzer et al., "Junkyard Computing", ASPLOS'23).
    # Calibrate it with a real plug before quoting joules from it.
    "phone": DeviceClass("phone", 0.8, 5.0, 8, "estimate (uncalibrated): screen-off idle ~0.8 W, all-core ~5 W"),
}


def device_class(name: str) -> DeviceClass:
    try:
        return DEVICE_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown device class {name!r}; known: {', '.join(sorted(DEVICE_CLASSES))}") from None


# CPU time readers: each returns cumulative CPU seconds consumed so far.
def cgroup_cpu_seconds(cgroup_dir: os.PathLike) -> Callable[[], float]:
    """cgroup v1 ``cpuacct.usage`` (ns) or cgroup v2 ``cpu.stat`` ``usage_usec``."""
    d = Path(cgroup_dir)
    v1, v2 = d / "cpuacct.usage", d / "cpu.stat"
    if v1.exists():
        return lambda: int(v1.read_text()) / 1e9
    if v2.exists() and "usage_usec" in v2.read_text():
        def read_v2() -> float:
            for line in v2.read_text().splitlines():
                key, _, val = line.partition(" ")
                if key == "usage_usec":
                    return int(val) / 1e6
            raise SourceError(f"{v2}: no usage_usec line")
        return read_v2
    raise ValueError(f"{d}: neither cpuacct.usage (cgroup v1) nor cpu.stat with usage_usec (cgroup v2) "
                     "found; give the node's cgroup directory in the cpuacct hierarchy "
                     "(e.g. /sys/fs/cgroup/cpuacct/<node>) or its cgroup v2 directory")


def proc_cpu_seconds(pids: Iterable[int]) -> Callable[[], float]:
    """utime+stime (fields 14, 15 of /proc/<pid>/stat) summed over the given processes.

    A process that has exited contributes nothing from then on (its last value
    is kept, so the cumulative counter never goes backwards).
    """
    pids = list(pids)
    tick = os.sysconf("SC_CLK_TCK")
    last: dict[int, float] = {}

    def read() -> float:
        for pid in pids:
            try:
                raw = Path(f"/proc/{pid}/stat").read_text()
            except (FileNotFoundError, ProcessLookupError):
                continue
            # comm may contain spaces: split after the closing parenthesis
            fields = raw[raw.rindex(")") + 2:].split()
            last[pid] = (int(fields[11]) + int(fields[12])) / tick
        return sum(last.values())
    return read


class Utilisation:
    """CPU utilisation in [0, 1] of ``cores`` cores since the previous call."""

    def __init__(self, cpu_seconds: Callable[[], float], cores: float,
                 clock: Callable[[], float] = time.monotonic):
        self.cpu_seconds, self.cores, self.clock = cpu_seconds, cores, clock
        self._prev = (clock(), cpu_seconds())

    def __call__(self) -> float:
        now, cpu = self.clock(), self.cpu_seconds()
        t0, c0 = self._prev
        self._prev = (now, cpu)
        if now <= t0:
            return 0.0
        return min(max((cpu - c0) / ((now - t0) * self.cores), 0.0), 1.0)


class ModelledSource:
    """Power of a node modelled from its measured CPU utilisation.

    ``utilisation`` is any callable returning [0, 1] (e.g. ``Utilisation(...)``);
    pluggable so a cgroup, a process set or a test can drive it.
    """

    def __init__(self, device: DeviceClass | str, utilisation: Callable[[], float],
                 voltage_v: float = 230.0, factor: float = 1.0):
        self.device = device_class(device) if isinstance(device, str) else device
        self.utilisation = utilisation
        self.voltage_v, self.factor = voltage_v, factor

    def read(self) -> Reading:
        u = self.utilisation()
        r = Reading(self.device.power(u), self.voltage_v, factor=self.factor,
                    extra={"utilisation": u, "device": self.device.name})
        return r.completed()


# --------------------------------------------------------------------------- real plugs
def _reading_from_energy(energy: dict) -> Reading:
    def num(key: str) -> Optional[float]:
        v = energy.get(key)
        return float(v) if isinstance(v, (int, float)) else None
    return Reading(
        power_w=float(energy["Power"]),
        voltage_v=num("Voltage") or 0.0,
        current_a=num("Current"),
        factor=num("Factor") if num("Factor") is not None else 1.0,
        apparent_va=num("ApparentPower"),
        reactive_var=num("ReactivePower"),
        extra={"plug_total_kwh": num("Total")},
    )


class TasmotaHttpSource:
    """Polls a real (or edgelab-emulated) plug: ``GET <base>/cm?cmnd=Status%208``."""

    def __init__(self, base_url: str, timeout: float = 2.0, session: Optional[requests.Session] = None):
        self.url = base_url.rstrip("/") + "/cm"
        self.timeout = timeout
        self.session = session or requests.Session()

    def read(self) -> Reading:
        try:
            resp = self.session.get(self.url, params={"cmnd": "Status 8"}, timeout=self.timeout)
            resp.raise_for_status()
            return _reading_from_energy(parse_energy(resp.json()))
        except (requests.RequestException, ValueError) as exc:
            raise SourceError(f"plug at {self.url}: {exc}") from exc


class TasmotaMqttSource:
    """Latest ``tele/<topic>/SENSOR`` telemetry from a broker (topic ``+`` = any plug)."""

    def __init__(self, host: str, port: int = 1883, topic: str = "+", max_age_s: Optional[float] = None):
        import paho.mqtt.client as mqtt

        self.subscription = f"tele/{topic}/SENSOR"
        self.max_age_s = max_age_s
        self._latest: dict[str, tuple[float, Reading]] = {}
        self._cond = threading.Condition()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(self.subscription)
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            reading = _reading_from_energy(parse_energy(json.loads(msg.payload)))
        except (ValueError, KeyError, TypeError):
            return
        plug = msg.topic.split("/")[1]
        with self._cond:
            self._latest[plug] = (time.time(), reading)
            self._cond.notify_all()

    def latest(self) -> dict[str, Reading]:
        with self._cond:
            return {k: v[1] for k, v in self._latest.items()}

    def wait(self, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self._latest), timeout)

    def read(self) -> Reading:
        with self._cond:
            if not self._latest:
                raise SourceError(f"no telemetry yet on {self.subscription}")
            t, reading = max(self._latest.values(), key=lambda v: v[0])
        if self.max_age_s is not None and time.time() - t > self.max_age_s:
            raise SourceError(f"telemetry on {self.subscription} is {time.time() - t:.0f} s old")
        return reading

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def plug_source(spec: str):
    """A reader for one real plug: ``http://HOST[:PORT]`` (Tasmota HTTP API, ``Status 8``) or
    ``mqtt://BROKER[:PORT]/TOPIC`` (its ``tele/<TOPIC>/SENSOR`` telemetry)."""
    from urllib.parse import urlparse

    u = urlparse(spec)
    if u.scheme in ("http", "https") and u.netloc:
        return TasmotaHttpSource(spec)
    if u.scheme == "mqtt" and u.hostname and u.path.strip("/"):
        return TasmotaMqttSource(u.hostname, u.port or 1883, u.path.strip("/"))
    raise ValueError(f"plug {spec!r}: expected http://HOST[:PORT] or mqtt://BROKER[:PORT]/TOPIC")
