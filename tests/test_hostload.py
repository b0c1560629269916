"""Host overload signals (edgelab.hostload) read from this machine's real kernel counters."""

import subprocess
import sys
import time

import pytest

from edgelab.hostload import HostLoad, HostLoadSampler, process_cpu_seconds, read_cpu_times

SPIN = "import time\nt = time.monotonic() + 30\nwhile time.monotonic() < t: pass\n"


def test_work_outside_the_measured_system_is_counted_as_foreign_and_its_own_is_not():
    """Two samplers over the same window, one told the spinner is its own: the difference of
    their foreign shares is the spinner's CPU share (whatever else this machine is doing)."""
    child = subprocess.Popen([sys.executable, "-c", SPIN])
    try:
        time.sleep(0.2)
        spin0 = process_cpu_seconds(child.pid)
        theirs = HostLoadSampler(own_cpu=lambda: 0.0)
        ours = HostLoadSampler(own_cpu=lambda: process_cpu_seconds(child.pid))
        t0 = read_cpu_times()
        theirs.start(), ours.start()
        time.sleep(1.0)
        a, b = theirs.stop(), ours.stop()
        t1 = read_cpu_times()
        share = (process_cpu_seconds(child.pid) - spin0) / (t1.total - t0.total)
    finally:
        child.kill()
        child.wait()
    assert share > 0.1   # the spinner ran
    assert a.foreign is not None and b.foreign is not None
    assert a.foreign - b.foreign == pytest.approx(share, abs=0.08)
    assert a.foreign >= share - 0.08
    assert any("other work" in s for s in a.overloaded) == (a.foreign >= 0.15)
    rows = {m.metric: m.value for m in theirs.measurements()}
    assert rows["host_foreign_cpu"] == a.foreign


def test_without_an_own_counter_no_foreign_share_is_claimed():
    s = HostLoadSampler().start()
    time.sleep(0.05)
    r = s.stop()
    assert r.foreign is None
    assert "host_foreign_cpu" not in {m.metric for m in s.measurements()}
    assert not [p for p in HostLoad(1.0, 2, 0.1, 0.0, 0.0, 0.5, foreign=0.1).overloaded]
