"""CLI: ``python -m edgelab.services.power --source modelled --device rpi4 --cgroup DIR``.

Prints one line ``LISTENING http://HOST:PORT`` on stdout once ready (so a
backend or a test started with ``--port 0`` learns the port), runs until
SIGTERM/SIGINT, then saves the energy state.
"""

from __future__ import annotations

import argparse
import logging
import sys

from ..lifecycle import serve_until_signalled

from .meter import PowerMeter
from .sources import (DEVICE_CLASSES, ConstantSource, ModelledSource, TasmotaHttpSource, TasmotaMqttSource,
                      Utilisation, cgroup_cpu_seconds, device_class, proc_cpu_seconds)
from .tasmota import Resolution


def build_source(a: argparse.Namespace):
    if a.source == "constant":
        return ConstantSource(a.watts, a.voltage, a.factor)
    if a.source == "modelled":
        dev = device_class(a.device)
        if a.cgroup:
            cpu = cgroup_cpu_seconds(a.cgroup)
        elif a.pids:
            cpu = proc_cpu_seconds(int(p) for p in a.pids.split(","))
        else:
            raise SystemExit("--source modelled needs --cgroup DIR or --pids PID[,PID...]")
        return ModelledSource(dev, Utilisation(cpu, a.cores or dev.cores), a.voltage, a.factor)
    if a.source == "tasmota-http":
        if not a.plug_url:
            raise SystemExit("--source tasmota-http needs --plug-url http://PLUG")
        return TasmotaHttpSource(a.plug_url)
    if a.source == "tasmota-mqtt":
        if not a.mqtt_host:
            raise SystemExit("--source tasmota-mqtt needs --mqtt-host")
        return TasmotaMqttSource(a.mqtt_host, a.mqtt_port, a.plug_topic)
    raise SystemExit(f"unknown source {a.source}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelab.services.power",
                                description="Tasmota-compatible power meter for one testbed node.")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081, help="HTTP port (0 = pick a free one)")
    p.add_argument("--topic", default="edgelab_plug", help="Tasmota topic (tele/<topic>/SENSOR)")
    p.add_argument("--source", choices=["constant", "modelled", "tasmota-http", "tasmota-mqtt"], default="constant")
    p.add_argument("--watts", type=float, default=0.0, help="constant source: power in W")
    p.add_argument("--device", default="rpi4", help=f"modelled: one of {', '.join(DEVICE_CLASSES)}")
    p.add_argument("--cores", type=float, help="modelled: cores that 100%% utilisation means (default: device's)")
    p.add_argument("--cgroup", help="modelled: cgroup dir of the node (cpuacct.usage or cpu.stat)")
    p.add_argument("--pids", help="modelled: comma-separated PIDs of the node's processes")
    p.add_argument("--plug-url", help="tasmota-http: base URL of a real plug")
    p.add_argument("--plug-topic", default="+", help="tasmota-mqtt: topic of the real plug")
    p.add_argument("--voltage", type=float, default=230.0)
    p.add_argument("--factor", type=float, default=1.0, help="power factor to report")
    p.add_argument("--interval", type=float, default=1.0, help="sampling interval s (Tasmota: 1 s)")
    p.add_argument("--tele-period", type=float, default=300.0, help="MQTT TelePeriod s (Tasmota default 300)")
    p.add_argument("--mqtt-host", help="broker to publish tele/<topic>/SENSOR to")
    p.add_argument("--mqtt-port", type=int, default=1883)
    p.add_argument("--state-file", help="JSON file keeping Total/Today/Yesterday across restarts")
    p.add_argument("--save-every", type=float, default=10.0, help="state file save period s")
    p.add_argument("--watt-res", type=int, default=2, help="decimals for W (Tasmota WattRes, its default 0)")
    p.add_argument("--energy-res", type=int, default=3, help="decimals for kWh (Tasmota EnergyRes)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr)

    meter = PowerMeter(build_source(a), topic=a.topic, interval_s=a.interval, state_file=a.state_file,
                       resolution=Resolution(energy=a.energy_res, watt=a.watt_res),
                       tele_period_s=a.tele_period, mqtt_host=a.mqtt_host,
                       mqtt_port=a.mqtt_port, save_every_s=a.save_every)
    serve_until_signalled(lambda: "http://%s:%d" % meter.serve(a.bind, a.port))
    meter.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
