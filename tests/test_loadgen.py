"""Load generator against servers with a known artificial delay."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import matplotlib.cbook as cbook
import pytest

from edgelab.workload.loadgen import Target, arrival_offsets, closed_loop, open_loop, summarise

from svhelpers import REPO, service, url_of


def delay_server(delay_s: float, serial: bool = False) -> ThreadingHTTPServer:
    """Answers every request after ``delay_s``; ``serial`` = one request at a time (capacity 1/delay)."""
    lock = threading.Lock()

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_GET(self):
            if serial:
                with lock:
                    time.sleep(delay_s)
            else:
                time.sleep(delay_s)
            body = b"x" * 100
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


@pytest.fixture
def server_factory():
    servers = []

    def make(delay_s, serial=False):
        s = delay_server(delay_s, serial)
        servers.append(s)
        return f"http://127.0.0.1:{s.server_address[1]}/"
    yield make
    for s in servers:
        s.shutdown()
        s.server_close()


def test_arrival_offsets():
    assert arrival_offsets(10, 2) == [i / 10 for i in range(20)]
    poisson = arrival_offsets(50, 100, "poisson", seed=1)
    assert len(poisson) / 100 == pytest.approx(50, rel=0.05)
    assert all(0 <= a < b < 100 for a, b in zip(poisson, poisson[1:]))
    with pytest.raises(ValueError):
        arrival_offsets(0, 1)


def test_open_loop_rate_and_latency(server_factory):
    url = server_factory(0.05)
    recs = open_loop(Target(url), rate=40, duration=2.0)
    s = summarise(recs)
    assert s["requests"] == 80 and s["ok"] == 80
    assert s["send_rate_rps"] == pytest.approx(40, rel=0.10)
    assert s["bytes"] == 8000
    lat = s["latency_ms"]
    assert 50 <= lat["p50"] < 130          # 50 ms server delay + loopback + a busy shared CPU
    assert lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert s["send_lag_ms"]["p50"] < 20


def test_open_loop_charges_queueing_no_coordinated_omission(server_factory):
    url = server_factory(0.1, serial=True)             # capacity 10 req/s
    over = summarise(open_loop(Target(url), rate=20, duration=1.5))    # offered 2x capacity
    closed = summarise(closed_loop(Target(url), clients=1, duration=1.0))
    # 30 requests need 3 s of service; the last was scheduled at 1.45 s -> waited ~1.5 s
    assert over["latency_ms"]["max"] > 1200
    assert over["latency_ms"]["p99"] > 5 * closed["latency_ms"]["p50"]
    assert 95 <= closed["latency_ms"]["p50"] < 180
    assert over["throughput_rps"] == pytest.approx(10, rel=0.25)


def test_closed_loop_think_time(server_factory):
    url = server_factory(0.05)
    recs = closed_loop(Target(url), clients=3, duration=2.0, think_s=0.05)
    s = summarise(recs, duration=2.0)
    # each client: 50 ms service + 50 ms think -> ~10 req/s, 3 clients -> ~30 req/s
    assert s["throughput_rps"] == pytest.approx(30, rel=0.3)
    assert 50 <= s["latency_ms"]["p50"] < 130


def test_cli_against_phone_service(tmp_path):
    img = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    rec_file = tmp_path / "sv_records.jsonl"
    with service("edgelab.services.phone", "--port", "0") as (_, line):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        res = subprocess.run([sys.executable, "-m", "edgelab.workload.loadgen", "--url",
                              url_of(line) + "/detect?mode=gray", "--body", img, "--mode", "open",
                              "--rate", "20", "--duration", "1", "--arrivals", "poisson", "--seed", "3",
                              "--records", str(rec_file)], capture_output=True, text=True, env=env, timeout=60)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["ok"] == summary["requests"] > 5 and summary["errors"] == 0
    assert summary["mode"] == "open" and summary["offered_rps"] == 20
    rows = [json.loads(x) for x in rec_file.read_text().splitlines()]
    assert len(rows) == summary["requests"]
    assert {"scheduled", "start", "end", "latency_s", "status", "bytes"} <= set(rows[0])
    assert all(r["status"] == 200 and r["bytes"] > 0 for r in rows)


# --- features the experiments drive: synthetic uploads, several targets, start gate -------------
from edgelab.workload.loadgen import merged_schedule, synthetic_jpeg  # noqa: E402


@pytest.mark.parametrize("size", [5_000, 20_000, 125_000])
def test_synthetic_jpeg_has_the_requested_size_and_is_a_real_deterministic_jpeg(size):
    import io

    from PIL import Image

    data = synthetic_jpeg(size, seed=3)
    assert abs(len(data) - size) / size < 0.10
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert synthetic_jpeg(size, seed=3) == data != synthetic_jpeg(size, seed=4)


def test_merged_schedule_gives_each_target_its_rate_and_staggers_constant_streams():
    sched = merged_schedule(4, rate=5.0, duration=2.0)
    assert [o for o, _ in sched] == sorted(o for o, _ in sched)
    for k in range(4):
        mine = [o for o, t in sched if t == k]
        assert len(mine) == 10
        assert mine[0] == pytest.approx(k / 20)  # shifted by k / (rate * targets)
    assert min(b[0] - a[0] for a, b in zip(sched, sched[1:])) == pytest.approx(1 / 20)


@pytest.fixture
def upload_servers():
    """Two servers that read the uploaded body and answer with its length."""
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *a):
            pass

        def do_POST(self):
            n = len(self.rfile.read(int(self.headers["Content-Length"])))
            body = str(n).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), H) for _ in range(2)]
    for s in servers:
        s.daemon_threads = True
        threading.Thread(target=s.serve_forever, daemon=True).start()
    yield [f"http://127.0.0.1:{s.server_address[1]}/" for s in servers]
    for s in servers:
        s.shutdown()


def test_cli_several_targets_synthetic_body_and_start_gate(upload_servers):
    urls = upload_servers
    argv = [sys.executable, "-m", "edgelab.workload.loadgen", "--rate", "10", "--duration", "1",
            "--synthetic-jpeg", "8000", "--wait-go", "--latencies", "--offset", "0.05"]
    for u in urls:
        argv += ["--url", u]
    p = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stderr.readline().strip() == b"READY"
        time.sleep(0.5)
        t_go = time.time()
        assert p.poll() is None  # waits for the go line
        out, err = p.communicate(b"go\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    s = json.loads(out)
    assert s["body_bytes"] == len(synthetic_jpeg(8000, 0))
    assert s["bytes"] == 20 * len(str(s["body_bytes"]))  # each server echoed the uploaded length
    assert [t["url"] for t in s["targets"]] == urls
    assert [t["ok"] for t in s["targets"]] == [10, 10]
    assert all(len(t["latencies_ms"]) == 10 for t in s["targets"])
    assert s["first_scheduled"] >= t_go + 0.05 - 0.01  # nothing scheduled before go + offset


def test_warmup_requests_come_before_ready_and_are_not_measured():
    """--warmup N: each target has served N requests by READY, and the summary counts only the load."""
    seen: list[str] = []

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            seen.append(self.path)
            time.sleep(0.2 if len(seen) == 1 else 0.0)   # a slow first request, as a cold service's
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/"
    p = subprocess.Popen([sys.executable, "-m", "edgelab.workload.loadgen", "--url", url, "--rate", "10",
                          "--duration", "1", "--warmup", "3", "--wait-go", "--latencies"], cwd=REPO,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stderr.readline().strip() == b"READY"
        assert len(seen) == 3                      # warmed up before READY
        out, err = p.communicate(b"go\n", timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
        srv.shutdown()
    assert p.returncode == 0, err
    s = json.loads(out)
    assert len(seen) == 13 and s["requests"] == 10 and s["ok"] == 10
    assert s["warmup"]["requests"] == 3 and s["warmup"]["ok"] == 3
    assert s["warmup"]["latency_ms_max"] >= 200           # the slow first request was the warm-up's


def test_warmup_must_be_a_sane_count():
    r = subprocess.run([sys.executable, "-m", "edgelab.workload.loadgen", "--url", "http://127.0.0.1:9/",
                        "--rate", "1", "--warmup", "-1"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2 and "--warmup must be between 0 and 1000" in r.stderr
