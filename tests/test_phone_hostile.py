"""Phone service against clients it does not control: raw HTTP on loopback, one reply per request.

Each case is a byte string a real client (or an attacker) could send; the
service is the real CLI process.  Expected statuses follow RFC 9110/9112.
"""

from __future__ import annotations

import json
import socket
import time
from contextlib import ExitStack

import matplotlib.cbook as cbook
import pytest

from svhelpers import service, url_of

HOPPER = open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()
PHONE = "edgelab.services.phone"


def port_of(line: str) -> int:
    return int(url_of(line).rsplit(":", 1)[1])


def threads_of(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise KeyError("Threads")


def read_response(f) -> tuple[int, dict, bytes]:
    """One HTTP/1.x response from a buffered socket file: (status, lower-cased headers, body)."""
    status_line = f.readline()
    if not status_line:
        raise ConnectionError("connection closed without a response")
    status = int(status_line.split()[1])
    headers = {}
    while (line := f.readline()) not in (b"\r\n", b"\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    body = f.read(int(headers.get("content-length", 0)))
    return status, headers, body


def closed_by_server(s: socket.socket, f) -> bool:
    """EOF, or RST (the server closed with some of our bytes unread); a timeout means still open."""
    try:
        return f.read(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def post(path: str, body: bytes, *headers: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: phone", *headers]
    if not any(h.lower().startswith(("content-length", "transfer-encoding")) for h in headers):
        head.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(body: bytes, n: int = 3) -> bytes:
    size = -(-len(body) // n)
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: phone\r\n\r\n"


@pytest.fixture(scope="module")
def phone():
    with service(PHONE, "--port", "0") as (p, line):        # default limits
        yield p, port_of(line)


# (request bytes or a function making them, expected status, words in the reply, server closes the connection)
CASES = {
    "max_side=abc": (post("/detect?max_side=abc", HOPPER), 400, "max_side must be an integer", False),
    "max_side=0": (post("/detect?max_side=0", HOPPER), 400, "max_side must be an integer", False),
    "unknown parameter": (post("/detect?mode=faces&maxside=3", HOPPER), 400, "unknown parameter", False),
    "mode twice": (post("/detect?mode=faces&mode=gray", HOPPER), 400, "given 2 times", False),
    "unknown mode": (post("/detect?mode=cats", HOPPER), 400, "unknown detector", False),
    "not an image": (post("/detect", b"definitely not an image"), 400, "not a JPEG/PNG", False),
    "empty body": (post("/detect", b""), 400, "empty body", False),
    "GET /detect": (b"GET /detect HTTP/1.1\r\nHost: phone\r\n\r\n", 405, "POST a JPEG/PNG", False),
    "unknown path": (post("/nope", b"x"), 404, "POST a JPEG/PNG", False),
    "Content-Length: abc": (post("/detect", HOPPER[:100], "Content-Length: abc"), 400, "Content-Length", True),
    "Content-Length: -1": (post("/detect", HOPPER[:100], "Content-Length: -1"), 400, "Content-Length", True),
    "two Content-Lengths": (post("/detect", b"abcdef", "Content-Length: 5", "Content-Length: 6"), 400,
                            "Content-Length", True),
    "Transfer-Encoding: gzip": (post("/detect", b"5\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: gzip"), 501,
                                "Transfer-Encoding", True),
    "body over --max-body": (post("/detect", b"", "Content-Length: 40000000"), 413, "Too Large", True),
    "chunked over --max-body": (lambda: post("/detect", chunked(b"x" * (33 << 20), 2), "Transfer-Encoding: chunked"), 413,
                                "Too Large", True),
    "bad chunk size": (post("/detect", b"zz\r\nhello\r\n0\r\n\r\n", "Transfer-Encoding: chunked"), 400,
                       "chunk", True),
    "not HTTP": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400, "Bad Request", True),
    "headers over 64 KiB": (b"GET /healthz HTTP/1.1\r\nHost: phone\r\nX-Pad: " + b"a" * 70_000 + b"\r\n\r\n", 431,
                            "Too Large", True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_every_malformed_request_gets_a_reply(phone, name):
    _, port = phone
    raw, status, words, closes = CASES[name]
    raw = raw() if callable(raw) else raw
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        try:
            s.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass                     # refused before all was sent; the reply is already on its way
        got, headers, body = read_response(f)
        assert got == status, (got, body[:300])
        assert words in body.decode("utf-8", "replace"), body[:300]
        if closes:
            assert headers.get("connection") == "close" and closed_by_server(s, f)
        else:                        # still in step: the next request on this connection is answered
            assert headers["content-type"] == "application/json"
            s.sendall(HEALTHZ)
            assert read_response(f)[0] == 200


def test_head_gets_headers_only(phone):
    _, port = phone
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        f = s.makefile("rb")
        s.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: phone\r\n\r\n" + HEALTHZ)
        status_line = f.readline()
        assert b" 200 " in status_line
        while f.readline() not in (b"\r\n", b""):
            pass
        assert read_response(f)[0] == 200          # the next response follows at once: no body was sent


def test_chunked_upload_keeps_the_connection_in_step(phone):
    _, port = phone
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        s.sendall(post("/detect?mode=faces", chunked(HOPPER), "Transfer-Encoding: chunked") + HEALTHZ)
        status, _, body = read_response(f)
        assert status == 200, body
        out = json.loads(body)
        assert (out["width"], out["height"]) == (512, 600) and len(out["detections"]) == 1
        status, _, body = read_response(f)              # the pipelined request, answered in turn
        assert status == 200 and json.loads(body)["ok"] is True


def test_silent_and_slow_clients_are_closed():
  with service(PHONE, "--port", "0", "--idle-timeout", "2") as (_, line):
    port = port_of(line)
    for raw in (b"", b"POST /detect HTTP/1.1\r\nHost: phone\r\nContent-Len",       # nothing; half a header
                post("/detect", HOPPER[:10], f"Content-Length: {len(HOPPER)}")):    # a body that stops
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(raw)
            t = time.monotonic()
            try:
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - t < 5                    # --idle-timeout 2 (checked every second)


def test_idle_connections_hold_no_threads_and_the_service_still_answers(phone):
    proc, port = phone
    base = threads_of(proc.pid)
    with ExitStack() as stack:
        idle = [stack.enter_context(socket.create_connection(("127.0.0.1", port))) for _ in range(300)]
        for s in idle[:100]:
            s.sendall(b"POST /detect HTTP/1.1\r\nHost: phone\r\n")             # half a request each
        time.sleep(0.5)
        assert threads_of(proc.pid) <= base + 1
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            s.sendall(post("/detect?mode=gray", HOPPER))
            assert read_response(f)[0] == 200


def test_connections_beyond_the_limit_wait_and_are_then_served():
    with service(PHONE, "--port", "0", "--max-connections", "5", "--idle-timeout", "2") as (_, line):
        port = port_of(line)
        with ExitStack() as stack:
            for _ in range(5):
                stack.enter_context(socket.create_connection(("127.0.0.1", port)))
            time.sleep(0.3)
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                f = s.makefile("rb")
                t = time.monotonic()
                s.sendall(HEALTHZ)
                assert read_response(f)[0] == 200
                assert 1 < time.monotonic() - t < 8             # served once the silent ones were closed
