"""Remove everything a local testbed created, from its state record alone.

The same function serves a normal ``down()`` and ``edgelab down NAME`` after
a crash: it needs nothing but the state file, and every step tolerates
objects that are already gone. Order matters: processes first (a process
keeps its namespace alive after the name is removed), then namespaces
(which takes their veths, bridges, IFBs, qdiscs and rules with them), then
the link emulator's files, then cgroups, and the state file last, so an
interrupted teardown can be run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ...errors import BackendError
from . import cgroups, netns
from .naming import cgroup_rel, linkemu_tag, netns_prefix


def teardown(state: dict[str, Any]) -> list[str]:
    """Tear down what ``state`` records; returns problems that remain (empty if clean)."""
    problems: list[str] = []
    tb = state["testbed"]
    namespaces = sorted(set(state.get("netns", [])) | set(netns.list_with_prefix(netns_prefix(tb))))
    roots = state.get("cgroup_roots") or cgroups.detect_layout().roots
    rels = set(state.get("cgroups", []))
    for root in set(roots.values()):  # also node cgroups a crash left unrecorded
        base = Path(root) / cgroup_rel(tb)
        if base.is_dir():
            rels.update(cgroup_rel(tb, d.name) for d in base.iterdir() if d.is_dir())
    cg_dirs = cgroups.all_dirs(roots, sorted(rels))

    # 1. processes: everything in our cgroups, then everything left in our namespaces
    #    (link-emulation delayers, and children that escaped nothing: both are ours by construction).
    for d in cg_dirs:
        try:
            cgroups.kill_all([d])
        except BackendError as e:
            problems.append(str(e))
    survivors = netns.kill_pids(netns.pids_in(namespaces).keys())
    if survivors:
        problems.append(f"processes {survivors} in the testbed's namespaces survive SIGKILL")

    # 1b. per-node private directories: mount namespaces, scratch loop devices, files
    from . import privdirs

    problems += privdirs.teardown(state.get("privdirs") or privdirs.discover(tb))

    # 2. namespaces (their interfaces, qdiscs and firewall rules go with them)
    for ns in namespaces:
        try:
            netns.remove(ns)
        except OSError as e:
            problems.append(f"cannot remove network namespace {ns}: {e}")

    # 3. link emulator: its state files (and any delayer recorded there, should one be
    #    outside our namespaces). The namespaces are gone, so cleanup runs no tc/nft.
    emu = state.get("linkemu") or {"tag": linkemu_tag(tb), "state_dir": f"/run/{linkemu_tag(tb)}-linkemu"}
    if emu:
        from ...linkemu import cleanup

        state_dir = emu.get("state_dir")
        delayers = list(emu.get("delayers", []))
        if state_dir:
            known = {d.get("config") for d in delayers}
            for ns in namespaces:
                cfg = f"{state_dir}/{ns}.json"
                if cfg not in known and Path(cfg).exists():
                    delayers.append({"ns": ns, "pid": None, "config": cfg})
        try:
            cleanup({**emu, "delayers": delayers, "ifbs": [i for i in emu.get("ifbs", []) if not i.get("ns")]})
        except Exception as e:  # noqa: BLE001 - report, keep tearing down
            problems.append(f"link emulator cleanup: {e}")
        if state_dir:
            try:
                Path(state_dir).rmdir()
            except OSError:
                pass

    # 4. cgroups, then the testbed's parent, then the shared parent if now empty
    try:
        cgroups.remove(cg_dirs)
    except BackendError as e:
        problems.append(str(e))
    for root in set(roots.values()):
        cgroups.remove_if_empty(Path(root) / cgroup_rel(tb))
        cgroups.remove_if_empty(Path(root) / cgroup_rel(tb).split("/")[0])
    return problems
