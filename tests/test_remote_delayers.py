"""The remote delayer probe (edgelab.remote.delayers): its shell script run for real here against a
real process, and how its answers become health checks."""

from __future__ import annotations

import subprocess
import sys
import time

from edgelab.remote.delayers import check_script, checks
from edgelab.remote.inventory import Device
from edgelab.remote.transport import RemoteError


def probe(state_dir) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", check_script(str(state_dir))], capture_output=True, text=True, timeout=10)


def test_the_probe_says_alive_then_dead_for_a_real_process_and_none_without_a_config(tmp_path):
    assert probe(tmp_path).stdout.split() == ["none"]
    conf = tmp_path / "delayer.json"
    # a process that names its config on its command line, as the delayer does
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", str(conf)])
    try:
        conf.write_text(f'{{"pid": {p.pid}, "queues": []}}')
        assert probe(tmp_path).stdout.split() == ["alive", str(p.pid)]
    finally:
        p.kill()
        p.wait()
    time.sleep(0.05)
    assert probe(tmp_path).stdout.split() == ["dead", str(p.pid)]
    # a recycled pid that is some other process is not the delayer
    conf.write_text('{"pid": 1}')
    assert probe(tmp_path).stdout.split() == ["dead", "1"]


def test_answers_become_checks_naming_the_links_a_dead_delayer_carried():
    res = {"a": subprocess.CompletedProcess([], 0, "alive 12\n", ""),
           "b": subprocess.CompletedProcess([], 0, "dead 34\n", ""),
           "c": subprocess.CompletedProcess([], 0, "none\n", ""),
           "d": RemoteError(Device(name="d", node="d", host="10.0.0.9"), "ssh failed", "timed out")}
    kw = dict(what=lambda k: f"node {k}", where=lambda k: " on h", links=lambda k: f"{k}-1, {k}-2")
    by = {c.name: c for c in checks(res, none_is_fine=True, **kw)}
    assert by["alive: link-emulation delayer of node a"].ok
    assert by["alive: link-emulation delayer of node a"].detail == "running (pid 12 on h)"
    dead = by["alive: link-emulation delayer of node b"]
    assert not dead.ok and dead.detail == "ended (pid 34 on h): the links of b-1, b-2 carried nothing after that"
    assert "alive: link-emulation delayer of node c" not in by            # no delayer there: nothing to watch
    assert not by["alive: link-emulation delayer of node d"].ok
    assert "could not be checked" in by["alive: link-emulation delayer of node d"].detail
    strict = {c.name: c for c in checks(res, none_is_fine=False, **kw)}
    assert not strict["alive: link-emulation delayer of node c"].ok     # a share must have one
