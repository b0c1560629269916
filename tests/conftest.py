"""Suite-wide: tests marked ``measures`` run once more when they fail.

They assert a delay, rate, loss or CPU figure measured on a host whose two cores other
jobs share (CI, other sessions' testbeds): a neighbour's burst at the wrong second can
push one measurement out of its bounds although the emulation is right. The second run is
a fresh measurement, not a wider bound; a wrong emulation fails both. The first failure
stays in the log: the summary lists each rerun with the error that caused it.
Tests that assert what was *created* or *removed* are not marked: a race there must fail.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.get_closest_marker("measures") is not None and item.get_closest_marker("flaky") is None:
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


_RERUNS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.outcome == "rerun":
        lines = [ln for ln in str(report.longrepr).splitlines() if ln.startswith("E ")]
        _RERUNS.append((report.nodeid, " / ".join(ln[1:].strip() for ln in lines[:3])[:400]))


def pytest_terminal_summary(terminalreporter):
    """What made each rerun necessary: a figure out of bounds, so that a trend shows in the logs."""
    if _RERUNS:
        terminalreporter.section("first failures of the rerun measurements")
        for nodeid, err in _RERUNS:
            terminalreporter.write_line(f"{nodeid}: {err}")
