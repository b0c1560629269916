"""What hostile clients cost the node services (run: python benchmarks/sv_hostile_bench.py).

Prints, for the phone service and the BeaglePaaS orchestrator run as real
processes with default options: threads while 300 idle connections are open,
the orchestrator's memory growth after ten 16 MiB frames, and what the phone
service answers (and how fast) to a few malformed requests.  Only CLI options
and sockets are used, so the same script measures an older checkout too.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from svhelpers import service, url_of  # noqa: E402


def status(pid: int, key: str) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def idle_threads(pid: int, port: int, n: int = 300) -> dict:
    before = status(pid, "Threads")
    with ExitStack() as stack:
        for _ in range(n):
            stack.enter_context(socket.create_connection(("127.0.0.1", port)))
        time.sleep(1.0)
        during = status(pid, "Threads")
    return {"idle_connections": n, "threads_before": before, "threads_during": during}


def reply(port: int, raw: bytes, wait: float = 5.0) -> dict:
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.settimeout(wait)
        t = time.monotonic()
        s.sendall(raw)
        try:
            data = s.recv(200)
        except socket.timeout:
            return {"reply": f"none within {wait:g} s"}
        except ConnectionResetError:
            return {"reply": "reset"}
        line = data.split(b"\r\n", 1)[0].decode("latin-1") if data else "closed, no reply"
        return {"reply": line, "ms": round(1000 * (time.monotonic() - t), 1)}


def phone() -> dict:
    with service("edgelab.services.phone", "--port", "0") as (proc, line):
        port = int(url_of(line).rsplit(":", 1)[1])
        head = b"POST /detect%s HTTP/1.1\r\nHost: b\r\n%s\r\n"
        return {
            **idle_threads(proc.pid, port),
            "max_side=abc": reply(port, head % (b"?max_side=abc", b"Content-Length: 1\r\n") + b"x"),
            "Content-Length: abc": reply(port, head % (b"", b"Content-Length: abc\r\n")),
            "Content-Length: -1": reply(port, head % (b"", b"Content-Length: -1\r\n")),
            "Transfer-Encoding: gzip": reply(port, head % (b"", b"Transfer-Encoding: gzip\r\n") + b"0\r\n\r\n"),
        }


def beaglepaas() -> dict:
    with service("edgelab.services.beaglepaas", "orchestrator", "--port", "0") as (proc, line):
        port = int(line.rsplit(":", 1)[1])
        out = idle_threads(proc.pid, port)
        rss0 = status(proc.pid, "VmRSS")
        body = json.dumps({"type": "submit", "f_id": "sleep", "f_args": {"pad": "x" * (16 * 2**20 - 100)}}).encode()
        for _ in range(10):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(10)
                try:
                    s.sendall(struct.pack("!I", len(body)) + body)
                    s.recv(100)
                except OSError:
                    pass
        time.sleep(0.5)
        out["rss_growth_mib_after_10x16MiB_frames"] = round((status(proc.pid, "VmRSS") - rss0) / 1024, 1)
        return out


if __name__ == "__main__":
    print(json.dumps({"phone": phone(), "beaglepaas": beaglepaas()}, indent=1))
