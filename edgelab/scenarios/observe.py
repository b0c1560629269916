"""A run's Prometheus server on a testbed node (or this host), as a stoppable process.

The server and its API live where the targets are reachable: on a node, it is started with
``tb.popen`` and its API read with a one-line Python fetch run on that node (``tb.run``), so it
works on every backend whose nodes run commands.  See :mod:`edgelab.prometheus`.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Mapping, Optional, Sequence

from ..backends import Testbed
from ..prometheus import PrometheusServer
from .nodes import python_of

PROM_PORT = 9090


class Prom:
    """A started server and its node (None: this host); quacks like a Popen for ``nodes.stop``."""

    def __init__(self, server: PrometheusServer, node: Optional[str]):
        self.server, self.node = server, node

    def poll(self):
        return self.server.proc.poll() if self.server.proc else 0

    def terminate(self):
        self.server.stop()

    def wait(self, timeout=None):
        return 0

    def kill(self):
        self.server.stop()


def prometheus_on_node(tb: Testbed, node: str, jobs: Mapping[str, Sequence[str]], workdir: Path,
                       interval_s: float = 1.0) -> Prom:
    def fetch(url: str) -> bytes:
        res = tb.run(node, [python_of(tb), "-c", "import sys,urllib.request as u;"
                            "sys.stdout.buffer.write(u.urlopen(sys.argv[1],timeout=10).read())", url],
                     timeout=30, check=False)
        if res.returncode != 0:
            raise OSError(f"fetch {url} on {node}: {str(res.stderr)[-300:]}")
        return res.stdout.encode() if isinstance(res.stdout, str) else res.stdout
    srv = PrometheusServer(jobs, workdir, port=PROM_PORT, interval_s=interval_s,
                           popen=functools.partial(tb.popen, node), fetch=fetch)
    return Prom(srv.start(timeout=60), node)


def export_series(prom: Prom, t0: float, t1: float, raw: Path) -> None:
    """The window's series into ``raw/prometheus_series.csv``."""
    (raw / "prometheus_series.csv").write_text(prom.server.series(t0, t1))
