"""Link records without root: apply_links' one-file records (``links.json``) and the checks
of ``tc -batch`` arguments (both on the bring-up's path, issue 15)."""

from __future__ import annotations

import json
import os

import pytest

from edgelab.errors import BackendError
from edgelab.linkemu.emulator import BULK_RECORD, LinkEmulator, read_bulk_records
from edgelab.linkemu.nsexec import run_batched


def _emu(tmp_path) -> LinkEmulator:
    d = tmp_path / "emu"
    d.mkdir(mode=0o755)
    return LinkEmulator("fallback", tag="t-rec", state_dir=str(d))


def test_a_namespace_record_comes_from_links_json_until_it_has_its_own(tmp_path):
    emu = _emu(tmp_path)
    rec = {"generation": 0, "ns": "el-x.a", "tag": "t-rec", "pid": None,
           "queues": {"1000": {"delay_ms": 5, "jitter_ms": 0}}, "links": {"wlan0": {"link": {}}}}
    (emu.state_dir / BULK_RECORD).write_text(json.dumps({"el-x.a": rec}))
    got = emu._load("el-x.a")
    assert got == rec
    got["queues"].clear()                      # a caller's change does not leak into the cache
    assert emu._load("el-x.a")["queues"]
    assert emu._load("el-x.b")["links"] == {}  # not recorded anywhere: an empty record
    emu._save("el-x.a", got)                   # its own file from now on, and it wins
    assert (emu.state_dir / "el-x.a.json").exists()
    assert LinkEmulator("fallback", tag="t-rec", state_dir=str(emu.state_dir))._load("el-x.a")["queues"] == {}


def test_an_unreadable_links_json_is_an_error_naming_it(tmp_path):
    emu = _emu(tmp_path)
    (emu.state_dir / BULK_RECORD).write_text("[1, 2]")
    with pytest.raises(BackendError, match="links.json"):
        read_bulk_records(emu.state_dir)
    (emu.state_dir / BULK_RECORD).write_text("{not json")
    with pytest.raises(BackendError, match="links.json"):
        emu._load("el-x.a")
    os.unlink(emu.state_dir / BULK_RECORD)
    assert read_bulk_records(emu.state_dir) == {}


@pytest.mark.parametrize("arg", ["a b", "", "x#y", '"', "'", "a\tb", "a\nb", "\u2003"])
def test_tc_batch_refuses_arguments_its_parser_would_split(arg):
    with pytest.raises(ValueError, match="cannot be passed through tc -batch"):
        run_batched("el-nonexistent.ns", [["tc", "qdisc", "add", "dev", "x"], ["tc", "qdisc", "del", arg]])


def test_the_delayer_files_go_with_their_interrupted_saves_and_nothing_else(tmp_path):
    """What teardown (close, cleanup after a crash) removes of the delayer: its config, the C
    program's table, the ready file, the log, the lateness counters, and the temporary files
    of those saves a SIGKILL interrupted (safefs.write_atomic's names); another file stays."""
    from edgelab.linkemu.emulator import DELAYER_STATS_FILE, remove_delayer_files
    from edgelab.safefs import write_atomic

    cfg = tmp_path / "delayer.json"
    for name in ("delayer.json", "delayer.json.tab", "delayer.json.ready", "delayer.json.log", DELAYER_STATS_FILE,
                 ".delayer.json.123.0a1b2c3d.tmp", ".delayer.json.tab.123.0a1b2c3d.tmp",
                 ".delayer.json.ready.77.ffffffff.tmp", "links.json", ".links.json.9.0a1b2c3d.tmp"):
        write_atomic(tmp_path / name, "x")
    remove_delayer_files(str(cfg))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".links.json.9.0a1b2c3d.tmp", "links.json"]
    remove_delayer_files(str(cfg))   # again: nothing left to remove, no error
