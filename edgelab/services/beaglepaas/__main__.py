"""CLI for BeaglePaaS.

  python -m edgelab.services.beaglepaas orchestrator --bind 0.0.0.0 --port 7000 \
      [--meter w1=http://10.0.0.5:8081 ...] [--results out.jsonl]
  python -m edgelab.services.beaglepaas worker --connect 10.0.0.1:7000 --id w1
  python -m edgelab.services.beaglepaas submit --connect 10.0.0.1:7000 --function sleep \
      --args '{"seconds":0.1}' --count 10 --wait 60      (prints the records as JSON)
  python -m edgelab.services.beaglepaas bench --connect 10.0.0.1:7000 --workers 4 \
      --functions float_operations,json_roundtrip --count 40   (batch; records + timings as JSON)

The orchestrator prints ``LISTENING tcp://HOST:PORT`` when ready.  ``--meter``
samples each worker's Tasmota plug (real or edgelab's emulated one) so every
invocation record carries the worker's energy during its execution.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..lifecycle import serve_until_signalled


def _hostport(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {s!r}")
    return host, int(port)


def cmd_orchestrator(a) -> int:
    from ..power import PowerSampler, TasmotaHttpSource
    from .orchestrator import Limits, Orchestrator

    sampler = None
    hook = None
    if a.meter:
        meters = {}
        for spec in a.meter:
            wid, _, url = spec.partition("=")
            if not url:
                raise SystemExit(f"--meter expects WORKER=URL, got {spec!r}")
            meters[wid] = TasmotaHttpSource(url)
        sampler = PowerSampler(meters, interval=a.meter_interval).start()
        hook = sampler.energy_between
    try:
        limits = Limits(max_connections=a.max_connections, max_frame=a.max_frame,
                        max_held_bytes=int(a.max_held_mib * 2**20), hello_timeout_s=a.hello_timeout,
                        idle_timeout_s=a.idle_timeout, frame_timeout_s=a.frame_timeout)
        orch = Orchestrator(energy_hook=hook, max_attempts=a.max_attempts, job_timeout_s=a.job_timeout,
                            limits=limits)
    except ValueError as exc:
        raise SystemExit(f"orchestrator: {exc}")
    if a.metrics_port:
        from prometheus_client import CollectorRegistry

        from ..metrics import OrchestratorCollector, serve_metrics

        registry = CollectorRegistry()
        registry.register(OrchestratorCollector(orch.results, orch.stats))
        serve_metrics(registry, a.metrics_port, a.bind)
    serve_until_signalled(lambda: "tcp://%s:%d" % orch.serve(a.bind, a.port))
    if sampler:
        sampler.stop()
    orch.stop()
    if a.results:
        with open(a.results, "w") as f:
            for rec in orch.results():
                f.write(json.dumps(rec) + "\n")
    return 0


def cmd_worker(a) -> int:
    from .worker import run_worker

    host, port = a.connect
    try:
        n = run_worker(host, port, a.id, connect_timeout_s=a.connect_timeout)
    except ConnectionError as exc:
        raise SystemExit(str(exc))
    logging.info("worker %s ran %d jobs", a.id, n)
    return 0


def cmd_submit(a) -> int:
    from .client import BeaglePaaSClient, BeaglePaaSError

    host, port = a.connect
    try:
        args = json.loads(a.args)
    except ValueError as exc:
        raise SystemExit(f"--args is not JSON: {exc}")
    if not isinstance(args, dict):
        raise SystemExit(f"--args must be a JSON object, got {type(args).__name__}")
    try:
        with BeaglePaaSClient(host, port) as c:
            ids = [c.submit(a.function, args) for _ in range(a.count)]
            if a.wait:
                print(json.dumps(c.wait(ids, timeout=a.wait)))
            else:
                print(json.dumps(ids))
    except (BeaglePaaSError, OSError) as exc:
        raise SystemExit(f"submit: {exc}")
    return 0


def cmd_bench(a) -> int:
    """Wait for the workers, submit a batch at once, wait for it, print records and timings."""
    import time

    from .client import BeaglePaaSClient

    host, port = a.connect
    functions = a.functions.split(",")
    with BeaglePaaSClient(host, port) as c:
        deadline = time.monotonic() + a.wait
        while len(c.stats().get("workers", {})) < a.workers:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {len(c.stats().get('workers', {}))} of {a.workers} workers connected "
                                 f"within {a.wait:g} s")
            time.sleep(0.05)
        t_submit = time.time()
        ids = [c.submit(functions[i % len(functions)], {}) for i in range(a.count)]
        c.wait(ids, timeout=a.wait)
        t_done = time.time()
        time.sleep(a.settle)  # let the meters' samples cover the last executions
        recs = c.results(ids)
        print(json.dumps({"t_submit": t_submit, "t_done": t_done, "records": recs, "stats": c.stats()}))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelab.services.beaglepaas", description="MicroFaaS-style FaaS.")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    o = sub.add_parser("orchestrator", help="queue invocations and dispatch them to workers")
    o.add_argument("--bind", default="127.0.0.1")
    o.add_argument("--port", type=int, default=7000, help="0 = pick a free port")
    o.add_argument("--max-attempts", type=int, default=3, help="dispatches per invocation before it fails")
    o.add_argument("--job-timeout", type=float,
                   help="seconds a job may run; past it the job fails and is never dispatched again (at most once)")
    o.add_argument("--max-connections", type=int, default=512, help="workers and clients connected at once")
    o.add_argument("--max-frame", type=int, default=1 << 20, help="bytes of one incoming message")
    o.add_argument("--max-held-mib", type=float, default=64.0,
                   help="MiB of invocation arguments and results kept; beyond, submissions are refused")
    o.add_argument("--hello-timeout", type=float, default=10.0, help="seconds a new connection has to say who it is")
    o.add_argument("--idle-timeout", type=float, default=300.0, help="seconds a client may stay silent")
    o.add_argument("--frame-timeout", type=float, default=30.0,
                   help="seconds a begun message has to arrive in full (and a reply to be read)")
    o.add_argument("--meter", action="append", default=[], metavar="WORKER=URL", help="Tasmota plug of a worker")
    o.add_argument("--meter-interval", type=float, default=0.5)
    o.add_argument("--results", help="write per-invocation records (JSON lines) here at exit")
    o.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0 = off)")
    o.set_defaults(fn=cmd_orchestrator)
    w = sub.add_parser("worker", help="connect to an orchestrator and run jobs")
    w.add_argument("--connect", type=_hostport, required=True, metavar="HOST:PORT")
    w.add_argument("--id", required=True, help="worker id (e.g. the node name)")
    w.add_argument("--connect-timeout", type=float, default=30.0,
                   help="seconds to keep trying to reach the orchestrator, at start and after each disconnection")
    w.set_defaults(fn=cmd_worker)
    s = sub.add_parser("submit", help="submit invocations")
    s.add_argument("--connect", type=_hostport, required=True, metavar="HOST:PORT")
    s.add_argument("--function", required=True)
    s.add_argument("--args", default="{}", help="JSON object of function arguments")
    s.add_argument("--count", type=int, default=1)
    s.add_argument("--wait", type=float, default=0.0, help="wait up to N s and print the records")
    s.set_defaults(fn=cmd_submit)
    b = sub.add_parser("bench", help="wait for N workers, submit a batch, print the records as JSON")
    b.add_argument("--connect", type=_hostport, required=True, metavar="HOST:PORT")
    b.add_argument("--workers", type=int, default=1, help="workers that must be connected before submitting")
    b.add_argument("--functions", default="float_operations", help="comma-separated, used round-robin")
    b.add_argument("--count", type=int, default=10)
    b.add_argument("--wait", type=float, default=120.0, help="seconds to wait for workers and for the batch")
    b.add_argument("--settle", type=float, default=1.0, help="seconds to wait before reading energy")
    b.set_defaults(fn=cmd_bench)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
