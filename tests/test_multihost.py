"""Folding over several hosts: placement, VXLAN tunnels, each host's share built by the local backend,
the multi-host testbed, ``folding.py --hosts`` and g5k above factor 1 — on real hosts of the SSH lab.

Pure part: plans, restricted blueprints, share documents, the g5k dry run. Root part (real sshd per
lab "host", real namespaces, cgroups, VXLAN, link emulation, iperf3), under the shared lock:
``flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_multihost.py``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from edgelab.errors import BackendError
from edgelab.plan import make_plan
from edgelab.remote import multihost as mh
from edgelab.topology import parse_topology

from remote_helpers import ssh_lab

REPO = Path(__file__).resolve().parents[1]

LAN = """\
name: {name}
networks:
  - {{name: lan, kind: ethernet, link: {{rate_mbit: 20, delay_ms: 2}}}}
nodes:
  - {{group: server, role: k3s-server, resources: {{cpu: 0.5}}, networks: [lan]}}
  - {{group: phone, role: phone, count: {phones}, resources: {{cpu: 0.2, memory_mib: 128}}, networks: [lan]}}
"""

WIFI = """\
name: {name}
networks:
  - {{name: wlan, profile: wifi-80211n-2.4ghz}}
nodes:
  - {{group: server, role: k3s-server, networks: [{{name: wlan, uplink: true}}]}}
  - {{group: phone, role: phone, count: 4, resources: {{cpu: 0.2, memory_mib: 128}}, networks: [wlan]}}
"""


def plan_of(text, **kw):
    return make_plan(parse_topology(textwrap.dedent(text.format(**kw)) if kw else textwrap.dedent(text)))


# ------------------------------------------------------------------ pure
def test_a_network_spanning_hosts_gets_one_vni_and_a_tunnel_per_host_to_every_other():
    plan = plan_of(LAN, name="mh", phones=3)
    where = {"server-1": "a", "phone-1": "a", "phone-2": "b", "phone-3": "c"}
    mp = mh.plan_hosts(plan, where, {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"})
    assert [s.nodes for s in mp.shares] == [("server-1", "phone-1"), ("phone-2",), ("phone-3",)]
    assert len({t.vni for t in mp.tunnels}) == 1 and len(mp.tunnels) == 3
    a = next(t for t in mp.tunnels if t.host == "a")
    assert a.local == "10.0.0.1" and set(a.peers) == {"10.0.0.2", "10.0.0.3"}
    spec = mh.share_spec(mp, "b")
    assert spec.name == "mh-h2" and spec.nodes == ("phone-2",) and [t.mtu for t in spec.tunnels] == [1450]
    one = mh.plan_hosts(plan, {n: "a" for n in where}, {"a": "10.0.0.1"})
    assert one.tunnels == [] and mh.share_spec(one, "a").tunnels == ()
    # names differ per testbed and per host index, so shares on one kernel never collide
    assert mh.node_ns("mh", 1, "phone-1") == "el-mh-h1.phone-1" != mh.node_ns("mh", 2, "phone-1")
    assert mh.vni("mh", "lan") != mh.vni("other", "lan")
    assert all(len(t.dev) <= 15 for t in mp.tunnels)
    with pytest.raises(BackendError, match="too long to fold"):
        mh.plan_hosts(plan_of(LAN, name="a-very-long-name", phones=1), {"server-1": "a", "phone-1": "b"},
                      {"a": "10.0.0.1", "b": "10.0.0.2"})


def test_a_share_is_the_whole_plans_blueprint_restricted_to_its_nodes():
    """Addresses and MACs are the whole plan's on every host; veths of a spanned network get MTU
    1450; only the AP host carries the airtime budget, with the VXLAN port in station-only form."""
    from edgelab.backends.local import blueprint as bpmod
    from edgelab.folding import fold
    from edgelab.model import Host

    plan = plan_of(WIFI, name="wf")
    pl = fold(plan.nodes, [Host("h1", 4.0, 4096), Host("h2", 4.0, 4096)], max_per_host=3)
    mp = mh.plan_hosts(plan, pl.assignment, {"h1": "192.0.2.1", "h2": "192.0.2.2"})
    full = bpmod.build(plan)
    mac = {v.label: v.a.mac for v in full.veths}
    shares = {s.host: mh.share_spec(mp, s.host).restrict(full, plan) for s in mp.shares}
    ap = mp.ap_hosts["wlan"]
    other = next(h for h in shares if h != ap)
    for h, bp in shares.items():
        assert set(bp.node_ns) == set(mp.share(h).nodes)
        assert {c.node for c in bp.cgroups} == set(mp.share(h).nodes)
        assert all(mac[v.label] == v.a.mac and v.a.mtu == v.b.mtu == 1450 for v in bp.veths)
        assert [t.ns for t in bp.tunnels] == [full.infra_ns["wlan-ap"]]
    assert shares[other].shared == []
    (budget,) = shares[ap].shared
    assert budget.station_only and budget.ports[-1] == shares[ap].tunnels[0].dev
    assert set(budget.station_macs) == {mac[f"wlan:{s}"] for s in plan.network("wlan").segments[0].stations}
    text = "\n".join(mh.describe(mp))
    assert "Wi-Fi cell wlan: AP on" in text and "cross the tunnel" in text and "share-up" in text


def test_a_mesh_cannot_span_hosts_and_bad_share_documents_are_refused():
    from edgelab.backends.local.share import parse_document, share_document
    from edgelab.wire import plan_digest

    mesh = plan_of("""\
        name: m
        networks:
          - {name: mesh, kind: batman-mesh, link: {rate_mbit: 10}}
        nodes:
          - {group: node, role: phone, count: 3, networks: [mesh]}
        """)
    with pytest.raises(BackendError, match="mesh network 'mesh' would span hosts"):
        mh.plan_hosts(mesh, {"node-1": "a", "node-2": "a", "node-3": "b"}, {"a": "1.1.1.1", "b": "1.1.1.2"})
    plan = plan_of(LAN, name="mh", phones=2)
    mp = mh.plan_hosts(plan, {"server-1": "a", "phone-1": "b", "phone-2": "b"}, {"a": "10.0.0.1", "b": "10.0.0.2"})
    doc = share_document(plan.topology, plan_digest(plan), mh.share_spec(mp, "b"), None)
    topo, spec, digest, _ = parse_document(doc)
    assert topo == plan.topology and spec == mh.share_spec(mp, "b") and digest == plan_digest(plan)
    bad = json.loads(doc)
    bad["topology"]["__class__"] = "Popen"
    with pytest.raises(BackendError, match="unknown class 'Popen'"):
        parse_document(json.dumps(bad))
    with pytest.raises(BackendError, match="version"):
        parse_document(json.dumps({**json.loads(doc), "version": 99}))
    with pytest.raises(BackendError, match="not JSON"):
        parse_document("{")


def test_folding_dry_run_over_hosts_shows_each_points_placement_and_tunnels(tmp_path):
    inv = tmp_path / "hosts.yaml"
    inv.write_text("devices:\n" + "".join(f"  - {{node: h{i}, host: 192.0.2.{i}}}\n" for i in (1, 2, 3)))
    r = subprocess.run([sys.executable, "experiments/folding.py", "--inventory", str(inv), "--hosts", "1,3",
                        "--factors", "5", "--dry-run"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "### factor 5 over 1 host(s)" in r.stdout and "### factor 5 over 3 host(s)" in r.stdout
    assert re.search(r"host 3 h3 \(192\.0\.2\.3\): local testbed fold-\d+-h3: ", r.stdout), r.stdout
    assert r.stdout.count("tunnel lan on") == 3, r.stdout


def test_a_node_command_joins_its_cgroup_before_entering_its_namespace():
    from edgelab.remote.folded import node_script
    from edgelab.remote.inventory import Device

    d = Device(name="h1", node="h1", host="192.0.2.1", python="/opt/py")
    info = {"procs": ["/sys/fs/cgroup/cpu/edgelab/x-h1/phone-1/cgroup.procs"], "netns": "el-x-h1.phone-1"}
    s = node_script(d, info, ["python3", "-m", "edgelab.services.phone", "--port", "8080"])
    assert s == ("echo $$ > /sys/fs/cgroup/cpu/edgelab/x-h1/phone-1/cgroup.procs && exec nsenter "
                 "--net=/run/netns/el-x-h1.phone-1 /opt/py -m edgelab.services.phone --port 8080")
    assert node_script(d, info, "echo $HOME", confine=False) == "exec sh -c 'echo $HOME'"


def test_the_hosts_verdict_judges_each_host_count_against_one_host_and_names_the_busiest_host():
    import pandas as pd

    from analysis.folding_hosts import hosts_verdicts

    rows = []
    for rep in range(3):
        for hosts, lat, busy in ((1, 10.0, 0.3), (2, 10.05, 0.3), (3, 14.0, 0.97)):
            point = f"factor=4,hosts={hosts},rep={rep}"
            for metric, value in (("latency_ms_p50", lat + 0.02 * rep), ("host_cpu_busy", busy)):
                rows.append({"point": point, "factor": 4, "hosts": hosts, "rep": rep, "metric": metric,
                             "value": value, "unit": "", "node": "", "time": 0.0})
    (v,) = hosts_verdicts(pd.DataFrame(rows), ["latency_ms_p50"]).values()
    assert v.verdicts == {2: "faithful", 3: "unfaithful"}
    text = v.describe()
    assert "vs all on 1 host" in text and "3 hosts: latency_ms_p50 +39.9%; busiest host: CPU busy 0.97" in text, text
    with pytest.raises(Exception, match="no 1-host baseline"):
        hosts_verdicts(pd.DataFrame([r for r in rows if r["hosts"] != 1]), ["latency_ms_p50"])


def test_g5k_dry_run_of_a_folded_wifi_topology_shows_conf_placement_tunnels_and_the_ap_shaping():
    from edgelab.backends.g5k import dry_run

    out = dry_run(plan_of(WIFI, name="wf"), {"max_per_host": 3})
    assert "G5kConf:" in out and "Multi-host folding" in out, out
    assert re.search(r"tunnel wlan on \S+: vx[0-9a-f]{6} vxlan id \d+", out), out
    assert "Wi-Fi cell wlan: AP on" in out and "airtime budget" in out, out
    assert "not emulated" not in out


# ------------------------------------------------------------------ real hosts (root)
root = pytest.mark.skipif(os.geteuid() != 0 or not os.access("/usr/sbin/sshd", os.X_OK),
                          reason="needs root and Debian openssh-server (the SSH lab)")


@pytest.fixture(scope="module")
def lab():
    from edgelab.remote import lab as labmod

    with ssh_lab([labmod.DeviceSpec(node=f"h{i}") for i in (1, 2, 3)]) as lb:
        yield lb


def name(base: str) -> str:
    return f"{base}{os.getpid() % 100000}"


def leftovers(testbed: str) -> list[str]:
    """Anything of ``testbed``'s shares still on this kernel (namespaces, state files, cgroups)."""
    out = [n for n in os.listdir("/run/netns") if n.startswith(f"el-{testbed}-h")]
    out += [f for f in os.listdir("/run/edgelab") if f.startswith(f"{testbed}-h")] if os.path.isdir("/run/edgelab") else []
    for root_dir in ("/sys/fs/cgroup/edgelab", "/sys/fs/cgroup/cpu/edgelab", "/sys/fs/cgroup/cpu,cpuacct/edgelab"):
        if os.path.isdir(root_dir):
            out += [d for d in os.listdir(root_dir) if d.startswith(f"{testbed}-h")]
    return out


@pytest.mark.measures
@root
def test_two_hosts_each_with_several_nodes_ping_and_iperf3_across_within_the_link(lab):
    from edgelab.remote.folded import FoldedBackend

    plan = plan_of(LAN, name=name("mh"), phones=5)
    tb = FoldedBackend(str(lab.inventory), 2).up(plan)
    try:
        facts = tb.facts()
        on = {h: [n for n, x in facts["placement"].items() if x == h] for h in ("h1", "h2")}
        assert all(len(v) >= 2 for v in on.values()), on
        assert {t["host"] for t in facts["tunnels"]} == {"h1", "h2"} and facts["folding"]["hosts"] == 2
        srv = plan.node("server-1").address("lan")
        far = next(n for n in on[next(h for h in on if "server-1" not in on[h])])
        # the node runs in its namespace and in its own cgroup on its host, with the spanned network's MTU
        inside = tb.run(far, "cat /proc/self/cgroup; ip -o link show eth0").stdout
        assert re.search(rf"cpu[,a-z]*:/edgelab/{plan.topology.name}-h\d/{far}\b|0::/edgelab/{plan.topology.name}-h\d/{far}\b",
                         inside), inside
        assert "mtu 1450" in inside, inside
        for h, nodes in on.items():
            cgs = tb.run(nodes[0], f"ls -d /sys/fs/cgroup/*/edgelab/{tb.shares[h]['share']}/*/ "
                                   f"/sys/fs/cgroup/edgelab/{tb.shares[h]['share']}/*/ 2>/dev/null; true").stdout
            assert all(f"/{n}/" in cgs for n in nodes), (h, cgs)
        assert tb.cpu_seconds(far) >= 0
        ping = tb.run(far, ["ping", "-c", "5", "-i", "0.2", "-W", "2", srv]).stdout
        rtt = float(re.search(r"= [\d.]+/([\d.]+)/", ping).group(1))
        assert 4 <= rtt <= 40, ping   # 2 ms on each end's link, once per direction
        server = tb.popen("server-1", ["iperf3", "-s", "-1", "-p", "5301"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(0.8)
        out = tb.run(far, ["iperf3", "-c", srv, "-p", "5301", "-t", "3", "-J"], timeout=30).stdout
        mbit = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e6
        assert 0.6 * 20 <= mbit <= 20 * 1.03, mbit
        server.wait(timeout=10)
        assert all(c.ok for c in tb.health_checks())
    finally:
        tb.down()
    assert leftovers(plan.topology.name) == []


@pytest.mark.measures
@root
def test_a_remote_station_is_charged_to_the_cell_budget_on_the_ap_host(lab):
    """A station folded onto another host than the AP reaches the server through the AP host's bridge,
    whose airtime budget (Bianchi capacity, below the station's own PHY rate) caps it."""
    from edgelab.remote.folded import FoldedBackend

    plan = plan_of(WIFI, name=name("mw"))
    cap = plan.network("wlan").segments[0].capacity_mbit
    rate = plan.node("phone-1").interfaces[0].link.rate_mbit
    assert cap < 0.85 * rate   # otherwise this test could not tell the budget from the link
    tb = FoldedBackend(str(lab.inventory), 2).up(plan)
    try:
        facts = tb.facts()
        ap = facts["access_points"][0]["ap_host"]
        far = facts["access_points"][0]["remote_stations"][0]
        (budget,) = facts["airtime_budgets"][ap]
        assert budget["station_only"] and budget["ports"][-1].startswith("vx")
        srv = plan.node("server-1").address("wlan")
        server = tb.popen("server-1", ["iperf3", "-s", "-1", "-p", "5302"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(0.8)
        # UDP at more than the station's PHY rate: what arrives is what the narrowest stage let through
        out = tb.run(far, ["iperf3", "-c", srv, "-p", "5302", "-u", "-b", f"{1.5 * rate:g}M", "-t", "3", "-J"],
                     timeout=30).stdout
        end = json.loads(out)["end"]
        mbit = end.get("sum_received", end["sum"])["bits_per_second"] / 1e6
        print(f"remote station over the AP host: {mbit:.1f} Mbit/s received (budget {cap:.1f}, PHY {rate:g})")
        assert 0.7 * cap <= mbit <= cap * 1.05, (mbit, cap, rate)
        server.wait(timeout=10)
    finally:
        tb.down()
    assert leftovers(plan.topology.name) == []


@root
def test_when_one_host_fails_every_share_is_rolled_back(lab):
    from edgelab.remote.folded import FoldedBackend

    plan = plan_of(LAN, name=name("mf"), phones=3)
    # h2's share name is taken by a state file this test writes (and removes): its share-up must fail
    os.makedirs("/run/edgelab", exist_ok=True)
    blocker = Path(f"/run/edgelab/{plan.topology.name}-h2.json")
    blocker.write_text(json.dumps({"testbed": f"{plan.topology.name}-h2", "netns": [], "cgroups": []}))
    try:
        with pytest.raises(BackendError, match=r"1 of 2 hosts could not build their share") as e:
            FoldedBackend(str(lab.inventory), 2).up(plan)
        assert "host h2" in str(e.value)
    finally:
        blocker.unlink(missing_ok=True)
    assert leftovers(plan.topology.name) == []


@root
def test_folding_over_one_and_two_hosts_end_to_end(lab, tmp_path):
    from edgelab.remote.folded import FoldedBackend

    p = subprocess.Popen([sys.executable, "experiments/folding.py", "--backend", "ssh", "--inventory", str(lab.inventory),
                          "--hosts", "1,2", "--factors", "2", "--reps", "1", "--seconds", "1",
                          "--results", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=240)
    finally:
        p.kill()
        p.wait()
        # what a killed run would leave, removed the way a user would (edgelab.experiment.testbed_name)
        FoldedBackend(str(lab.inventory), 2).down(f"fold-{p.pid}")
        assert leftovers(f"fold-{p.pid}") == []
    r = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "judged against all of it on 1 host" in r.stdout, r.stdout
    assert re.search(r"factor 2 \(2 phones \+ server\) spread over hosts vs all on 1 host .*: 2 hosts "
                     r"(faithful|UNFAITHFUL|better|inconclusive)", r.stdout), r.stdout
    (run,) = list((tmp_path / "folding").iterdir())
    facts = {p.parent.name: json.loads(p.read_text()) for p in run.glob("raw/*/facts.json")}
    one, two = facts["factor-2_hosts-1_rep-0"], facts["factor-2_hosts-2_rep-0"]
    assert set(one["placement"].values()) == {"h1"} and one["tunnels"] == []
    assert set(two["placement"].values()) == {"h1", "h2"} and len(two["tunnels"]) == 2
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["params"]["hosts"] == [1, 2] and manifest["params"]["baseline"] == "1 host"
    assert "1 host" in (run / "report" / "summary.md").read_text()
    import csv

    with open(run / "measurements.csv") as fh:
        rows = list(csv.DictReader(fh))
    for hosts in ("1", "2"):   # every point: its latency, and the (most loaded) host's overload signals
        at = {r["metric"] for r in rows if r["hosts"] == hosts}
        assert {"latency_ms_p50", "cpu_time_ms_per_request", "host_cpu_busy", "host_runqueue"} <= at, (hosts, at)


@root
def test_g5k_above_factor_one_runs_the_same_folded_testbed_on_the_jobs_machines(lab):
    """Everything after the reservation is real: EnOSlib ``Host`` objects of lab hosts, edgelab installed
    by the transport, each machine's share built by the local backend, VXLAN between them."""
    import enoslib as en

    from edgelab.backends.g5k import G5kBackend
    from edgelab.remote import load_inventory

    devices = list(load_inventory(lab.inventory).devices.values())[:2]
    calls = []

    class Provider:   # the reservation: what EnOSlib's G5k provider returns, for lab machines
        def __init__(self, conf):
            calls.append(("conf", conf))

        def init(self):
            return ({"edgelab": [en.Host(d.host, user=d.user, keyfile=d.identity_file, port=d.port) for d in devices]},
                    {})

        def destroy(self):
            calls.append(("destroy",))

    plan = plan_of(WIFI, name=name("mg"))
    be = G5kBackend(provider_factory=Provider, access_check=lambda: [], max_per_host=3,
                    known_hosts=str(Path(lab.inventory).parent / "known_hosts"),
                    identity_file=devices[0].identity_file, python=devices[0].python, host_setup="")
    tb = be.up(plan)
    try:
        facts = tb.facts()
        assert facts["backend"] == "g5k" and facts["folding"]["hosts"] == 2
        assert set(facts["placement"].values()) == {d.host for d in devices}
        assert len(facts["reservation"]["placement"]) == 2 and "deploy" in facts["reservation"]["job_type"]
        assert len(facts["tunnels"]) == 2 and calls[0][1].to_dict()["env_name"] == "debian12-min"
        srv = plan.node("server-1").address("wlan")
        far = facts["access_points"][0]["remote_stations"][0]
        # reached (ping exits 0 on any reply): the Wi-Fi profile drops 0.5 % each way, so not every echo
        assert " bytes from " in tb.run(far, ["ping", "-c", "3", "-i", "0.2", srv]).stdout
    finally:
        tb.down()
    assert calls[0][0] == "conf" and calls[-1] == ("destroy",)
    assert leftovers(plan.topology.name) == []


# ------------------------------------------------------------------ crash-time teardown
CRASHER = """\
import sys, textwrap
from edgelab.plan import make_plan
from edgelab.remote.folded import FoldedBackend
from edgelab.topology import parse_topology
plan = make_plan(parse_topology(sys.stdin.read()))
tb = FoldedBackend(sys.argv[1], 2).up(plan)
# something the controller started on a node of each host (killed by `down` from the pid files)
procs = [tb.popen(n, ["sleep", "300"]) for n in (plan.nodes[0].name, plan.nodes[-1].name)]
print("UP", " ".join(s["share"] for s in tb.shares.values()), flush=True)
import time; time.sleep(300)
"""


def kernel_leftovers(testbed: str) -> list[str]:
    """``leftovers`` plus VXLAN devices of the testbed in the root namespace and the controller's record."""
    out = leftovers(testbed)
    vx = subprocess.run(["ip", "-o", "link", "show", "type", "vxlan"], capture_output=True, text=True).stdout
    out += [line for line in vx.splitlines() if any(f"vx{mh.short(testbed, 'lan', h)}" in line for h in ("h1", "h2"))]
    from edgelab.remote.foldedstate import FoldedRecord

    if FoldedRecord(testbed).exists():
        out.append("controller record")
    return out


@root
def test_after_the_controller_is_sigkilled_down_with_the_inventory_removes_every_hosts_share(lab):
    """A folded run whose controller dies leaves a share on each host; `edgelab down <tb> --inventory`
    finds them from the controller's record and removes them (namespaces, VXLAN ports, cgroups, state,
    the processes the controller started), idempotently, leaving a same-named plain testbed alone."""
    tbname = name("mk")
    topo = textwrap.dedent(LAN.format(name=tbname, phones=3))
    child = subprocess.Popen([sys.executable, "-c", CRASHER, str(lab.inventory)], cwd=REPO, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        child.stdin.write(topo)
        child.stdin.close()
        line = child.stdout.readline()
        assert line.startswith("UP "), line + child.stderr.read()
        shares = line.split()[1:]
        assert sorted(shares) == [f"{tbname}-h1", f"{tbname}-h2"]
        import glob

        def sleepers():
            out = set()
            for f in glob.glob(f"/sys/fs/cgroup/**/edgelab/{tbname}-h*/*/cgroup.procs", recursive=True):
                for pid in Path(f).read_text().split():
                    try:
                        if b"sleep\x00300" in Path(f"/proc/{pid}/cmdline").read_bytes():
                            out.add(pid)
                    except OSError:
                        pass
            return out

        deadline = time.monotonic() + 10
        while len(sleepers()) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        started = sleepers()
        assert len(started) == 2, started
        child.kill()   # SIGKILL: no teardown runs
        child.wait(timeout=10)
        assert len(leftovers(tbname)) >= 4, leftovers(tbname)   # both shares are still up
        from edgelab.remote.foldedstate import FoldedRecord

        rec = FoldedRecord(tbname).load()   # written before any host was touched: hosts, shares, run
        assert rec["shares"] == {"h1": 1, "h2": 2} and rec["run"] and rec["status"] == "up", rec
        r = subprocess.run([sys.executable, "-m", "edgelab", "down", tbname, "--inventory", str(lab.inventory)],
                           cwd=REPO, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"{tbname}-h1: removed" in r.stdout and f"{tbname}-h2: removed" in r.stdout, r.stdout
        assert kernel_leftovers(tbname) == []
        alive = [p for p in started if os.path.exists(f"/proc/{p}")]
        assert alive == [], alive
        again = subprocess.run([sys.executable, "-m", "edgelab", "down", tbname, "--inventory", str(lab.inventory)],
                               cwd=REPO, capture_output=True, text=True, timeout=60)
        assert again.returncode == 0, again.stdout + again.stderr   # idempotent
    finally:
        if child.poll() is None:
            child.kill()
        from edgelab.remote.folded import FoldedBackend

        try:
            FoldedBackend(str(lab.inventory), 2).down(tbname)
        except BackendError:
            pass


@root
def test_share_down_leaves_a_plain_testbed_or_another_run_with_the_shares_name_alone():
    from edgelab.backends.local.share import share_down

    tb = name("mq")
    os.makedirs("/run/edgelab", exist_ok=True)
    f = Path(f"/run/edgelab/{tb}-h1.json")
    try:
        f.write_text(json.dumps({"testbed": f"{tb}-h1", "backend": "local", "netns": [], "cgroups": []}))
        with pytest.raises(BackendError, match="plain local testbed"):
            share_down(tb, 1)
        f.write_text(json.dumps({"testbed": f"{tb}-h1", "backend": "local", "netns": [], "cgroups": [],
                                 "share": {"folded": tb, "index": 1, "run": "aaaa"}}))
        with pytest.raises(BackendError, match="another run"):
            share_down(tb, 1, run="bbbb")
        assert f.exists()
        assert share_down(tb, 1, run="aaaa") == f"{tb}-h1: removed" and not f.exists()
        assert share_down(tb, 1) == f"{tb}-h1: nothing left"
    finally:
        f.unlink(missing_ok=True)


@pytest.mark.measures
@root
def test_two_stations_on_a_host_other_than_the_aps_talk_through_the_ap_and_its_budget(lab):
    """Infrastructure mode across hosts: two stations folded onto the same non-AP host reach each
    other only through the AP host's bridge (their ports are isolated, the AP's VXLAN port reflects),
    so their exchange is charged to the cell's budget there — on both legs, as on the local backend."""
    from edgelab.remote.folded import FoldedBackend

    plan = plan_of(WIFI, name=name("ms"))
    cap = plan.network("wlan").segments[0].capacity_mbit
    rate = plan.node("phone-1").interfaces[0].link.rate_mbit
    tb = FoldedBackend(str(lab.inventory), 2, max_per_host=3).up(plan)
    try:
        facts = tb.facts()
        ap = facts["access_points"][0]["ap_host"]
        a, b = facts["access_points"][0]["remote_stations"][:2]
        assert facts["placement"][a] == facts["placement"][b] != ap
        bridge_ns = mh.bridge_ns(tb.multihost, tb.multihost.share(ap).index, "wlan")

        def ap_bytes() -> int:   # what the AP host's budget charged so far (all its classes)
            # on the AP host itself (its namespaces are mounted there), unconfined
            st = tb.run("server-1", f"ifb=$(ip -n {bridge_ns} -o link show type ifb | cut -d: -f2 | cut -d@ -f1); "
                                    f"tc -n {bridge_ns} -s class show dev $ifb classid a:1", confine=False).stdout
            return int(re.search(r"Sent (\d+) bytes", st).group(1))

        dst = plan.node(b).address("wlan")
        # reached (ping exits 0 on any reply): the Wi-Fi profile drops 0.5 % each way, so not every echo
        assert " bytes from " in tb.run(a, ["ping", "-c", "3", "-i", "0.2", "-W", "2", dst]).stdout
        before = ap_bytes()
        server = tb.popen(b, ["iperf3", "-s", "-1", "-p", "5303"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
        time.sleep(0.8)
        out = tb.run(a, ["iperf3", "-c", dst, "-p", "5303", "-u", "-b", f"{1.5 * rate:g}M", "-t", "3", "-J"],
                     timeout=30).stdout
        end = json.loads(out)["end"]
        mbit = end.get("sum_received", end["sum"])["bits_per_second"] / 1e6
        got = end.get("sum_received", end["sum"])["bytes"]
        charged = ap_bytes() - before
        print(f"station to station on the non-AP host: {mbit:.1f} Mbit/s (budget {cap:.1f}, PHY {rate:g}); "
              f"AP budget charged {charged / max(got, 1):.2f}x the bytes received")
        # every frame crossed the AP's budget twice (up and back down), so at most half of it arrives
        assert 0.3 * cap <= mbit <= 0.55 * cap, (mbit, cap, rate)
        assert charged >= 1.8 * got, (charged, got)
        server.wait(timeout=10)
    finally:
        tb.down()
    assert leftovers(plan.topology.name) == []


def test_a_wifi_cell_spanning_three_hosts_is_a_star_around_its_ap_host():
    """Other hosts peer only with the AP host (no frame of the cell goes around it); there the VXLAN
    port reflects (hairpin), elsewhere every member's port is isolated, named with its member's MAC."""
    from edgelab.backends.local import blueprint as bpmod

    plan = plan_of(WIFI, name="ws")
    where = {"server-1": "a", "phone-1": "a", "phone-2": "b", "phone-3": "b", "phone-4": "c"}
    addr = {"a": "10.0.0.1", "b": "10.0.0.2", "c": "10.0.0.3"}
    mp = mh.plan_hosts(plan, where, addr)
    assert mp.ap_hosts == {"wlan": "a"}
    peers = {t.host: set(t.peers) for t in mp.tunnels}
    assert peers == {"a": {"10.0.0.2", "10.0.0.3"}, "b": {"10.0.0.1"}, "c": {"10.0.0.1"}}
    full = bpmod.build(plan)
    mac = {v.label: v.a.mac for v in full.veths}
    shares = {s.host: mh.share_spec(mp, s.host).restrict(full, plan) for s in mp.shares}
    (ta,), (tb_,) = shares["a"].tunnels, shares["b"].tunnels
    assert ta.hairpin and not ta.spokes
    assert not tb_.hairpin and sorted(m for _, m in tb_.spokes) == sorted([mac["wlan:phone-2"], mac["wlan:phone-3"]])
    assert {p for p, _ in tb_.spokes} == {v.b.ifname for v in shares["b"].veths}
    from edgelab.backends.local.wiring import spoke_ruleset

    rules = spoke_ruleset(tb_)
    assert rules.count("drop") == 2 and f"ether daddr != {mac['wlan:phone-2']} drop" in rules
    text = "\n".join(mh.tunnel_cmds(mp, "a") + mh.tunnel_cmds(mp, "b"))
    assert "hairpin on" in text and "isolated on learning off" in text
    # a wired network spanning the same hosts stays a full mesh of tunnels, with no port flags
    lan = plan_of(LAN, name="wl", phones=2)
    mpl = mh.plan_hosts(lan, {"server-1": "a", "phone-1": "b", "phone-2": "c"}, addr)
    assert all(len(t.peers) == 2 for t in mpl.tunnels)
    fl = bpmod.build(lan)
    assert all(not t.hairpin and not t.spokes for s in mpl.shares
               for t in mh.share_spec(mpl, s.host).restrict(fl, lan).tunnels)


def test_down_names_each_host_it_could_not_clean_and_keeps_the_record(tmp_path, monkeypatch):
    """A record naming a host the inventory lacks: one line for that host, the record kept for a retry;
    a record of another testbed or with a non-numeric index is refused, not acted on."""
    from edgelab.remote import foldedstate
    from edgelab.remote.folded import FoldedBackend
    from edgelab.remote.foldedstate import FoldedRecord

    monkeypatch.setattr(foldedstate, "record_dir", lambda: tmp_path / "records")
    inv = tmp_path / "hosts.yaml"
    inv.write_text("devices:\n  - {node: h1, host: 192.0.2.1}\n")
    tb = name("mr")
    rec = FoldedRecord(tb)
    rec.create({"run": "abc", "controller_pid": 1, "shares": {"h9": 2}})
    with pytest.raises(BackendError, match=rf"1 host\(s\) of folded testbed '{tb}' could not be cleaned .*kept"
                                           rf"[\s\S]*host h9: not in inventory .*edgelab down {tb}-h2"):
        FoldedBackend(str(inv)).down(tb)
    assert rec.exists()
    with pytest.raises(BackendError, match="up or was not torn down"):
        FoldedRecord(tb).create({})
    rec.path.write_text(json.dumps({"testbed": tb, "shares": {"h1": "1; rm -rf /"}}))
    with pytest.raises(BackendError, match="does not describe"):
        FoldedBackend(str(inv)).down(tb)
    rec.remove()
    assert not rec.exists()
