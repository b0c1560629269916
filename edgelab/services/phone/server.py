"""HTTP front of the phone workload: ``POST /detect?mode=tflite|faces|eyes|bodies|gray[&max_side=N]``.

Served by waitress (Pylons' pure-Python WSGI server) rather than http.server
because every client this service meets (load generators, phones, anyone on
the testbed network) must get bounded time, memory and threads, and a reply:

- HTTP/1.1 framing is waitress' (RFC 9112): a Content-Length that is not a
  plain number (``abc``, ``-1``, two different values) gets ``400`` and the
  connection is closed; ``Transfer-Encoding: chunked`` bodies are decoded (and
  bounded); other transfer codings get ``501``; a body over ``max_body`` gets
  ``413`` and headers over ``max_header`` ``431``; a request line that is not
  HTTP gets ``400`` — all with ``Connection: close``.
- Bodies are read by waitress' event loop, so a slow upload holds no worker
  thread; ``threads`` bounds the images computed at once, ``max_connections``
  the sockets held (more wait in the listen backlog), ``idle_timeout_s`` how
  long a connection may stay silent, mid-request included.
- This module checks what waitress cannot: path, method, query parameters and
  the image itself, each with a JSON ``{"error": ...}`` (400/404/405/500).

Decoding limits of the image itself (pixel counts) belong to :mod:`.detect`.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional
from urllib.parse import parse_qs

from waitress.server import create_server

from ..metrics import PHONE
from .detect import CASCADES, ImageError, ImageTooLarge, detect, grayscale, tflite

log = logging.getLogger(__name__)
MAX_BODY = 32 * 1024 * 1024
MODES = (*CASCADES, "gray", "tflite")
MAX_SIDE_LIMIT = 1 << 16
USAGE = "POST a JPEG/PNG image to /detect?mode=tflite|faces|eyes|bodies|gray[&max_side=N]"


@dataclass(frozen=True)
class Limits:
    """What one phone service grants its clients."""

    threads: int = 32                  # images computed at once (more requests wait, their bodies already read)
    max_connections: int = 512         # sockets held open; more wait in the listen backlog
    idle_timeout_s: int = 30           # seconds a connection may stay silent (mid-request too); then closed
    max_body: int = MAX_BODY           # bytes of one image; more gets 413
    max_header: int = 64 * 1024        # bytes of request line and headers; more gets 431

    def __post_init__(self):
        if not isinstance(self.idle_timeout_s, int):
            raise ValueError(f"idle_timeout_s must be whole seconds (waitress' channel_timeout), got {self.idle_timeout_s!r}")
        for name, value in vars(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value!r}")


class BadRequest(ValueError):
    """A request this service cannot serve; the message says what to send instead."""


def parse_query(query: str) -> tuple[str, Optional[int]]:
    """(mode, max_side) from the query string; BadRequest for anything unknown, repeated or out of range."""
    try:
        query = query.strip("&")
        q = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), errors="strict")
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"query string {query[:100]!r} is malformed: {exc}") from None
    unknown = sorted(set(q) - {"mode", "max_side"})
    if unknown:
        raise BadRequest(f"unknown parameter(s) {', '.join(repr(u[:40]) for u in unknown[:5])}; {USAGE}")
    for k, v in q.items():
        if len(v) > 1:
            raise BadRequest(f"parameter {k!r} given {len(v)} times")
    mode = q.get("mode", ["faces"])[0]
    if mode not in MODES:
        raise BadRequest(f"unknown detector {mode[:40]!r}; use one of {', '.join(MODES)}")
    max_side = None
    if "max_side" in q:
        raw = q["max_side"][0]
        if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_SIDE_LIMIT):
            raise BadRequest(f"max_side must be an integer from 1 to {MAX_SIDE_LIMIT}, got {raw[:40]!r}")
        max_side = int(raw)
    return mode, max_side


def _json(start_response: Callable, code: str, obj: dict, extra: Iterable[tuple[str, str]] = ()) -> list[bytes]:
    body = json.dumps(obj).encode()
    start_response(code, [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra])
    return [body]


def app(environ: dict, start_response: Callable) -> list[bytes]:
    """The WSGI application: healthz, detect, and a JSON error for everything else."""
    body = _respond(environ, start_response)
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else body     # RFC 9110 §9.3.2: headers only


def _respond(environ: dict, start_response: Callable) -> list[bytes]:
    path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD", "")
    if path == "/healthz":
        if method not in ("GET", "HEAD"):
            return _json(start_response, "405 Method Not Allowed", {"error": "use GET /healthz"}, [("Allow", "GET, HEAD")])
        return _json(start_response, "200 OK", {"ok": True, "modes": list(MODES)})
    if path != "/detect":
        return _json(start_response, "404 Not Found", {"error": USAGE})
    if method != "POST":
        return _json(start_response, "405 Method Not Allowed", {"error": USAGE}, [("Allow", "POST")])
    try:
        mode, max_side = parse_query(environ.get("QUERY_STRING", ""))
    except BadRequest as exc:
        return _json(start_response, "400 Bad Request", {"error": str(exc)})
    # waitress has checked and bounded the length (and decoded a chunked body); it is a plain integer here
    data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    if not data:
        return _json(start_response, "400 Bad Request", {"error": f"empty body; {USAGE}"})
    t0, c0 = time.perf_counter(), time.thread_time()
    try:
        if mode == "tflite":          # LiteRT BlazeFace (see .tflite); the model input size is fixed
            out = tflite(data)
        else:
            out = grayscale(data, max_side or 160) if mode == "gray" else detect(data, mode, max_side or 640)
    except ImageTooLarge as exc:   # more pixels than the decoder accepts (refused before decoding)
        return _json(start_response, "413 Content Too Large", {"error": str(exc)})
    except (ImageError, ValueError) as exc:
        return _json(start_response, "400 Bad Request", {"error": str(exc)})
    except Exception as exc:       # a reply, never a dropped connection; the traceback goes to the log
        log.exception("detect failed on a %d-byte body", len(data))
        return _json(start_response, "500 Internal Server Error", {"error": f"{type(exc).__name__}: {exc}"[:500]})
    out["compute_ms"] = (time.perf_counter() - t0) * 1000
    out["cpu_ms"] = (time.thread_time() - c0) * 1000      # this request's CPU on the serving node
    PHONE.observe(mode, len(data), out["compute_ms"] / 1000, out["cpu_ms"] / 1000)
    return _json(start_response, "200 OK", out)


class PhoneServer:
    """The service bound to a socket; ``run()`` serves until ``close()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()):
        # waitress' default socket_options set TCP_NODELAY (waitress/adjustments.py), so the 40 ms
        # delayed-ACK stall of http.server's split header/body writes (benchmarks/sv_services.md) cannot return
        self.limits = limits
        self._srv = create_server(
            app, host=host, port=port, threads=limits.threads, connection_limit=limits.max_connections,
            channel_timeout=limits.idle_timeout_s, cleanup_interval=max(1, min(30, limits.idle_timeout_s // 2)),
            max_request_body_size=limits.max_body, max_request_header_size=limits.max_header,
            ident="edgelab-phone/1", asyncore_use_poll=True, expose_tracebacks=False)

    @property
    def server_address(self) -> tuple[str, int]:
        return tuple(self._srv.socket.getsockname()[:2])

    @property
    def url(self) -> str:
        return "http://%s:%d" % self.server_address

    def run(self) -> None:
        self._srv.run()

    def close(self) -> None:
        self._srv.close()


def make_server(host: str = "127.0.0.1", port: int = 0, limits: Limits = Limits()) -> PhoneServer:
    return PhoneServer(host, port, limits)
