"""Client for the orchestrator's TCP submit endpoint (what experiments use remotely)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Iterable, Optional

from ..framing import MalformedMessage, recv_msg, send_msg


REPLY_MAX_FRAME = 256 << 20
"""Bytes of one reply the client accepts: a ``results`` reply carries every record asked for
(the orchestrator holds up to 64 MiB of arguments and results by default), so more than
the 1 MiB the orchestrator accepts per request; still bounded."""


class BeaglePaaSError(RuntimeError):
    pass


class BeaglePaaSClient:
    def __init__(self, host: str, port: int, timeout: float = 30.0):
        self._sock = socket.create_connection((host, port), timeout=timeout)
        self._lock = threading.Lock()

    def _call(self, msg: dict) -> dict:
        with self._lock:
            try:
                send_msg(self._sock, msg)
                reply = recv_msg(self._sock, REPLY_MAX_FRAME)
            except (OSError, MalformedMessage) as exc:
                raise BeaglePaaSError(f"orchestrator connection failed: {exc}") from exc
        if reply is None:
            raise BeaglePaaSError("orchestrator closed the connection")
        if reply.get("type") == "error":
            raise BeaglePaaSError(reply.get("error"))
        return reply

    def submit(self, f_id: str, f_args: Optional[dict] = None) -> str:
        return self._call({"type": "submit", "f_id": f_id, "f_args": {} if f_args is None else f_args})["i_id"]

    def results(self, ids: Optional[Iterable[str]] = None) -> list[dict]:
        msg = {"type": "results"} if ids is None else {"type": "results", "ids": list(ids)}
        return self._call(msg)["records"]

    def stats(self) -> dict:
        return self._call({"type": "stats"})

    def wait(self, ids: Optional[Iterable[str]] = None, timeout: float = 60.0, poll_s: float = 0.1) -> list[dict]:
        """Poll until the given (default: all) invocations finished; returns their records."""
        wanted = set(ids) if ids is not None else None
        deadline = time.monotonic() + timeout
        while True:
            recs = self.results(wanted)
            if all(r["status"] in ("done", "failed") for r in recs) and (wanted is None or len(recs) == len(wanted)):
                return recs
            if time.monotonic() > deadline:
                raise TimeoutError(f"{sum(r['status'] not in ('done', 'failed') for r in recs)} invocations unfinished after {timeout} s")
            time.sleep(poll_s)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> "BeaglePaaSClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
