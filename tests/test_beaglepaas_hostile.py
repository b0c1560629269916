"""BeaglePaaS against hostile or broken peers: every bound the orchestrator keeps, on real sockets.

Real orchestrator processes (CLI, so their memory and threads can be read from
/proc) or in-process orchestrators, real worker processes; the hostile peers are
raw sockets on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
from contextlib import ExitStack

import pytest

from edgelab.services.beaglepaas import BeaglePaaSClient, Orchestrator
from edgelab.services.framing import encode, recv_msg, send_msg

from svhelpers import REPO, free_port, service

ORCH = "edgelab.services.beaglepaas"


def frame(body: bytes) -> bytes:
    """Raw bytes framed as the wire protocol says (a 4-byte big-endian length first)."""
    return struct.pack("!I", len(body)) + body


def proc_status(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def port_of(line: str) -> int:
    return int(line.rsplit(":", 1)[1])


def start_worker(port: int, wid: str, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", ORCH, "worker", "--connect", f"127.0.0.1:{port}", "--id", wid,
                             *extra], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(pred, timeout=15.0, step=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError("condition not reached")


def error_then_closed(s: socket.socket, says: str, timeout: float = 5.0) -> str:
    """The orchestrator answered with an error frame saying ``says``, then closed the connection."""
    s.settimeout(timeout)
    reply = recv_msg(s)
    assert reply is not None and reply["type"] == "error" and says in reply["error"], reply
    try:
        assert s.recv(10) == b""
    except ConnectionResetError:
        pass
    return reply["error"]


@pytest.fixture
def procs():
    ps: list[subprocess.Popen] = []
    yield ps
    for p in ps:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_a_frame_longer_than_what_is_sent_times_out_with_an_error():
    with service(ORCH, "orchestrator", "--port", "0", "--frame-timeout", "1", "--hello-timeout", "1") as (_, line):
        port = port_of(line)
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(struct.pack("!I", 1000) + b'{"type":')       # announces 1000 bytes, sends 8
            t = time.monotonic()
            error_then_closed(s, "incomplete after 1 s")
            assert time.monotonic() - t < 4
        with socket.create_connection(("127.0.0.1", port)) as s:     # says nothing at all
            error_then_closed(s, "no message within 1 s")
        with socket.create_connection(("127.0.0.1", port)) as s:     # half a length prefix
            s.sendall(b"\x00\x00")
            error_then_closed(s, "incomplete")


def test_big_frames_do_not_grow_memory_and_held_bytes_are_bounded():
    with service(ORCH, "orchestrator", "--port", "0") as (proc, line):      # default limits
        port = port_of(line)
        with BeaglePaaSClient("127.0.0.1", port) as c:
            c.stats()
        rss0 = proc_status(proc.pid, "VmRSS")
        body = json.dumps({"type": "submit", "f_id": "sleep", "f_args": {"pad": "x" * (16 * 2**20 - 100)}}).encode()
        for _ in range(10):                                  # 10 x 16 MiB: 229 MB held before the bound
            with socket.create_connection(("127.0.0.1", port)) as s:
                try:
                    s.sendall(frame(body))
                except (BrokenPipeError, ConnectionResetError):
                    pass                                     # refused from the header: the rest is not read
                error_then_closed(s, "exceeds the limit of 1048576")
        grown_mib = (proc_status(proc.pid, "VmRSS") - rss0) / 1024
        assert grown_mib < 40, f"orchestrator grew by {grown_mib:.0f} MiB"
        # frames within the limit are accepted until the held arguments reach 64 MiB (--max-held-mib)
        args = {"seconds": 0, "pad": "y" * 900_000}
        with BeaglePaaSClient("127.0.0.1", port) as c:
            accepted = 0
            with pytest.raises(Exception, match="holds .* bytes .*limit 67108864"):
                for _ in range(100):
                    c.submit("sleep", args)
                    accepted += 1
            assert 60 < accepted < 75
            st = c.stats()
            assert st["refused_submits"] == 1 and st["held_bytes"] <= 64 * 2**20
        grown_mib = (proc_status(proc.pid, "VmRSS") - rss0) / 1024
        assert grown_mib < 64 + 40, f"orchestrator grew by {grown_mib:.0f} MiB"


def test_idle_connections_cost_no_threads():
    with service(ORCH, "orchestrator", "--port", "0") as (proc, line):      # default limits
        port = port_of(line)
        threads0 = proc_status(proc.pid, "Threads")
        with ExitStack() as stack:
            idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(300)]
            time.sleep(1.0)                                              # let it accept them all
            assert proc_status(proc.pid, "Threads") <= threads0 + 1      # 300 idle peers, no thread each
            c = stack.enter_context(BeaglePaaSClient("127.0.0.1", port))
            assert c.stats()["connections"] == 301                       # all served, none refused
            assert len(idle) == 300


def test_connections_beyond_the_limit_are_told_and_silent_ones_closed():
    with service(ORCH, "orchestrator", "--port", "0", "--max-connections", "5",
                 "--hello-timeout", "2") as (proc, line):
        port = port_of(line)
        with ExitStack() as stack:
            idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(5)]
            time.sleep(0.3)
            extra = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(3)]
            for s in extra:
                error_then_closed(s, "too many connections (limit 5)")
            for s in idle:                                               # silent: told and closed
                error_then_closed(s, "no message within 2 s", timeout=10)
        with BeaglePaaSClient("127.0.0.1", port) as c:                  # and clients are served again
            assert c.stats()["refused_connections"] == 3 and c.stats()["timeouts"] == 5


def test_every_malformed_request_gets_an_error_reply(procs):
    o = Orchestrator()
    _, port = o.serve("127.0.0.1", 0)
    try:
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(5)
            # well-framed requests with bad fields: an error each, the connection stays usable
            for req, says in [({"type": "submit", "f_id": "sleep", "f_args": [1, 2]}, "f_args must be a JSON object"),
                              ({"type": "submit", "f_id": "sleep", "f_args": "x"}, "f_args must be a JSON object"),
                              ({"type": "submit", "f_id": ["sleep"]}, "unknown function"),
                              ({"type": "submit"}, "unknown function"),
                              ({"type": "results", "ids": "000001"}, "'ids' must be a list"),
                              ({"type": ["submit"]}, "unknown request type"),
                              ({"type": "bogus"}, "unknown request type")]:
                send_msg(s, req)
                reply = recv_msg(s)
                assert reply["type"] == "error" and says in reply["error"], (req, reply)
            send_msg(s, {"type": "submit", "f_id": "sleep", "f_args": {"seconds": 0}})
            assert recv_msg(s)["type"] == "submitted"
        # frames that cannot be decoded: an error, then the connection is closed
        for body, says in [(b"[" * 100_000, "nested too deeply"), (b'{"a":' + b"9" * 5000 + b"}", "invalid JSON"),
                           (b"\xff\xfe{}", "not UTF-8"), (b"[1]", "expected a JSON object"),
                           (encode({"type": "hello", "worker": "\n"})[4:], "hello needs 'worker'")]:
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(frame(body))
                error_then_closed(s, says)
        assert o.stats()["malformed"] >= 7
    finally:
        o.stop()


def test_a_timed_out_job_runs_at_most_once_and_its_worker_stays(procs):
    o = Orchestrator(job_timeout_s=0.5, max_attempts=3)
    _, port = o.serve("127.0.0.1", 0)
    try:
        procs.append(start_worker(port, "sv_slow"))
        wait_for(lambda: "sv_slow" in o.stats()["workers"])
        slow = o.submit("spin", {"seconds": 1.5})
        wait_for(lambda: o.stats()["workers"]["sv_slow"] == "busy")
        procs.append(start_worker(port, "sv_other"))
        wait_for(lambda: "sv_other" in o.stats()["workers"])
        assert o.wait([slow], timeout=10)
        rec = o.results([slow])[0]
        assert rec["status"] == "failed" and "timed out after 0.5 s on worker sv_slow" in rec["reason"], rec
        assert rec["attempts"] == 1 and rec["lost_on"] == []
        assert o.stats()["workers"]["sv_slow"] == "overdue"          # still running it: no new job for it
        quick = [o.submit("sleep", {"seconds": 0.01}) for _ in range(3)]
        assert o.wait(quick, timeout=10)
        assert {r["worker"] for r in o.results(quick)} == {"sv_other"}
        wait_for(lambda: o.stats().get("late_results") == 1)         # the late result came, and was dropped
        st = o.stats()
        assert st.get("redispatched", 0) == 0 and st["workers"]["sv_slow"] == "idle"
        assert all(p.poll() is None for p in procs)                  # no worker exited
        again = o.submit("spin", {"seconds": 0.8})                   # the slow worker works again
        assert o.wait([again], timeout=10)
        assert o.results([again])[0]["status"] == "failed"           # still too slow, still once
        assert o.results([again])[0]["attempts"] == 1
    finally:
        o.stop()


def test_workers_reconnect_after_the_orchestrator_restarts(procs):
    port = free_port()
    with service(ORCH, "orchestrator", "--port", str(port)):
        procs.append(start_worker(port, "sv_phoenix", "--connect-timeout", "20"))
        with BeaglePaaSClient("127.0.0.1", port) as c:
            assert c.wait([c.submit("sleep", {"seconds": 0.01})], timeout=20)[0]["worker"] == "sv_phoenix"
    time.sleep(0.5)                                                  # orchestrator gone for a while
    assert procs[0].poll() is None, "the worker exited when the orchestrator stopped"
    with service(ORCH, "orchestrator", "--port", str(port)):
        with BeaglePaaSClient("127.0.0.1", port) as c:
            rec = c.wait([c.submit("sleep", {"seconds": 0.01})], timeout=20)[0]
            assert rec["status"] == "done" and rec["worker"] == "sv_phoenix"


def test_worker_resends_an_unacknowledged_result_after_reconnecting(procs):
    """A scripted orchestrator drops the worker mid-job; the worker comes back with the result."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        srv.settimeout(15)
        procs.append(start_worker(srv.getsockname()[1], "sv_loyal"))
        c1, _ = srv.accept()
        c1.settimeout(10)
        assert recv_msg(c1) == {"type": "hello", "worker": "sv_loyal"}
        send_msg(c1, {"type": "job", "i_id": "sv-1", "f_id": "sleep", "f_args": {"seconds": 0.3}})
        c1.close()                                                   # dropped before the result
        c2, _ = srv.accept()
        with c2:
            c2.settimeout(10)
            hello = recv_msg(c2)
            assert hello["type"] == "hello" and hello["worker"] == "sv_loyal"
            res = hello["result"]
            assert res["type"] == "result" and res["i_id"] == "sv-1" and res["status"] == "ok"
            assert res["result"] == {"slept": 0.3}


def test_orchestrator_takes_the_result_of_a_worker_that_reconnected():
    o = Orchestrator(max_attempts=3)
    _, port = o.serve("127.0.0.1", 0)
    try:
        old = socket.create_connection(("127.0.0.1", port))
        send_msg(old, {"type": "hello", "worker": "sv_back"})
        i_id = o.submit("sleep", {"seconds": 0.1})
        job = recv_msg(old)
        assert job["i_id"] == i_id
        new = socket.create_connection(("127.0.0.1", port))          # same worker, new connection
        send_msg(new, {"type": "hello", "worker": "sv_back",
                       "result": {"type": "result", "i_id": i_id, "status": "ok", "result": {"slept": 0.1},
                                  "start": 1.0, "end": 1.1}})
        assert recv_msg(new) == {"type": "ack", "i_id": i_id}
        assert o.wait([i_id], timeout=5)
        rec = o.results([i_id])[0]
        assert rec["status"] == "done" and rec["worker"] == "sv_back" and rec["attempts"] == 1
        st = o.stats()
        assert st["recovered_results"] == 1 and st["workers"] == {"sv_back": "idle"}
        old.settimeout(5)
        assert old.recv(10) == b""                                   # the stale connection was closed
        old.close()
        new.close()
    finally:
        o.stop()


def test_frames_received_at_once_share_one_byte_budget():
    from edgelab.services.beaglepaas import Limits

    o = Orchestrator(limits=Limits(max_frame=1_000_000, max_buffered=1_500_000))
    _, port = o.serve("127.0.0.1", 0)
    try:
        body = json.dumps({"type": "submit", "f_id": "sleep", "f_args": {"pad": "z" * 999_000}}).encode()
        with socket.create_connection(("127.0.0.1", port)) as a, socket.create_connection(("127.0.0.1", port)) as b:
            a.sendall(frame(body)[:1000])                    # a's frame holds 1 MB of the budget
            time.sleep(0.3)
            b.sendall(frame(body)[:1000])
            error_then_closed(b, "other frames are being received (limit 1500000)")
            a.sendall(frame(body)[1000:])                    # a's frame completes and is served
            a.settimeout(5)
            assert recv_msg(a)["type"] == "submitted"
        with BeaglePaaSClient("127.0.0.1", port) as c:      # the budget was given back
            assert c.submit("sleep", {"pad": "z" * 999_000})
    finally:
        o.stop()
