"""BeaglePaaS orchestrator: queues invocations and dispatches them to idle workers.

Design follows MicroFaaS (peaclab/MicroFaaS ``orchestrator/orchestrator.py``): workers
connect *to* the orchestrator, identify themselves, get a job
``{i_id, f_id, f_args}`` and send back the result with their own timings.  As in
MicroFaaS a worker runs one job at a time, so the worker's whole draw during the
execution interval is that invocation's energy share.

Differences, on purpose: one long-lived connection per worker with
length-prefixed JSON (``edgelab.services.framing``) instead of one connection per
job; a worker that dies (EOF/reset/timeout) mid-job has its job put back at the
head of the queue for another worker; a malformed frame is logged, counted and
the offending connection dropped, the orchestrator keeps running; every
submitted invocation ends ``done`` or ``failed`` with a reason, also at shutdown.

Protocol (all messages JSON objects, 4-byte big-endian length prefix):
  worker -> orch  {"type":"hello","worker":ID}
  orch -> worker  {"type":"job","i_id":..,"f_id":..,"f_args":{..}}
  worker -> orch  {"type":"result","i_id":..,"status":"ok"|"error","result":..,"error":..,
                   "start":epoch_s,"end":epoch_s}
  client -> orch  {"type":"submit","f_id":..,"f_args":{..}}  -> {"type":"submitted","i_id":..}
                  {"type":"results"} -> {"type":"results","records":[..]}
                  {"type":"stats"}   -> {"type":"stats", ...counters}
"""

from __future__ import annotations

import collections
import itertools
import logging
import select
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from ..framing import MalformedMessage, recv_msg, send_msg
from .functions import FUNCTIONS

log = logging.getLogger(__name__)

EnergyHook = Callable[[str, float, float], Optional[float]]
"""(worker, t_start, t_end) -> joules the worker used in that interval, or None if unknown yet."""


@dataclass
class Invocation:
    i_id: str
    f_id: str
    f_args: dict
    submit_t: float
    dispatch_t: Optional[float] = None
    start_t: Optional[float] = None      # worker clock
    end_t: Optional[float] = None        # worker clock
    done_t: Optional[float] = None
    worker: Optional[str] = None
    status: str = "queued"               # queued | running | done | failed
    attempts: int = 0
    reason: Optional[str] = None         # why failed (or why re-dispatched, last one)
    result: Any = None
    energy_j: Optional[float] = None
    cpu_s: Optional[float] = None        # worker-reported CPU time of the run (energy attribution)
    lost_on: list = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")

    def record(self) -> dict:
        def diff(a, b):
            return None if a is None or b is None else b - a
        return {
            "id": self.i_id, "function": self.f_id, "submit": self.submit_t, "dispatch": self.dispatch_t,
            "start": self.start_t, "end": self.end_t, "done": self.done_t,
            "queue_s": diff(self.submit_t, self.dispatch_t), "exec_s": diff(self.start_t, self.end_t),
            "worker": self.worker, "status": self.status, "attempts": self.attempts, "reason": self.reason,
            "energy_j": self.energy_j, "cpu_s": self.cpu_s, "lost_on": list(self.lost_on), "result": self.result,
        }


class Orchestrator:
    def __init__(self, *, energy_hook: Optional[EnergyHook] = None, max_attempts: int = 3,
                 job_timeout_s: Optional[float] = None, functions: Iterable[str] = FUNCTIONS):
        self.energy_hook = energy_hook
        self.max_attempts = max_attempts
        self.job_timeout_s = job_timeout_s
        self.functions = set(functions)
        self._inv: dict[str, Invocation] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._sock: Optional[socket.socket] = None
        self._conns: set[socket.socket] = set()
        self._workers: dict[str, str] = {}          # worker id -> state (idle/busy)
        self._seq = itertools.count(1)
        self.counters = collections.Counter()

    # ------------------------------------------------------------------ public API
    def submit(self, f_id: str, f_args: Optional[dict] = None) -> str:
        if f_id not in self.functions:
            raise ValueError(f"unknown function {f_id!r}; known: {', '.join(sorted(self.functions))}")
        i_id = f"{next(self._seq):06d}-{uuid.uuid4().hex[:6]}"
        with self._cond:
            if self._stop.is_set():
                raise RuntimeError("orchestrator is stopped")
            self._inv[i_id] = Invocation(i_id, f_id, dict(f_args or {}), time.time())
            self._queue.append(i_id)
            self.counters["submitted"] += 1
            self._cond.notify_all()
        return i_id

    def results(self) -> list[dict]:
        """Per-invocation records, in submission order (energy filled in when known)."""
        with self._cond:
            invs = list(self._inv.values())
        for inv in invs:
            self._fill_energy(inv)
        return [inv.record() for inv in invs]

    def wait(self, ids: Optional[Iterable[str]] = None, timeout: Optional[float] = None) -> bool:
        """Block until the given (default: all) invocations are finished."""
        with self._cond:
            wanted = list(ids) if ids is not None else list(self._inv)
            return self._cond.wait_for(lambda: all(self._inv[i].finished for i in wanted), timeout)

    def stats(self) -> dict:
        with self._cond:
            by_status = collections.Counter(i.status for i in self._inv.values())
            return {**self.counters, **{f"status_{k}": v for k, v in by_status.items()},
                    "queued": len(self._queue), "workers": dict(self._workers)}

    # ------------------------------------------------------------------ lifecycle
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(128)
        self._sock = s
        threading.Thread(target=self._accept_loop, daemon=True, name="bpaas-accept").start()
        return s.getsockname()[:2]

    def stop(self) -> None:
        """Stop serving; whatever has not finished is marked failed (nothing is lost)."""
        self._stop.set()
        if self._sock:
            try:
                self._sock.close()
            except OSError:
                pass
        with self._cond:
            for s in list(self._conns):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            for inv in self._inv.values():
                if not inv.finished:
                    self._fail(inv, "orchestrator stopped before the invocation finished")
            self._queue.clear()
            self._cond.notify_all()

    # ------------------------------------------------------------------ internals
    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn, addr), daemon=True).start()

    def _malformed(self, where: str, exc: Exception) -> None:
        self.counters["malformed"] += 1
        log.warning("malformed message from %s: %s", where, exc)

    def _handle(self, conn: socket.socket, addr) -> None:
        with self._cond:
            self._conns.add(conn)
        peer = f"{addr[0]}:{addr[1]}"
        try:
            first = recv_msg(conn)
            if first is None:
                return
            kind = first.get("type")
            if kind == "hello" and isinstance(first.get("worker"), str):
                self._worker_loop(conn, first["worker"])
            elif kind in ("submit", "results", "stats"):
                self._client_loop(conn, first)
            else:
                self._malformed(peer, MalformedMessage(f"unexpected first message {str(first)[:100]}"))
        except MalformedMessage as exc:
            self._malformed(peer, exc)
        except OSError as exc:
            log.info("connection %s ended: %s", peer, exc)
        finally:
            with self._cond:
                self._conns.discard(conn)
            conn.close()

    def _client_loop(self, conn: socket.socket, msg: Optional[dict]) -> None:
        while msg is not None:
            kind = msg.get("type")
            if kind == "submit":
                try:
                    send_msg(conn, {"type": "submitted", "i_id": self.submit(str(msg.get("f_id")), msg.get("f_args") or {})})
                except (ValueError, RuntimeError) as exc:
                    send_msg(conn, {"type": "error", "error": str(exc)})
            elif kind == "results":
                send_msg(conn, {"type": "results", "records": self.results()})
            elif kind == "stats":
                send_msg(conn, {"type": "stats", **self.stats()})
            else:
                self._malformed("client", MalformedMessage(f"unknown request type {kind!r}"))
                send_msg(conn, {"type": "error", "error": f"unknown request type {kind!r}"})
            msg = recv_msg(conn)

    def _take(self, conn: socket.socket) -> Optional[Invocation]:
        """Next queued invocation; None when the worker's connection closed or we stop."""
        while not self._stop.is_set():
            with self._cond:
                if self._queue:
                    inv = self._inv[self._queue.popleft()]
                    return inv
                self._cond.wait(0.2)
            # idle: notice a worker that went away (EOF) or talks out of turn
            r, _, _ = select.select([conn], [], [], 0)
            if r:
                data = conn.recv(1, socket.MSG_PEEK)
                if not data:
                    return None
                raise MalformedMessage("worker sent data while idle")
        return None

    def _worker_loop(self, conn: socket.socket, wid: str) -> None:
        self.counters["workers_connected"] += 1
        log.info("worker %s connected", wid)
        with self._cond:
            self._workers[wid] = "idle"
        inv: Optional[Invocation] = None
        try:
            while True:
                inv = self._take(conn)
                if inv is None:
                    return
                with self._cond:
                    inv.attempts += 1
                    inv.worker, inv.status, inv.dispatch_t = wid, "running", time.time()
                    self._workers[wid] = "busy"
                conn.settimeout(self.job_timeout_s)
                send_msg(conn, {"type": "job", "i_id": inv.i_id, "f_id": inv.f_id, "f_args": inv.f_args})
                reply = recv_msg(conn)
                conn.settimeout(None)
                if reply is None:
                    raise ConnectionError("worker closed the connection mid-job")
                if reply.get("type") != "result" or reply.get("i_id") != inv.i_id:
                    raise MalformedMessage(f"expected result for {inv.i_id}, got {str(reply)[:100]}")
                self._finish(inv, reply)
                inv = None
                with self._cond:
                    self._workers[wid] = "idle"
        except MalformedMessage as exc:
            self._malformed(f"worker {wid}", exc)
            if inv is not None:
                self._requeue(inv, wid, f"malformed reply from worker {wid}: {exc}")
        except (OSError, ConnectionError) as exc:
            if inv is not None:
                self._requeue(inv, wid, f"worker {wid} lost mid-job: {exc or type(exc).__name__}")
        finally:
            with self._cond:
                self._workers.pop(wid, None)
            log.info("worker %s disconnected", wid)

    def _requeue(self, inv: Invocation, wid: str, reason: str) -> None:
        log.warning("%s (invocation %s, attempt %d)", reason, inv.i_id, inv.attempts)
        with self._cond:
            if inv.finished:             # already failed by stop()
                return
            inv.lost_on.append(wid)
            inv.reason = reason
            if self._stop.is_set():
                self._fail(inv, "orchestrator stopped; " + reason)
            elif inv.attempts >= self.max_attempts:
                self._fail(inv, f"gave up after {inv.attempts} attempts; last: {reason}")
            else:
                inv.status, inv.worker = "queued", None
                self._queue.appendleft(inv.i_id)     # head of the queue: it waited longest
                self.counters["redispatched"] += 1
            self._cond.notify_all()

    def _fail(self, inv: Invocation, reason: str) -> None:
        inv.status, inv.reason, inv.done_t = "failed", reason, time.time()
        self.counters["failed"] += 1

    def _finish(self, inv: Invocation, reply: dict) -> None:
        with self._cond:
            if inv.finished:             # stop() already failed it; keep that verdict
                return
            inv.start_t, inv.end_t = reply.get("start"), reply.get("end")
            cpu = reply.get("cpu_s")
            inv.cpu_s = float(cpu) if isinstance(cpu, (int, float)) else None
            inv.result, inv.done_t = reply.get("result"), time.time()
            if reply.get("status") == "ok":
                inv.status = "done"
                self.counters["done"] += 1
            else:
                self._fail(inv, f"function error: {reply.get('error')}")
            self._cond.notify_all()
        self._fill_energy(inv)

    def _fill_energy(self, inv: Invocation) -> None:
        if (self.energy_hook is None or inv.energy_j is not None or inv.status != "done"
                or inv.start_t is None or inv.end_t is None):
            return
        try:
            inv.energy_j = self.energy_hook(inv.worker, inv.start_t, inv.end_t)
        except Exception as exc:  # a meter problem must not break result collection
            log.warning("energy hook failed for %s: %s", inv.i_id, exc)
