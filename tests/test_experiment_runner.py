"""The sweep runner: resume after interruption, failures recorded, progress saved."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgelab.experiment import run_sweep
from edgelab.results import Measurement, read_measurements_rows

POINTS = [{"n": n, "rep": r} for n in (1, 2, 4, 8) for r in (0, 1)]


def measure(point, run):
    return [Measurement("square", point["n"] ** 2, "", ""), Measurement("n", point["n"], "", "node-1")]


def test_complete_sweep(tmp_path):
    out = run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=measure,
                    params={"x": 1}, results_root=tmp_path)
    assert out.status == "complete" and out.measured == 8
    rows = read_measurements_rows(out.run.path / "measurements.csv")
    squares = sorted(float(r["value"]) for r in rows if r["metric"] == "square")
    assert squares == sorted(float(p["n"] ** 2) for p in POINTS)
    assert json.loads((out.run.path / "manifest.json").read_text())["status"] == "complete"


def test_failure_is_recorded_with_keep_going(tmp_path):
    def flaky(point, run):
        if point["n"] == 4:
            raise RuntimeError("iperf3 died")
        return measure(point, run)

    out = run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=flaky, params={},
                    results_root=tmp_path, keep_going=True)
    assert out.status == "complete-with-failures" and len(out.failed) == 2
    assert "iperf3 died" in (out.run.path / "failures.log").read_text()


def test_failure_without_keep_going_marks_run_failed_and_raises(tmp_path):
    def boom(point, run):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=boom, params={},
                  results_root=tmp_path)
    (run_dir,) = (tmp_path / "toy").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "failed"


def _signal_self_inside(swallow):
    """A measure function that gets SIGINT at its second point, inside code that catches ``swallow``."""
    def measure_fn(point, run):
        if point == POINTS[1]:
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(1)  # the handler runs here
            except swallow:
                pass  # e.g. a library's "except Exception: kill the child" around a wait
        return measure(point, run)
    return measure_fn


@pytest.mark.parametrize("swallow", [Exception, BaseException], ids=["except-Exception", "except-BaseException"])
def test_sigint_stops_the_sweep_even_inside_code_that_catches_everything(tmp_path, swallow):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN, not Python's default, under nohup or `cmd &`
    out = run_sweep(experiment="toy", points=POINTS, param_names=["n", "rep"], measure=_signal_self_inside(swallow),
                    params={}, results_root=tmp_path, keep_going=True)
    # Only the first point is recorded: the interrupted one is put back, the rest never start.
    assert out.status == "interrupted" and out.measured == 1 and not out.failed
    rows = read_measurements_rows(out.run.path / "measurements.csv")
    assert {(r["n"], r["rep"]) for r in rows} == {("1", "0")}
    assert json.loads((out.run.path / "manifest.json").read_text())["status"] == "interrupted"
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_sigint_then_resume(tmp_path):
    script = tmp_path / "exp.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from edgelab.experiment import run_sweep
        from edgelab.results import Measurement
        def measure(point, run):
            print("measuring", point["n"], flush=True)
            time.sleep(0.3 if point["n"] != 3 or "--resume" in sys.argv else 30)
            return [Measurement("n", point["n"])]
        out = run_sweep(experiment="toy", points=[{{"n": i}} for i in range(6)], param_names=["n"],
                        measure=measure, params={{}}, results_root={str(tmp_path)!r}, resume="--resume" in sys.argv)
        print("status", out.status, out.skipped_done, out.measured, flush=True)
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "measuring 3":
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read()
    assert proc.wait(timeout=20) == 0
    assert "status interrupted 0 3" in rest
    (run_dir,) = (tmp_path / "toy").iterdir()
    assert json.loads((run_dir / "manifest.json").read_text())["status"] == "interrupted"
    out = subprocess.run([sys.executable, str(script), "--resume"], capture_output=True, text=True, timeout=60)
    assert "measuring 3" in out.stdout and "measuring 0" not in out.stdout
    assert "status complete 3 3" in out.stdout
    values = sorted(float(r["value"]) for r in read_measurements_rows(run_dir / "measurements.csv"))
    assert values == [0, 1, 2, 3, 4, 5]


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_exit_status_names_the_signal(tmp_path, sig, code):
    """Issue 12: SIGTERM exited 130 like SIGINT; a scheduler reads 128 + the signal."""
    script = tmp_path / "exp.py"
    script.write_text(textwrap.dedent(f"""\
        import sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from edgelab.experiment import exit_code, run_sweep
        from edgelab.results import Measurement
        def measure(point, run):
            print("measuring", point["n"], flush=True)
            time.sleep(30)
            return [Measurement("n", point["n"])]
        out = run_sweep(experiment="toy", points=[{{"n": 0}}], param_names=["n"], measure=measure, params={{}},
                        results_root={str(tmp_path)!r})
        sys.exit(exit_code(out))
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "measuring 0"
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_each_experiment_process_has_its_own_testbed_name():
    """Issue 12: experiments hard-coded their testbed names (faas, fold, topo, wifi), so two users
    running one on the same machine claimed the same namespaces."""
    from edgelab.experiment import testbed_name
    from edgelab.topology import TESTBED_NAME_RE

    assert testbed_name("faas") == f"faas-{os.getpid()}"
    assert TESTBED_NAME_RE.fullmatch(testbed_name("a-very-long-testbed"))
    exp = os.path.join(os.getcwd(), "experiments")
    names = set()
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", "import faas_energy, folding, network_topologies; "
                              "print(faas_energy.TESTBED, folding.TESTBED, network_topologies.TESTBED)"],
                             cwd=exp, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        got = out.stdout.split()
        assert [n.split("-")[0] for n in got] == ["faas", "fold", "topo"]
        assert all(TESTBED_NAME_RE.fullmatch(n) for n in got)
        names.add(tuple(got))
    assert len(names) == 2
