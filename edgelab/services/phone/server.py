"""HTTP front of the phone workload: ``POST /detect?mode=tflite|faces|eyes|bodies|gray``."""

from __future__ import annotations

import json
import logging
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional
from urllib.parse import parse_qs, urlparse

from ..metrics import PHONE
from .detect import CASCADES, ImageError, ImageTooLarge, detect, grayscale, tflite

log = logging.getLogger(__name__)
MAX_BODY = 32 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive: load generators reuse connections
    server_version = "edgelab-phone/1"
    disable_nagle_algorithm = True   # headers and body are separate writes: avoid the 40 ms delayed-ACK stall

    def log_message(self, fmt, *args):
        log.debug("%s " + fmt, self.address_string(), *args)

    def _json(self, code: int, obj: dict) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if urlparse(self.path).path == "/healthz":
            self._json(200, {"ok": True, "modes": [*CASCADES, "gray", "tflite"]})
        else:
            self._json(404, {"error": "POST an image to /detect?mode=faces|gray"})

    def do_POST(self):
        url = urlparse(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._json(413, {"error": f"image larger than {MAX_BODY} bytes"})
            self.close_connection = True
            return
        data = self.rfile.read(length)
        if url.path != "/detect":
            self._json(404, {"error": "POST an image to /detect?mode=faces|gray"})
            return
        q = parse_qs(url.query)
        mode = q.get("mode", ["faces"])[0]
        max_side = int(q["max_side"][0]) if "max_side" in q else None
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            if mode == "gray":
                out = grayscale(data, max_side or 160)
            elif mode == "tflite":
                out = tflite(data)
            else:
                out = detect(data, mode, max_side or 640)
        except ImageTooLarge as exc:
            self._json(413, {"error": str(exc)})
            return
        except ImageError as exc:
            self._json(400, {"error": str(exc)})
            return
        except ValueError as exc:
            self._json(400, {"error": str(exc)})
            return
        out["compute_ms"] = (time.perf_counter() - t0) * 1000
        out["cpu_ms"] = (time.thread_time() - c0) * 1000      # this request's CPU on the serving node
        PHONE.observe(mode, len(data), out["compute_ms"] / 1000, out["cpu_ms"] / 1000)
        self._json(200, out)


def make_server(host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """A threaded HTTP server (one thread per connection)."""
    srv = ThreadingHTTPServer((host, port), _Handler)
    srv.daemon_threads = True
    return srv
