"""The delayer program (C or Python) and the table the C one reads: no root needed.

The packets themselves go through both programs in tests/test_linkemu_root.py (parametrized
tests) and through the C one, the default where built, in every other root test."""

import os
import subprocess
import zlib

import pytest

from edgelab.errors import BackendError
from edgelab.linkemu import emulator, lateness
from edgelab.linkemu.delayer import TABLE_HEADER, config_table

CFG = {"generation": 7, "tag": "x", "pid": None,
       "namespaces": {"el-x.ap": {"netns": "/run/netns/el-x.ap",
                                  "queues": {"1000": {"delay_ms": 2, "jitter_ms": 0.5},
                                             "1001": {"delay_ms": 0, "jitter_ms": 0, "bridge": True},
                                             "1002": {"delay_ms": 1.25, "jitter_ms": 0, "via": 1001,
                                                      "dev": "p-phone-1", "dir": "from-peer"},
                                             "1003": {"delay_ms": 3, "jitter_ms": 0.1, "via": 1001,
                                                      "dev": "p-phone-1", "dir": "to-peer"}}},
                      "_root": {"netns": None, "queues": {"5": {"delay_ms": 10, "jitter_ms": 0}}}}}


def test_the_table_carries_every_queue_in_integer_nanoseconds():
    lines = config_table(CFG).splitlines()
    assert lines[0] == TABLE_HEADER and lines[1] == "generation 7"
    assert lines[2:] == ["ns el-x.ap /run/netns/el-x.ap",
                         "q 1000 2000000 500000 plain -1 -",
                         "q 1001 0 0 bridge -1 -",
                         "q 1002 1250000 0 from-peer 1001 p-phone-1",
                         "q 1003 3000000 100000 to-peer 1001 p-phone-1",
                         "ns _root -",
                         "q 5 10000000 0 plain -1 -"]


@pytest.mark.parametrize("bad", [{"netns": "/run/netns/a b"}, {"dev": "p 1"}])
def test_a_field_with_whitespace_is_refused_not_shifted_into_the_next_column(bad):
    cfg = {"generation": 1, "namespaces": {"k": {"netns": "/run/netns/k", "queues": {
        "1": {"delay_ms": 0, "jitter_ms": 0, "bridge": True},
        "2": {"delay_ms": 1, "jitter_ms": 0, "via": 1, "dev": "p1", "dir": "to-peer"}}}}}
    if "netns" in bad:
        cfg["namespaces"]["k"]["netns"] = bad["netns"]
    else:
        cfg["namespaces"]["k"]["queues"]["2"]["dev"] = bad["dev"]
    with pytest.raises(ValueError, match="whitespace"):
        config_table(cfg)


def test_the_program_follows_the_ask_and_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGELAB_DELAYER", raising=False)
    monkeypatch.setenv("EDGELAB_DELAYER_BIN", str(tmp_path / "missing"))
    got = emulator.delayer_program()
    assert got["impl"] == "python" and "not built" in got["why"] and "bootstrap" in got["why"]
    with pytest.raises(BackendError, match="C delayer was asked for"):
        emulator.delayer_program("c")
    assert emulator.delayer_program("python")["why"] == "asked for"
    with pytest.raises(BackendError, match="unknown delayer 'rust'"):
        emulator.delayer_program("rust")
    exe = tmp_path / "nfqd"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("EDGELAB_DELAYER_BIN", str(exe))       # one installed elsewhere: no staleness check
    assert emulator.delayer_program() == {"impl": "c", "path": str(exe), "why": "built"}
    monkeypatch.setenv("EDGELAB_DELAYER", "python")
    assert emulator.delayer_program()["impl"] == "python"


def test_a_build_older_than_its_source_is_not_run(monkeypatch, tmp_path):
    """A stale build would run other code than the tree's: delayer.py is taken, and why is said."""
    monkeypatch.delenv("EDGELAB_DELAYER", raising=False)
    monkeypatch.delenv("EDGELAB_DELAYER_BIN", raising=False)
    exe, src = tmp_path / "edgelab-nfq-delayer", tmp_path / "nfq_delayer.c"
    src.write_text("int main(void) { return 0; }\n")
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setattr(emulator, "DELAYER_BIN", exe)
    monkeypatch.setattr(emulator, "DELAYER_SRC", src)
    os.utime(exe, (1_000_000, 1_000_000))
    got = emulator.delayer_program()
    assert got["impl"] == "python" and "older than nfq_delayer.c" in got["why"]
    os.utime(exe, None)
    os.utime(src, (1_000_000, 1_000_000))
    assert emulator.delayer_program()["impl"] == "c"


@pytest.fixture
def c_delayer():
    if not os.access(emulator.DELAYER_BIN, os.X_OK):
        pytest.skip(f"{emulator.DELAYER_BIN} is not built (scripts/bootstrap builds it)")
    return str(emulator.DELAYER_BIN)


@pytest.mark.parametrize("table,where", [
    ("edgelab-delayer-tab 2\n", ".tab:1: not a delayer table"),
    (f"{TABLE_HEADER}\ngeneration 1\nns k -\nq 1 -5 0 plain -1 -\n", ".tab:4: bad queue"),
    (f"{TABLE_HEADER}\ngeneration 1\nns k -\nq 1 5 0 sideways -1 -\n", ".tab:4: unknown queue kind sideways"),
    (f"{TABLE_HEADER}\ngeneration 1\nns k -\nq 1 5 0 to-peer -1 p1\n", ".tab:4: a port stage needs a bridge queue"),
    (f"{TABLE_HEADER}\ngeneration 1\nns k -\nwhat\n", ".tab:4: cannot parse: what"),
    (f"{TABLE_HEADER}\nns k -\n", ".tab: no generation line"),
])
def test_the_c_program_refuses_a_bad_table_with_its_file_and_line(c_delayer, tmp_path, table, where):
    cfg = tmp_path / "delayer.json"
    (tmp_path / "delayer.json.tab").write_text(table)
    cp = subprocess.run([c_delayer, "--config", str(cfg)], capture_output=True, text=True, timeout=10)
    assert cp.returncode == 1
    assert f"{cfg}.tab" in cp.stderr and where in cp.stderr   # file:line, and what is wrong
    assert not (tmp_path / "delayer.json.ready").exists()    # never ready: the controller reports the log


def test_the_c_program_writes_the_counters_lateness_reads(c_delayer, tmp_path):
    """No queue at all (binding needs root and a namespace): it starts, reports ready, writes the
    CRC-checked counters record in place and exits 0 on SIGTERM."""
    import signal
    import time

    cfg = tmp_path / "delayer.json"
    (tmp_path / "delayer.json.tab").write_text(f"{TABLE_HEADER}\ngeneration 3\n")
    p = subprocess.Popen([c_delayer, "--config", str(cfg), "--tag", "t"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 5
        while not (tmp_path / "delayer.json.ready").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (tmp_path / "delayer.json.ready").read_text() == f"3 {p.pid}\n"
        raw = (tmp_path / lateness.STATS_FILE).read_bytes()
        assert len(raw) == 512                                   # delayer.STATS_RECORD, rewritten in place
        body, check = raw.split(b"\n")[:2]
        assert f"{zlib.crc32(body):08x}".encode() == check
        got = lateness.read(tmp_path)
        assert got is not None and got.pid == p.pid and got.released == 0
        (tmp_path / "delayer.json.tab").write_text(f"{TABLE_HEADER}\ngeneration 4\n")
        p.send_signal(signal.SIGHUP)                             # a reload: the new generation is ready
        deadline = time.monotonic() + 5
        while (tmp_path / "delayer.json.ready").read_text() != f"4 {p.pid}\n" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (tmp_path / "delayer.json.ready").read_text() == f"4 {p.pid}\n"
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=5) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
