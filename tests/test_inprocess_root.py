"""The in-process bring-up path (netlink batches, libnftables, batched iptables-restore) creates exactly the kernel objects it should, the same tc and nft objects as the
per-process path, and removes them all.

Each topology is built with the same name once per path (``LocalBackend(inprocess=...)``),
and every namespace's qdiscs, classes, filters, nftables rules and NFQUEUE rules (with the
delays their queues get) are compared; with ``bridge_delay`` (a station's incoming delay on the
access point's port) the moved NFQUEUE rules are checked against what each link asks for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from edgelab.backends.local import LocalBackend, probes

from local_helpers import leftovers, plan_of, tbname

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces"),
]

WIFI_MESH = """
name: lbinp
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
  - name: lan
    kind: ethernet
    link: {rate_mbit: 6.5, delay_ms: 3, loss_pct: 1}
  - name: mesh
    kind: batman-mesh
    link: {rate_mbit: 12.345, delay_ms: 2, loss_pct: 2}
nodes:
  - group: server
    role: k3s-server
    networks: [{name: wlan, uplink: true}, lan]
  - group: phone
    role: phone
    count: 3
    networks: [{name: wlan, mcs: [7, 0, 5]}]
  - group: m
    role: phone
    count: 3
    networks: [mesh]
  - group: w
    role: client
    count: 1
    networks: [lan]
""".replace("name: lbinp\n", f"name: {tbname('lbinp')}\n", 1)


def _sh(ns: str, cmd: str) -> str:
    return subprocess.run(f"ip netns exec {ns} {cmd}", shell=True, capture_output=True, text=True).stdout


def _tc(ns: str) -> list[str]:
    """Every qdisc, class and filter of the namespace, in tc's words (no counters)."""
    out = []
    devs = [l["ifname"] for l in json.loads(_sh(ns, "ip -j link show") or "[]")]
    for dev in sorted(devs):
        out += [f"{dev}: {l}" for l in _sh(ns, f"tc -d qdisc show dev {dev}").splitlines()]
        out += [f"{dev}: {l}" for l in _sh(ns, f"tc -d class show dev {dev}").splitlines()]
        for parent in ("ingress", "egress", "root"):
            out += [f"{dev} {parent}: {l}" for l in _sh(ns, f"tc -d filter show dev {dev} {parent}").splitlines()]
    # handles the kernel picks (qdiscs added without one: 8000:-ffff:, from a global counter)
    return sorted(re.sub(r"\b[89a-f][0-9a-f]{3}:(?=[ \n]|$)", "auto:", l) for l in out)


def _nft_tables(ns: str) -> dict[str, str]:
    text = re.sub(r"counter packets \d+ bytes \d+", "counter", _sh(ns, "nft list ruleset"))
    tables = {}
    for block in re.findall(r"^table .*?^}", text, flags=re.S | re.M):
        tables[block.splitlines()[0]] = block
    # iptables-nft keeps its (compat) rules in nft tables too: compared as iptables rules below
    return {k: v for k, v in tables.items() if k.split()[2] not in ("mangle", "filter", "nat", "raw")}


def _nfqueue(ns: str) -> list[str]:
    return sorted(l for l in _sh(ns, "iptables-save -t mangle").splitlines() if "NFQUEUE" in l)


def _snapshot(tb) -> dict:
    snap = {}
    for ns in tb.blueprint.namespaces:
        snap[ns] = {"tc": _tc(ns), "nft": _nft_tables(ns), "nfqueue": _nfqueue(ns)}
    dl = json.loads(open(tb.emulator._dl_path()).read())
    snap["_queues"] = {k: v["queues"] for k, v in dl["namespaces"].items()}
    return snap


def _up(inprocess: bool, bridge_delay: bool = True):
    return LocalBackend(inprocess=inprocess, bridge_delay=bridge_delay).up(plan_of(WIFI_MESH))


def _built(inprocess: bool, bridge_delay: bool = True) -> tuple[dict, object]:
    tb = _up(inprocess, bridge_delay)
    try:
        snap = _snapshot(tb)
        ping = probes.ping(tb, "phone-1", tb.address("server-1"), count=20, interval=0.01)
        assert ping.received >= 17 and ping.rtt_min >= 2 * (2.0 - 0.5), ping   # delayed both ways
        mping = probes.ping(tb, "m-1", tb.address("m-2"), count=10, interval=0.01)
        assert mping.received >= 8 and mping.rtt_min >= 3.9, mping
    finally:
        tb.down()
    assert leftovers(plan_of(WIFI_MESH).topology.name) == {}
    return snap, tb.blueprint


def _root_rules() -> tuple[str, str]:
    ipt = subprocess.run(["iptables-save", "-t", "mangle"], capture_output=True, text=True).stdout
    return (subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout,
            "\n".join(l for l in ipt.splitlines() if not l.startswith("#")))


def _q(rule: str) -> int:
    return int(rule.rsplit("--queue-num", 1)[1].split()[0])


@pytest.mark.measures
def test_inprocess_path_builds_the_same_objects_and_removes_them():
    before = _root_rules()
    ref, _ = _built(False)
    got, bp = _built(True, bridge_delay=False)
    assert _root_rules() == before   # nothing outside the testbed's namespaces was touched
    for ns in bp.namespaces:
        assert got[ns]["tc"] == ref[ns]["tc"], ns     # tc: object for object
        assert got[ns]["nft"] == ref[ns]["nft"], ns   # loss: the same tables and rules
        # NFQUEUE: the same rules, each on a queue the delayer serves with the same delay
        # (queue numbers may be allocated in another order)
        assert _nfq_delays(got, ns) == _nfq_delays(ref, ns), ns


def _nfq_delays(snap: dict, ns: str) -> list[str]:
    qs = snap["_queues"].get(ns, {})
    return sorted(re.sub(r"--queue-num (\d+)", lambda m: "delay {delay_ms}/{jitter_ms}".format(**qs[m.group(1)]), r)
                  for r in snap[ns]["nfqueue"])


@pytest.mark.measures
def test_bridge_delay_moves_a_stations_incoming_delay_onto_its_port():
    before = _root_rules()
    ref, _ = _built(False)
    got, bp = _built(True, bridge_delay=True)
    assert _root_rules() == before
    ports = {v.b.ns for v in bp.veths if v.b.master}
    for ns in bp.namespaces:
        assert got[ns]["tc"] == ref[ns]["tc"], ns            # tc: object for object
        # loss: the same tables, except a bridge's per-port ones, which are its ports table's
        # entries (one base chain per bridge instead of one per port)
        port_loss = [k for k in ref[ns]["nft"] if k.startswith("table bridge ")]
        assert {k: v for k, v in got[ns]["nft"].items() if "_ports " not in k} == \
            {k: v for k, v in ref[ns]["nft"].items() if k not in port_loss}, ns
        if ns in ports:
            assert port_loss, ns   # every bridge here has lossy ports
            table = next(v for k, v in got[ns]["nft"].items() if k.startswith("table bridge ") and "_ports " in k)
            for k in port_loss:   # each port's drop rule, now jumped to through the loss map
                rule = re.search(r"numgen random mod \d+ < \d+ counter drop", ref[ns]["nft"][k]).group(0)
                dev = re.search(r'iifname "([^"]+)"', ref[ns]["nft"][k]).group(1)
                assert f'"{dev}" : jump ' in table and rule in table, (dev, table)
    # NFQUEUE: a bridge's namespace has one rule (its bridge queue) for all its ports; each
    # delayed port has an in- and an out-stage there with the link's delay, and its frames are
    # marked with the in-stage's number; a mesh link's arriving frames are queued where they arrive.
    for ns in ports:
        assert len(got[ns]["nfqueue"]) == 1 and "--physdev-is-bridged" in got[ns]["nfqueue"][0], got[ns]["nfqueue"]
    for v in bp.veths:
        if v.link is None or not v.link.delay_ms:
            continue
        if v.b.master:   # bridge port: both directions on the port, in the infra namespace
            qs = got["_queues"][v.b.ns]
            qb = _q(got[v.b.ns]["nfqueue"][0])
            assert qs[str(qb)].get("bridge") is True
            stages = {q: x for q, x in qs.items() if x.get("dev") == v.b.ifname}
            assert sorted(x["dir"] for x in stages.values()) == ["from-peer", "to-peer"], stages
            for q, x in stages.items():
                assert x["via"] == qb and (x["delay_ms"], x["jitter_ms"]) == (v.link.delay_ms, v.link.jitter_ms)
            q_in = next(q for q, x in stages.items() if x["dir"] == "from-peer")
            table = next(t for k, t in got[v.b.ns]["nft"].items() if "_ports " in k)
            assert f'"{v.b.ifname}" : 0x{int(q_in):08x}' in table, table
            assert not any(f"-i {v.a.ifname} " in r for r in got[v.a.ns]["nfqueue"])
        else:            # mesh: arriving frames queued where they arrive, on each end
            delays = {(key, int(q)): (x["delay_ms"], x["jitter_ms"])
                      for key, qs in got["_queues"].items() for q, x in qs.items()}
            for ns, dev in ((v.a.ns, v.a.ifname), (v.b.ns, v.b.ifname)):
                rules = [r for r in got[ns]["nfqueue"] if f"-i {dev} " in r]
                assert len(rules) == 1, (ns, dev, got[ns]["nfqueue"])
                assert delays[(ns, _q(rules[0]))] == (v.link.delay_ms, v.link.jitter_ms)
    # none left in any node namespace of a cell
    for node, ns in bp.node_ns.items():
        if not any(ns in (v.a.ns, v.b.ns) and not v.b.master for v in bp.veths):
            assert got[ns]["nfqueue"] == [], node
