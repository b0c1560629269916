"""The measurement validity layer without a testbed: unhealthy points, truncated files,
verdicts that say what was tested, ``edgelab report``'s exit status, resume after a
killed report. (The same layer on real testbeds: tests/test_validity_root.py.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from analysis.load import load_run
from analysis.report import build_report, write_report
from analysis.saturation import saturation_for_run
from analysis.topologies import topology_capacity
from analysis_fixtures import TOPOLOGIES, WIFI
from edgelab.experiment import exit_code, run_sweep
from edgelab.health import Check, Measured, coverage, read_health, service_errors
from edgelab.results import Measurement, read_measurements_rows

REPO = Path(__file__).resolve().parents[1]
POINTS = [{"n": n, "rep": 0} for n in (1, 2, 3, 4)]


def key_results(summary: Path) -> str:
    return summary.read_text().split("## Key results", 1)[1].split("\n## ", 1)[0]


# ------------------------------------------------------------------ unhealthy points
def test_an_unhealthy_point_is_excluded_named_and_fails_the_exit_status(tmp_path):
    def measure(point, run):
        rows = [Measurement("goodput_mbit", 10.0 * point["n"], "Mbit/s")]
        dead = point["n"] == 3
        return Measured(rows, [Check("alive: phone service on server", not dead,
                                     "killed by signal 9 during the point (pid 4242)" if dead else "running")])

    out = run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=measure, params={},
                    results_root=tmp_path)
    assert out.status == "complete-with-failures" and exit_code(out) == 1
    assert list(out.unhealthy) == ["n=3,rep=0"] and "killed by signal 9" in out.unhealthy["n=3,rep=0"]
    run_dir = out.run.path
    # never among the measurements; kept aside for inspection
    assert {r["point"] for r in read_measurements_rows(run_dir / "measurements.csv")} == \
        {"n=1,rep=0", "n=2,rep=0", "n=4,rep=0"}
    assert "30.0" in (run_dir / "raw" / "n-3_rep-0" / "rejected_measurements.csv").read_text()
    health = read_health(run_dir)
    assert health["n=3,rep=0"]["status"] == "unhealthy" and health["n=1,rep=0"]["rows"] == 1
    assert "n=3,rep=0: unhealthy: alive: phone service on server" in (run_dir / "failures.log").read_text()
    run = load_run(run_dir)
    assert run.excluded == [("n=3,rep=0", "unhealthy: alive: phone service on server: killed by signal 9 "
                                          "during the point (pid 4242)")]
    headline = key_results(write_report(run_dir))
    assert "EXCLUDED 1 of 4 points: n=3,rep=0 (unhealthy: alive: phone service on server: killed by signal 9" \
        in headline


def test_a_failed_point_is_recorded_with_its_error(tmp_path):
    def measure(point, run):
        if point["n"] == 2:
            raise RuntimeError("iperf3 died")
        return [Measurement("x", 1.0)]

    out = run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=measure, params={},
                    results_root=tmp_path, keep_going=True)
    assert exit_code(out) == 1
    rec = read_health(out.run.path)["n=2,rep=0"]
    assert rec["status"] == "failed" and "RuntimeError: iperf3 died" in rec["cause"]
    assert "EXCLUDED 1 of 4 points: n=2,rep=0 (failed: measurement: RuntimeError: iperf3 died)" in \
        key_results(write_report(out.run.path))


def test_a_run_whose_every_point_was_unhealthy_is_reported_as_such(tmp_path):
    def measure(point, run):
        return Measured([Measurement("goodput_mbit", 1.0)], [coverage("energy", 11, 40)])

    out = run_sweep(experiment="wifi_scaling", points=[{"n_phones": 1, "rep": 0}], param_names=["n_phones", "rep"],
                    measure=measure, params={}, results_root=tmp_path)
    assert not (out.run.path / "measurements.csv").exists()
    res = build_report(out.run.path)
    assert res.readable == 1 and res.excluded == 1
    text = key_results(res.path)
    assert "nothing to analyse: all 1 measured points were excluded" in text
    assert "11 of 40 (28%), below the 90% required" in text


def test_checks_are_plain_data_with_their_bounds():
    c = coverage("energy per invocation", 11, 40)
    assert not c.ok and c.value == pytest.approx(0.275) and c.limit == 0.9
    assert coverage("energy per invocation", 40, 40).ok
    assert service_errors("requests", {"timeout": 5, "reset": 2}, 40).ok  # an overloaded service still answers
    refused = service_errors("requests", {"refused": 35}, 40)
    assert not refused.ok and "35 refused of 40 requests" in refused.detail


# ------------------------------------------------------------------ truncated measurements
def copy_wifi(tmp_path) -> Path:
    run = tmp_path / WIFI.name
    shutil.copytree(WIFI, run)
    return run


def test_a_csv_truncated_at_a_line_boundary_is_detected_and_named_in_the_headline(tmp_path):
    run_dir = copy_wifi(tmp_path)
    csv_file = run_dir / "measurements.csv"
    whole = load_run(run_dir)
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join(lines[:-4]))  # lost the last point's last four rows, ends cleanly
    run = load_run(run_dir)
    assert [p for p, _ in run.excluded] == ["n_phones=12,rep=2"]
    assert "39 of 43 rows in measurements.csv" in run.excluded[0][1]
    assert "n_phones=12,rep=2" not in set(run.df["point"])  # not half-counted
    curve = saturation_for_run(run).curve.set_index("n_phones")
    assert curve.loc[12, "goodput_mbit_n"] == 2 and curve.loc[8, "goodput_mbit_n"] == 3
    assert len(whole.df) - len(run.df) == 43
    headline = key_results(write_report(run_dir))
    assert "EXCLUDED 1 of 15 points: n_phones=12,rep=2 (39 of 43 rows in measurements.csv" in headline


def test_a_csv_cut_mid_line_says_so_in_the_headline(tmp_path):
    run_dir = copy_wifi(tmp_path)
    csv_file = run_dir / "measurements.csv"
    text = csv_file.read_text()
    csv_file.write_text(text[: len(text) - 30])
    headline = key_results(write_report(run_dir))
    assert "measurements.csv ended in a partial line (dropped)" in headline
    assert "EXCLUDED 1 of 15 points: n_phones=12,rep=2" in headline


def test_whole_points_missing_at_the_end_are_detected(tmp_path):
    run_dir = copy_wifi(tmp_path)
    csv_file = run_dir / "measurements.csv"
    lines = csv_file.read_text().splitlines(keepends=True)
    csv_file.write_text("".join(l for l in lines if "n_phones=12," not in l))
    run = load_run(run_dir)
    assert sorted(p for p, _ in run.excluded) == [f"n_phones=12,rep={r}" for r in range(3)]
    assert all(why.startswith("missing from measurements.csv") for _, why in run.excluded)


# ------------------------------------------------------------------ verdicts say what was tested
def test_topology_verdicts_tell_a_found_limit_from_an_untested_one():
    run = load_run(TOPOLOGIES)
    df = run.df
    # the quick default measures the mesh with one phone only
    df = df[(df["network"] != "batman-mesh") | (df["n_phones"] == 1)]
    res = topology_capacity(df, threshold_ms=500.0)
    text = res.describe()
    assert "batman-mesh at 2 req/s: fits at 1 phone, the only count tested (no limit found)" in text
    assert "up to 1 phones" not in text
    assert "wifi at 8 req/s: fits up to 4 phones (8 failed)" in text
    assert "ethernet at 8 req/s: fits all tested, up to 8 phones (no limit found)" in text
    assert "batman-mesh (3 hops) at 8 req/s: no phone count fits (1 phone failed)" in text
    cap = res.capacity.set_index(["network", "hops", "rate_rps"])
    assert pd.isna(cap.loc[("ethernet", 1, 8), "first_failing"]) and cap.loc[("wifi", 1, 8), "first_failing"] == 8


# ------------------------------------------------------------------ edgelab report's exit status
def edgelab(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgelab", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=120, **kw)


def test_report_exits_non_zero_when_no_run_could_be_read(tmp_path):
    bad = tmp_path / "results" / "wifi_scaling" / "r1"
    bad.mkdir(parents=True)
    (bad / "manifest.json").write_text("{not json")
    r = edgelab("report", str(tmp_path / "results"))
    assert r.returncode != 0, r.stderr
    assert "no run under" in r.stderr and "could be read" in r.stderr.replace("\n", " ")
    good = tmp_path / "results" / "wifi_scaling" / WIFI.name
    shutil.copytree(WIFI, good)
    r = edgelab("report", str(tmp_path / "results"))
    assert r.returncode == 0, r.stderr
    assert "not readable" in r.stdout + r.stderr  # the broken run is still named


# ------------------------------------------------------------------ a kill during the report
SCRIPT = """
import sys, time
sys.path.insert(0, {repo!r})
from edgelab.experiment import common_arguments, finish, run_sweep
from edgelab.results import Measurement
import argparse, edgelab.reporting as rep
a = common_arguments(argparse.ArgumentParser()).parse_args(sys.argv[1:])
real = rep.report_and_summarise
def slow_report(path):                  # a report that takes long enough to be killed in
    time.sleep(float({pause!r}) if "--resume" not in sys.argv else 0)
    return real(path)
rep.report_and_summarise = slow_report
out = run_sweep(experiment="toy", points=[{{"n": 1}}, {{"n": 2}}], param_names=["n"], params={{"q": 1}},
                measure=lambda p, run: [Measurement("x", p["n"])], results_root=a.results, resume=a.resume,
                will_report=not a.no_report)
sys.exit(finish(out, a))
"""


def test_a_kill_during_the_report_leaves_resume_finishing_that_run(tmp_path):
    script = tmp_path / "toy.py"
    script.write_text(textwrap.dedent(SCRIPT.format(repo=str(REPO), pause=30)))
    results = tmp_path / "results"
    p = subprocess.Popen([sys.executable, str(script), "--results", str(results)], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    manifest = None
    while time.monotonic() < deadline:
        found = list(results.glob("toy/*/manifest.json"))
        if found and json.loads(found[0].read_text())["status"] == "complete":
            manifest = found[0]
            break
        time.sleep(0.02)
    assert manifest is not None, "the sweep never completed"
    os.kill(p.pid, signal.SIGKILL)   # the run is measured; its report is not written
    p.wait(timeout=30)
    assert not (manifest.parent / "report" / "summary.md").exists()
    r = subprocess.run([sys.executable, str(script), "--results", str(results), "--resume"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [m.parent.name for m in results.glob("toy/*/manifest.json")] == [manifest.parent.name]  # no new run
    assert (manifest.parent / "report" / "summary.md").exists()
    m = json.loads(manifest.read_text())
    assert m["status"] == "complete" and m["report"] == "written" and len(m["resumed"]) == 1
    # and once written, --resume starts a new run again
    r = subprocess.run([sys.executable, str(script), "--results", str(results), "--resume", "--no-report"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and len(list(results.glob("toy/*/manifest.json"))) == 2


def test_loadgen_tells_a_missing_service_from_an_overloaded_one():
    import socket

    from edgelab.workload.loadgen import RequestRecord, Target, _do, error_kind, error_kinds

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()   # nothing listens there now
    refused = _do(Target(url=f"http://127.0.0.1:{port}/detect", method="GET", timeout_s=2.0), time.time(), True)
    assert error_kind(refused) == "refused"
    rec = lambda status: RequestRecord(0.0, 0.0, 0.1, 0.1, status, 0, None, 0)  # noqa: E731
    assert [error_kind(rec(c)) for c in (200, 503, 500, 404)] == [None, "http_503", "http_5xx", "http_other"]
    kinds = error_kinds([refused, rec(503), rec(500), rec(200)])
    assert kinds == {"http_503": 1, "http_5xx": 1, "refused": 1}
    assert not service_errors("requests", kinds, 4).ok
    assert service_errors("requests", {"http_503": 3, "timeout": 1}, 4).ok


def test_a_cause_with_brackets_is_printed_as_text(tmp_path):
    # rich markup in a cause ("[/tmp/x]", "[Errno 111]") must neither crash the run nor vanish
    script = tmp_path / "toy.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        from edgelab.experiment import run_sweep, exit_code
        from edgelab.health import Check, Measured
        from edgelab.results import Measurement
        out = run_sweep(experiment="toy", points=[{{"n": 1}}], param_names=["n"], params={{}},
                        measure=lambda p, run: Measured([Measurement("x", 1)], [Check("alive: svc", False, "[/tmp/x] [Errno 111]")]),
                        results_root={str(tmp_path / "results")!r})
        sys.exit(exit_code(out))
    """))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "[/tmp/x] [Errno 111]" in r.stderr.replace("\n", "")


def test_health_is_never_written_through_a_planted_link(tmp_path):
    from edgelab.health import health_path, record_health

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (run_dir / f".health.json.{os.getpid()}.tmp").symlink_to(victim)
    record_health(run_dir, "n=1", [Check("alive: x", True)], 3, "healthy")
    assert victim.read_text() == "precious\n"
    assert json.loads(health_path(run_dir).read_text())["n=1"]["rows"] == 3


def test_resume_measures_an_unhealthy_point_again(tmp_path):
    points = [{"n": n, "rep": 0} for n in (1, 2, 3)]

    def flaky(point, run):
        return Measured([Measurement("x", point["n"])], [Check("alive: svc", point["n"] != 2, "exited 1")])

    first = run_sweep(experiment="toy", points=points, param_names=["n", "rep"], measure=flaky, params={},
                      results_root=tmp_path)
    assert list(first.unhealthy) == ["n=2,rep=0"]
    again = run_sweep(experiment="toy", points=points, param_names=["n", "rep"], params={}, results_root=tmp_path,
                      measure=lambda p, run: Measured([Measurement("x", p["n"])], [Check("alive: svc", True)]),
                      resume=True)
    assert again.run.path == first.run.path and again.measured == 1 and again.status == "complete"
    assert read_health(first.run.path)["n=2,rep=0"]["status"] == "healthy"
    run = load_run(first.run.path)
    assert run.excluded == [] and sorted(run.df["point"]) == ["n=1,rep=0", "n=2,rep=0", "n=3,rep=0"]


def test_a_topology_count_left_out_is_named_where_it_falls(tmp_path):
    run_dir = tmp_path / TOPOLOGIES.name
    shutil.copytree(TOPOLOGIES, run_dir)
    gone = {f"hops=1,n_phones=4,network=wifi,rate_rps=8,rep={r}" for r in (0, 1)}
    health = json.loads((run_dir / "health.json").read_text())
    assert gone <= set(health)
    for pid in gone:   # what the runner records for a point measured while its server was dead
        health[pid] = {"status": "unhealthy", "healthy": False, "rows": None, "checks": [],
                       "cause": "alive: phone service on server-1: killed by signal 9 during the point"}
    (run_dir / "health.json").write_text(json.dumps(health))
    csv_file = run_dir / "measurements.csv"
    csv_file.write_text("".join(l for l in csv_file.read_text().splitlines(keepends=True)
                                if not any(f'"{p}"' in l for p in gone)))
    headline = key_results(write_report(run_dir))
    assert "wifi at 8 req/s: fits up to 2 phones (8 failed); not judged: 4 phones (excluded)" in headline
    assert "EXCLUDED 2 of 80 points" in headline
