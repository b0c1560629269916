"""Power meter: Tasmota JSON shapes, MQTT telemetry, energy integration, restart, sources."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edgelab.services.power import (ConstantSource, EnergyIntegrator, ModelledSource, PowerSampler,
                                    TasmotaHttpSource, TasmotaMqttSource, Utilisation, cgroup_cpu_seconds,
                                    device_class, proc_cpu_seconds)
from edgelab.services.power.tasmota import parse_energy

from svhelpers import mosquitto, service, url_of

ENERGY_KEYS = ["TotalStartTime", "Total", "Yesterday", "Today", "Power", "ApparentPower",
               "ReactivePower", "Factor", "Voltage", "Current"]
TIME_FMT = "%Y-%m-%dT%H:%M:%S"


def metrics(url: str) -> dict:
    text = requests.get(url + "/metrics", timeout=5).text
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_status8_and_status10_have_tasmota_shape(tmp_path):
    with service("edgelab.services.power", "--port", "0", "--watts", "60", "--factor", "0.5",
                 "--interval", "0.2", "--topic", "sv_plug_a") as (_, line):
        url = url_of(line)
        for cmnd in ("Status 8", "Status 10", "Status8"):
            body = requests.get(url + "/cm", params={"cmnd": cmnd}, timeout=5).json()
            assert list(body) == ["StatusSNS"]
            sns = body["StatusSNS"]
            assert list(sns) == ["Time", "ENERGY"]
            time.strptime(sns["Time"], TIME_FMT)
            e = sns["ENERGY"]
            assert list(e) == ENERGY_KEYS          # Tasmota's key order
            time.strptime(e["TotalStartTime"], TIME_FMT)
            assert e["Power"] == 60.0
            assert e["Factor"] == 0.5
            assert e["ApparentPower"] == pytest.approx(120.0)             # P / PF
            assert e["ReactivePower"] == pytest.approx((120**2 - 60**2) ** 0.5, abs=0.01)
            assert e["Voltage"] == 230 and isinstance(e["Voltage"], int)  # VoltRes 0
            assert e["Current"] == pytest.approx(120 / 230, abs=1e-3)     # A, AmpRes 3
            assert e["Total"] >= e["Today"] >= 0
        # the exact URL a real plug is polled with (space encoded as %20)
        raw = requests.get(url + "/cm?cmnd=Status%208", timeout=5).json()
        assert "ENERGY" in raw["StatusSNS"]
        assert requests.get(url + "/cm?cmnd=Power", timeout=5).json() == {"POWER": "ON"}
        assert requests.get(url + "/cm?cmnd=Power%20Off", timeout=5).json() == {"POWER": "OFF"}
        time.sleep(0.5)
        e = requests.get(url + "/cm?cmnd=Status%208", timeout=5).json()["StatusSNS"]["ENERGY"]
        assert e["Power"] == 0                     # relay off: the node is unpowered
        assert requests.get(url + "/cm?cmnd=Bogus", timeout=5).json() == {"Command": "Unknown"}


def test_energy_integration_prometheus_and_restart(tmp_path):
    state = tmp_path / "sv_meter_state.json"
    args = ["--port", "0", "--watts", "3600", "--interval", "0.1", "--state-file", str(state),
            "--energy-res", "5", "--save-every", "0.5"]
    with service("edgelab.services.power", *args) as (_, line):
        url = url_of(line)
        m0, t0 = metrics(url), time.monotonic()
        time.sleep(2.0)
        m1, t1 = metrics(url), time.monotonic()
        e = requests.get(url + "/cm?cmnd=Status%208", timeout=5).json()["StatusSNS"]["ENERGY"]
    joules = m1["edgelab_energy_joules_total"] - m0["edgelab_energy_joules_total"]
    expected = 3600 * (t1 - t0)                                   # 3600 W
    # scrape instants and sample instants differ by at most one 0.1 s interval each side
    assert joules == pytest.approx(expected, abs=3600 * 0.25)
    assert m1["edgelab_power_watts"] == 3600
    assert e["Total"] * 3.6e6 == pytest.approx(m1["edgelab_energy_joules_total"], abs=2e-4 * 3.6e6)
    saved = json.loads(state.read_text())
    assert saved["total_kwh"] * 3.6e6 >= m1["edgelab_energy_joules_total"] - 1e-6   # saved at SIGTERM
    before_restart = saved["total_kwh"] * 3.6e6
    with service("edgelab.services.power", *args) as (_, line):
        url = url_of(line)
        m2 = metrics(url)
        assert m2["edgelab_energy_joules_total"] >= before_restart             # survived restart
        time.sleep(0.5)
        m3 = metrics(url)
        assert m3["edgelab_energy_joules_total"] > m2["edgelab_energy_joules_total"]   # and keeps counting
        # the interval while it was down is not invented
        assert m2["edgelab_energy_joules_total"] - before_restart < 3600 * 0.5


def test_mqtt_telemetry_topic_and_shape():
    with mosquitto() as port:
        got: list = []
        ev = threading.Event()
        sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)

        def on_message(c, u, msg):
            got.append((msg.topic, msg.payload))
            if msg.topic.endswith("/SENSOR") and sum(t.endswith("/SENSOR") for t, _ in got) >= 2:
                ev.set()
        sub.on_message = on_message
        sub.connect("127.0.0.1", port)
        sub.subscribe("tele/#")
        sub.loop_start()
        try:
            with service("edgelab.services.power", "--port", "0", "--watts", "7.5", "--interval", "0.1",
                         "--topic", "sv_plug_m", "--tele-period", "0.5", "--mqtt-host", "127.0.0.1",
                         "--mqtt-port", str(port)) as (_, line):
                assert ev.wait(10), f"no telemetry, got {got}"
        finally:
            sub.loop_stop()
            sub.disconnect()
    topics = {t for t, _ in got}
    assert "tele/sv_plug_m/SENSOR" in topics and "tele/sv_plug_m/LWT" in topics
    sensor = [json.loads(p) for t, p in got if t == "tele/sv_plug_m/SENSOR"]
    for s in sensor:
        assert list(s) == ["Time", "ENERGY"]
        assert list(s["ENERGY"]) == ENERGY_KEYS[:4] + ["Period"] + ENERGY_KEYS[4:]
        assert s["ENERGY"]["Power"] == 7.5
    # Period is Wh since the previous telemetry: 7.5 W * 0.5 s = 1.04 mWh -> rounds to 0.00 at WattRes 2
    assert all(0 <= s["ENERGY"]["Period"] <= 0.01 for s in sensor)
    assert {p for t, p in got if t.endswith("/LWT")} >= {b"Online"}


def test_real_plug_sources_read_emulated_plug():
    """The 'real' readers, pointed at an edgelab meter, must see what it serves."""
    with mosquitto() as port:
        with service("edgelab.services.power", "--port", "0", "--watts", "12.34", "--interval", "0.1",
                     "--topic", "sv_plug_r", "--tele-period", "0.3", "--mqtt-host", "127.0.0.1",
                     "--mqtt-port", str(port)) as (_, line):
            r = TasmotaHttpSource(url_of(line)).read()
            assert r.power_w == 12.34 and r.voltage_v == 230
            src = TasmotaMqttSource("127.0.0.1", port, "sv_plug_r")
            try:
                assert src.wait(5)
                assert src.read().power_w == 12.34
                assert set(src.latest()) == {"sv_plug_r"}
            finally:
                src.close()
            # a meter that relays another plug (tasmota-http source) serves the same power
            with service("edgelab.services.power", "--port", "0", "--source", "tasmota-http",
                         "--plug-url", url_of(line), "--interval", "0.1") as (_, line2):
                e = parse_energy(requests.get(url_of(line2) + "/cm?cmnd=Status%208", timeout=5).json())
                assert e["Power"] == 12.34


def test_energy_integrator_trapezoid_monotonic_and_rollover(tmp_path):
    integ = EnergyIntegrator(tmp_path / "sv_state.json", save_every_s=0)
    t0 = time.mktime((2024, 5, 1, 23, 59, 0, 0, 0, -1))
    integ.add(t0, 0.0)
    integ.add(t0 + 30, 10.0)       # ramp 0 -> 10 W over 30 s: 150 J
    assert integ.total_j == pytest.approx(150.0)
    integ.add(t0 + 20, 10.0)       # clock stepped back: nothing subtracted, new baseline
    assert integ.total_j == pytest.approx(150.0)
    integ.add(t0 + 30, -5.0)       # from the new baseline: (10 + 0 clamped)/2 * 10 s = 50 J
    assert integ.total_j == pytest.approx(200.0)
    integ.add(t0 + 90, 10.0)       # 00:00:30 next day: (0 + 10)/2 * 60 s = 300 J, day rolls over
    assert integ.total_j == pytest.approx(500.0)
    st = integ.state
    assert st.yesterday_kwh == pytest.approx(200.0 / 3.6e6)
    assert st.today_kwh == pytest.approx(300.0 / 3.6e6)
    again = EnergyIntegrator(tmp_path / "sv_state.json")
    assert again.state.total_kwh == pytest.approx(st.total_kwh)


def test_modelled_source_from_process_cpu_and_cgroup(tmp_path):
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        util = Utilisation(proc_cpu_seconds([spin.pid]), cores=1)
        src = ModelledSource("bbb", util)
        time.sleep(1.0)
        r = src.read()
        # one busy process on one "BBB core": close to max power (other helpers share the CPU)
        assert r.extra["utilisation"] > 0.4
        bbb = device_class("bbb")
        assert bbb.idle_w < r.power_w <= bbb.max_w
    finally:
        spin.kill()
        spin.wait()
    idle = ModelledSource("rpi4", lambda: 0.0).read()
    assert idle.power_w == device_class("rpi4").idle_w
    # cgroup v1 cpuacct.usage (ns) and v2 cpu.stat readers on fake files with known counters
    v1 = tmp_path / "sv_v1"
    v1.mkdir()
    (v1 / "cpuacct.usage").write_text("2500000000\n")
    assert cgroup_cpu_seconds(v1)() == pytest.approx(2.5)
    v2 = tmp_path / "sv_v2"
    v2.mkdir()
    (v2 / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    assert cgroup_cpu_seconds(v2)() == pytest.approx(1.5)
    with pytest.raises(ValueError, match="cpuacct.usage"):
        cgroup_cpu_seconds(tmp_path)
    with pytest.raises(ValueError, match="known"):
        device_class("toaster")


def test_power_sampler_energy_and_energy_between():
    with PowerSampler({"sv_n1": ConstantSource(2.0), "sv_n2": ConstantSource(5.0)}, interval=0.05) as s:
        time.sleep(1.0)
    rec = s.records()
    assert {r["node"] for r in rec} == {"sv_n1", "sv_n2"}
    assert set(rec[0]) == {"time", "node", "power_w", "energy_j"}
    for node, watts in (("sv_n1", 2.0), ("sv_n2", 5.0)):
        ss = s.samples(node)
        span = ss[-1].time - ss[0].time
        assert s.energy_j(node) == pytest.approx(watts * span, rel=1e-6)
        assert all(a.energy_j <= b.energy_j for a, b in zip(ss, ss[1:]))
        mid0, mid1 = ss[0].time + 0.2, ss[0].time + 0.6
        assert s.energy_between(node, mid0, mid1) == pytest.approx(watts * 0.4, rel=1e-6)
    assert s.energy_between("sv_n1", ss[0].time - 10, ss[0].time) is None


@pytest.mark.root
def test_modelled_source_from_real_cgroup_v1():
    base = Path("/sys/fs/cgroup/cpuacct")
    if os.geteuid() != 0 or not (base / "cpuacct.usage").exists():
        pytest.skip("needs root and a cgroup v1 cpuacct hierarchy at /sys/fs/cgroup/cpuacct")
    cg = base / f"sv_power_test_{os.getpid()}"
    cg.mkdir()
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<3: pass"])
    try:
        (cg / "cgroup.procs").write_text(str(spin.pid))
        src = ModelledSource("rpi3", Utilisation(cgroup_cpu_seconds(cg), cores=4))
        time.sleep(1.0)
        r = src.read()
        # one busy process in the cgroup = one of the Pi's four cores
        assert 0.1 < r.extra["utilisation"] <= 0.26
        assert r.power_w == pytest.approx(device_class("rpi3").power(r.extra["utilisation"]))
    finally:
        spin.kill()
        spin.wait()
        cg.rmdir()
