"""BeaglePaaS worker: connects to the orchestrator, runs one job at a time, reports timings."""

from __future__ import annotations

import logging
import socket
import time
import traceback
from typing import Optional

from ..framing import recv_msg, send_msg
from .functions import FUNCTIONS

log = logging.getLogger(__name__)


def run_job(job: dict) -> dict:
    """Execute one job message; never raises (errors become status=error)."""
    fn = FUNCTIONS.get(str(job.get("f_id")))
    start, cpu0 = time.time(), time.thread_time()   # the job runs on this thread: its CPU time
    if fn is None:
        return {"type": "result", "i_id": job.get("i_id"), "status": "error", "error": f"unknown function {job.get('f_id')!r}",
                "start": start, "end": time.time()}
    try:
        result = fn(job.get("f_args") or {})
        status, error = "ok", None
    except Exception as exc:
        result, status, error = None, "error", f"{type(exc).__name__}: {exc}"
        log.debug("job %s failed:\n%s", job.get("i_id"), traceback.format_exc())
    return {"type": "result", "i_id": job.get("i_id"), "status": status, "result": result, "error": error,
            "start": start, "end": time.time(), "cpu_s": time.thread_time() - cpu0}


def run_worker(host: str, port: int, worker_id: str, *, connect_timeout_s: float = 30.0,
               max_jobs: Optional[int] = None) -> int:
    """Serve jobs until the orchestrator closes the connection; returns jobs run.

    Retries the connection for ``connect_timeout_s`` so workers may start before
    the orchestrator (nodes boot in any order).
    """
    deadline = time.monotonic() + connect_timeout_s
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
            break
        except OSError as exc:
            if time.monotonic() > deadline:
                raise ConnectionError(f"worker {worker_id}: cannot reach orchestrator {host}:{port}: {exc}") from exc
            time.sleep(0.2)
    sock.settimeout(None)
    jobs = 0
    with sock:
        send_msg(sock, {"type": "hello", "worker": worker_id})
        while max_jobs is None or jobs < max_jobs:
            job = recv_msg(sock)
            if job is None:
                break
            if job.get("type") != "job":
                log.warning("ignoring unexpected message %s", str(job)[:100])
                continue
            send_msg(sock, run_job(job))
            jobs += 1
    return jobs
