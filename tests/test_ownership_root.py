"""One testbed never touches another's kernel objects, nor a path its state record names
outside its own directories (issue 12, items 1, 3 and 5). Real namespaces, cgroups, delayers.

Names are unique per test run (a random token) but keep the shapes that collided by prefix:
testbeds ``a<tok>`` and ``a<tok>-b``, a group ``b-phone`` in the first and ``phone`` in the second
(with ``el-<testbed>-<node>`` both were ``el-a<tok>-b-phone-1``).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from edgelab.backends.local import LocalBackend, netns
from edgelab.backends.local.naming import STATE_DIR
from edgelab.errors import BackendError, EdgelabError

from local_helpers import leftovers, plan_of, running_testbed

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and cgroups"),
]

REPO = Path(__file__).resolve().parents[1]


def _topo(name: str, group: str) -> str:
    # A delay so the fallback engine runs a delayer in the testbed's namespaces.
    return f"""
name: {name}
networks:
  - name: w
    kind: ethernet
    link: {{rate_mbit: 100, delay_ms: 1}}
nodes:
  - group: srv
    role: client
    networks: [w]
  - group: {group}
    role: phone
    networks: [w]
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _snapshot(tb) -> dict:
    """What must survive of testbed ``tb``: its namespaces, cgroups, delayers, a process."""
    delayers = sorted({d["pid"] for d in tb.emulator.delayers() if d.get("pid")})  # one shared delayer
    return {"netns": sorted(tb.blueprint.namespaces),
            "cgroups": sorted(str(d) for c in tb.blueprint.cgroups for d in tb.layout.dirs(c.rel)),
            "delayers": delayers}


def _intact(tb, snap: dict, proc: subprocess.Popen) -> None:
    assert sorted(n for n in snap["netns"] if netns.exists(n)) == snap["netns"]
    assert all(Path(d).is_dir() for d in snap["cgroups"])
    assert all(_alive(p) for p in snap["delayers"])
    assert proc.poll() is None
    assert tb.run("phone-1", ["true"]).returncode == 0


def test_testbeds_whose_names_collide_by_prefix_never_touch_each_other():
    tok = secrets.token_hex(2)
    a, ab = f"a{tok}", f"a{tok}-b"
    with running_testbed(_topo(ab, "phone")) as tb_ab:
        proc = tb_ab.popen("phone-1", ["sleep", "300"])
        snap = _snapshot(tb_ab)
        facts = tb_ab.facts()
        assert "not charged to nodes" in facts["emulation_cpu"] and facts["limits_not_enforced"] == []
        if facts["link_engine"] == "fallback":
            assert snap["delayers"], "the fallback engine should run a delayer for a 1 ms delay"
        # Nothing of `a` is up: `down a` says so and removes nothing.
        with pytest.raises(BackendError, match="no testbed named"):
            LocalBackend().down(a)
        _intact(tb_ab, snap, proc)
        # `a` (group b-phone) comes up beside `a-b` (group phone): no name is shared.
        with running_testbed(_topo(a, "b-phone")) as tb_a:
            assert not set(tb_a.blueprint.namespaces) & set(snap["netns"])
            tb_a.popen("b-phone-1", ["sleep", "300"])
        assert leftovers(a) == {}
        _intact(tb_ab, snap, proc)
        # `a` after a crash, from its state file, then without one (discovery by whole names).
        for drop_state in (False, True):
            tb_a = LocalBackend().up(plan_of(_topo(a, "b-phone")))
            tb_a.popen("b-phone-1", ["sleep", "300"])
            tb_a._restore_signal_handlers()
            if drop_state:
                Path(STATE_DIR, f"{a}.json").unlink()
            LocalBackend().down(a)
            tb_a._reap()
            assert leftovers(a) == {}, drop_state
            _intact(tb_ab, snap, proc)
    assert leftovers(ab) == {}


def test_down_refuses_a_name_that_is_a_path(tmp_path):
    """`edgelab down ../../x` read a state file outside /run/edgelab and deleted what it listed."""
    victim = tmp_path / "victim"
    victim.write_text("precious")
    Path(STATE_DIR).mkdir(exist_ok=True)  # so that STATE_DIR/../../x resolves, as it did in the report
    rel = os.path.relpath(tmp_path / "x", STATE_DIR)
    (tmp_path / "x.json").write_text(json.dumps({
        "testbed": rel, "netns": [], "cgroups": [],
        "linkemu": {"tag": "el-x", "state_dir": str(tmp_path),
                    "delayers": [{"ns": None, "pid": None, "config": str(victim)}]}}))
    with pytest.raises(EdgelabError, match="not a testbed name"):
        LocalBackend().down(rel)
    cp = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "edgelab", "down", rel], capture_output=True,
                        text=True, cwd=REPO)
    assert cp.returncode == 2 and "not a testbed name" in cp.stderr
    assert victim.read_text() == "precious"


def test_a_state_record_naming_another_testbeds_objects_is_refused(tmp_path):
    """Even a record in /run/edgelab may only name the testbed's own objects."""
    name = f"lbown{secrets.token_hex(2)}"
    victim = tmp_path / "victim"
    victim.write_text("precious")
    Path(STATE_DIR).mkdir(exist_ok=True)
    state = Path(STATE_DIR, f"{name}.json")
    state.write_text(json.dumps({"testbed": name, "netns": [], "cgroups": [],
                                 "linkemu": {"tag": f"el-{name}", "state_dir": f"/run/el-{name}-linkemu",
                                             "delayers": [{"ns": None, "pid": None, "config": str(victim)}]}}))
    try:
        with pytest.raises(BackendError, match="not its own"):
            LocalBackend().down(name)
        assert victim.read_text() == "precious"
    finally:
        state.unlink(missing_ok=True)


def test_link_emulator_refuses_a_state_directory_someone_else_planted(tmp_path):
    """Root must not write through symlinks planted in a directory another user created first."""
    from edgelab.linkemu import LinkEmulator, LinkParams
    from edgelab.linkemu.fidelity import veth_pair

    victim = tmp_path / "victim"
    victim.write_text("precious")
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chmod(tmp_path, 0o755)
    with veth_pair(f"lbsy{os.getpid() % 1000}", subnet=91) as p:
        for ns in (p.a, p.b):
            for suffix in (".json.log", ".tmp", ".json.ready"):  # the files root wrote through
                (planted / f"{ns}{suffix}").symlink_to(victim)
        os.chown(planted, 65534, 65534)  # "nobody" made it first
        em = LinkEmulator("fallback", tag="lbsy", state_dir=str(planted))
        try:
            with pytest.raises(BackendError, match="owned by uid 65534"):
                em.apply_link(p.a, p.dev_a, p.b, p.dev_b, LinkParams(rate_mbit=10, delay_ms=1))
        finally:
            em.close()
    assert victim.read_text() == "precious"
