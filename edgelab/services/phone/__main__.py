"""CLI: ``python -m edgelab.services.phone [--bind H] [--port P] [--cv-threads N]``.

Prints ``LISTENING http://HOST:PORT`` when ready; stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from ..lifecycle import serve_until_signalled


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelab.services.phone",
                                description="Image detection service of a phone node (POST /detect).")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080, help="0 = pick a free port")
    p.add_argument("--cv-threads", type=int, default=1,
                   help="OpenCV worker threads per request (1 = the node's cgroup decides parallelism)")
    p.add_argument("--metrics-port", type=int, default=0, help="serve Prometheus /metrics on this port (0 = off)")
    p.add_argument("-v", "--verbose", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if a.verbose else logging.INFO, stream=sys.stderr)
    import cv2

    cv2.setNumThreads(a.cv_threads)
    from .server import make_server

    srv = make_server(a.bind, a.port)
    if a.metrics_port:
        from ..metrics import PHONE, serve_metrics

        serve_metrics(PHONE.registry, a.metrics_port, a.bind)

    def start() -> str:
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        return "http://%s:%d" % srv.server_address[:2]

    serve_until_signalled(start)
    srv.shutdown()
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
