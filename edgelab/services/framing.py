"""Length-prefixed JSON messages over a stream socket.

Why: TCP is a byte stream; a 4-byte big-endian length before each UTF-8 JSON
object makes message boundaries explicit, so a truncated or garbage frame is
detected (``MalformedMessage``) instead of silently merging two messages.

Every read is bounded: a frame longer than ``max_frame`` is refused from its
header (before any of its body is buffered), a frame that has begun must be
complete within ``frame_timeout`` seconds (a length prefix larger than what the
peer sends cannot hold a connection forever), and decoding failures of any kind
(bad UTF-8, bad JSON, nesting too deep, integers too long) are one exception.
The blocking functions serve the worker and the client; the ``async`` ones the
orchestrator, which serves every connection from one event loop.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any, Optional

MAX_FRAME = 16 * 1024 * 1024  # what a worker or client accepts from the orchestrator
_HEADER = struct.Struct("!I")


class MalformedMessage(ValueError):
    """A frame arrived that is not a length-prefixed JSON object."""


class FrameTooLarge(MalformedMessage):
    """The length prefix announces more than the receiver accepts (nothing of the body was read)."""


class ByteBudget:
    """Bytes of frame bodies a receiver may buffer at once, across all its connections.

    Single-threaded (the orchestrator's event loop), so no lock.  A frame that
    does not fit is refused (FrameTooLarge) rather than waited for: the sender
    learns at once and may retry.
    """

    def __init__(self, limit: int):
        self.limit, self.used = limit, 0

    def acquire(self, n: int) -> None:
        if self.used + n > self.limit:
            raise FrameTooLarge(f"frame of {n} bytes refused: {self.used} bytes of other frames are being "
                                f"received (limit {self.limit}); retry later")
        self.used += n

    def release(self, n: int) -> None:
        self.used -= n


class FrameTimeout(MalformedMessage):
    """A frame began but did not complete in time (a length prefix larger than what was sent)."""


def decode(body: bytes) -> dict:
    """The JSON object in a frame body; MalformedMessage for anything else."""
    try:
        obj = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"frame is not UTF-8: {exc}") from None
    except RecursionError:
        raise MalformedMessage("JSON nested too deeply") from None
    except ValueError as exc:         # JSONDecodeError, integers over the digit limit
        raise MalformedMessage(f"invalid JSON frame: {exc}") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"frame is {type(obj).__name__}, expected a JSON object")
    return obj


def encode(obj: Any) -> bytes:
    data = json.dumps(obj, separators=(",", ":")).encode("utf-8")
    return _HEADER.pack(len(data)) + data


def frame(payload: bytes) -> bytes:
    """A frame around an already-encoded JSON object."""
    return _HEADER.pack(len(payload)) + payload


def send_msg(sock: socket.socket, obj: Any) -> None:
    sock.sendall(encode(obj))


def _recv_exact(sock: socket.socket, n: int) -> Optional[bytes]:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            if buf:
                raise MalformedMessage(f"connection closed after {len(buf)} of {n} bytes")
            return None
        buf += chunk
    return bytes(buf)


def _check_length(length: int, max_frame: int) -> None:
    if length > max_frame:
        raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {max_frame}")


def recv_msg(sock: socket.socket, max_frame: int = MAX_FRAME) -> Optional[dict]:
    """Next message, or None on a clean EOF between frames.

    Raises MalformedMessage on a bad length, bad JSON or a non-object payload;
    ConnectionError/OSError propagate (the peer died, or the socket's timeout).
    """
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    _check_length(length, max_frame)
    body = _recv_exact(sock, length) if length else b""
    if body is None:
        raise MalformedMessage("connection closed before frame body")
    return decode(body)


async def within(aw, timeout: Optional[float]):
    """``await aw`` bounded by ``timeout`` (None: unbounded); asyncio.TimeoutError past it.

    ``asyncio.timeout`` (3.11+) arms one timer; ``wait_for`` (3.10) wraps a task.
    """
    if timeout is None:
        return await aw
    if hasattr(asyncio, "timeout"):
        async with asyncio.timeout(timeout):
            return await aw
    return await asyncio.wait_for(aw, timeout)


async def _frame_rest(reader: asyncio.StreamReader, first: bytes, max_frame: int,
                      budget: Optional[ByteBudget]) -> bytes:
    (length,) = _HEADER.unpack(first + await reader.readexactly(_HEADER.size - 1))
    _check_length(length, max_frame)
    if not length:
        return b""
    if budget is not None:
        budget.acquire(length)
    try:
        return await reader.readexactly(length)
    finally:
        if budget is not None:
            budget.release(length)


async def read_msg(reader: asyncio.StreamReader, *, max_frame: int, idle_timeout: Optional[float],
                   frame_timeout: float, budget: Optional[ByteBudget] = None) -> Optional[dict]:
    """Next message from an asyncio stream, or None on a clean EOF between frames.

    ``idle_timeout`` bounds the wait for a frame to begin (None: wait for ever,
    for workers awaiting jobs); ``frame_timeout`` bounds the rest of it;
    ``budget`` (shared by all connections) bounds the bodies buffered at once.
    Raises ``asyncio.TimeoutError`` when no frame began in time, FrameTimeout /
    FrameTooLarge / MalformedMessage as their names say.
    """
    first = await within(reader.read(1), idle_timeout)
    if not first:
        return None
    try:
        body = await within(_frame_rest(reader, first, max_frame, budget), frame_timeout)
    except asyncio.TimeoutError:
        raise FrameTimeout(f"frame incomplete after {frame_timeout:g} s") from None
    except asyncio.IncompleteReadError as exc:
        raise MalformedMessage(f"connection closed after {len(exc.partial)} bytes of a frame") from None
    return decode(body)


def tune_keepalive(sock: socket.socket, idle_s: int = 30, interval_s: int = 10, count: int = 3,
                   user_timeout_s: int = 60) -> None:
    """Notice a peer that vanished (host down, cable out) on a connection that may stay silent.

    Keepalive probes find a dead peer of an idle connection in about
    ``idle_s + interval_s * count`` seconds; TCP_USER_TIMEOUT aborts a
    connection whose sent data stays unacknowledged that long (a peer that
    stopped reading), so neither side blocks for ever.  Linux options; skipped
    where the platform lacks them.
    """
    opts = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (("TCP_KEEPIDLE", idle_s), ("TCP_KEEPINTVL", interval_s), ("TCP_KEEPCNT", count),
                        ("TCP_USER_TIMEOUT", user_timeout_s * 1000)):
        if hasattr(socket, name):
            opts.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, opt, value in opts:
        try:
            sock.setsockopt(level, opt, value)
        except OSError:
            pass
