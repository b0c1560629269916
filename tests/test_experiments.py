"""Experiment scripts: their sweep logic (pure) and, as root, end-to-end runs on the
local backend whose measurements are checked against what the emulation must produce."""

from __future__ import annotations

import csv
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

wifi_scaling = importlib.import_module("wifi_scaling")
network_topologies = importlib.import_module("network_topologies")
folding = importlib.import_module("folding")
faas_energy = importlib.import_module("faas_energy")

root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, cgroups)")


# ------------------------------------------------------------------ sweep logic (pure)
def test_wifi_quick_and_full_defaults():
    quick = wifi_scaling.parse_args([])
    assert (quick.phones, quick.reps, quick.seconds) == ([1, 2, 4, 8, 12], 1, 4.0)
    full = wifi_scaling.parse_args(["--full"])
    assert full.phones[-1] == 64 and full.reps == 3
    pts = wifi_scaling.sweep_points([1, 2], 2)
    assert pts == [{"n_phones": 1, "rep": 0}, {"n_phones": 1, "rep": 1}, {"n_phones": 2, "rep": 0},
                   {"n_phones": 2, "rep": 1}]


def test_network_topologies_sweeps_hops_only_for_the_mesh():
    pts = network_topologies.sweep_points(["wifi", "batman-mesh"], [1, 4], [1, 2, 3], [1], [2.0, 8.0], 1)
    wifi = [p for p in pts if p["network"] == "wifi"]
    mesh = [p for p in pts if p["network"] == "batman-mesh"]
    assert {p["hops"] for p in wifi} == {1} and len(wifi) == 2 * 2
    assert sorted({p["hops"] for p in mesh}) == [1, 2, 3] and {p["n_phones"] for p in mesh} == {1}
    assert len(mesh) == 3 * 2
    assert len({json.dumps(p, sort_keys=True) for p in pts}) == len(pts)


def test_network_topologies_rejects_an_unknown_kind(capsys):
    with pytest.raises(SystemExit) as e:
        network_topologies.parse_args(["--networks", "wifi,lora"])
    assert e.value.code == 2
    assert "unknown network kind(s) lora" in capsys.readouterr().err


def test_folding_interleaves_repetitions_and_checks_the_tolerance(capsys):
    assert folding.sweep_points([1, 2, 4], 2) == [{"factor": f, "rep": r} for r in (0, 1) for f in (1, 2, 4)]
    a = folding.parse_args(["--factors", "4,1,2,2"])
    assert a.factors == [1, 2, 4] and a.reps == 3
    assert a.tolerance == 0.10 and folding.parse_args(["--full"]).tolerance == 0.05
    assert folding.parse_args(["--tolerance", "0.05"]).tolerance == 0.05
    with pytest.raises(SystemExit):
        folding.parse_args(["--tolerance", "5"])
    assert "--tolerance must be a fraction" in capsys.readouterr().err


def test_folding_measures_the_baseline_twice_per_round_bracketing_the_others():
    a = folding.parse_args([])
    assert a.baseline_weight == 2
    assert folding.sweep_points([1, 2, 4], 2, baseline_weight=2) == [
        {"factor": 1, "rep": 0}, {"factor": 2, "rep": 0}, {"factor": 4, "rep": 0}, {"factor": 1, "rep": 1},
        {"factor": 1, "rep": 2}, {"factor": 2, "rep": 1}, {"factor": 4, "rep": 1}, {"factor": 1, "rep": 3}]
    with pytest.raises(SystemExit):
        folding.parse_args(["--baseline-weight", "0"])


def test_faas_energy_rejects_an_unknown_function(capsys):
    assert faas_energy.sweep_points([1, 2], 1) == [{"n_workers": 1, "rep": 0}, {"n_workers": 2, "rep": 0}]
    with pytest.raises(SystemExit):
        faas_energy.parse_args(["--functions", "float_operations,mine"])
    assert "unknown function(s) mine" in capsys.readouterr().err


# ------------------------------------------------------------------ end to end (root)
def run_script(name: str, *args: str, results: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / f"{name}.py"), "--results", str(results),
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def only_run(results: Path, experiment: str) -> Path:
    (run,) = (results / experiment).iterdir()
    return run


def aggregates(run: Path) -> dict[tuple, float]:
    """(point, metric) -> value of the aggregate rows (node empty)."""
    with open(run / "measurements.csv") as f:
        return {(r["point"], r["metric"]): float(r["value"]) for r in csv.DictReader(f) if not r["node"]}


def no_testbed_left(base: str) -> None:
    """Nothing left of the experiment's testbed, named ``<base>-<pid>`` (experiment.testbed_name)."""
    from local_helpers import leftovers, named_testbeds

    for name in {base} | named_testbeds(rf"{base}-\d+"):
        assert leftovers(name) == {}, name


@pytest.mark.measures(reruns=1)   # 50 s: one rerun at most
@root
def test_wifi_scaling_goodput_follows_offered_load_then_the_airtime_budget(tmp_path):
    # 5 Mbit/s per phone: 1 and 3 phones fit in the budget (A-MPDU aggregation: 56 / 52 Mbit/s);
    # 14 phones (70 Mbit/s) do not fit in its 43 Mbit/s.
    r = run_script("wifi_scaling", "--phones", "1,3,14", "--seconds", "3", "--rate", "5", results=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path, "wifi_scaling")
    agg = aggregates(run)
    g = {n: agg[(f"n_phones={n},rep=0", "goodput_mbit")] for n in (1, 3, 14)}
    cap = {n: agg[(f"n_phones={n},rep=0", "airtime_capacity_mbit")] for n in (1, 3, 14)}
    assert g[1] == pytest.approx(5.0, rel=0.1) and g[3] == pytest.approx(15.0, rel=0.1)
    assert g[14] < 0.95 * 70.0 and g[14] <= cap[14] * 1.05  # capped by the shared medium, not the offered load
    assert agg[("n_phones=14,rep=0", "latency_ms_p95")] > 2 * agg[("n_phones=1,rep=0", "latency_ms_p95")]
    iperf = agg[("n_phones=3,rep=0", "iperf_goodput_mbit")]
    # Without the shared budget three stations would get ~3 x 60 Mbit/s. Payload over one window
    # common to the three flows cannot exceed the (L2) budget; on a busy 2-core machine it may fall short.
    assert 0.6 * cap[3] < iperf <= 1.01 * cap[3]
    with open(run / "measurements.csv") as f:
        shares = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "iperf_goodput_mbit"
                  and r["point"] == "n_phones=3,rep=0" and r["node"]]
    # Saturated stations share the air equally (DCF); once one got 8.0 and two 11.5 of 31.
    assert len(shares) == 3 and max(shares) < 1.2 * min(shares), shares
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["facts"]["link_engine"] in ("netem", "fallback")
    # power samples of every phone are kept with the point; the phone model draws 0.8-5 W
    samples = list(csv.DictReader(open(run / "raw" / "n_phones-3_rep-0" / "power_samples.csv")))
    assert {r["node"] for r in samples} == {"phone-1", "phone-2", "phone-3"}
    assert all(0.8 <= float(r["power_w"]) <= 5.0 for r in samples)
    with open(run / "measurements.csv") as f:
        energy = [float(r["value"]) for r in csv.DictReader(f) if r["metric"] == "energy_j"
                  and r["point"] == "n_phones=3,rep=0"]
    assert len(energy) == 3 and all(0.8 * 3 * 0.9 < e < 5.0 * 3 * 3 for e in energy)  # >= idle W x load time
    assert (run / "report" / "summary.md").exists()
    assert "Saturation" in (run / "report" / "summary.md").read_text() or "saturat" in r.stderr
    no_testbed_left("wifi")


@pytest.mark.measures
@root
def test_wifi_scaling_with_a_slow_phone_shows_the_anomaly(tmp_path):
    r = run_script("wifi_scaling", "--phones", "3", "--slow-phones", "1", "--slow-mcs", "0", "--seconds", "2",
                   "--rate", "1", results=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = only_run(tmp_path, "wifi_scaling")
    with open(run / "measurements.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["node"]]
    val = {(r["metric"], r["node"]): float(r["value"]) for r in rows}
    assert [val[("station_mcs", f"phone-{i}")] for i in (1, 2, 3)] == [7, 7, 0]   # MCS7 = the profile's 65 Mbit/s
    fast, slow = val[("iperf_goodput_mbit", "phone-1")], val[("iperf_goodput_mbit", "phone-3")]
    all_fast = aggregates(run)[("n_phones=3,rep=0", "model_share_all_fast_mbit")]
    # One MCS0 phone: the fast phones fall well below their all-fast share (17.3 Mbit/s in the model),
    # to within 10 % of the mixed cell's model.
    assert fast < 0.8 * all_fast and slow < fast
    assert fast == pytest.approx(val[("model_share_mbit", "phone-1")] * 1448 / 1514, rel=0.1)
    summary = (run / "report" / "summary.md").read_text()
    assert "performance anomaly" in summary and "-anomaly.png" in summary
    no_testbed_left("wifi")


@root
def test_wifi_scaling_sigint_then_resume_measures_each_point_once(tmp_path):
    argv = [sys.executable, str(REPO / "experiments" / "wifi_scaling.py"), "--results", str(tmp_path),
            "--phones", "1,2,3", "--seconds", "2", "--no-report"]
    p = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    csv_path = None
    while time.monotonic() < deadline:
        runs = list((tmp_path / "wifi_scaling").glob("*/measurements.csv"))
        if runs and "n_phones=1" in runs[0].read_text():
            csv_path = runs[0]
            break
        time.sleep(0.2)
    assert csv_path is not None, "first point never completed"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-2000:]
    no_testbed_left("wifi")
    first = [r for r in csv.DictReader(open(csv_path)) if r["point"] == "n_phones=1,rep=0"]
    r = subprocess.run(argv + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(csv_path)))
    assert {x["point"] for x in rows} == {f"n_phones={n},rep=0" for n in (1, 2, 3)}
    again = [x for x in rows if x["point"] == "n_phones=1,rep=0"]
    assert again == first  # skipped, not re-measured
    per_point = {pt: sum(1 for x in rows if x["point"] == pt and x["metric"] == "goodput_mbit" and not x["node"])
                 for pt in {x["point"] for x in rows}}
    assert set(per_point.values()) == {1}
    no_testbed_left("wifi")


@root
def test_network_topologies_mesh_hops_add_latency(tmp_path):
    r = run_script("network_topologies", "--networks", "ethernet,batman-mesh", "--phones", "2", "--hops", "1,4",
                   "--seconds", "4", "--rates", "4", results=tmp_path)
    # 16 requests per mesh point: with 1 % loss per hop some requests wait out a TCP
    # retransmission timeout, and the median of 4 (2 s at 2 req/s) was once one of them.
    assert r.returncode == 0, r.stderr[-3000:]
    agg = aggregates(only_run(tmp_path, "network_topologies"))
    lat = {k[0]: v for k, v in agg.items() if k[1] == "latency_ms_p50"}
    mesh1 = next(v for k, v in lat.items() if "batman-mesh" in k and "hops=1," in k)
    mesh4 = next(v for k, v in lat.items() if "batman-mesh" in k and "hops=4," in k)
    eth = next(v for k, v in lat.items() if "ethernet" in k)
    assert mesh4 > mesh1 > eth
    assert all(v == 0.0 for k, v in agg.items() if k[1] == "error_rate")
    no_testbed_left("topo")


@pytest.mark.measures
@root
def test_folding_decides_each_factor_adaptively_and_records_host_signals(tmp_path):
    r = run_script("folding", "--factors", "1,2", "--reps", "2", "--max-reps", "3", "--seconds", "2",
                   "--baseline-weight", "1", "--no-report", results=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [l for l in r.stdout.splitlines() if l.startswith("max faithful folding factor:")]
    assert line and int(line[0].split(":")[1]) in (1, 2)
    assert [l for l in r.stdout.splitlines() if l.startswith("breaking point:")]
    run = only_run(tmp_path, "folding")
    agg = aggregates(run)
    points = {k[0] for k in agg}
    reps = {f: sum(1 for p in points if p.startswith(f"factor={f},")) for f in (1, 2)}
    assert 2 <= reps[1] <= 3 and 2 <= reps[2] <= 3
    # a third repetition is measured exactly when two left factor 2 undecided (the baseline's third
    # only when Dunnett's allocation asks for it, and the round's message says which)
    assert ("adaptive round: factors 2 undecided" in r.stderr) == (reps[2] == 3)
    assert ("with 1 of the baseline" in r.stderr) == (reps[1] == 3)
    assert agg[("factor=2,rep=1", "requests_per_s_per_node")] == pytest.approx(10.0, rel=0.1)
    for p in points:
        assert 0.0 <= agg[(p, "host_cpu_busy")] <= 1.0 and agg[(p, "host_runqueue")] >= 0.0
        assert 0.0 <= agg[(p, "host_foreign_cpu")] <= agg[(p, "host_cpu_busy")] + 0.05
    manifest = json.loads((run / "manifest.json").read_text())
    assert "SCHED_IDLE spinner" in manifest["facts"]["host_warmer"]
    if manifest["facts"]["link_engine"] == "fallback":   # the delayer's own lateness, read around each point
        for p in points:
            assert 0.0 <= agg[(p, "host_delayer_late_ms")] < 100.0
            assert 0.0 <= agg[(p, "host_delayer_late_share")] <= 1.0
    no_testbed_left("fold")


@pytest.mark.measures
@root
def test_faas_energy_more_workers_more_throughput_and_energy_is_charged(tmp_path):
    r = run_script("faas_energy", "--workers", "1,3", "--per-worker", "8", "--no-report", results=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    agg = aggregates(only_run(tmp_path, "faas_energy"))
    rate1, rate3 = agg[("n_workers=1,rep=0", "invocations_per_s")], agg[("n_workers=3,rep=0", "invocations_per_s")]
    assert rate3 > 1.8 * rate1
    for n in (1, 3):
        assert agg[(f"n_workers={n},rep=0", "failed")] == 0
        e = agg[(f"n_workers={n},rep=0", "energy_per_invocation_j")]
        # a BeagleBone draws 1.4-2.3 W; an invocation runs for tens to hundreds of ms
        assert 0.005 < e < 2.3 * 2.0
    no_testbed_left("faas")


def test_dry_run_prints_the_g5k_reservation_without_touching_anything(capsys):
    rc = wifi_scaling.main(["--backend", "g5k", "--dry-run", "--phones", "2,3", "--backend-opt", "site=nancy",
                            "--backend-opt", "cluster=gros", "--results", "/nonexistent/never-written"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.count("edgelab g5k dry run") == 2  # one per distinct topology of the sweep
    assert "site: nancy   cluster: gros   nodes: 4" in out
    # the experiment's composition of the top-level flake, with the point's phone count
    assert "build -C k3s-phones::g5k-ramdisk --setup-param k3s_phones=2" in out
    assert "start -C k3s-phones::g5k-ramdisk -r server=server-1 -r phone=phone-1,phone-2,phone-3 -i " in out
    # the Wi-Fi cell is emulated on the access point (the uplink server): its budget for 2 and 3 phones
    assert "not emulated" not in out
    assert "Wi-Fi cell wlan/0: access point server-1 (10.77.0.1) [uplink node], airtime budget 53.8 Mbit/s " \
           "(Bianchi, 2 stations)" in out
    assert "python3 -m edgelab.linkemu shared --dev '<default-route NIC>' --name air0 --capacity-mbit" in out
    assert not os.path.exists("/nonexistent/never-written")


def test_dry_run_of_faas_on_nxc_maps_the_composition_roles(capsys):
    assert faas_energy.main(["--backend", "nxc", "--dry-run", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "-r orchestrator=orchestrator-1 -r worker=worker-1,worker-2 -r power=power-1" in out


def test_bad_backend_option_is_a_one_line_error():
    from edgelab.errors import EdgelabError
    from edgelab.experiment import backend_options

    assert backend_options(["max_per_host=4", "exotic=true", "site=lyon"]) == {
        "max_per_host": 4, "exotic": True, "site": "lyon"}
    with pytest.raises(EdgelabError, match="expected KEY=VALUE"):
        backend_options(["site"])
