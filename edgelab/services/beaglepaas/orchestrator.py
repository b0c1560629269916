"""BeaglePaaS orchestrator: queues invocations and dispatches them to idle workers.

Design follows MicroFaaS (peaclab/MicroFaaS ``orchestrator/orchestrator.py``): workers
connect *to* the orchestrator, identify themselves, get a job
``{i_id, f_id, f_args}`` and send back the result with their own timings.  As in
MicroFaaS a worker runs one job at a time, so the worker's whole draw during the
execution interval is that invocation's energy share.

Differences, on purpose: one long-lived connection per worker with
length-prefixed JSON (``edgelab.services.framing``) instead of one connection per
job; a worker whose connection ends (EOF/reset) mid-job has its job put back at
the head of the queue for another worker; a malformed frame is answered with an
error, logged, counted and the offending connection dropped, the orchestrator
keeps running; every submitted invocation ends ``done`` or ``failed`` with a
reason, also at shutdown.

Execution is at most once past a timeout: a job that exceeds ``job_timeout_s``
is failed and never dispatched again (its worker may still be running it); that
worker gets no other job until it reports the late result, which is counted and
discarded.  A job is dispatched again only when its worker's connection ended;
a worker that reconnects carries in its hello the result it could not deliver,
and that result is taken, before anything is dispatched to it, if the
invocation has not finished elsewhere.
``max_attempts=1`` never dispatches anything twice.

Every peer is served from one asyncio event loop (no thread per connection) and
everything a peer can make it hold is bounded (:class:`Limits`): connections,
frame size, bytes of frames being received at once, how long a frame or a
silent peer may take, and the bytes of arguments and results kept for records.

Protocol (all messages JSON objects, 4-byte big-endian length prefix):
  worker -> orch  {"type":"hello","worker":ID[,"result":{..}]}  (a result not yet acknowledged)
  orch -> worker  {"type":"job","i_id":..,"f_id":..,"f_args":{..}}
  worker -> orch  {"type":"result","i_id":..,"status":"ok"|"error","result":..,"error":..,
                   "start":epoch_s,"end":epoch_s}
  orch -> worker  {"type":"ack","i_id":..}   (until then the worker keeps the result, and carries
                  it in its next hello if the connection ends)
  client -> orch  {"type":"submit","f_id":..,"f_args":{..}}  -> {"type":"submitted","i_id":..}
                  {"type":"results"[,"ids":[..]]} -> {"type":"results","records":[..]}
                  {"type":"stats"}   -> {"type":"stats", ...counters}
  orch -> any     {"type":"error","error":TEXT}   (a refused request; after a malformed
                  frame, a timeout or over the connection limit the connection is then closed)
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import json
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Optional

from ..framing import ByteBudget, MalformedMessage, encode, read_msg, tune_keepalive, within
from .functions import FUNCTIONS
from .invocation import RECORD_OVERHEAD, Invocation, Limits, Overloaded, epoch

log = logging.getLogger(__name__)

EnergyHook = Callable[[str, float, float], Optional[float]]
"""(worker, t_start, t_end) -> joules the worker used in that interval, or None if unknown yet.
Called from the orchestrator's event loop: it must not block (PowerSampler.energy_between does not)."""

CLIENT_REQUESTS = ("submit", "results", "stats")


def _valid_worker_id(wid: Any) -> bool:
    return isinstance(wid, str) and 0 < len(wid) <= 128 and wid.isprintable()


class Orchestrator:
    def __init__(self, *, energy_hook: Optional[EnergyHook] = None, max_attempts: int = 3,
                 job_timeout_s: Optional[float] = None, functions: Iterable[str] = FUNCTIONS,
                 limits: Limits = Limits()):
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if job_timeout_s is not None and not job_timeout_s > 0:
            raise ValueError(f"job_timeout_s must be positive, got {job_timeout_s}")
        self.energy_hook = energy_hook
        self.max_attempts = max_attempts
        self.job_timeout_s = job_timeout_s
        self.functions = set(functions)
        self.limits = limits
        self._inv: dict[str, Invocation] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()           # guards the state above; other threads wait on it
        self._stop = threading.Event()
        self._held = 0                               # bytes charged for arguments and results
        self._workers: dict[str, str] = {}           # worker id -> idle | busy | overdue
        self._seq = itertools.count(1)
        self.counters = collections.Counter()
        # event loop side (only touched from the loop's thread once serving)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._thread: Optional[threading.Thread] = None
        self._server: Optional[asyncio.AbstractServer] = None
        self._work: Optional[asyncio.Event] = None   # set when the queue may have gained a job
        self._sessions: set[asyncio.Task] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._worker_conn: dict[str, asyncio.StreamWriter] = {}
        self._budget = ByteBudget(limits.max_buffered)

    # ------------------------------------------------------------------ public API
    def submit(self, f_id: str, f_args: Optional[dict] = None) -> str:
        """Queue an invocation; ValueError for a bad request, Overloaded/RuntimeError when refused."""
        if not isinstance(f_id, str) or f_id not in self.functions:
            raise ValueError(f"unknown function {str(f_id)[:100]!r}; known: {', '.join(sorted(self.functions))}")
        if f_args is None:
            f_args = {}
        if not isinstance(f_args, dict):
            raise ValueError(f"f_args must be a JSON object, got {type(f_args).__name__}")
        try:
            args_json = json.dumps(f_args, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValueError(f"f_args is not JSON: {exc}") from None
        cost = len(args_json) + RECORD_OVERHEAD
        i_id = f"{next(self._seq):06d}-{uuid.uuid4().hex[:6]}"
        with self._cond:
            if self._stop.is_set():
                raise RuntimeError("orchestrator is stopped")
            if len(self._queue) >= self.limits.max_queued:
                self.counters["refused_submits"] += 1
                raise Overloaded(f"{len(self._queue)} invocations already wait for a worker "
                                 f"(limit {self.limits.max_queued}); retry when the queue drains")
            if self._held + cost > self.limits.max_held_bytes:
                self.counters["refused_submits"] += 1
                raise Overloaded(f"orchestrator holds {self._held} bytes of invocation arguments and results "
                                 f"(limit {self.limits.max_held_bytes}); collect the results and restart it, "
                                 f"or raise --max-held-mib")
            self._held += cost
            self._inv[i_id] = Invocation(i_id, f_id, args_json, time.time())
            self._queue.append(i_id)
            self.counters["submitted"] += 1
            self._cond.notify_all()
        self._wake()
        return i_id

    def results(self, ids: Optional[Iterable[str]] = None) -> list[dict]:
        """Per-invocation records (all, or those of ``ids``), in submission order; energy filled in when known."""
        with self._cond:
            if ids is None:
                invs = list(self._inv.values())
            else:
                wanted = set(ids)
                invs = [inv for i, inv in self._inv.items() if i in wanted]
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
                    "queued": len(self._queue), "held_bytes": self._held, "connections": len(self._sessions),
                    "workers": dict(self._workers)}

    # ------------------------------------------------------------------ lifecycle
    def serve(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Start serving on a thread of its own (one event loop); returns the bound (host, port)."""
        ready: concurrent.futures.Future = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._run_loop, args=(host, port, ready), daemon=True,
                                        name="bpaas-loop")
        self._thread.start()
        return ready.result(timeout=30)

    def stop(self) -> None:
        """Stop serving; whatever has not finished is marked failed (nothing is lost)."""
        self._stop.set()
        with self._cond:
            for inv in self._inv.values():
                if not inv.finished:
                    self._fail(inv, "orchestrator stopped before the invocation finished")
            self._queue.clear()
            self._cond.notify_all()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        except (concurrent.futures.TimeoutError, RuntimeError) as exc:
            log.warning("orchestrator shutdown: %r", exc)
        try:
            loop.call_soon_threadsafe(loop.stop)
        except RuntimeError:
            pass
        thread.join(10)

    # ------------------------------------------------------------------ event loop
    def _run_loop(self, host: str, port: int, ready: concurrent.futures.Future) -> None:
        loop = asyncio.new_event_loop()
        try:
            self._work = asyncio.Event()
            self._server = loop.run_until_complete(
                asyncio.start_server(self._on_connection, host, port, backlog=128))
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc)
            return
        self._loop = loop
        ready.set_result(self._server.sockets[0].getsockname()[:2])
        try:
            loop.run_forever()
        finally:                         # connections accepted while stopping: end them before closing
            pending = asyncio.all_tasks(loop)
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()          # every pending read ends at once
        # Cancel until they end: Python 3.11's wait_for() can swallow a cancellation that
        # arrives as the awaited write completes (fixed in 3.12), so one cancel() may not do.
        for _ in range(50):
            pending = [t for t in self._sessions if not t.done()]
            if not pending:
                return
            for t in pending:
                t.cancel()
            await asyncio.wait(pending, timeout=0.1)
        log.warning("%d connections did not end at stop", len([t for t in self._sessions if not t.done()]))

    def _wake(self) -> None:
        """Tell idle worker sessions the queue gained a job (callable from any thread)."""
        loop, work = self._loop, self._work
        if loop is None or work is None:
            return
        try:
            loop.call_soon_threadsafe(work.set)
        except RuntimeError:                         # loop already closed: nobody to wake
            pass

    def _malformed(self, where: str, exc: Exception) -> None:
        self.counters["malformed"] += 1
        log.warning("malformed message from %s: %s", where, exc)

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        """Write and wait until the peer takes it (bounded: a peer that stops reading is dropped)."""
        writer.write(data)
        if writer.transport.get_write_buffer_size():     # not all taken by the kernel at once
            await within(writer.drain(), self.limits.frame_timeout_s)

    async def _error(self, writer: asyncio.StreamWriter, text: str) -> None:
        """Best-effort error reply before the connection is closed."""
        try:
            await self._send(writer, encode({"type": "error", "error": text}))
        except (OSError, asyncio.TimeoutError):
            pass

    async def _read(self, reader: asyncio.StreamReader, idle_timeout: Optional[float]) -> Optional[dict]:
        return await read_msg(reader, max_frame=self.limits.max_frame, idle_timeout=idle_timeout,
                              frame_timeout=self.limits.frame_timeout_s, budget=self._budget)

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._sessions.add(task)
        self._writers.add(writer)
        peername = writer.get_extra_info("peername")
        peer = "%s:%s" % tuple(peername[:2]) if peername else "?"
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                tune_keepalive(sock)
            if len(self._sessions) > self.limits.max_connections:
                self.counters["refused_connections"] += 1
                log.warning("refusing %s: %d connections open (limit %d)", peer, len(self._sessions) - 1,
                            self.limits.max_connections)
                await self._error(writer, f"too many connections (limit {self.limits.max_connections}); retry later")
                return
            await self._session(reader, writer, peer)
        except asyncio.CancelledError:
            pass            # stop(): end quietly (asyncio 3.11 logs a connection task that ends cancelled)
        finally:
            self._sessions.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str) -> None:
        L = self.limits
        try:
            try:
                first = await self._read(reader, L.hello_timeout_s)
            except asyncio.TimeoutError:
                self.counters["timeouts"] += 1
                await self._error(writer, f"no message within {L.hello_timeout_s:g} s; closing")
                return
            if first is None:
                return
            kind = first.get("type")
            if kind == "hello":
                wid = first.get("worker")
                if not _valid_worker_id(wid):
                    self._malformed(peer, MalformedMessage(f"bad worker id {str(wid)[:100]!r}"))
                    await self._error(writer, "hello needs 'worker': a string of 1 to 128 printable characters")
                    return
                carried = first.get("result")
                if carried is not None and not (isinstance(carried, dict) and carried.get("type") == "result"):
                    raise MalformedMessage(f"hello carries a result that is not one: {str(carried)[:100]}")
                await self._worker_session(reader, writer, wid, carried)
            elif kind in CLIENT_REQUESTS:
                await self._client_session(reader, writer, first)
            else:
                self._malformed(peer, MalformedMessage(f"unexpected first message {str(first)[:100]}"))
                await self._error(writer, "the first message must have type hello, submit, results or stats")
        except MalformedMessage as exc:
            self._malformed(peer, exc)
            await self._error(writer, f"malformed message: {exc}; closing")
        except OSError as exc:                       # includes asyncio.TimeoutError of a reply not taken
            log.info("connection %s ended: %s", peer, exc or type(exc).__name__)
        except Exception as exc:                     # a bug must cost one connection, never the service
            log.exception("connection %s: internal error", peer)
            await self._error(writer, f"internal error: {type(exc).__name__}: {exc}"[:500])

    # ------------------------------------------------------------------ clients
    async def _client_session(self, reader, writer, msg: Optional[dict]) -> None:
        while msg is not None and not self._stop.is_set():
            await self._send(writer, encode(self._client_reply(msg)))
            try:
                msg = await self._read(reader, self.limits.idle_timeout_s)
            except asyncio.TimeoutError:
                self.counters["timeouts"] += 1
                await self._error(writer, f"idle for {self.limits.idle_timeout_s:g} s; closing")
                return

    def _client_reply(self, msg: dict) -> dict:
        kind = msg.get("type")
        try:
            if kind == "submit":
                return {"type": "submitted", "i_id": self.submit(msg.get("f_id"), msg.get("f_args"))}
            if kind == "results":
                ids = msg.get("ids")
                if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
                    raise ValueError("'ids' must be a list of invocation ids (strings)")
                return {"type": "results", "records": self.results(ids)}
            if kind == "stats":
                return {"type": "stats", **self.stats()}
        except (ValueError, RuntimeError) as exc:
            return {"type": "error", "error": str(exc)}
        self._malformed("client", MalformedMessage(f"unknown request type {str(kind)[:100]!r}"))
        return {"type": "error", "error": f"unknown request type {str(kind)[:100]!r}; use submit, results or stats"}

    # ------------------------------------------------------------------ workers
    def _try_take(self) -> Optional[Invocation]:
        """Next queued invocation, or None (and the wake-up event cleared) when there is none."""
        with self._cond:
            if self._queue:
                return self._inv[self._queue.popleft()]
            self._work.clear()
            return None

    def _set_state(self, wid: str, writer, state: str) -> None:
        with self._cond:
            if self._worker_conn.get(wid) is writer:
                self._workers[wid] = state

    async def _worker_session(self, reader, writer, wid: str, carried: Optional[dict] = None) -> None:
        old = self._worker_conn.get(wid)
        if old is not None:              # a worker that reconnected: its old connection is stale
            log.warning("worker %s connected again; closing its previous connection", wid)
            old.close()
        self._worker_conn[wid] = writer
        self.counters["workers_connected"] += 1
        log.info("worker %s connected", wid)
        self._set_state(wid, writer, "idle")
        loop = asyncio.get_running_loop()
        current: Optional[Invocation] = None     # the job this worker runs for us
        deadline: Optional[float] = None
        overdue: Optional[str] = None            # a timed-out job it is still running
        read: Optional[asyncio.Future] = None    # one read at a time, kept across waits (never cut mid-frame)
        reason = "worker session ended"
        outbox = b""                             # an ack, sent with the next job in one write
        if carried is not None:                  # before any dispatch: it may be the job we would give
            self._adopt(wid, carried)
            outbox = encode({"type": "ack", "i_id": carried.get("i_id")})
        try:
            while not self._stop.is_set():
                if read is None:
                    read = asyncio.ensure_future(self._read(reader, None))
                if current is None and overdue is None:
                    inv = self._try_take()
                    if inv is not None:
                        current = inv
                        with self._cond:
                            inv.attempts += 1
                            inv.worker, inv.status, inv.dispatch_t = wid, "running", time.time()
                        self._set_state(wid, writer, "busy")
                        deadline = loop.time() + self.job_timeout_s if self.job_timeout_s else None
                        outbox, data = b"", outbox + inv.job_frame()
                        await self._send(writer, data)
                        continue
                    if outbox:
                        outbox, data = b"", outbox
                        await self._send(writer, data)
                    work = asyncio.ensure_future(self._work.wait())
                    try:
                        await asyncio.wait({read, work}, return_when=asyncio.FIRST_COMPLETED)
                    finally:
                        work.cancel()
                    if not read.done():
                        continue
                else:
                    if outbox:
                        outbox, data = b"", outbox
                        await self._send(writer, data)
                    timeout = None if current is None or deadline is None else max(0.0, deadline - loop.time())
                    done, _ = await asyncio.wait({read}, timeout=timeout)
                    if not done:
                        self._time_out(current, wid, writer)
                        overdue, current, deadline = current.i_id, None, None
                        continue
                msg, read = read.result(), None
                if msg is None:
                    reason = f"worker {wid} closed the connection mid-job"
                    return
                if msg.get("type") != "result":
                    raise MalformedMessage(f"expected a result, got {str(msg)[:100]}")
                i_id = msg.get("i_id")
                if current is not None and i_id == current.i_id:
                    self._finish(current, msg)
                    current = None
                elif overdue is not None and i_id == overdue:
                    self.counters["late_results"] += 1
                    log.info("late result of timed-out invocation %s from %s discarded", i_id, wid)
                    overdue = None
                else:
                    self._adopt(wid, msg)
                outbox += encode({"type": "ack", "i_id": i_id})     # the worker may forget it now
                self._set_state(wid, writer, "busy" if current else "overdue" if overdue else "idle")
        except MalformedMessage as exc:
            self._malformed(f"worker {wid}", exc)
            reason = f"malformed reply from worker {wid}: {exc}"
            await self._error(writer, f"malformed message: {exc}; closing")
        except OSError as exc:
            reason = f"worker {wid} lost mid-job: {exc or type(exc).__name__}"
        finally:
            if read is not None:
                read.cancel()
            if current is not None:
                self._requeue(current, wid, reason)
            if self._worker_conn.get(wid) is writer:
                del self._worker_conn[wid]
                with self._cond:
                    self._workers.pop(wid, None)
            log.info("worker %s disconnected", wid)

    def _time_out(self, inv: Invocation, wid: str, writer) -> None:
        with self._cond:
            if self._worker_conn.get(wid) is writer:
                self._workers[wid] = "overdue"       # before anyone waiting on the invocation wakes
            if inv.finished:
                return
            self._fail(inv, f"timed out after {self.job_timeout_s:g} s on worker {wid}; not dispatched again "
                            f"(it may still be running there)")
            self.counters["timed_out"] += 1
            self._cond.notify_all()
        log.warning("invocation %s timed out on worker %s", inv.i_id, wid)

    def _adopt(self, wid: str, reply: dict) -> None:
        """A result this worker could not deliver before its connection broke: take it if still wanted."""
        i_id = reply.get("i_id")
        with self._cond:
            inv = self._inv.get(i_id) if isinstance(i_id, str) else None
            # dispatched to this worker id before: on a connection that ended, or on the stale one
            # whose end its session has not seen yet (the worker reconnected first)
            mine = inv is not None and (wid in inv.lost_on or (inv.status == "running" and inv.worker == wid))
            if inv is None or inv.finished or not mine:
                self.counters["late_results"] += 1
                log.info("result of %s from %s not wanted (unknown, finished or not dispatched to it)",
                         str(i_id)[:40], wid)
                return
            if inv.status == "queued":
                self._queue.remove(i_id)
        self.counters["recovered_results"] += 1
        self._finish(inv, reply, worker=wid)

    def _requeue(self, inv: Invocation, wid: str, reason: str) -> None:
        log.warning("%s (invocation %s, attempt %d)", reason, inv.i_id, inv.attempts)
        with self._cond:
            if inv.finished:             # already failed by stop() or a timeout
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
        self._wake()

    def _fail(self, inv: Invocation, reason: str) -> None:
        inv.status, inv.reason, inv.done_t = "failed", reason, time.time()
        self.counters["failed"] += 1

    def _finish(self, inv: Invocation, reply: dict, worker: Optional[str] = None) -> None:
        result = reply.get("result")
        try:
            cost = len(json.dumps(result)) if result is not None else 0
        except (ValueError, RecursionError):     # decoded from JSON, so re-encodable but for depth
            cost = self.limits.max_frame
        with self._cond:
            if inv.finished:             # stop() already failed it; keep that verdict
                return
            if worker is not None:
                inv.worker = worker
            inv.start_t, inv.end_t = epoch(reply.get("start")), epoch(reply.get("end"))
            inv.cpu_s = epoch(reply.get("cpu_s"))    # worker-reported CPU time (energy attribution)
            inv.result, inv.done_t = result, time.time()
            self._held += cost
            if reply.get("status") == "ok":
                inv.status = "done"
                self.counters["done"] += 1
            else:
                self._fail(inv, f"function error: {str(reply.get('error'))[:1000]}")
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
