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
import math
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

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
    target: int = 0     # index of the target (--url) the request went to

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


def _do(target: Target, scheduled: float, closed: bool, index: int = 0) -> RequestRecord:
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
    return RequestRecord(scheduled, start, end, latency, status, nbytes, err, index)


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


def merged_schedule(n_targets: int, rate: float, duration: float, arrivals: str = "constant",
                    seed: Optional[int] = None) -> list[tuple[float, int]]:
    """(offset, target index) for ``n_targets`` independent streams of ``rate`` each, in send order.

    Constant-rate streams are staggered by ``1 / (rate * n_targets)`` so that
    N targets do not all fire at the same instant (a burst no real fleet of
    independent clients produces).
    """
    out: list[tuple[float, int]] = []
    for k in range(n_targets):
        offs = arrival_offsets(rate, duration, arrivals, None if seed is None else seed + k)
        shift = k / (rate * n_targets) if arrivals == "constant" else 0.0
        out.extend((o + shift, k) for o in offs if o + shift < duration)
    return sorted(out)


def open_loop(target: Target | Sequence[Target], rate: float, duration: float, *, arrivals: str = "constant",
              max_concurrency: int = 256, seed: Optional[int] = None, offset: float = 0.0) -> list[RequestRecord]:
    """Open-loop load: ``rate`` requests/s to each target, sent on a fixed schedule.

    ``offset`` shifts the whole schedule (s): independent generators started
    together use it to avoid firing in lockstep.
    """
    targets = [target] if isinstance(target, Target) else list(target)
    schedule = [(o + offset, k) for o, k in merged_schedule(len(targets), rate, duration, arrivals, seed)]
    t0_wall, t0 = time.time(), time.perf_counter()
    futures = []
    with ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="loadgen") as pool:
        for off, k in schedule:
            delay = off - (time.perf_counter() - t0)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(_do, targets[k], t0_wall + off, False, k))
        return [f.result() for f in futures]


def warm_up(targets: Sequence[Target], requests_each: int) -> list[RequestRecord]:
    """``requests_each`` requests to every target, one after the other per target (the targets
    in parallel), before the measured load: they are not part of it.

    Why: a service's first request pays one-time costs (lazy imports, code paths paged in,
    allocator growth) that later ones do not — on a CPU-capped node hundreds of milliseconds,
    with the next requests queued behind it. Measured, those costs would bias the first
    seconds of every run (CPU time per request, the median latency of a short run) and add
    run-to-run noise that no repetition averages away quickly.
    """
    records: list[RequestRecord] = []
    lock = threading.Lock()

    def one(k: int) -> None:
        for _ in range(requests_each):
            rec = _do(targets[k], time.time(), True, k)
            with lock:
                records.append(rec)

    threads = [threading.Thread(target=one, args=(k,), daemon=True) for k in range(len(targets))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return records


def warmup_summary(records: list[RequestRecord]) -> dict:
    """What the warm-up saw (kept with the summary: a first request far slower than the rest is
    what it is there to absorb)."""
    lat = [r.latency_s * 1000.0 for r in records if 200 <= r.status < 300]
    return {"requests": len(records), "ok": len(lat), "latency_ms_max": round(max(lat), 3) if lat else None,
            "error_kinds": error_kinds(records)}


def synthetic_jpeg(size_bytes: int, seed: int = 0) -> bytes:
    """A deterministic JPEG of about ``size_bytes`` (within a few %), generated locally.

    A smooth gradient with seeded noise compresses like a photo; the side is
    searched so the encoded size lands near the target. Nodes build their own
    upload instead of receiving a file, so every backend sends the same bytes.
    """
    import io

    from PIL import Image

    if size_bytes < 2000:
        raise ValueError(f"synthetic JPEG size must be at least 2000 bytes, got {size_bytes}")
    rng = np.random.default_rng(seed)

    def encode(side: int) -> bytes:
        y, x = np.mgrid[0:side, 0:side]
        base = np.stack([(x * 255 // side), (y * 255 // side), ((x + y) * 127 // side)], axis=-1)
        noise = rng.integers(-40, 41, size=base.shape)
        img = np.clip(base + noise, 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img, "RGB").save(buf, format="JPEG", quality=85)
        return buf.getvalue()

    # Size grows ~ with the pixel count: scale the side from a probe, refine twice.
    side, best = 128, b""
    for _ in range(3):
        data = encode(side)
        if not best or abs(len(data) - size_bytes) < abs(len(best) - size_bytes):
            best = data
        side = max(16, min(4096, round(side * math.sqrt(size_bytes / len(data)))))
    return best


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
        "errors_sample": sorted({r.error for r in records if r.error})[:5],
        "error_kinds": error_kinds(records),
        "first_scheduled": min((r.scheduled for r in records), default=None),
        "last_end": max((r.end for r in records), default=None),
    }


def error_kind(rec: RequestRecord) -> Optional[str]:
    """What kind of failure a request met, None for a 2xx: the health checks tell a service that
    was not there (``refused``) or failed (``http_5xx``) from an overloaded one (``timeout``, ``reset``,
    ``http_503``)."""
    if 200 <= rec.status < 300:
        return None
    if rec.status == 503:   # "busy": how a service with a bounded pool sheds overload
        return "http_503"
    if rec.status >= 500:
        return "http_5xx"
    if rec.status:
        return "http_other"
    err = (rec.error or "").lower()
    if "refused" in err or "errno 111" in err:
        return "refused"
    if "timeout" in err or "timed out" in err:
        return "timeout"
    if "reset" in err or "aborted" in err or "disconnected" in err or "errno 104" in err:
        return "reset"
    return "other"


def error_kinds(records: list[RequestRecord]) -> dict[str, int]:
    """Count of failed requests per :func:`error_kind`."""
    return dict(sorted(_count(k for r in records if (k := error_kind(r)) is not None).items()))


def summarise_targets(records: list[RequestRecord], urls: Sequence[str], duration: Optional[float] = None,
                      with_latencies: bool = False) -> dict:
    """The overall summary plus one per target (``targets``), optionally with raw latencies (ms)."""
    summary = summarise(records, duration)
    per = []
    for k, url in enumerate(urls):
        mine = [r for r in records if r.target == k]
        one = summarise(mine, summary["duration_s"]) if mine else {"requests": 0, "ok": 0}
        one["url"] = url
        if with_latencies:
            one["latencies_ms"] = [round(r.latency_s * 1000.0, 3) for r in mine if 200 <= r.status < 300]
        per.append(one)
    summary["targets"] = per
    return summary


def _count(it) -> dict:
    out: dict = {}
    for x in it:
        out[x] = out.get(x, 0) + 1
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelab.workload.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, action="append",
                   help="target URL; repeat for several targets, each offered --rate (open loop)")
    p.add_argument("--method", help="default GET, or POST when --body is given")
    p.add_argument("--body", help="file to send as the request body (e.g. a JPEG)")
    p.add_argument("--synthetic-jpeg", type=int, metavar="BYTES",
                   help="send a generated JPEG of about BYTES bytes (deterministic with --seed) instead of --body")
    p.add_argument("--wait-go", action="store_true",
                   help="print READY on stderr when set up, then wait for a line on stdin before sending "
                        "(lets a driver start many generators at the same instant)")
    p.add_argument("--latencies", action="store_true", help="include each target's raw latencies (ms) in the JSON")
    p.add_argument("--content-type", help="default from the body file suffix")
    p.add_argument("--mode", choices=["open", "closed"], default="open")
    p.add_argument("--rate", type=float, help="open loop: requests per second")
    p.add_argument("--arrivals", choices=["constant", "poisson"], default="constant")
    p.add_argument("--clients", type=int, default=1, help="closed loop: concurrent clients")
    p.add_argument("--think", type=float, default=0.0, help="closed loop: mean think time s")
    p.add_argument("--think-dist", choices=["constant", "exponential"], default="constant")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    p.add_argument("--offset", type=float, default=0.0, help="open loop: delay the whole schedule by S seconds")
    p.add_argument("--concurrency", type=int, default=256, help="open loop: max requests in flight")
    p.add_argument("--timeout", type=float, default=30.0)
    p.add_argument("--warmup", type=int, default=0, metavar="N",
                   help="before the load (and before READY with --wait-go): N requests to each target, one "
                        "after the other, not measured (a service's first requests pay one-time costs)")
    p.add_argument("--seed", type=int)
    p.add_argument("--records", help="write per-request records as JSON lines here")
    a = p.parse_args(argv)
    if a.body and a.synthetic_jpeg:
        p.error("give --body or --synthetic-jpeg, not both")
    if a.synthetic_jpeg:
        body = synthetic_jpeg(a.synthetic_jpeg, a.seed or 0)
    else:
        body = open(a.body, "rb").read() if a.body else None
    ctype = a.content_type or ("image/png" if (a.body or "").endswith(".png") else
                               "image/jpeg" if a.synthetic_jpeg or (a.body or "").lower().endswith((".jpg", ".jpeg")) else
                               "application/octet-stream")
    targets = [Target(u, a.method or ("POST" if body is not None else "GET"), body, ctype, a.timeout) for u in a.url]
    if a.mode == "open" and not a.rate:
        p.error("--mode open needs --rate")
    if a.mode == "closed" and len(targets) > 1:
        p.error("--mode closed takes one --url")
    if not 0 <= a.warmup <= 1000:
        p.error(f"--warmup must be between 0 and 1000 requests per target, got {a.warmup}")
    warm = warm_up(targets, a.warmup) if a.warmup else []
    if a.wait_go:
        print("READY", file=sys.stderr, flush=True)
        sys.stdin.readline()
    if a.mode == "open":
        records = open_loop(targets, a.rate, a.duration, arrivals=a.arrivals, max_concurrency=a.concurrency,
                            seed=a.seed, offset=a.offset)
    else:
        records = closed_loop(targets[0], a.clients, a.duration, think_s=a.think, think=a.think_dist, seed=a.seed)
    summary = summarise_targets(records, a.url, with_latencies=a.latencies)
    summary.update({"mode": a.mode, "offered_rps": a.rate if a.mode == "open" else None,
                    "clients": a.clients if a.mode == "closed" else None,
                    "url": a.url[0] if len(a.url) == 1 else a.url,
                    "body_bytes": len(body) if body is not None else 0})
    if a.warmup:
        summary["warmup"] = warmup_summary(warm)
    if a.records:
        with open(a.records, "w") as f:
            for r in records:
                f.write(json.dumps(asdict(r)) + "\n")
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
