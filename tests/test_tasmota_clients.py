"""The emulated plug as Tasmota's own clients see it.

Driven by independent libraries from PyPI: ``tasmotadevicecontroller`` (HTTP, its ``connect()``
runs ``Status``) and Home Assistant's ``hatasmota`` (validates the discovery messages and builds
the relay and energy entities from them), with paho-mqtt as an observer on a real mosquitto.
Also: ``promtool check metrics`` on /metrics and a SIGKILL loop against the energy counter.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edgelab.services.power.console import parse
from edgelab.services.power.tasmota import tasmota_payload, teleperiod_setting

from svhelpers import REPO, mosquitto, service, url_of

tdc = pytest.importorskip("tasmotadevicecontroller", reason="pip install -r requirements.txt (tasmotadevicecontroller)")
hatasmota_discovery = pytest.importorskip("hatasmota.discovery", reason="pip install -r requirements.txt (hatasmota)")
from tasmotadevicecontroller import TasmotaDevice, tasmota_types as tt  # noqa: E402


def cm(url: str, cmnd: str) -> dict:
    r = requests.get(url + "/cm", params={"cmnd": cmnd}, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def test_command_parsing_follows_tasmota_command_handler():
    assert parse("Status 8") == ("STATUS", 1, False, "8")
    assert parse("status10") == ("STATUS", 10, True, "")
    assert parse("FriendlyName2 My plug") == ("FRIENDLYNAME", 2, True, "My plug")
    assert parse("cmnd/plug/POWER off") == ("POWER", 1, False, "off")
    # strtol(data, 0): decimal, hex, octal; no leading digits -> -99; ON/OFF/TOGGLE -> 1/0/2
    assert [tasmota_payload(x) for x in ("60", "0x10", "010", "abc", "inf", "12abc", "-5", "on", "OFF", "toggle")] \
        == [60, 16, 8, -99, -99, 12, -5, 1, 0, 2]
    # CmndTeleperiod: 0 off, 1 -> 300, 2..9 -> 10, 10..3600 kept, anything else unchanged
    assert [teleperiod_setting(60, p) for p in (0, 1, 5, 10, 3600, 3601, -99, -5)] == [0, 300, 10, 10, 3600, 60, 60, 60]


def test_independent_http_client_connects_and_reads_every_status():
    with service("edgelab.services.power", "--port", "0", "--watts", "6.5", "--interval", "0.1",
                 "--topic", "sv_tdc") as (_, line):
        url = url_of(line)

        async def session():
            dev = await TasmotaDevice.connect(url, timeout=5)          # runs "Status " and checks the key
            got = {}
            for kind in tt.StatusType:
                if kind is tt.StatusType.STACK_DUMP:
                    with pytest.raises(tdc.CommandError):                # no crash recorded: Tasmota says Error
                        await dev.getStatus(kind)
                    continue
                got[kind] = await dev.getStatus(kind)
            off = await dev.setPower(tt.PowerType.OFF)
            state_after_off = await dev.getPower()
            on = await dev.setPower(tt.PowerType.TOGGLE)
            name = await dev.setFriendlyName("rack 3 plug")
            return got, off, state_after_off, on, name, await dev.getFriendlyName()

        got, off, after_off, on, name, name_back = asyncio.run(session())
    s = tt.StatusType
    assert list(got[s.ABBREVIATED]) == ["Status"]
    assert got[s.ABBREVIATED]["Status"]["Topic"] == "sv_tdc"
    assert list(got[s.ALL]) == ["Status", "StatusPRM", "StatusFWR", "StatusLOG", "StatusMEM", "StatusNET",
                                "StatusMQT", "StatusTIM", "StatusPTH", "StatusSNS", "StatusSTS"]
    assert list(got[s.DEVICE_PARAMETERS]) == ["StatusPRM"] and "Uptime" in got[s.DEVICE_PARAMETERS]["StatusPRM"]
    assert got[s.LOGGING_AND_TELEMETRY]["StatusLOG"]["TelePeriod"] == 300
    assert got[s.NETWORK]["StatusNET"]["Mac"].count(":") == 5
    assert got[s.CONNECTED_SENSOR]["StatusSNS"]["ENERGY"]["Power"] == 6.5
    assert list(got[s.TELE_PERIOD]) == ["StatusSTS"] and got[s.TELE_PERIOD]["StatusSTS"]["POWER"] == "ON"
    assert (off, after_off, on) == (False, False, True)
    assert name == name_back == "rack 3 plug"


def test_bad_values_get_tasmotas_answers_and_the_connection_survives():
    with service("edgelab.services.power", "--port", "0", "--watts", "2", "--interval", "0.1") as (_, line):
        url = url_of(line)
        assert cm(url, "TelePeriod") == {"TelePeriod": 300}
        assert cm(url, "TelePeriod 1") == {"TelePeriod": 300}
        assert cm(url, "TelePeriod 5") == {"TelePeriod": 10}
        for bad in ("abc", "inf", "-3", "3601"):
            assert cm(url, f"TelePeriod {bad}") == {"TelePeriod": 10}      # unchanged
        assert cm(url, "TelePeriod 1e9") == {"TelePeriod": 300}            # strtol reads "1"
        assert cm(url, "TelePeriod 0") == {"TelePeriod": 0}
        assert cm(url, "Status 99") == {"Command": "Error"}
        assert cm(url, "Status 12") == {"Command": "Error"}
        assert list(cm(url, "Status abc")) == ["Status"]               # payload -99: the plain Status
        assert cm(url, "Power maybe") == {"POWER": "ON"}                # POWER_SHOW_STATE
        assert cm(url, "FriendlyName9 x") == {"Command": "Error"}
        assert cm(url, "FriendlyName1 " + "n" * 100) == {"FriendlyName1": "n" * 32}
        assert cm(url, "FriendlyName 1") == {"FriendlyName1": "Tasmota"}   # "1" resets to the default
        assert cm(url, "Backlog Power off; FriendlyName2 second") == {}
        assert cm(url, "Power") == {"POWER": "OFF"} and cm(url, "FriendlyName2") == {"FriendlyName2": "second"}
        assert cm(url, "Nonsense 1") == {"Command": "Unknown"}
        assert cm(url, "") == {"Command": "Unknown"}
        assert cm(url, "\x00\xff;;;") == {"Command": "Unknown"}
        assert "ENERGY" in cm(url, "Status 8")["StatusSNS"]             # still serving


class Observer:
    """paho-mqtt subscriber on the broker, recording (topic, payload, retain)."""

    def __init__(self, port: int, topics=("#",)):
        self.got: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.c.on_message = self._on
        self.c.connect("127.0.0.1", port)
        for t in topics:
            self.c.subscribe(t)
        self.c.loop_start()

    def _on(self, c, u, msg):
        with self.cond:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))
            self.cond.notify_all()

    def wait_for(self, pred, timeout=10.0):
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.got), timeout), f"not seen; got {[g[0] for g in self.got]}"

    def payloads(self, topic):
        with self.cond:
            return [p for t, p, _ in self.got if t == topic]

    def close(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_mqtt_commands_stat_replies_discovery_state_and_info():
    with mosquitto() as port:
        with service("edgelab.services.power", "--port", "0", "--watts", "4.25", "--interval", "0.1",
                     "--topic", "sv_mq", "--tele-period", "0.5", "--mqtt-host", "127.0.0.1",
                     "--mqtt-port", str(port)) as (_, line):
            obs = Observer(port, ["stat/sv_mq/#", "tele/sv_mq/#"])
            try:
                obs.wait_for(lambda g: any(t == "tele/sv_mq/STATE" for t, _, _ in g))
                obs.c.publish("cmnd/sv_mq/POWER", "OFF")
                obs.wait_for(lambda g: any(t == "stat/sv_mq/POWER" for t, _, _ in g))
                obs.c.publish("cmnd/sv_mq/Status", "10")
                obs.c.publish("cmnd/sv_mq/TelePeriod", "abc")
                obs.c.publish("cmnd/sv_mq/Backlog", "FriendlyName1 via mqtt; Power1 on")
                obs.wait_for(lambda g: sum(t == "stat/sv_mq/POWER" for t, _, _ in g) >= 2)
                obs.wait_for(lambda g: any(t == "stat/sv_mq/STATUS10" for t, _, _ in g))
                # discovery: a fresh subscriber gets both messages retained
                late = Observer(port, ["tasmota/discovery/#"])
                try:
                    late.wait_for(lambda g: sum(t.startswith("tasmota/discovery/") for t, _, _ in g) >= 2)
                    disc = {t.rsplit("/", 1)[1]: (t, json.loads(p), r) for t, p, r in late.got}
                finally:
                    late.close()
                assert requests.get(url_of(line) + "/cm", params={"cmnd": "Power"}, timeout=5).json() == {"POWER": "ON"}
            finally:
                obs.close()

    assert obs.payloads("stat/sv_mq/POWER")[:2] == [b"OFF", b"ON"]
    results = [json.loads(p) for p in obs.payloads("stat/sv_mq/RESULT")]
    assert {"POWER": "OFF"} in results and {"FriendlyName1": "via mqtt"} in results
    assert {"TelePeriod": 0} in results or {"TelePeriod": 1} in results   # abc: unchanged setting echoed
    assert json.loads(obs.payloads("stat/sv_mq/STATUS10")[0])["StatusSNS"]["ENERGY"]["Power"] in (0, 4.25)
    info = {t.rsplit("/", 1)[1]: json.loads(p) for t, p, _ in obs.got if "/INFO" in t}
    assert set(info) <= {"INFO1", "INFO2", "INFO3"}
    state = json.loads(obs.payloads("tele/sv_mq/STATE")[0])
    assert {"Time", "Uptime", "UptimeSec", "POWER", "Wifi"} <= set(state)

    # Home Assistant's own parser accepts the discovery messages and builds the entities
    (ctopic, config, cret), (_, sensors, sret) = disc["config"], disc["sensors"]
    assert cret and sret, "discovery messages must be retained"
    mac = ctopic.split("/")[2]
    msg = hatasmota_discovery.TasmotaDiscoveryMsg(config)                  # voluptuous schema
    assert msg["mac"] == mac and msg["t"] == "sv_mq"
    switches = hatasmota_discovery.get_switch_entities(msg)
    relay = next(cfg for cfg, _ in switches if cfg is not None)
    # HA switches the relay with <command_topic>POWER1 (hatasmota relay.py set_state), the topic
    # this test drove as cmnd/sv_mq/POWER (index 1 either way); it reads the state from STATE
    assert relay.command_topic == "cmnd/sv_mq/" and relay.state_topic == "tele/sv_mq/STATE"
    entities = hatasmota_discovery.get_sensor_entities(sensors, msg)
    names = {cfg.unique_id for cfg, _ in entities}
    assert any("ENERGY_Power" in n for n in names) and any("ENERGY_Total" in n for n in names)


def test_teleperiod_command_restarts_the_timer_and_zero_stops_telemetry():
    with mosquitto() as port:
        with service("edgelab.services.power", "--port", "0", "--watts", "1", "--interval", "0.1",
                     "--topic", "sv_tp", "--tele-period", "3600", "--mqtt-host", "127.0.0.1",
                     "--mqtt-port", str(port)) as (_, line):
            obs = Observer(port, ["tele/sv_tp/SENSOR"])
            try:
                time.sleep(0.5)
                assert not obs.got                                   # first telemetry is 9 s away
                t0 = time.monotonic()
                assert cm(url_of(line), "TelePeriod 10") == {"TelePeriod": 10}
                obs.wait_for(lambda g: len(g) >= 1, timeout=3)      # at once, not after the old wait
                assert time.monotonic() - t0 < 3
                assert cm(url_of(line), "TelePeriod 0") == {"TelePeriod": 0}
                obs.wait_for(lambda g: len(g) >= 2, timeout=3)      # one last message, then none
                n = len(obs.got)
                time.sleep(1.5)
                assert len(obs.got) == n
            finally:
                obs.close()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing (Debian 'prometheus'; scripts/bootstrap)")
def test_promtool_check_metrics_is_clean():
    with service("edgelab.services.power", "--port", "0", "--watts", "3", "--interval", "0.1") as (_, line):
        time.sleep(0.3)
        text = requests.get(url_of(line) + "/metrics", timeout=5).text
    r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True, timeout=30)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"edgelab_energy_joules", "edgelab_power_watts", "edgelab_voltage_volts", "edgelab_current_amperes",
            "edgelab_power_factor_ratio"} <= names


def test_energy_counter_never_decreases_across_sigkill(tmp_path):
    """Scrape, SIGKILL at once, restart: every exported value must be <= every later one."""
    state = tmp_path / "plug.json"
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1")
    seen: list[float] = []
    for i in range(6):
        p = subprocess.Popen([sys.executable, "-m", "edgelab.services.power", "--port", "0", "--watts", "3600",
                              "--interval", "0.05", "--state-file", str(state), "--save-every", "10"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=REPO)
        try:
            url = p.stdout.readline().split()[1]
            for _ in range(3 + i):
                text = requests.get(url + "/metrics", timeout=5).text
                seen += [s.value for f in text_string_to_metric_families(text) if f.name == "edgelab_energy_joules"
                         for s in f.samples if s.name.endswith("_total")]
                time.sleep(0.05 * i)
        finally:
            p.send_signal(signal.SIGKILL)
            p.wait()
            p.stdout.close()
    assert len(seen) >= 20
    assert all(b >= a for a, b in zip(seen, seen[1:])), seen
    assert seen[-1] > seen[0]
