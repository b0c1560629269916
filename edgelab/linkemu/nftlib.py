"""Thin adapter: nftables scripts run in-process through libnftables (ctypes).

``nft -f`` per station was a process (fork, exec, dynamic linking, its own netlink
socket) for a three-line script. libnftables is the library the ``nft`` CLI is a
front end of (Debian ``libnftables1``, installed with nftables), so the same script
text gives the same rules. Its netlink socket belongs to the namespace of the thread
that uses it: every context is created, used and freed while this thread has
entered the namespace (``nsexec.entered``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import threading
from typing import Optional

from ..errors import BackendError
from .nlbatch import FD_SETSIZE
from .nsexec import entered, in_ns

#: Descriptors other threads may open between the check below and libnftables' socket().
_FD_MARGIN = 64


def _lowest_free_fd() -> int:
    fd = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
    os.close(fd)
    return fd


def _run_cli(ns: Optional[str], script: str) -> None:
    cp = subprocess.run(in_ns(ns, ["nft", "-f", "-"]), input=script, capture_output=True, text=True, timeout=60)
    if cp.returncode != 0:
        raise BackendError(f"nftables script failed in namespace {ns!r}: {cp.stderr.strip()}\n"
                           f"  script:\n{script[:2000]}")

_lib = None
_lock = threading.Lock()
_LIBS = ("libnftables.so.1", ctypes.util.find_library("nftables"))


def _load():
    global _lib
    with _lock:
        if _lib is None:
            lib = False
            for name in _LIBS:
                if not name:
                    continue
                try:
                    lib = ctypes.CDLL(name, use_errno=True)
                    break
                except OSError:
                    continue
            if lib:
                lib.nft_ctx_new.restype = ctypes.c_void_p
                lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
                lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
                lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
                lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
            _lib = lib
    return _lib or None


def available() -> bool:
    """True if libnftables can be loaded (else callers run ``nft -f``)."""
    return _load() is not None


def run_script(ns: Optional[str], script: str) -> None:
    """Run an ``nft -f`` script in namespace ``ns`` (None: the current one), as one transaction."""
    lib = _load()
    if lib is None:
        raise BackendError("libnftables (Debian libnftables1) is not installed")
    if _lowest_free_fd() >= FD_SETSIZE - _FD_MARGIN:
        # libnftables select()s on its socket, which gets the lowest free descriptor: at or
        # above FD_SETSIZE that aborts the process (nlbatch.FD_SETSIZE). The nft CLI, a
        # process of its own, has a descriptor table of its own.
        _run_cli(ns, script)
        return
    with entered(ns):
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise BackendError("nft_ctx_new failed (out of memory?)")
        try:
            lib.nft_ctx_buffer_error(ctx)
            lib.nft_ctx_buffer_output(ctx)
            rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
            if rc != 0:
                err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                raise BackendError(f"nftables script failed in namespace {ns!r}: {err}\n  script:\n{script[:2000]}")
        finally:
            lib.nft_ctx_free(ctx)
