"""HTTP load generator: open loop (constant/Poisson arrivals) or closed loop (K clients).

Open loop avoids coordinated omission: arrival times are fixed in advance from the
rate alone, each request's latency is measured from its *scheduled* send time, so a
slow server that delays sends is charged for the wait (Tene, "How NOT to measure
latency"; wrk2).  ``send_lag`` (actual start - scheduled) is recorded too, so a
saturated generator is visible rather than silently lowering the offered load.

CLI prints one JSON summary on stdout; ``--records FILE`` writes per-request JSON lines.
  python -m edgelab.workload.loadgen --url http://10.0.0.2:8080/detect?mode=faces \
      --body img.jpg --mode open --rate 20 --duration 30 --arrivals poisson
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np
import requests


@dataclass
class RequestRecord:
    scheduled: float    # epoch s: when the request should have been sent
    start: float        # epoch s: when it was sent
    end: float
    latency_s: float    # end - scheduled (open loop) / end - start (closed loop)
    status: int         # HTTP status, 0 on a transport error
    bytes: int          # response body bytes
    error: Optional[str] = None

    @property
    def send_lag_s(self) -> float:
        return self.start - self.scheduled


@dataclass
class Target:
    url: str
    method: str = "GET"
    body: Optional[bytes] = None
    content_type: str = "application/octet-stream"
    timeout_s: float = 30.0


_tls = threading.local()


def _session() -> requests.Session:
    s = getattr(_tls, "session", None)
    if s is None:
        s = _tls.session = requests.Session()
    return s


def _do(target: Target, scheduled: float, closed: bool) -> RequestRecord:
    start = time.time()
    t0 = time.perf_counter()
    try:
        headers = {"Content-Type": target.content_type} if target.body is not None else None
        r = _session().request(target.method, target.url, data=target.body, headers=headers,
                               timeout=target.timeout_s)
        status, nbytes, err = r.status_code, len(r.content), None
    except requests.RequestException as exc:
        status, nbytes, err = 0, 0, f"{type(exc).__name__}: {exc}"[:300]
    elapsed = time.perf_counter() - t0
    end = start + elapsed
    latency = elapsed if closed else end - scheduled
    return RequestRecord(scheduled, start, end, latency, status, nbytes, err)


def arrival_offsets(rate: float, duration: float, arrivals: str = "constant",
                    seed: Optional[int] = None) -> list[float]:
    """Send offsets (s from start) in [0, duration) for the given mean rate (pure)."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be > 0 (got rate={rate}, duration={duration})")
    out, t = [], 0.0
    rnd = random.Random(seed)
    if arrivals == "constant":
        n = int(rate * duration + 1e-9)
        return [i / rate for i in range(n)]
    if arrivals != "poisson":
        raise ValueError(f"arrivals must be 'constant' or 'poisson', got {arrivals!r}")
    while True:
        t += rnd.expovariate(rate)
        if t >= duration:
            return out
        out.append(t)


def open_loop(target: Target, rate: float, duration: float, *, arrivals: str = "constant",
              max_concurrency: int = 256, seed: Optional[int] = None) -> list[RequestRecord]:
    offsets = arrival_offsets(rate, duration, arrivals, seed)
    t0_wall, t0 = time.time(), time.perf_counter()
    futures = []
    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="loadgen") as pool:
        for off in offsets:
            delay = off - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_do, target, t0_wall + off, False))
        return [f.result() for f in futures]


def closed_loop(target: Target, clients: int, duration: float, *, think_s: float = 0.0,
                think: str = "constant", seed: Optional[int] = None) -> list[RequestRecord]:
    stop_at = time.perf_counter() + duration
    records: list[RequestRecord] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        rnd = random.Random(None if seed is None else seed + k)
        while time.perf_counter() < stop_at:
            rec = _do(target, time.time(), True)
            with lock:
                records.append(rec)
            if think_s > 0:
                pause = rnd.expovariate(1 / think_s) if think == "exponential" else think_s
                time.sleep(min(pause, max(0.0, stop_at - time.perf_counter())))

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sorted(records, key=lambda r: r.start)


def summarise(records: list[RequestRecord], duration: Optional[float] = None) -> dict:
    """Throughput and latency percentiles (ms) of the successful (2xx) requests."""
    ok = [r for r in records if 200 <= r.status < 300]
    if duration is None and records:
        duration = max(r.end for r in records) - min(r.scheduled for r in records)
    duration = duration or 0.0
    lat = np.array([r.latency_s for r in ok]) * 1000.0
    lag = np.array([r.send_lag_s for r in records]) * 1000.0

    def pct(a, q):
        return float(np.percentile(a, q)) if len(a) else None

    span = (max(r.start for r in records) - min(r.start for r in records)) if len(records) > 1 else 0.0
    return {
        "requests": len(records), "ok": len(ok), "errors": len(records) - len(ok),
        "duration_s": duration,
        "throughput_rps": len(ok) / duration if duration > 0 else None,
        "send_rate_rps": (len(records) - 1) / span if span > 0 else None,
        "bytes": int(sum(r.bytes for r in records)),
        "latency_ms": {"mean": float(lat.mean()) if len(lat) else None, "p50": pct(lat, 50), "p95": pct(lat, 95),
                       "p99": pct(lat, 99), "max": float(lat.max()) if len(lat) else None},
        "send_lag_ms": {"p50": pct(lag, 50), "p99": pct(lag, 99), "max": float(lag.max()) if len(lag) else None},
        "status_counts": {str(k): v for k, v in sorted(_count(r.status for r in records).items())},
    }


def _count(it) -> dict:
    out: dict = {}
    for x in it:
        out[x] = out.get(x, 0) + 1
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelab.workload.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--method", help="default GET, or POST when --body is given")
    p.add_argument("--body", help="file to send as the request body (e.g. a JPEG)")
    p.add_argument("--content-type", help="default from the body file suffix")
    p.add_argument("--mode", choices=["open", "closed"], default="open")
    p.add_argument("--rate", type=float, help="open loop: requests per second")
    p.add_argument("--arrivals", choices=["constant", "poisson"], default="constant")
    p.add_argument("--clients", type=int, default=1, help="closed loop: concurrent clients")
    p.add_argument("--think", type=float, default=0.0, help="closed loop: mean think time s")
    p.add_argument("--think-dist", choices=["constant", "exponential"], default="constant")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--concurrency", type=int, default=256, help="open loop: max requests in flight")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--records", help="write per-request records as JSON lines here")
    a = p.parse_args(argv)
    body = open(a.body, "rb").read() if a.body else None
    ctype = a.content_type or ("image/png" if (a.body or "").endswith(".png") else
                               "image/jpeg" if (a.body or "").lower().endswith((".jpg", ".jpeg")) else
                               "application/octet-stream")
    target = Target(a.url, a.method or ("POST" if body is not None else "GET"), body, ctype, a.timeout)
    if a.mode == "open":
        if not a.rate:
            p.error("--mode open needs --rate")
        records = open_loop(target, a.rate, a.duration, arrivals=a.arrivals, max_concurrency=a.concurrency, seed=a.seed)
    else:
        records = closed_loop(target, a.clients, a.duration, think_s=a.think, think=a.think_dist, seed=a.seed)
    summary = summarise(records)
    summary.update({"mode": a.mode, "offered_rps": a.rate if a.mode == "open" else None,
                    "clients": a.clients if a.mode == "closed" else None, "url": a.url})
    if a.records:
        with open(a.records, "w") as f:
            for r in records:
                f.write(json.dumps(asdict(r)) + "\n")
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
