"""CLI: ``python -m edgelab.services.phone [--bind H] [--port P] [--cv-threads N] [limits]``.

Prints ``LISTENING http://HOST:PORT`` when ready; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from ..lifecycle import serve_until_signalled


def main(argv=None) -> int:
    from .server import MAX_BODY, Limits

    d = Limits()
    p = argparse.ArgumentParser(prog="python -m edgelab.services.phone",
                                description="Image detection service of a phone node (POST /detect).")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 = pick a free port")
    p.add_argument("--cv-threads", type=int, default=1,
                   help="OpenCV worker threads per request (1 = the node's cgroup decides parallelism)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0 = off)")
    p.add_argument("--threads", type=int, default=d.threads, help="requests computed at once")
    p.add_argument("--max-connections", type=int, default=d.max_connections,
                   help="connections held open; more wait in the listen backlog")
    p.add_argument("--idle-timeout", type=int, default=d.idle_timeout_s,
                   help="seconds a connection may stay silent (mid-request included) before it is closed")
    p.add_argument("--max-body", type=int, default=MAX_BODY, help="bytes of one image (more gets 413)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr)
    try:
        limits = Limits(threads=a.threads, max_connections=a.max_connections, idle_timeout_s=a.idle_timeout,
                        max_body=a.max_body)
    except ValueError as exc:
        p.error(str(exc))
    import cv2

    cv2.setNumThreads(a.cv_threads)
    from .server import make_server

    srv = make_server(a.bind, a.port, limits)
    if a.metrics_port:
        from ..metrics import PHONE, serve_metrics

        serve_metrics(PHONE.registry, a.metrics_port, a.bind)

    def start() -> str:
        threading.Thread(target=srv.run, daemon=True, name="phone-http").start()
        return srv.url

    serve_until_signalled(start)
    srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
