"""A real Prometheus server for one experiment run, and the export of its series.

The experiment starts ``prometheus`` (Debian's package; scripts/bootstrap installs it) where the
targets are reachable — the runner's host for plugs on its network, or a testbed node for
services inside the testbed — with a private TSDB under the point's raw directory, scraping every
meter and service of the run.  When the point ends, the series of its window are exported with
the HTTP API (``/api/v1/query_range``) as CSV (``time,metric,labels,value``) into the run
directory, so the report can plot power over time, and the TSDB directory stays beside it.

``python -m edgelab.prometheus export URL T0 T1`` prints that CSV: run on a node (``tb.run``) it
reaches a server inside the testbed.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Optional, Sequence

import yaml

#: Every series edgelab exports (all start with this prefix), plus Prometheus' ``up``.
SERIES = '{__name__=~"edgelab_.+|up"}'


class PrometheusError(RuntimeError):
    """The server could not start, or its API answered an error."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for a server on this machine)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def config(jobs: Mapping[str, Sequence[str]], interval_s: float = 1.0) -> str:
    """prometheus.yml scraping ``jobs`` (name -> ["host:port", ...]); empty jobs are left out."""
    ms = max(int(round(interval_s * 1000)), 1)            # Prometheus durations are integers ("500ms")
    doc = {"global": {"scrape_interval": f"{ms}ms", "scrape_timeout": f"{min(ms, 10000)}ms"},
           "scrape_configs": [{"job_name": name, "static_configs": [{"targets": list(targets)}]}
                              for name, targets in jobs.items() if targets]}
    return yaml.safe_dump(doc, sort_keys=False)


def command(config_file: Path, tsdb: Path, listen: str, binary: str = "prometheus") -> list[str]:
    return [binary, f"--config.file={config_file}", f"--storage.tsdb.path={tsdb}",
            f"--web.listen-address={listen}", "--storage.tsdb.retention.time=7d", "--log.level=warn"]


class PrometheusServer:
    """One server: ``start()``, run the experiment, ``series(t0, t1)``, ``stop()``.

    ``popen`` starts the process (``subprocess.Popen`` here, ``functools.partial(tb.popen, node)``
    on a testbed node); ``fetch`` reads an API URL (default: urllib from this process)."""

    def __init__(self, jobs: Mapping[str, Sequence[str]], workdir: Path, *, port: int = 9090,
                 bind: str = "127.0.0.1", interval_s: float = 1.0, popen: Callable = subprocess.Popen,
                 fetch: Optional[Callable[[str], bytes]] = None, binary: str = "prometheus"):
        self.jobs, self.workdir, self.interval_s = dict(jobs), Path(workdir), interval_s
        self.url = f"http://{bind}:{port}"
        self.listen = f"{bind}:{port}"
        self._popen, self._fetch, self.binary = popen, fetch or _urlopen, binary
        self.proc: Optional[subprocess.Popen] = None

    def start(self, timeout: float = 30.0) -> "PrometheusServer":
        if self._popen is subprocess.Popen and shutil.which(self.binary) is None:
            raise PrometheusError(f"{self.binary} not found: install Debian's 'prometheus' package (scripts/bootstrap)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(config(self.jobs, self.interval_s))
        log = open(self.workdir / "prometheus.log", "ab")
        self.proc = self._popen(command(cfg, self.workdir / "tsdb", self.listen, self.binary),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited {self.proc.returncode}: "
                                      f"{(self.workdir / 'prometheus.log').read_text()[-1500:]}")
            try:
                self._fetch(self.url + "/-/ready")
                # the scrape manager picks targets up a few seconds after start (discovery's
                # 5 s update interval): the window must not begin before they are scraped
                active = json.loads(self._fetch(self.url + "/api/v1/targets"))["data"]["activeTargets"]
                wanted = sum(len(t) for t in self.jobs.values())
                if sum(1 for t in active if t.get("lastScrape", "").startswith("0001")) == 0 \
                        and len(active) >= wanted:
                    return self
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus at {self.url} not ready within {timeout:g} s")

    def series(self, t0: float, t1: float, step_s: Optional[float] = None) -> str:
        """CSV of every edgelab series between t0 and t1 (epoch s)."""
        return export(self.url, t0, t1, step_s or self.interval_s, self._fetch)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _urlopen(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def export(url: str, t0: float, t1: float, step_s: float = 1.0,
           fetch: Callable[[str], bytes] = _urlopen) -> str:
    """``time,metric,labels,value`` rows of every edgelab series in [t0, t1] from ``url``'s API."""
    q = urllib.parse.urlencode({"query": SERIES, "start": f"{t0:.3f}", "end": f"{t1:.3f}", "step": f"{step_s:g}"})
    body = json.loads(fetch(f"{url}/api/v1/query_range?{q}"))
    if body.get("status") != "success":
        raise PrometheusError(f"query_range failed: {body.get('error', body)}")
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["time", "metric", "labels", "value"])
    for s in body["data"]["result"]:
        labels = dict(s["metric"])
        name = labels.pop("__name__", "")
        text = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        for t, v in s["values"]:
            w.writerow([f"{float(t):.3f}", name, text, v])
    return out.getvalue()


def read_series(path: Path, metric: str) -> dict[str, list[tuple[float, float]]]:
    """{labels: [(time, value), ...]} of one metric from an exported CSV."""
    out: dict[str, list[tuple[float, float]]] = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["metric"] == metric:
                out.setdefault(row["labels"], []).append((float(row["time"]), float(row["value"])))
    return out


def main(argv=None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 4 or args[0] != "export":
        print("usage: python -m edgelab.prometheus export URL T0 T1", file=sys.stderr)
        return 2
    sys.stdout.write(export(args[1], float(args[2]), float(args[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
