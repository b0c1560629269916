"""Records in a directory every testbed on the host shares (``/run/edgelab``): one testbed's
teardown removes the directory when it leaves it empty, while another's is creating or
removing its own record there. Neither may fail for it (a CI run's folded teardown did:
FileNotFoundError on the directory, from pathlib's glob listing it after it had gone)."""

import threading

from edgelab.backends.local.state import StateFile
from edgelab.safefs import remove_record, write_atomic


def _churn(make, n, errors):
    try:
        for i in range(n):
            make(i)
    except BaseException as e:   # noqa: BLE001 - the test reports whatever escaped
        errors.append(repr(e))


def test_two_testbeds_create_and_remove_records_in_one_directory_at_once(tmp_path):
    shared = tmp_path / "edgelab"
    errors: list[str] = []

    def one(name):
        def make(i):
            st = StateFile(f"{name}{i}", str(shared))
            st.create({"testbed": f"{name}{i}"})
            assert st.load()["testbed"] == f"{name}{i}"
            st.remove()
        return make

    threads = [threading.Thread(target=_churn, args=(one(n), 800, errors)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert not shared.exists()   # the last one out removed the directory


def test_remove_record_takes_interrupted_saves_and_keeps_other_records(tmp_path):
    d = tmp_path / "records"
    d.mkdir()
    write_atomic(d / "t1.json", "{}")
    write_atomic(d / "t2.json", "{}")
    (d / ".t1.json.123.abcd.tmp").write_text("half")   # a save a SIGKILL interrupted
    (d / ".t2.json.456.ef01.tmp").write_text("half")
    remove_record(d / "t1.json")
    assert sorted(p.name for p in d.iterdir()) == [".t2.json.456.ef01.tmp", "t2.json"]
    remove_record(d / "t2.json")
    assert not d.exists()
    remove_record(d / "t2.json")   # again, with the directory gone: nothing to do, no error
