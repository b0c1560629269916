"""BeaglePaaS worker: connects to the orchestrator, runs one job at a time, reports timings.

A worker outlives its connection: when the orchestrator restarts, drops it (a
stale connection) or the network breaks, it connects again and carries in its
hello the result the orchestrator had not acknowledged, so a finished job is
not lost and need not run a second time.
"""

from __future__ import annotations

import logging
import socket
import time
import traceback
from typing import Optional

from ..framing import MalformedMessage, recv_msg, send_msg, tune_keepalive
from .functions import FUNCTIONS

log = logging.getLogger(__name__)


def run_job(job: dict) -> dict:
    """Execute one job message; never raises (errors become status=error)."""
    fn = FUNCTIONS.get(str(job.get("f_id")))
    start, cpu0 = time.time(), time.thread_time()   # the job runs on this thread: its CPU time
    if fn is None:
        return {"type": "result", "i_id": job.get("i_id"), "status": "error", "error": f"unknown function {job.get('f_id')!r}",
                "start": start, "end": time.time()}
    args = job.get("f_args")
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return {"type": "result", "i_id": job.get("i_id"), "status": "error",
                "error": f"f_args must be a JSON object, got {type(args).__name__}", "start": start, "end": time.time()}
    try:
        result = fn(args)
        status, error = "ok", None
    except Exception as exc:
        result, status, error = None, "error", f"{type(exc).__name__}: {exc}"
        log.debug("job %s failed:\n%s", job.get("i_id"), traceback.format_exc())
    return {"type": "result", "i_id": job.get("i_id"), "status": status, "result": result, "error": error,
            "start": start, "end": time.time(), "cpu_s": time.thread_time() - cpu0}


def _connect(host: str, port: int, worker_id: str, timeout_s: float) -> socket.socket:
    """Connect, retrying for ``timeout_s`` (nodes boot in any order; orchestrators restart)."""
    deadline = time.monotonic() + timeout_s
    pause = 0.2
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            sock.settimeout(None)        # waiting for a job may take any time; keepalive notices a dead peer
            tune_keepalive(sock)
            return sock
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"worker {worker_id}: cannot reach orchestrator {host}:{port} "
                                      f"for {timeout_s:g} s: {exc}") from exc
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def run_worker(host: str, port: int, worker_id: str, *, connect_timeout_s: float = 30.0,
               max_jobs: Optional[int] = None) -> int:
    """Serve jobs, reconnecting whenever the connection ends; returns jobs run.

    Returns after ``max_jobs`` jobs (None: never); raises ConnectionError when
    the orchestrator cannot be reached for ``connect_timeout_s`` seconds, at
    start or after a connection ended.
    """
    jobs = 0
    undelivered: Optional[dict] = None           # a result the orchestrator has not acknowledged
    while undelivered is not None or max_jobs is None or jobs < max_jobs:
        sock = _connect(host, port, worker_id, connect_timeout_s)
        try:
            with sock:
                hello = {"type": "hello", "worker": worker_id}
                if undelivered is not None:      # its connection ended before the ack
                    hello["result"] = undelivered
                send_msg(sock, hello)
                while undelivered is not None or max_jobs is None or jobs < max_jobs:
                    msg = recv_msg(sock)
                    if msg is None:
                        log.info("worker %s: orchestrator closed the connection; reconnecting", worker_id)
                        time.sleep(0.2)          # not a tight loop against an orchestrator that refuses us
                        break
                    if msg.get("type") == "ack":
                        if undelivered is not None and msg.get("i_id") == undelivered.get("i_id"):
                            undelivered = None
                        continue
                    if msg.get("type") == "error":
                        log.warning("worker %s: orchestrator says: %s", worker_id, str(msg.get("error"))[:200])
                        continue
                    if msg.get("type") != "job":
                        log.warning("ignoring unexpected message %s", str(msg)[:100])
                        continue
                    undelivered = run_job(msg)   # kept until acknowledged
                    jobs += 1
                    send_msg(sock, undelivered)
        except (OSError, MalformedMessage) as exc:
            log.warning("worker %s: connection to %s:%d ended (%s); reconnecting", worker_id, host, port, exc)
            time.sleep(0.2)
    return jobs
