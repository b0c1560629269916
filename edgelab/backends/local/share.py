"""One host's share of a testbed folded over several hosts, built by the local backend.

A folded testbed (:mod:`edgelab.remote.folded`) sends each host a *share
document* (JSON on stdin of ``python3 -m edgelab share-up``): the whole
topology, which of its nodes live here, this host's VXLAN ports and the Wi-Fi
cells whose access point is here. The host plans the whole topology (so every
address and MAC is the same on every host), checks the plan digest against the
controller's, and brings its share up with :class:`LocalBackend` under a name
of its own, ``<testbed>-h<index>``: namespaces, per-node cgroups, link
emulation, state file and ``edgelab down <testbed>-h<index>`` are the local
backend's, unchanged. Several shares can therefore live on one kernel (the
SSH lab's "hosts" are namespaces of one machine) without a name in common.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Optional

from ...errors import BackendError
from . import cgroups
from .blueprint import Blueprint, TunnelSpec, restrict
from .naming import cgroup_rel, check_testbed_name

#: Version of the share document; a host refuses any other.
VERSION = 1
#: Largest share document read from stdin (a 1000-node topology is ~1 MB).
MAX_DOC_BYTES = 16 << 20


def share_name(testbed: str, index: int) -> str:
    """The local testbed name of host ``index``'s share ('.' separates it from elements)."""
    name = f"{testbed}-h{index}"
    try:
        return check_testbed_name(name)
    except BackendError:
        raise BackendError(f"testbed name {testbed!r} is too long to fold over {index} hosts: the share "
                           f"{name!r} must be at most 16 characters (shorten the topology's name)") from None


@dataclass(frozen=True)
class ShareSpec:
    """What one host builds (see the module docstring)."""

    testbed: str                      # the folded testbed's name
    index: int                        # 1-based host index
    nodes: tuple[str, ...]
    tunnels: tuple[TunnelSpec, ...] = ()
    ap_networks: tuple[str, ...] = ()
    #: The folded run's id (the controller's record has it too): ``share-down`` checks it.
    run: str = ""

    @property
    def name(self) -> str:
        return share_name(self.testbed, self.index)

    def restrict(self, full: Blueprint, plan: Any) -> Blueprint:
        return restrict(full, plan, self.nodes, self.tunnels, self.ap_networks)


def share_document(topology: Any, digest: str, spec: ShareSpec, engine: Optional[str]) -> str:
    """The JSON a controller sends to a host (:func:`share_up` reads it)."""
    from ...wire import to_wire

    return json.dumps({
        "version": VERSION, "testbed": spec.testbed, "index": spec.index, "digest": digest, "engine": engine,
        "topology": to_wire(topology), "nodes": list(spec.nodes), "ap_networks": list(spec.ap_networks),
        "run": spec.run,
        "tunnels": [{"network": t.network, "dev": t.dev, "vni": t.vni, "local": t.local, "peers": list(t.peers),
                     "mtu": t.mtu, "port": t.port} for t in spec.tunnels],
    })


def parse_document(text: str) -> tuple[Any, ShareSpec, str, Optional[str]]:
    """(topology, spec, digest, engine) from a share document; clear errors for anything else."""
    from ...wire import from_wire

    if len(text) > MAX_DOC_BYTES:
        raise BackendError(f"share document of {len(text)} bytes: at most {MAX_DOC_BYTES}")
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise BackendError(f"share document is not JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("version") != VERSION:
        raise BackendError(f"share document version {doc.get('version') if isinstance(doc, dict) else None!r}: "
                           f"this edgelab reads version {VERSION} (same edgelab on controller and hosts?)")
    try:
        tunnels = tuple(TunnelSpec(network=str(t["network"]), ns="", dev=str(t["dev"]), vni=int(t["vni"]),
                                   local=str(t["local"]), peers=tuple(map(str, t["peers"])), mtu=int(t["mtu"]),
                                   port=int(t.get("port", 4789))) for t in doc["tunnels"])
        spec = ShareSpec(testbed=check_testbed_name(doc["testbed"]), index=int(doc["index"]),
                         nodes=tuple(map(str, doc["nodes"])), tunnels=tunnels,
                         ap_networks=tuple(map(str, doc["ap_networks"])), run=str(doc.get("run", "")))
        topology = from_wire(doc["topology"])
        digest, engine = str(doc["digest"]), doc.get("engine")
    except (KeyError, TypeError, ValueError) as exc:
        raise BackendError(f"malformed share document: {type(exc).__name__}: {exc}") from None
    if spec.run and (len(spec.run) > 64 or not spec.run.isalnum()):
        raise BackendError(f"malformed run id in share document: {spec.run[:80]!r}")
    for t in tunnels:
        if not (0 < t.vni < 1 << 24 and 576 <= t.mtu <= 9000 and len(t.dev) <= 15 and t.dev.isalnum()):
            raise BackendError(f"malformed tunnel in share document: {t}")
    return topology, spec, digest, engine


def share_up(text: str, state_dir: Optional[str] = None) -> dict:
    """Bring this host's share up from a share document and leave it running; returns what the
    controller needs to drive its nodes (namespace and cgroup per node) and the share's facts."""
    from ...plan import make_plan
    from ...wire import plan_digest
    from .backend import LocalBackend

    topology, spec, digest, engine = parse_document(text)
    if topology.name != spec.testbed:
        raise BackendError(f"share document: topology {topology.name!r} is not testbed {spec.testbed!r}")
    mine = plan_digest(make_plan(topology))
    if mine != digest:
        raise BackendError(f"this host plans topology {spec.testbed!r} differently (digest {mine}, controller "
                           f"{digest}): install the controller's edgelab here")
    plan = make_plan(replace(topology, name=spec.name))
    be = LocalBackend(engine=engine, **({"state_dir": state_dir} if state_dir else {}))
    tb = be.up(plan, share=spec)
    tb._restore_signal_handlers()   # this process exits now; the share stays up
    nodes = {n: {"netns": tb.blueprint.node_ns[n], "cgroup": "/" + cgroup_rel(spec.name, n),
                 "procs": cgroups.procs_files(tb.layout, cgroup_rel(spec.name, n))}
             for n in spec.nodes}
    facts = tb.facts()
    facts["tunnels"] = [{"network": t.network, "dev": t.dev, "vni": t.vni, "bridge_netns": t.ns,
                         "peers": list(t.peers), "mtu": t.mtu, "hairpin": t.hairpin,
                         "isolated_ports": [p for p, _ in t.spokes]} for t in tb.blueprint.tunnels]
    facts["airtime_budgets"] = [{"network": s.network, "segment": s.segment, "ports": list(s.ports),
                                 "station_only": s.station_only} for s in tb.blueprint.shared]
    return {"share": spec.name, "nodes": nodes, "facts": facts}


def share_down(testbed: str, index: int, run: str = "", state_dir: Optional[str] = None) -> str:
    """Remove this host's share ``<testbed>-h<index>`` of a folded run, only if it is one.

    The share's own state file must say it is share ``index`` of folded testbed ``testbed``
    (and of run ``run``, when given): a local testbed that merely has that name, or a share of
    a later run of the same name, is left alone with a BackendError saying so. Idempotent:
    nothing left is not an error. Returns one line saying what was done.
    """
    from . import netns
    from .backend import LocalBackend
    from .naming import STATE_DIR
    from .state import StateFile

    name = share_name(check_testbed_name(testbed), index)
    st = StateFile(name, state_dir or STATE_DIR)
    if not st.exists():
        left = netns.list_owned(name)
        if left:
            raise BackendError(f"{name}: namespaces {left[:3]} exist without a state file, so nothing says they "
                               f"are this run's; left in place (inspect, then `edgelab down {name}` on this host)")
        return f"{name}: nothing left"
    data = st.load()
    mark = data.get("share")
    claimed_only = set(data) == {"testbed"}   # killed between claiming the name and recording anything
    if not claimed_only:
        if not isinstance(mark, dict) or mark.get("folded") != testbed or mark.get("index") != index:
            raise BackendError(f"{name}: its state file {st.path} is not share {index} of folded testbed "
                               f"{testbed!r} ({'a plain local testbed' if not isinstance(mark, dict) else mark}); "
                               "left alone")
        if run and mark.get("run") != run:
            raise BackendError(f"{name}: share of another run of {testbed!r} (run {mark.get('run')!r}, not {run!r}); "
                               "left alone")
    LocalBackend(**({"state_dir": state_dir} if state_dir else {})).down(name)
    return f"{name}: removed"


def shares_here(testbed: str, state_dir: Optional[str] = None) -> list[int]:
    """Indices of ``<testbed>-h<i>`` shares that have a state file or namespaces on this host
    (``share-down`` without ``--index``: a controller that lost its record sweeps by name)."""
    import os
    import re

    from .naming import NETNS_DIR, STATE_DIR

    pat = re.compile(rf"{re.escape(check_testbed_name(testbed))}-h([1-9][0-9]{{0,3}})")
    found = set()
    for f in os.listdir(state_dir or STATE_DIR) if os.path.isdir(state_dir or STATE_DIR) else []:
        m = pat.fullmatch(f[:-5]) if f.endswith(".json") else None
        if m:
            found.add(int(m.group(1)))
    for ns in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []:
        m = pat.fullmatch(ns[3:].split(".", 1)[0]) if ns.startswith("el-") and "." in ns else None
        if m:
            found.add(int(m.group(1)))
    return sorted(found)
