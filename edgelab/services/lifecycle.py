"""How every edgelab service runs from its CLI: start, announce, wait for a stop signal.

The ``LISTENING <url>`` line on stdout is a contract: experiments
(:mod:`edgelab.scenarios.nodes`), the NixOS units and the tests wait for it to
know that the service accepts connections (and, with ``--port 0``, where).
"""

from __future__ import annotations

import signal
import threading
from typing import Callable


def serve_until_signalled(start: Callable[[], str]) -> None:
    """Install SIGTERM/SIGINT handlers, ``start()`` the service (it returns its URL),
    print ``LISTENING <url>``, and return when a stop signal arrives."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    url = start()
    print(f"LISTENING {url}", flush=True)
    stop.wait()
