"""The access point as a node on a remote backend, over real OpenSSH servers (scripts/ssh-devices).

Every station's traffic must cross the AP device, the AP must carry the
cell's Bianchi airtime budget with one class per station, and
``wifi_scaling --backend ssh`` must find the same saturation point as the
local backend (± one step of N) with no aggregate above the cell's capacity.
Root only; run under the shared lock:
``flock /tmp/edgelab-root.lock .venv/bin/python -m pytest tests/test_remote_ap.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from remote_helpers import SSH_LAB_MARKS, ssh_lab, wifi_plan

REPO = Path(__file__).resolve().parents[1]

pytestmark = SSH_LAB_MARKS

NODES = ["server-1", "phone-1", "phone-2", "phone-3", "wlan-ap"]


@pytest.fixture(scope="module")
def lab():
    from edgelab.remote import lab as labmod

    with ssh_lab([labmod.DeviceSpec(node=n, cpu=0.5 if n == "server-1" else 0.25 if n.startswith("phone") else None)
                  for n in NODES]) as lb:
        yield lb


@pytest.mark.measures
def test_stations_are_routed_through_the_ap_which_holds_the_budget_and_down_undoes_it(lab):
    from edgelab.backends.ssh import SshBackend
    from edgelab.measure import concurrent_goodput

    plan = wifi_plan(3)
    tb = SshBackend(lab.inventory).up(plan)
    tr = tb.transport
    ap_addr = tr.device("wlan-ap").data_address
    try:
        (cell,) = tb.facts()["access_points"]
        assert cell["ap"] == "wlan-ap" and cell["stations"] == 3
        cap = plan.network("wlan").segments[0].capacity_mbit
        assert cell["capacity_mbit"] == pytest.approx(cap)
        # station -> server and server -> station both go via the AP (one routed hop: ttl 63)
        r = tb.run("phone-1", ["ip", "route", "get", tb.address("server-1")]).stdout
        assert f"via {ap_addr}" in r, r
        r = tb.run("server-1", ["ip", "route", "get", tb.address("phone-2")]).stdout
        assert f"via {ap_addr}" in r, r
        # three echoes: the Wi-Fi profile drops 0.5 % each way, and one lost echo is no routing fault
        assert "ttl=63" in tb.run("phone-1", ["ping", "-c", "3", "-i", "0.2", "-W", "2", tb.address("server-1")]).stdout
        # saturated uploads: the sum stays under the budget, each station gets about its share
        shares = concurrent_goodput(tb, ["phone-1", "phone-2", "phone-3"], "server-1", seconds=2, network="wlan")
        total = sum(s["goodput_mbit"] for s in shares.values())
        assert total <= cap, (total, cap, shares)
        assert total >= 0.6 * cap, (total, cap, shares)   # the budget, not something else, is the limit
        for s in shares.values():
            assert s["goodput_mbit"] == pytest.approx(total / 3, rel=0.25), shares
        classes = tr.run("wlan-ap", "for i in $(ip -o link | awk -F': ' '/air0/{print $2}'); do "
                                    "tc class show dev $i; done").stdout
        assert classes.count("class htb a:1") >= 4, classes   # a:1 root, a:10 default, one per station
    finally:
        tb.down()
    # nothing left: no IFB, no redirect, the routes and forwarding as before
    assert "air0" not in tr_run(lab, "wlan-ap", "ip -o link")
    assert "mirred" not in tr_run(lab, "wlan-ap", "tc filter show dev eth0 ingress; tc filter show dev eth0 egress")
    assert tr_run(lab, "wlan-ap", "sysctl -n net.ipv4.ip_forward").strip() == "0"
    assert ap_addr not in tr_run(lab, "phone-1", "ip route")


def tr_run(lab, node: str, cmd: str) -> str:
    from edgelab.remote import Transport, load_inventory

    tr = Transport(load_inventory(lab.inventory))
    try:
        return tr.run(node, cmd).stdout
    finally:
        tr.close()


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "experiments" / "wifi_scaling.py"), "--no-report", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.mark.measures(reruns=1)   # 50-100 s: one rerun at most
def test_wifi_scaling_over_ssh_finds_the_local_saturation_point_under_the_capacity(lab, tmp_path):
    """1-3 phones offering 28 Mbit/s each into a ~52-56 Mbit/s cell: the goodput plateau at the same number of
    phones on both backends (± one step), and the aggregate goodput never above the Bianchi capacity."""
    from analysis.load import load_run
    from analysis.saturation import saturation_for_run

    # A testbed name of its own: a stale local testbed "wifi" left by another run must not stop this one.
    topo = tmp_path / "wifi-ap.yaml"
    topo.write_text((REPO / "topologies" / "wifi-phones.yaml").read_text().replace("name: wifi", f"name: wap{os.getpid() % 10000}", 1))
    # The plateau is judged on goodput: with 3 s points, the first point of a sweep sometimes has a
    # p95 latency above the default 500 ms threshold (a cold start; seen once in CI on the local
    # backend at 1 phone), which would call saturation at 1 whatever the goodput does.
    args = ["--topology", str(topo), "--phones", "1,2,3", "--seconds", "3", "--rate", "7", "--image-kb", "500",
            "--latency-threshold-ms", "5000"]
    r = _run(*args, "--inventory", str(lab.inventory), "--results", str(tmp_path / "ssh"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(*args, "--results", str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr[-3000:]
    found = {}
    for backend in ("ssh", "local"):
        (run_dir,) = (tmp_path / backend / "wifi_scaling").iterdir()
        run = load_run(run_dir)
        found[backend] = saturation_for_run(run).n
        df = run.df
        agg = df[(df.metric == "goodput_mbit") & (df.node.isna() | (df.node == ""))]
        cap = df[df.metric == "airtime_capacity_mbit"]
        assert len(agg) == 3 and len(cap) == 3
        for (_, a), (_, c) in zip(agg.sort_values("n_phones").iterrows(), cap.sort_values("n_phones").iterrows()):
            assert a["value"] <= c["value"], (backend, a.to_dict(), c["value"])
        if backend == "ssh":
            facts = json.loads((run_dir / "raw" / "n_phones-3_rep-0" / "facts.json").read_text())
            assert facts["access_points"][0]["ap"] == "wlan-ap"
            assert "airtime budget on the access point" in facts["link_emulation"]
    assert found["local"] is not None, found
    assert found["ssh"] is not None and abs(found["ssh"] - found["local"]) <= 1, found


SNAPSHOT = ("ip -o link | cut -d: -f2 | cut -d@ -f1; ip route; for d in $(ls /sys/class/net 2>/dev/null; "
            "ip -o link | cut -d: -f2 | cut -d@ -f1); do tc qdisc show dev $d 2>/dev/null; "
            "tc filter show dev $d ingress 2>/dev/null; tc filter show dev $d egress 2>/dev/null; done | sort -u; "
            "sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.send_redirects net.ipv4.conf.eth0.send_redirects; "
            "ls {workdir} 2>/dev/null | grep ap-undo || true")


def snapshot(lab) -> dict[str, str]:
    """What the cells change on every device (links, routes, qdiscs, filters, sysctls, undo scripts)."""
    from edgelab.remote import Transport, load_inventory

    inv = load_inventory(lab.inventory)
    tr = Transport(inv)
    try:
        return {n: tr.run(n, SNAPSHOT.format(workdir=inv.device(n).workdir)).stdout for n in NODES}
    finally:
        tr.close()


CONTROLLER = """
import sys, time
from edgelab.backends.ssh import SshBackend
from edgelab.plan import make_plan
from edgelab.topology import load_topology
plan = make_plan(load_topology(sys.argv[2]).scaled("phone", 3))
SshBackend(sys.argv[1]).up(plan)
print("UP", flush=True)
time.sleep(600)
"""


def test_crash_time_down_undoes_the_access_point(lab, tmp_path):
    """Bring up, SIGKILL the controller (its memory of what changed is gone), then
    ``edgelab down NAME --inventory FILE``: every device is as before, AP routes, sysctls,
    IFB, qdiscs and filters included (the undo scripts apply_cells left on the devices)."""
    import signal

    topo = tmp_path / "apcrash.yaml"
    name = f"apc{os.getpid() % 10000}"
    topo.write_text((REPO / "topologies" / "wifi-phones.yaml").read_text().replace("name: wifi", f"name: {name}", 1))
    before = snapshot(lab)
    ctl = subprocess.Popen([sys.executable, "-c", CONTROLLER, str(lab.inventory), str(topo)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ctl.stdout.readline()
        assert line.strip() == "UP", ctl.stderr.read()[-3000:] if ctl.poll() is not None else line
        os.kill(ctl.pid, signal.SIGKILL)
        ctl.wait(timeout=10)
        during = snapshot(lab)
        assert "air0" in during["wlan-ap"] and during["wlan-ap"].split()[-4:-1] == ["1", "0", "0"], during["wlan-ap"]
        assert "ap-undo-" in during["phone-1"] and "via" in during["phone-1"]
    finally:
        if ctl.poll() is None:
            ctl.kill()
            ctl.wait()
        r = subprocess.run([sys.executable, "-m", "edgelab", "down", name, "--inventory", str(lab.inventory)],
                           capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    after = snapshot(lab)
    for n in NODES:
        assert after[n] == before[n], (n, before[n], after[n])
