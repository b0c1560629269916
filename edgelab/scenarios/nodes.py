"""Starting node services and reading node CPU, over any :class:`Testbed`.

Services print one ``LISTENING <url>`` line when ready and load generators
print ``READY`` on stderr then wait for a line on stdin; these helpers wait
for those lines with a deadline, so a service that crashes at start-up is
reported with its own error output instead of hanging the experiment.
"""

from __future__ import annotations

import os
import select
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

from ..backends import Backend, Testbed, get_backend
from ..errors import BackendError
from ..measure import CpuSample, utilisation
from ..model import Topology
from ..plan import make_plan


def testbed(topology: Topology, backend: Union[str, Backend]) -> Testbed:
    """Bring ``topology`` up on ``backend`` (a name or an instance); use it in a ``with``
    block, which tears it down (:class:`Testbed` is a context manager)."""
    be = get_backend(backend) if isinstance(backend, str) else backend
    return be.up(make_plan(topology))


def python_of(tb: Testbed) -> str:
    """Interpreter that can import edgelab on the nodes (the local backend shares ours)."""
    return getattr(tb, "python", None) or "python3"


def _read_line_until(proc: subprocess.Popen, stream, want: str, deadline: float, what: str,
                     log: Optional[Path] = None) -> str:
    """Read ``stream`` line by line until one starts with ``want``; fail with the output seen."""
    seen: list[str] = []
    fd = stream.fileno()
    buf = b""
    while True:
        left = deadline - time.monotonic()
        r = select.select([fd], [], [], min(max(left, 0.0), 0.5))[0] if left > 0 else []
        chunk = os.read(fd, 65536) if r else None
        if chunk:
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                text = line.decode(errors="replace")
                if text.startswith(want):
                    return text
                seen.append(text)
            continue
        if chunk == b"" or left <= 0:  # EOF (the process is gone) or out of time
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            state = f"exited {proc.returncode}" if proc.returncode is not None else "was not ready in time"
            output = "\n".join(seen)
            if log is not None and log.exists():
                output += "\n" + log.read_text(errors="replace")
            raise BackendError(f"{what} {state}; its output: {output.strip()[-1500:] or '(none)'}")


def start_service(tb: Testbed, node: str, argv: Sequence[str], *, log_dir: Path, timeout: float = 60.0,
                  what: Optional[str] = None) -> tuple[subprocess.Popen, str]:
    """Start a service that prints ``LISTENING <url>``; returns (process, url)."""
    return start_services(tb, {node: (node, argv)}, log_dir=log_dir, timeout=timeout, what=what)[node]


def start_services(tb: Testbed, specs: Mapping[str, tuple[str, Sequence[str]]], *, log_dir: Path,
                   timeout: float = 60.0, what: Optional[str] = None,
                   popen_kw: Optional[Mapping[str, object]] = None) -> dict[str, tuple[subprocess.Popen, str]]:
    """Start services at once (``label -> (node, argv)``) and wait until each prints ``LISTENING <url>``.

    Their stderr goes to files in ``log_dir`` (a pipe nobody reads would
    eventually block a service), kept with the raw results. If one fails,
    all are stopped and the error names the node with the service's output.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, tuple[subprocess.Popen, Path]] = {}
    out: dict[str, tuple[subprocess.Popen, str]] = {}
    try:
        for label, (node, argv) in specs.items():
            log = log_dir / f"{label}-{_slug(argv)}.log"
            with open(log, "ab") as err:
                started[label] = (tb.popen(node, list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=err, **dict(popen_kw or {})), log)
        deadline = time.monotonic() + timeout
        for label, (proc, log) in started.items():
            node, argv = specs[label]
            line = _read_line_until(proc, proc.stdout, "LISTENING ", deadline,
                                    what or f"{' '.join(argv[1:3])} on {node}", log)
            out[label] = (proc, line.split(" ", 1)[1].strip())
        return out
    except BaseException:
        stop([p for p, _ in started.values()], grace=1.0)
        raise


def _slug(argv: Sequence[str]) -> str:
    mod = next((a for a in argv if a.startswith("edgelab.")), argv[0])
    return mod.rsplit(".", 1)[-1].replace("/", "_")


def stop(procs: Sequence[subprocess.Popen], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; reaps every process."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@dataclass
class Gate:
    """Processes that print READY on stderr and start on a line on stdin: start them together."""

    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def add(self, tb: Testbed, node: str, argv: Sequence[str]) -> None:
        self.procs[node] = tb.popen(node, list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)

    def open(self, timeout: float = 120.0) -> float:
        """Wait for every READY, then release all; returns the release time (epoch s)."""
        self.ready(timeout)
        return self.release()

    def ready(self, timeout: float = 120.0) -> None:
        """Wait until every process printed READY (set up, warmed up, waiting for go)."""
        deadline = time.monotonic() + timeout
        for node, p in self.procs.items():
            _read_line_until(p, p.stderr, "READY", deadline, f"load generator on {node}")

    def release(self) -> float:
        """Let every (ready) process start; returns the release time (epoch s)."""
        t = time.time()
        for p in self.procs.values():
            p.stdin.write(b"go\n")
            p.stdin.flush()
            p.stdin.close()
            p.stdin = None  # so communicate() does not touch it again
        return t

    def collect(self, timeout: float) -> dict[str, str]:
        """Each process's stdout once it exits (fails naming the node whose process failed)."""
        out = {}
        for node, p in self.procs.items():
            try:
                stdout, stderr = p.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise BackendError(f"load generator on {node} did not finish within {timeout:g} s") from None
            if p.returncode not in (0, 1):  # 1 = ran, but no request succeeded: still a measurement
                raise BackendError(f"load generator on {node} exited {p.returncode}: "
                                   f"{stderr.decode(errors='replace')[-1500:]}")
            out[node] = stdout.decode()
        return out

    def kill(self) -> None:
        stop(list(self.procs.values()), grace=1.0)


class CpuMeter:
    """CPU seconds of nodes between :meth:`start` and :meth:`stop`, as quota utilisation.

    Utilisation is relative to each node's quota (``host_cpu`` cores): 1.0 means
    the emulated device's CPU was fully busy, which is what a device power model
    wants. Backends that cannot read node CPU give None and nothing is recorded.
    """

    def __init__(self, tb: Testbed, nodes: Sequence[str]) -> None:
        self.tb, self.nodes = tb, list(nodes)
        self._before: dict[str, CpuSample] = {}
        self._after: dict[str, CpuSample] = {}

    def _sample(self) -> dict[str, CpuSample]:
        t = time.monotonic()
        return {n: CpuSample(t, s) for n in self.nodes if (s := self.tb.cpu_seconds(n)) is not None}

    def start(self) -> "CpuMeter":
        self._before = self._sample()
        return self

    def stop(self) -> "CpuMeter":
        self._after = self._sample()
        return self

    @property
    def readable_at_start(self) -> list[str]:
        """Nodes whose CPU time could be read at :meth:`start` (all must still be at :meth:`stop`)."""
        return list(self._before)

    @property
    def seconds(self) -> dict[str, float]:
        """CPU seconds each readable node used between start and stop."""
        return {n: a.seconds - self._before[n].seconds for n, a in self._after.items() if n in self._before}

    @property
    def wall(self) -> float:
        """Seconds between start and stop."""
        if not self._after or not self._before:
            return 0.0
        return next(iter(self._after.values())).t - next(iter(self._before.values())).t

    def utilisation(self, quotas: Mapping[str, float]) -> dict[str, float]:
        out = {n: utilisation(self._before[n], a, quotas[n]) for n, a in self._after.items() if n in self._before}
        return {n: u for n, u in out.items() if u == u}  # NaN: no wall time or no quota
