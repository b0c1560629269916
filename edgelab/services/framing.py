"""Length-prefixed JSON messages over a stream socket.

Why: TCP is a byte stream; a 4-byte big-endian length before each UTF-8 JSON
object makes message boundaries explicit, so a truncated or garbage frame is
detected (``MalformedMessage``) instead of silently merging two messages.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any, Optional

MAX_FRAME = 16 * 1024 * 1024  # refuse absurd lengths rather than allocate them
_HEADER = struct.Struct("!I")


class MalformedMessage(ValueError):
    """A frame arrived that is not a length-prefixed JSON object."""


def encode(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(data)) + data


def send_msg(sock: socket.socket, obj: Any) -> None:
    sock.sendall(encode(obj))


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            if buf:
                raise MalformedMessage(f"connection closed after {len(buf)} of {n} bytes")
            return None
        buf += chunk
    return bytes(buf)


def recv_msg(sock: socket.socket) -> Optional[dict]:
    """Next message, or None on a clean EOF between frames.

    Raises MalformedMessage on a bad length, bad JSON or a non-object payload;
    ConnectionError/OSError propagate (the peer died).
    """
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise MalformedMessage(f"frame length {length} exceeds {MAX_FRAME}")
    body = _recv_exact(sock, length) if length else b""
    if body is None:
        raise MalformedMessage("connection closed before frame body")
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"invalid JSON frame: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"frame is {type(obj).__name__}, expected a JSON object")
    return obj
