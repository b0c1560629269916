"""Root integration tests of the local backend: real namespaces, veths, cgroups, traffic.

Every testbed is brought up in a context manager that tears it down even on
failure; names start with 'lb' (this suite's prefix) and end with this run's tag
(``local_helpers.RUN_TAG``), so two sessions on one machine never share one. Tolerances are honest
but generous: other jobs share the machine's two cores.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgelab.backends.local import LocalBackend, probes
from edgelab.backends.local.calibrate import calibrate
from edgelab.errors import BackendError

from local_helpers import leftovers, plan_of, running_testbed, tbname, wifi_cell

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create network namespaces and cgroups"),
]

REPO = str(Path(__file__).resolve().parents[1])

ETHERNET = """
name: lbeth
networks:
  - name: lana
    kind: ethernet
    link: {rate_mbit: 20, delay_ms: 5}
  - name: lanb
    kind: ethernet
    link: {rate_mbit: 200, loss_pct: 5}
nodes:
  - group: n
    role: client
    count: 2
    networks: [lana, lanb]
""".replace("name: lbeth\n", f"name: {tbname('lbeth')}\n", 1)


def _loss_rule_drops(tb) -> dict[str, list[int]]:
    """Packets dropped by each loss rule, per namespace of the testbed (nft ``counter``s)."""
    out = {}
    for ns in tb.blueprint.namespaces:
        rules = subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"], capture_output=True,
                               text=True).stdout
        out[ns] = [int(n) for n in re.findall(r"numgen random .*? counter packets (\d+)", rules)]
    return out


@pytest.mark.measures
def test_ethernet_link_rate_delay_loss_match_configuration():
    with running_testbed(ETHERNET) as tb:
        facts = tb.facts()
        assert facts["backend"] == "local" and facts["link_engine"] in ("netem", "fallback")
        assert facts["kernel"] == os.uname().release and facts["cgroup_version"] in (1, 2)
        # loss first, on a quiet testbed: 4 independent 5 % draws per round trip -> 18.5 % of pings lost
        expected = 100 * (1 - 0.95 ** 4)

        def loss_sample():
            return probes.ping(tb, "n-1", tb.address("n-2", "lanb"), count=500, interval=0.004)

        p = loss_sample()
        if abs(p.loss_pct - expected) >= 6:
            # One run in ~50 lost 34 % (= 8 draws) here once and never again. A wrong rule set
            # stays wrong on the same testbed, so a second sample must pass; the first
            # sample and the loss rules' own counters go into the message either way.
            first, drops = p, _loss_rule_drops(tb)
            p = loss_sample()
            assert abs(p.loss_pct - expected) < 6, (first, p, expected, drops, _loss_rule_drops(tb))
        dst_a = tb.address("n-2", "lana")
        # delay: two links of 5 ms each way -> 20 ms RTT
        p = probes.ping(tb, "n-1", dst_a, count=30, interval=0.02)
        assert p.received == 30
        assert 19.5 <= p.rtt_min and p.rtt_avg <= 24, p
        # rate: UDP payload through a 20 Mbit/s (L2) link
        end = probes.iperf3(tb, "n-1", "n-2", dst_a, seconds=2, udp_mbit=30)
        got = probes.udp_received_mbit(end)
        want = 20 * probes.UDP_PAYLOAD / probes.UDP_FRAME
        assert 0.85 * want <= got <= 1.05 * want, (got, want)


def _wifi(n: int, name: str) -> str:
    return wifi_cell(n, name)


def _downlink_rates(tb, stations: list[str], server: str, offered: float, window: float = 2.0) -> list[float]:
    """The server sends UDP to every station at once (iperf3 -R); each station's L2 receive
    rate (Mbit/s) is read from its wlan0 counter over a window when all flows run.

    Downlink, because the budget is per cell in both directions and the
    server's link is lossless; counters, because iperf3's per-run figures
    include ramp-up and drain that do not overlap between parallel runs.
    """
    ip = tb.address(server)
    srvs = [tb.popen(server, ["iperf3", "-s", "-1", "-p", str(5300 + i)], stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL) for i in range(len(stations))]
    time.sleep(0.3)
    clients = [tb.popen(s, ["iperf3", "-c", ip, "-p", str(5300 + i), "-R", "-u", "-b", f"{offered}M", "-l",
                            str(probes.UDP_PAYLOAD), "-w", "8M", "-t", "60"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
               for i, s in enumerate(stations)]
    time.sleep(1.2)
    before = [probes.rx_bytes(tb, s, "wlan0") for s in stations]
    t0 = time.monotonic()
    time.sleep(window)
    after = [probes.rx_bytes(tb, s, "wlan0") for s in stations]
    dt = time.monotonic() - t0
    # Stop the flows ourselves: iperf3's end-of-test handshake crosses the saturated
    # cell (a queue dropping a third of the packets here) and can take many seconds.
    for c in clients + srvs:
        c.kill()
        c.wait(timeout=10)
    return [(a - b) * 8 / dt / 1e6 for a, b in zip(after, before)]


@pytest.mark.measures
def test_shared_medium_budget_and_per_station_share():
    per_station, caps = {}, {}
    for n in (1, 2, 4):
        with running_testbed(_wifi(n, tbname(f"lbw{n}"))) as tb:
            (seg,) = tb.facts()["segments"]
            cap = seg["capacity_mbit"]
            caps[n] = cap
            rates = _downlink_rates(tb, [f"ph-{i}" for i in range(1, n + 1)], "srv-1", offered=min(65, 1.5 * cap))
            # L2 bytes against the L2 airtime budget (counter windows add a little slack)
            assert 0.8 * cap <= sum(rates) <= 1.1 * cap, (n, rates, cap)
            per_station[n] = rates
            # Each station has its own share of the budget (HTB class by MAC), so even
            # saturating UDP flows on a FIFO leaf split the cell evenly.
            assert all(r == pytest.approx(sum(rates) / n, rel=0.2) for r in rates), (n, rates)
    means = {n: sum(r) / n for n, r in per_station.items()}
    assert means[1] > 1.6 * means[2] > 1.6 * 1.6 * means[4], per_station


def test_a_large_cell_still_resolves_addresses():
    """100 stations: a station's ARP broadcast is flooded to 99 other ports, yet charged once,
    so it does not fill the sender's own queue and the answer gets through."""
    with running_testbed(_wifi(100, tbname("lbw100"))) as tb:
        for ph in ("ph-1", "ph-100"):
            p = probes.ping(tb, ph, tb.address("srv-1"), count=3, interval=0.1)
            assert p.received == 3, (ph, p)


MESH = """
name: lbmesh
networks:
  - name: mesh
    kind: batman-mesh
    link: {rate_mbit: 50, delay_ms: 3}
nodes:
  - group: m
    role: phone
    count: 4
    networks: [mesh]
""".replace("name: lbmesh\n", f"name: {tbname('lbmesh')}\n", 1)


@pytest.mark.measures
def test_mesh_chain_forwards_over_relays():
    with running_testbed(MESH) as tb:
        ips = {f"m-{i}": tb.address(f"m-{i}") for i in range(1, 5)}
        rtts = []
        for dst in ("m-2", "m-3", "m-4"):
            p = probes.ping(tb, "m-1", ips[dst], count=10, interval=0.02)
            assert p.received == 10, (dst, p)
            rtts.append(p.rtt_avg)
        # 3 ms each way per hop: ~6, 12, 18 ms
        assert rtts[0] >= 5.8 and rtts[1] >= rtts[0] + 5 and rtts[2] >= rtts[1] + 5, rtts
        # TTL 2 dies at the second relay (m-3), which answers "time to live exceeded"
        cp = tb.run("m-1", ["ping", "-n", "-c", "1", "-W", "1", "-t", "2", ips["m-4"]], check=False)
        assert f"From {ips['m-3']}" in cp.stdout and "exceeded" in cp.stdout.lower(), cp.stdout
        cp = tb.run("m-1", ["ping", "-n", "-c", "1", "-W", "1", "-t", "3", ips["m-4"]], check=False)
        assert cp.returncode == 0, cp.stdout


CPU = """
name: lbcpu
networks:
  - name: lan
    kind: ethernet
    link: {rate_mbit: 100}
nodes:
  - group: slow
    role: client
    resources: {cpu: 0.25, memory_mib: 128}
    networks: [lan]
  - group: fast
    role: client
    resources: {cpu: 2, memory_mib: 128}
    networks: [lan]
""".replace("name: lbcpu\n", f"name: {tbname('lbcpu')}\n", 1)

SPIN = ("import time\nt=time.monotonic(); n=0\n"
        "while time.monotonic()-t < 2.0: n += 1\n"
        "print(n, time.process_time())")


@pytest.mark.measures
def test_cpu_quota_slows_a_cpu_bound_loop():
    with running_testbed(CPU) as tb:
        q = tb.facts()["nodes"]["slow-1"]
        assert q["cpu_quota_us"] == 25_000 and q["cpu_period_us"] == 100_000
        slow_n, slow_cpu = map(float, tb.run("slow-1", [sys.executable, "-c", SPIN]).stdout.split())
        fast_n, fast_cpu = map(float, tb.run("fast-1", [sys.executable, "-c", SPIN]).stdout.split())
    # The quota caps CPU time at 0.25 s per wall second whatever else runs.
    assert slow_cpu / 2.0 <= 0.32, slow_cpu
    # Against the unlimited run (which itself may lose CPU to other jobs).
    assert 0.08 <= slow_n / fast_n <= 0.45, (slow_n, fast_n)


def _quota(tb, node: str) -> str:
    """The node's CPU quota as the kernel has it ("max"/"-1" when unlimited)."""
    from edgelab.backends.local.naming import cgroup_rel

    rel = cgroup_rel(tb.name, node)
    if tb.layout.version == 2:
        return (Path(tb.layout.roots["unified"]) / rel / "cpu.max").read_text().split()[0]
    return (Path(tb.layout.roots["cpu"]) / rel / "cpu.cfs_quota_us").read_text().strip()


def test_full_speed_lifts_the_cpu_quota_only_inside_the_block():
    with running_testbed(CPU) as tb:
        assert _quota(tb, "slow-1") == "25000" and _quota(tb, "fast-1") == "200000"
        with tb.full_speed(["slow-1"]):
            assert _quota(tb, "slow-1") in ("max", "-1")
            assert _quota(tb, "fast-1") == "200000"   # nodes not named keep their cap
        assert _quota(tb, "slow-1") == "25000"
        with pytest.raises(RuntimeError):
            with tb.full_speed(["slow-1", "no-such-node"]):
                raise RuntimeError("boom")
        assert _quota(tb, "slow-1") == "25000"   # restored when the block fails too


def test_teardown_leaves_nothing_and_name_is_reusable():
    yaml = _wifi(2, tbname("lbtd")).replace("delay_ms: 0, jitter_ms: 0, loss_pct: 0", "delay_ms: 1")
    with running_testbed(yaml) as tb:
        tb.popen("ph-1", ["sleep", "300"])
        during = leftovers(tbname("lbtd"))
        assert during["netns"] and during["cgroups"] and during["files"]
        if tb.facts()["link_engine"] == "fallback":
            assert during["processes"]  # delayers run
        with pytest.raises(BackendError, match=f"edgelab down {tbname('lbtd')}"):
            LocalBackend().up(plan_of(yaml))
    assert leftovers(tbname("lbtd")) == {}
    assert not any(f"el-{tbname('lbtd')}" in l for l in subprocess.run(["ip", "-o", "link"], capture_output=True,
                                                         text=True).stdout.splitlines())
    with running_testbed(yaml):
        pass
    assert leftovers(tbname("lbtd")) == {}


UP_AND_WAIT = """
import sys, time
from edgelab.backends.local import LocalBackend
from edgelab.plan import make_plan
from edgelab.topology import parse_topology
tb = LocalBackend().up(make_plan(parse_topology(sys.stdin.read())))
tb.popen("ph-1", ["sleep", "300"])
print("UP", flush=True)
time.sleep(300)
"""


def _spawn_up(yaml: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", UP_AND_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    p.stdin.write(yaml)
    p.stdin.close()
    line = p.stdout.readline()
    assert line.strip() == "UP", line
    return p


def test_down_from_state_file_after_sigkill():
    yaml = _wifi(2, tbname("lbkill")).replace("delay_ms: 0, jitter_ms: 0, loss_pct: 0", "delay_ms: 1")
    p = _spawn_up(yaml)
    try:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        left = leftovers(tbname("lbkill"))
        assert left["netns"] and left["cgroups"] and left["files"]
        with pytest.raises(BackendError, match=f"edgelab down {tbname('lbkill')}"):
            LocalBackend().up(plan_of(yaml))
    finally:
        if p.poll() is None:
            p.kill()
        LocalBackend().down(tbname("lbkill"))
    assert leftovers(tbname("lbkill")) == {}
    with pytest.raises(BackendError, match="no testbed named"):
        LocalBackend().down(tbname("lbkill"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_turns_into_clean_teardown(sig):
    p = _spawn_up(_wifi(1, tbname("lbterm")))
    try:
        p.send_signal(sig)
        # SIGTERM -> SystemExit(143); SIGINT -> KeyboardInterrupt, which Python ends by dying of SIGINT
        assert p.wait(timeout=30) in ((128 + sig,) if sig == signal.SIGTERM else (-sig, 128 + sig))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
            LocalBackend().down(tbname("lbterm"))
    assert leftovers(tbname("lbterm")) == {}


def test_two_testbeds_coexist():
    with running_testbed(_wifi(2, tbname("lbco1"))) as a, running_testbed(_wifi(2, tbname("lbco2"))) as b:
        # same addresses, separate namespaces: each reaches its own server
        assert a.address("srv-1") == b.address("srv-1")
        for tb in (a, b):
            assert probes.ping(tb, "ph-1", tb.address("srv-1"), count=3, interval=0.05).received == 3
        a.down()
        assert leftovers(tbname("lbco1")) == {}
        assert probes.ping(b, "ph-2", b.address("srv-1"), count=3, interval=0.05).received == 3
    assert leftovers(tbname("lbco2")) == {}


@pytest.mark.measures
def test_calibrate_reports_configured_vs_measured():
    with running_testbed(ETHERNET.replace(tbname("lbeth"), tbname("lbcal"))) as tb:
        rows = calibrate(tb)
    by = {(r["network"], r["metric"]): r for r in rows}
    assert by[("lana", "rtt_ms")]["expected"] == pytest.approx(20.0)
    assert abs(by[("lana", "rtt_ms")]["error_pct"]) < 20
    assert abs(by[("lana", "udp_goodput_mbit")]["error_pct"]) < 15
    assert by[("lanb", "loss_pct")]["expected"] == pytest.approx(100 * (1 - 0.95 ** 4), rel=1e-3)
    assert abs(by[("lanb", "loss_pct")]["measured"] - by[("lanb", "loss_pct")]["expected"]) < 9


HYBRID = """
name: lbhyb
networks:
  - name: mix
    kind: hybrid
    segments:
      - {profile: wifi-80211n-2.4ghz, share: 0.5, link: {loss_pct: 0}}
      - {profile: fast-ethernet, share: 0.5}
nodes:
  - group: gw
    role: k3s-server
    networks: [{name: mix, uplink: true}]
  - group: d
    role: phone
    count: 4
    networks: [mix]
""".replace("name: lbhyb\n", f"name: {tbname('lbhyb')}\n", 1)


@pytest.mark.measures
def test_hybrid_network_reaches_every_segment():
    with running_testbed(HYBRID) as tb:
        segs = tb.facts()["segments"]
        assert [(s["segment"], s["stations"]) for s in segs] == [(0, 2)]
        gw = tb.address("gw-1")
        rtt = {}
        for node in ("d-1", "d-3"):
            p = probes.ping(tb, node, gw, count=10, interval=0.02)
            assert p.received == 10, (node, p)
            rtt[node] = p.rtt_avg
        # wifi segment: 2 ms each way on the station link; fast ethernet: 0.1 ms
        assert rtt["d-1"] > 3.5 > rtt["d-3"], rtt
