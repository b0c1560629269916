"""BeaglePaaS: real orchestrator, real worker processes, kills, garbage, energy shares."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from edgelab.services.beaglepaas import FUNCTIONS, BeaglePaaSClient, Orchestrator, run_job, run_worker
from edgelab.services.framing import encode, recv_msg, send_msg
from edgelab.services.power import ConstantSource, PowerSampler

from svhelpers import REPO, service, url_of

FAST_ARGS = {
    "float_operations": {"n": 2000}, "cascading_sha256": {"rounds": 100}, "cascading_md5": {"rounds": 100},
    "matmul": {"n": 16}, "linpack": {"n": 20}, "html_generation": {"n": 50},
    "zlib_compress": {"repeat": 100}, "regex_search": {"data": "abc 2024 x", "pattern": "[0-9]{4}"},
    "regex_match": {"data": "hello", "pattern": "h"}, "json_roundtrip": {"n": 10},
    "image_resize": {"width": 64, "height": 48, "scale": 0.5}, "sleep": {"seconds": 0.01}, "spin": {"seconds": 0.01},
}


def start_worker(port: int, wid: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "edgelab.services.beaglepaas", "worker",
                             "--connect", f"127.0.0.1:{port}", "--id", wid],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(pred, timeout=15.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError("condition not reached")


def assert_dropped(s: socket.socket, says: str = "malformed") -> None:
    """The orchestrator answered with an error saying why, then closed this connection."""
    s.settimeout(5)
    reply = recv_msg(s)
    assert reply["type"] == "error" and says in reply["error"], reply
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:     # RST when our bytes were left unread
        pass


@pytest.fixture
def orch():
    o = Orchestrator()
    host, port = o.serve("127.0.0.1", 0)
    procs: list[subprocess.Popen] = []
    try:
        yield o, port, procs
    finally:
        o.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_every_function_runs_and_errors_are_reported():
    missing = set(FUNCTIONS) - set(FAST_ARGS) - {"zlib_decompress"}
    assert not missing, f"add fast args for {missing}"
    for f_id, args in FAST_ARGS.items():
        r = run_job({"i_id": "x", "f_id": f_id, "f_args": args})
        assert r["status"] == "ok", (f_id, r)
        assert r["end"] >= r["start"]
    comp = run_job({"i_id": "c", "f_id": "zlib_compress", "f_args": {"repeat": 50, "return_data": True}})["result"]
    back = run_job({"i_id": "d", "f_id": "zlib_decompress", "f_args": {"data": comp["data"]}})["result"]
    assert back["length"] == comp["in"]
    assert run_job({"i_id": "s", "f_id": "regex_search", "f_args": FAST_ARGS["regex_search"]})["result"] == "2024"
    bad = run_job({"i_id": "e", "f_id": "zlib_decompress", "f_args": {"data": "!!notbase64"}})
    assert bad["status"] == "error" and "Error" in bad["error"]
    assert run_job({"i_id": "u", "f_id": "nope"})["status"] == "error"


def test_jobs_over_tcp_client_with_two_workers(orch):
    o, port, procs = orch
    procs += [start_worker(port, "sv_w1"), start_worker(port, "sv_w2")]
    with BeaglePaaSClient("127.0.0.1", port) as c:
        ids = [c.submit(f, a) for f, a in FAST_ARGS.items()] + [c.submit("sleep", {"seconds": 0.2}) for _ in range(4)]
        recs = c.wait(ids, timeout=60)
        with pytest.raises(Exception, match="unknown function"):
            c.submit("rm_rf", {})
    assert [r["id"] for r in recs] == ids
    assert all(r["status"] == "done" for r in recs), [r for r in recs if r["status"] != "done"]
    assert {r["worker"] for r in recs} == {"sv_w1", "sv_w2"}      # both idle workers got work
    for r in recs:
        assert r["submit"] <= r["dispatch"] <= r["done"]
        assert r["queue_s"] >= 0 and r["exec_s"] >= 0
        assert r["start"] <= r["end"]
    sleeps = [r for r in recs if r["function"] == "sleep" and r["exec_s"] > 0.1]
    assert len(sleeps) == 4 and all(0.19 < r["exec_s"] < 1.5 for r in sleeps)


def test_worker_killed_mid_job_is_redispatched(orch):
    o, port, procs = orch
    victim = start_worker(port, "sv_victim")
    procs.append(victim)
    wait_for(lambda: "sv_victim" in o.stats()["workers"])
    i_id = o.submit("spin", {"seconds": 2.5})   # outlasts the survivor's start on a loaded machine
    wait_for(lambda: o.results()[0]["status"] == "running")
    assert o.results()[0]["worker"] == "sv_victim"
    procs.append(start_worker(port, "sv_survivor"))
    wait_for(lambda: "sv_survivor" in o.stats()["workers"])
    victim.send_signal(signal.SIGKILL)
    assert o.wait([i_id], timeout=20)
    rec = o.results()[0]
    assert rec["status"] == "done", rec
    assert rec["worker"] == "sv_survivor"
    assert rec["attempts"] == 2 and rec["lost_on"] == ["sv_victim"]
    assert 2.4 < rec["exec_s"] < 6
    assert o.stats()["redispatched"] == 1


def test_malformed_messages_are_counted_and_survived(orch):
    o, port, procs = orch
    # 1) a stranger speaking HTTP: a bogus length prefix
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert_dropped(s, "exceeds the limit")
    # 2) valid frame, invalid JSON
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(len(b"{nope").to_bytes(4, "big") + b"{nope")
        assert_dropped(s, "invalid JSON")
    wait_for(lambda: o.stats().get("malformed", 0) >= 2)
    # 3) a broken worker that answers its job with garbage: job goes to a real worker
    bad = socket.create_connection(("127.0.0.1", port))
    send_msg(bad, {"type": "hello", "worker": "sv_broken"})
    wait_for(lambda: "sv_broken" in o.stats()["workers"])
    i_id = o.submit("cascading_sha256", {"rounds": 10})
    job = recv_msg(bad)
    assert job["type"] == "job" and job["i_id"] == i_id
    bad.sendall(encode(["not", "an", "object"]))
    wait_for(lambda: o.stats().get("malformed", 0) >= 3)
    bad.close()
    procs.append(start_worker(port, "sv_good"))
    assert o.wait([i_id], timeout=20)
    rec = o.results()[0]
    assert rec["status"] == "done" and rec["worker"] == "sv_good" and rec["lost_on"] == ["sv_broken"]
    # orchestrator still serves clients
    with BeaglePaaSClient("127.0.0.1", port) as c:
        assert c.wait([c.submit("sleep", {"seconds": 0.01})], timeout=20)[0]["status"] == "done"


def test_nothing_is_lost_attempt_limit_and_stop():
    o = Orchestrator(max_attempts=2)
    _, port = o.serve("127.0.0.1", 0)
    try:
        i_id = o.submit("sleep", {"seconds": 5})
        for n in range(2):                            # two workers die while holding the job
            s = socket.create_connection(("127.0.0.1", port))
            send_msg(s, {"type": "hello", "worker": f"sv_dies{n}"})
            assert recv_msg(s)["i_id"] == i_id
            s.close()
        assert o.wait([i_id], timeout=10)
        rec = o.results()[0]
        assert rec["status"] == "failed" and "gave up after 2 attempts" in rec["reason"]
        queued = [o.submit("sleep", {"seconds": 0.01}) for _ in range(3)]   # no workers at all
    finally:
        o.stop()
    recs = {r["id"]: r for r in o.results()}
    assert all(recs[i]["status"] == "failed" and "stopped" in recs[i]["reason"] for i in queued)


def test_energy_share_from_sampler_hook():
    sampler = PowerSampler({"sv_e1": ConstantSource(2.0)}, interval=0.05).start()
    o = Orchestrator(energy_hook=sampler.energy_between)
    _, port = o.serve("127.0.0.1", 0)
    t = threading.Thread(target=run_worker, args=("127.0.0.1", port, "sv_e1"), kwargs={"max_jobs": 1}, daemon=True)
    t.start()
    try:
        i_id = o.submit("sleep", {"seconds": 0.5})
        assert o.wait([i_id], timeout=10)
        rec = wait_for(lambda: (r := o.results()[0])["energy_j"] is not None and r)
    finally:
        sampler.stop()
        o.stop()
    assert rec["energy_j"] == pytest.approx(2.0 * rec["exec_s"], rel=1e-3)
    assert 0.9 < rec["energy_j"] < 1.5


def test_cli_orchestrator_with_plug_meter_and_submit(tmp_path):
    out = tmp_path / "sv_results.jsonl"
    with service("edgelab.services.power", "--port", "0", "--watts", "3", "--interval", "0.1") as (_, mline):
        with service("edgelab.services.beaglepaas", "orchestrator", "--port", "0", "--meter",
                     f"sv_cw=" + url_of(mline), "--meter-interval", "0.1", "--results", str(out)) as (_, oline):
            port = int(oline.rsplit(":", 1)[1])
            w = start_worker(port, "sv_cw")
            try:
                env = dict(os.environ, PYTHONPATH=str(REPO))
                res = subprocess.run([sys.executable, "-m", "edgelab.services.beaglepaas", "submit", "--connect",
                                      f"127.0.0.1:{port}", "--function", "spin", "--args", '{"seconds":0.3}',
                                      "--count", "2", "--wait", "30"], env=env, capture_output=True, text=True,
                                     timeout=60, check=True)
                recs = json.loads(res.stdout)
                assert [r["status"] for r in recs] == ["done", "done"]
                time.sleep(0.5)                       # let the sampler cover the last job's end
            finally:
                w.kill()
                w.wait()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 2
    for r in lines:
        assert r["energy_j"] == pytest.approx(3.0 * r["exec_s"], rel=0.05)
