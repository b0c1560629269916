"""Host overload signals (edgelab.hostload) read from this machine's real kernel counters."""

import subprocess
import sys
import time

import pytest

from edgelab.hostload import (HostLoad, HostLoadSampler, HostWarmer, process_cpu_seconds, read_cpu_times,
                              reference_unit)

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


def test_the_link_delayers_lateness_over_the_window_is_recorded_and_named(tmp_path):
    """The counters a delayer dumps (edgelab.linkemu.lateness), read before and after the window."""
    from edgelab.linkemu import lateness

    counters = lateness.Lateness(pid=4242)
    for late in (0.0, -0.0001, 0.0004):   # before the window: on time
        counters.note(late)
    counters.dump(tmp_path / lateness.STATS_FILE)
    s = HostLoadSampler(delayer=lambda: lateness.read(tmp_path)).start()
    for late in (0.0002, 0.003, 0.005, 0.0):   # in the window: two of four more than 1 ms late
        counters.note(late)
    counters.dump(tmp_path / lateness.STATS_FILE)
    r = s.stop()
    assert r.delayer_late_ms == pytest.approx((0.2 + 3 + 5) / 4) and r.delayer_late_share == 0.5
    assert "the link delayer released packets 2.1 ms late on average" in r.overloaded   # 2.05 ms
    rows = {m.metric: m.value for m in s.measurements()}
    assert rows["host_delayer_late_ms"] == pytest.approx(2.05) and rows["host_delayer_late_share"] == 0.5
    assert counters.late_max_s == 0.005


def test_delayer_counters_that_cannot_be_compared_give_no_figure(tmp_path):
    from edgelab.linkemu import lateness

    assert lateness.read(tmp_path) is None                     # no delayer wrote any
    (tmp_path / lateness.STATS_FILE).write_text("{half")
    assert lateness.read(tmp_path) is None                     # unreadable: no figure, no crash
    a, b = lateness.Lateness(10, 0.0, 0, 0.0, pid=1), lateness.Lateness(20, 0.01, 1, 0.01, pid=2)
    assert lateness.window(a, b) is None                       # the delayer was restarted in between
    assert lateness.window(a, lateness.Lateness(10, 0.0, 0, 0.0, pid=1)) is None   # nothing released
    assert lateness.window(a, lateness.Lateness(20, 0.01, 1, 0.01, pid=1)) == pytest.approx((1.0, 0.1, 10))
    s = HostLoadSampler(delayer=lambda: None).start()
    s.stop()
    assert "host_delayer_late_ms" not in {m.metric for m in s.measurements()}


def test_the_warmers_spinners_measure_the_hosts_speed_in_reference_units():
    with HostWarmer(spinners=1, pm_qos=False) as w:
        s = HostLoadSampler(warmer=w).start()
        time.sleep(1.0)
        r = s.stop()
        assert w.reference_units() > 0
    rows = {m.metric: m.value for m in s.measurements()}
    if r.unit_us is None:   # the spinner hardly ran (a busy host): then no figure, not a wrong one
        assert "host_cpu_unit_us" not in rows
    else:
        # CPU µs per unit, consistent with timing one unit here (same order: the host's speed)
        t0 = time.process_time()
        for _ in range(200):
            reference_unit()
        one = 1e6 * (time.process_time() - t0) / 200
        assert rows["host_cpu_unit_us"] == r.unit_us and one / 5 < r.unit_us < one * 5
    assert HostLoadSampler().start().stop().unit_us is None   # no warmer: no speed figure
