"""The measurement validity layer on real local testbeds (root): a service, a power meter
or a link-emulation delayer killed in the middle of a point must fail that point with
its cause, keep it out of the results and the verdict, and fail the exit status.

Run under the shared lock (it kills processes by the namespaces of the experiments' testbeds):
``flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_validity_root.py``
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

import pytest

from edgelab.backends.local.naming import linkemu_state_dir

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces, cgroups)")


def run_script(name: str, *args: str, results: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / f"{name}.py"), "--results", str(results),
                           *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def ns_of(base: str, element: str) -> str:
    """The namespace of ``element`` in the running experiment's testbed ``<base>-<pid>``
    (edgelab.experiment.testbed_name; namespaces are ``el-<testbed>.<element>``)."""
    rx = re.compile(rf"el-{re.escape(base)}-\d+\.{re.escape(element)}")
    found = [n for n in os.listdir("/run/netns") if rx.fullmatch(n)] if os.path.isdir("/run/netns") else []
    return found[0] if found else f"el-{base}-?.{element}"


def netns_inode(ns: str) -> Optional[int]:
    try:
        return os.stat(f"/run/netns/{ns}").st_ino
    except OSError:
        return None


def processes(needle: str, ns: Optional[str] = None) -> list[int]:
    """Pids whose command line contains ``needle`` (and that run in namespace ``ns``)."""
    want = netns_inode(ns) if ns else None
    if ns and want is None:
        return []
    out = []
    for e in os.scandir("/proc"):
        if not e.name.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{e.name}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if needle not in cmd:
                continue
            if want is not None and os.stat(f"/proc/{e.name}/ns/net").st_ino != want:
                continue
        except OSError:
            continue
        out.append(int(e.name))
    return out


class Killer(threading.Thread):
    """Once ``ready()`` is true, wait ``delay`` s, then send ``sig`` (SIGKILL) to every process
    ``targets()`` names (once)."""

    def __init__(self, ready: Callable[[], bool], targets: Callable[[], list[int]], delay: float = 0.0,
                 sig: int = signal.SIGKILL):
        super().__init__(daemon=True)
        self.ready, self.targets, self.delay, self.sig = ready, targets, delay, sig
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 240
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.ready():
                time.sleep(self.delay)
                for pid in self.targets():
                    try:
                        os.kill(pid, self.sig)
                        self.killed.append(pid)
                    except ProcessLookupError:
                        pass
                if self.killed:
                    return
            time.sleep(0.05)


def only_run(results: Path, experiment: str) -> Path:
    (run,) = (results / experiment).iterdir()
    return run


def no_testbed_left(base: str) -> None:
    """Nothing left of the experiment's testbed ``<base>-<pid>``."""
    from local_helpers import leftovers, named_testbeds

    for name in {base} | named_testbeds(rf"{base}-\d+"):
        assert leftovers(name) == {}, name


def key_results(run: Path) -> str:
    return (run / "report" / "summary.md").read_text().split("## Key results", 1)[1].split("\n## ", 1)[0]


def test_killing_the_servers_phone_service_fails_the_point_and_the_headline_excludes_it(tmp_path):
    # The first point (1 phone) loses its server's phone service a second into the load;
    # on main this gave exit 0, status complete and "Saturation point: N = 1".
    killer = Killer(ready=lambda: bool(processes("edgelab.workload.loadgen", ns_of("wifi", "phone-1"))),
                    targets=lambda: processes("edgelab.services.phone", ns_of("wifi", "server-1")), delay=1.0)
    killer.start()
    r = run_script("wifi_scaling", "--phones", "1,2", "--seconds", "3", "--rate", "3", results=tmp_path)
    killer.stop.set()
    assert killer.killed, "the phone service was never seen running"
    assert r.returncode == 1, r.stderr[-3000:]
    run = only_run(tmp_path, "wifi_scaling")
    health = json.loads((run / "health.json").read_text())
    bad = health["n_phones=1,rep=0"]
    assert bad["status"] == "unhealthy"
    assert "alive: phone service on server-1: killed by signal 9 during the point" in bad["cause"]
    assert health["n_phones=2,rep=0"]["status"] == "healthy"
    with open(run / "measurements.csv") as f:
        assert {row["point"] for row in csv.DictReader(f)} == {"n_phones=2,rep=0"}
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "complete-with-failures" and manifest["report"] == "written"
    headline = key_results(run)
    assert "EXCLUDED 1 of 2 points: n_phones=1,rep=0 (unhealthy: alive: phone service on server-1: killed by signal 9" \
        in headline
    assert "Saturation point: N = 1" not in headline
    no_testbed_left("wifi")


def test_killing_the_plugs_during_faas_fails_the_point(tmp_path):
    # On main: energy_per_invocation_j averaged over the few invocations metered, status complete.
    killer = Killer(ready=lambda: bool(processes("edgelab.services.beaglepaas orchestrator", ns_of("faas", "orchestrator-1"))),
                    targets=lambda: processes("edgelab.services.power", ns_of("faas", "power-1")))
    killer.start()
    r = run_script("faas_energy", "--workers", "1", "--per-worker", "30", "--no-report", results=tmp_path)
    killer.stop.set()
    assert killer.killed, "the plugs were never seen running"
    assert r.returncode == 1, r.stderr[-3000:]
    run = only_run(tmp_path, "faas_energy")
    rec = json.loads((run / "health.json").read_text())["n_workers=1,rep=0"]
    assert rec["status"] == "unhealthy"
    assert "alive: power meter (plug) of worker-1 on power-1: killed by signal 9" in rec["cause"]
    assert not (run / "measurements.csv").exists()   # nothing of it among the measurements
    rejected = (run / "raw" / "n_workers-1_rep-0" / "rejected_measurements.csv").read_text()
    assert "invocations_per_s" in rejected           # kept for inspection
    assert json.loads((run / "manifest.json").read_text())["status"] == "complete-with-failures"
    no_testbed_left("faas")


def test_plugs_that_stop_answering_fail_the_point_on_energy_coverage(tmp_path):
    # The plugs stay alive but frozen (SIGSTOP): only a few invocations get an energy, and
    # their average must not pass for the point's energy per invocation.
    killer = Killer(ready=lambda: bool(processes("edgelab.services.beaglepaas worker", ns_of("faas", "worker-1"))),
                    targets=lambda: processes("edgelab.services.power", ns_of("faas", "power-1")), delay=0.3,
                    sig=signal.SIGSTOP)
    killer.start()
    r = run_script("faas_energy", "--workers", "1", "--per-worker", "40", "--no-report", results=tmp_path)
    killer.stop.set()
    assert killer.killed, "the plugs were never seen running"
    assert r.returncode == 1, r.stderr[-3000:]
    run = only_run(tmp_path, "faas_energy")
    rec = json.loads((run / "health.json").read_text())["n_workers=1,rep=0"]
    assert rec["status"] == "unhealthy"
    assert "coverage: invocations charged an energy by the plugs" in rec["cause"], rec["cause"]
    check = next(c for c in rec["checks"] if c["name"] == "coverage: invocations charged an energy by the plugs")
    assert check["value"] < 0.9 and check["limit"] == 0.9
    no_testbed_left("faas")


def test_killing_a_phones_delayer_names_the_delayer(tmp_path):
    # On main: "phone-2: exited 0" and iperf3's JSON. Now the error (or the point's health) names the delayer.
    # One delayer serves every namespace of the testbed (phone-2's included): find it by its config.
    def delayer_of_phone_2() -> list[int]:
        ns = ns_of("wifi", "phone-2")   # el-wifi-<pid>.phone-2: the testbed is the part before the dot
        config = f"{linkemu_state_dir(ns[len('el-'):].split('.')[0])}/delayer.json" if "?" not in ns else "?"
        out = []
        for p in processes("--config"):   # the C program or delayer.py: both name their config
            try:
                if config in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace"):
                    out.append(p)
            except OSError:
                pass
        return out

    killer = Killer(ready=lambda: bool(processes("edgelab.workload.loadgen", ns_of("wifi", "phone-2"))),
                    targets=delayer_of_phone_2, delay=0.5)
    killer.start()
    r = run_script("wifi_scaling", "--phones", "2", "--seconds", "2", "--rate", "2", "--keep-going", "--no-report",
                   results=tmp_path)
    killer.stop.set()
    if not killer.killed:
        pytest.skip("this kernel's link engine runs no delayer for phone-2 (netem needs none)")
    assert r.returncode == 1, r.stderr[-3000:]
    run = only_run(tmp_path, "wifi_scaling")
    rec = json.loads((run / "health.json").read_text())["n_phones=2,rep=0"]
    assert rec["status"] in ("unhealthy", "failed")
    assert "link-emulation delayer of phone-2: killed by signal 9" in rec["cause"], rec["cause"]
    assert '"start"' not in r.stderr and "phone-2: exited 0" not in r.stderr   # no iperf3 JSON, no wrong blame
    no_testbed_left("wifi")
