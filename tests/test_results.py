import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgelab.errors import EdgelabError
from edgelab.results import Measurement, ResultsStore, read_measurements_rows


def points():
    return [{"n": n, "rep": r} for n in (1, 2, 4) for r in (0, 1)]


def test_manifest_has_provenance(tmp_path):
    run = ResultsStore(tmp_path).open_run("exp", params={"quick": True}, param_names=["n", "rep"],
                                          topology={"name": "t"}, backend="local")
    m = json.loads((run.path / "manifest.json").read_text())
    for key in ("experiment", "run_id", "started", "params", "backend", "git", "flake_lock_sha256", "host",
                "edgelab_version", "topology", "status"):
        assert key in m
    assert m["status"] == "running" and m["host"]["cpus"] >= 1
    run.record_facts({"link_engine": "fallback"})
    run.finish()
    m = json.loads((run.path / "manifest.json").read_text())
    assert m["status"] == "complete" and m["ended"] and m["facts"]["link_engine"] == "fallback"


def test_rows_are_tidy(tmp_path):
    run = ResultsStore(tmp_path).open_run("exp", params={}, param_names=["n", "rep"])
    sw = run.sweep(points()[:1])
    for p in sw:
        sw.complete(p, [Measurement("goodput_mbit", 12.5, "Mbit/s", "phone-1", 1.0),
                        Measurement("goodput_mbit", 12.5, "Mbit/s", "", 1.0)])
    rows = run.read_rows()
    assert rows[0] == {"point": "n=1,rep=0", "n": "1", "rep": "0", "metric": "goodput_mbit", "value": "12.5",
                       "unit": "Mbit/s", "node": "phone-1", "time": "1.0"}


def test_trailing_partial_line_is_dropped(tmp_path):
    f = tmp_path / "m.csv"
    f.write_text("point,metric,value,unit,node,time\na,x,1.0,,,1\nb,x,2.")
    assert [r["point"] for r in read_measurements_rows(f)] == ["a"]


def test_resume_skips_done_points_and_drops_unfinished_rows(tmp_path):
    store = ResultsStore(tmp_path)
    run = store.open_run("exp", params={"q": 1}, param_names=["n", "rep"])
    sw = run.sweep(points())
    seen = []
    for p in sw:
        seen.append(p)
        if len(seen) == 3:
            # crash in the middle of this point: rows written but point never marked done
            run.write_point(p, [Measurement("m", 99)])
            break
        sw.complete(p, [Measurement("m", p["n"])])
    run2 = store.open_run("exp", params={"q": 1}, param_names=["n", "rep"], resume=True)
    assert run2.path == run.path
    sw2 = run2.sweep(points())
    assert sw2.skipped_done == 2 and sw2.dropped_rows == 1
    rest = list(sw2)
    assert rest == points()[2:]  # the interrupted point is measured again, in order
    assert all(r["value"] != "99.0" for r in run2.read_rows())
    m = json.loads((run.path / "manifest.json").read_text())
    assert len(m["resumed"]) == 1


def test_resume_with_other_params_starts_a_new_run(tmp_path):
    store = ResultsStore(tmp_path)
    a = store.open_run("exp", params={"q": 1}, param_names=["n", "rep"])
    b = store.open_run("exp", params={"q": 2}, param_names=["n", "rep"], resume=True)
    assert a.path != b.path


def test_resume_bad_path(tmp_path):
    with pytest.raises(EdgelabError, match="not a run directory"):
        ResultsStore(tmp_path).open_run("exp", params={}, param_names=["n"], resume=tmp_path)


def test_sigkill_mid_sweep_loses_nothing_written(tmp_path):
    """A process killed while sweeping leaves every completed point intact and resumable."""
    script = tmp_path / "sweep.py"
    script.write_text(textwrap.dedent(f"""\
        import os, sys, time
        sys.path.insert(0, {os.getcwd()!r})
        from edgelab.results import ResultsStore, Measurement
        run = ResultsStore({str(tmp_path)!r}).open_run("exp", params={{}}, param_names=["n"], resume=True)
        sw = run.sweep([{{"n": i}} for i in range(50)])
        for p in sw:
            sw.complete(p, [Measurement("m", p["n"]) for _ in range(20)])
            print(p["n"], flush=True)
            if p["n"] == 5:
                time.sleep(30)
        """))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.strip() == "5":
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    run = ResultsStore(tmp_path).runs("exp")[0]
    rows = read_measurements_rows(run / "measurements.csv")
    assert len(rows) == 6 * 20
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    # the second process resumes at 6 and sleeps at... never (5 is done), finishing all 50 points
    assert out.stdout.split()[0] == "6"
    assert len(read_measurements_rows(run / "measurements.csv")) == 50 * 20


class _Payload:
    """Unpickling this writes a marker file: what a crafted ``sweep/done`` could do as root."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _run_dir_with(tmp_path, points=2):
    store = ResultsStore(tmp_path / "results")
    run = store.open_run("exp", params={}, param_names=["n"])
    sw = run.sweep([{"n": i} for i in range(points)])
    for p in sw:
        sw.complete(p, [Measurement("m", p["n"])])
        break
    run.finish("interrupted")
    return store, run


def test_resume_never_unpickles_the_run_directory(tmp_path):
    """Issue 12 item 4: --resume RUN_DIR ran code from execo's pickled sweep/done."""
    import pickle

    store, run = _run_dir_with(tmp_path)
    marker = tmp_path / "pwned"
    (run.path / "sweep").mkdir(exist_ok=True)
    for f in ("done", "inprogress", "sweeps", "skipped"):
        (run.path / "sweep" / f).write_bytes(pickle.dumps(_Payload(str(marker))))
    # The state is JSON: the planted pickles are never read, resume still knows what is done.
    again = store.open_run("exp", params={}, param_names=["n"], resume=run.path)
    assert [p["n"] for p in again.sweep([{"n": 0}, {"n": 1}])] == [1]
    assert not marker.exists()
    # A run that has only the old pickled state is refused, not unpickled.
    (run.path / "sweep.json").unlink()
    with pytest.raises(EdgelabError, match="pickle"):
        store.open_run("exp", params={}, param_names=["n"], resume=run.path).sweep([{"n": 0}])
    assert not marker.exists()


def test_resume_state_is_json_and_a_malformed_one_is_an_error(tmp_path):
    store, run = _run_dir_with(tmp_path, points=3)
    state = json.loads((run.path / "sweep.json").read_text())
    assert state["done"] == ["n=0"]
    (run.path / "sweep.json").write_text('{"format": 1, "done": [{"__class__": "x"}]}')
    with pytest.raises(EdgelabError, match="not a sweep state"):
        store.open_run("exp", params={}, param_names=["n"], resume=run.path).sweep([{"n": 0}])


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a run directory to another user")
def test_resume_refuses_a_run_directory_owned_by_someone_else(tmp_path):
    store, run = _run_dir_with(tmp_path)
    os.chown(run.path, 65534, 65534)
    with pytest.raises(EdgelabError, match="not by you"):
        store.open_run("exp", params={}, param_names=["n"], resume=run.path)
    # --resume without a directory skips it and starts a new run
    assert store.open_run("exp", params={}, param_names=["n"], resume=True).path != run.path
    os.chown(run.path, 0, 0)
    os.chown(run.path / "sweep.json", 65534, 65534)
    with pytest.raises(EdgelabError, match="not by you"):
        store.open_run("exp", params={}, param_names=["n"], resume=run.path)
