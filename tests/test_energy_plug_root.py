"""End to end, as root: ``faas_energy --power-source plug`` against edgelab meters started as real
plugs (separate processes serving Tasmota's HTTP API on loopback, read the way a real plug is),
with two functions at once per worker; and ``wifi_scaling --mode tflite`` on the phones."""

from __future__ import annotations

import csv
import json

import pytest

from svhelpers import service, url_of
from test_experiments import aggregates, no_testbed_left, only_run, root, run_script

PLUG_W = {"worker-1": 2.0, "worker-2": 3.0}


def union_seconds(spans: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


@root
def test_faas_energy_reads_real_plugs_and_splits_a_shared_worker(tmp_path):
    with service("edgelab.services.power", "--port", "0", "--watts", str(PLUG_W["worker-1"]),
                 "--interval", "0.1", "--topic", "sv_plug_w1") as (_, l1), \
         service("edgelab.services.power", "--port", "0", "--watts", str(PLUG_W["worker-2"]),
                 "--interval", "0.1", "--topic", "sv_plug_w2") as (_, l2):
        inv = tmp_path / "plugs.yaml"
        inv.write_text(f"plugs:\n  worker-1: {url_of(l1)}\n  worker-2: {url_of(l2)}\n")
        r = run_script("faas_energy", "--workers", "2", "--per-worker", "6", "--slots", "2", "--prometheus",
                       "--power-source", "plug", "--plugs", str(inv), results=tmp_path / "full")
        assert r.returncode == 0, r.stderr[-3000:]
        # the same with worker-2's plug missing from the inventory: coverage says so, no mean
        inv.write_text(f"plugs:\n  worker-1: {url_of(l1)}\n")
        r2 = run_script("faas_energy", "--workers", "2", "--per-worker", "6", "--power-source", "plug",
                        "--plugs", str(inv), "--no-report", results=tmp_path / "half")
        assert r2.returncode != 0, "a point with half its energy missing is not a result"

    run = only_run(tmp_path / "full", "faas_energy")
    agg = aggregates(run)
    point = "n_workers=2,rep=0"
    assert agg[(point, "failed")] == 0 and agg[(point, "energy_coverage")] == 1.0
    raw = next((run / "raw").iterdir())
    bench = json.loads((raw / "bench.json").read_text())
    done = [x for x in bench["records"] if x["status"] == "done"]
    assert len(done) == 12 and all(x["cpu_s"] > 0 for x in done)
    assert {x["worker"] for x in done} <= {"worker-1/0", "worker-1/1", "worker-2/0", "worker-2/1"}
    # the plugs' energy over each node's busy time, divided among its invocations: a constant
    # plug makes that exactly P x (union of the node's run intervals)
    expected = sum(PLUG_W[n] * union_seconds([(x["start"], x["end"]) for x in done
                                              if x["worker"].startswith(n + "/")]) for n in PLUG_W)
    assert agg[(point, "energy_per_invocation_j")] * len(done) == pytest.approx(expected, rel=0.05)
    sources = json.loads((raw / "power_sources.json").read_text())
    assert sources["power_source"] == "plug" and sources["nodes"]["worker-1"].startswith("plug http://")
    with open(run / "measurements.csv") as f:
        power = {r["node"]: float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "power_w" and r["node"]}
    assert power == {"worker-1": pytest.approx(2.0, abs=0.05), "worker-2": pytest.approx(3.0, abs=0.05)}

    # the run's Prometheus server scraped both plugs; the report plots power over time from it
    from edgelab.prometheus import read_series

    series = read_series(raw / "prometheus_series.csv", "edgelab_power_watts")
    by_topic = {k.split("topic=")[1]: [v for _, v in pts] for k, pts in series.items()}
    assert by_topic.keys() == {"sv_plug_w1", "sv_plug_w2"} and set(by_topic["sv_plug_w2"]) == {3.0}
    assert (raw / "prometheus" / "tsdb").is_dir()
    assert list(run.rglob("*power-time*.png")) and "Plug power over time" in next(run.rglob("summary.md")).read_text()

    # the point says so: its health records the coverage, and it never enters measurements.csv
    half_run = only_run(tmp_path / "half", "faas_energy")
    health = json.loads((half_run / "health.json").read_text())[point]
    assert not health["healthy"]
    check = next(c for c in health["checks"] if "node energy was measured" in c["name"])
    assert not check["ok"] and 0.2 < check["value"] < 0.8
    assert not (half_run / "measurements.csv").exists() or (point, "energy_per_invocation_j") not in aggregates(half_run)
    raw_half = next((half_run / "raw").iterdir())
    assert json.loads((raw_half / "power_sources.json").read_text())["nodes"]["worker-2"].startswith("none")
    no_testbed_left("faas")


@root
def test_wifi_scaling_tflite_reports_phone_cpu_per_request(tmp_path):
    r = run_script("wifi_scaling", "--mode", "tflite", "--inference", "phone", "--phones", "1,2",
                   "--seconds", "2", "--rate", "2", "--prometheus", results=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path, "wifi_scaling")
    agg = aggregates(run)
    for n in (1, 2):
        cpu = agg[(f"n_phones={n},rep=0", "phone_cpu_ms_per_request")]
        assert 5 < cpu < 2000          # a BlazeFace inference (and the upload) on the phone's CPU
        assert agg[(f"n_phones={n},rep=0", "error_rate")] == 0
    # the run's Prometheus (on the server node) scraped each phone's service over the Wi-Fi
    from edgelab.prometheus import read_series

    raw2 = next(p for p in (run / "raw").iterdir() if "n_phones-2" in p.name or "n_phones=2" in p.name)
    reqs = read_series(raw2 / "prometheus_series.csv", "edgelab_phone_requests_total")
    assert len(reqs) == 2 and all(pts[-1][1] >= 1 for pts in reqs.values())
    report = next(run.rglob("summary.md"))
    assert "phone CPU ms/request" in report.read_text()
    no_testbed_left("wifi")


@root
def test_wifi_scaling_reads_phone_plugs_and_reports_partial_coverage(tmp_path):
    with service("edgelab.services.power", "--port", "0", "--watts", "1.25", "--interval", "0.1",
                 "--topic", "sv_plug_ph1") as (_, line):
        inv = tmp_path / "plugs.yaml"
        inv.write_text(f"plugs:\n  phone-1: {url_of(line)}\n")
        r = run_script("wifi_scaling", "--phones", "1,2", "--seconds", "2", "--rate", "2", "--power-source", "plug",
                       "--plugs", str(inv), "--no-report", results=tmp_path)
    assert r.returncode != 0, "the N=2 point misses a phone's power: the run must not pass as complete"
    run = only_run(tmp_path, "wifi_scaling")
    agg = aggregates(run)
    assert agg[("n_phones=1,rep=0", "energy_coverage")] == 1.0
    assert agg[("n_phones=1,rep=0", "power_w_total")] == pytest.approx(1.25, abs=0.02)
    with open(run / "measurements.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "power_w"]
    assert [(r["node"], round(float(r["value"]), 2)) for r in rows] == [("phone-1", 1.25)]   # N=1 only
    health = json.loads((run / "health.json").read_text())["n_phones=2,rep=0"]
    check = next(c for c in health["checks"] if "plug measured" in c["name"])
    assert not health["healthy"] and not check["ok"] and check["value"] == 0.5
    raw2 = next(p for p in (run / "raw").iterdir() if "n_phones-2" in p.name)
    src = json.loads((raw2 / "power_sources.json").read_text())["nodes"]
    assert src["phone-1"].startswith("plug http://") and src["phone-2"].startswith("none")
    no_testbed_left("wifi")
