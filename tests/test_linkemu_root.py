"""Root integration tests of linkemu on real namespaces, veths, a bridge and the NFQUEUE delayer.

Tolerances are wider than the benchmark targets because other jobs share the
two CPU cores; benchmarks/link_fidelity.py reports the precise figures.
"""

import json
import os
import re
import subprocess
import time

import pytest

from edgelab.errors import BackendError
from edgelab.linkemu import LinkEmulator, LinkParams, cleanup, detect_engine
from edgelab.linkemu.fidelity import measure_rate, ping, rx_bytes, sh, veth_pair

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")]

_N = [0]


def _prefix() -> str:
    _N[0] += 1
    return f"le{os.getpid() % 1000}{_N[0]}"


@pytest.fixture
def pair():
    with veth_pair(_prefix(), subnet=77) as p:
        yield p


@pytest.fixture
def emu(request, tmp_path):
    """The emulator with the default delayer program (C where built), or the one a test's
    ``@pytest.mark.parametrize("emu", [...], indirect=True)`` names: both programs must behave alike."""
    em = LinkEmulator(tag="le", state_dir=str(tmp_path / "le-state"), delayer_impl=getattr(request, "param", None))
    try:
        yield em
    finally:
        em.close()


def _mangle_rules(ns):
    return [l for l in sh(["ip", "netns", "exec", ns, "iptables", "-t", "mangle", "-S"]).stdout.splitlines()
            if l.startswith("-A")]


def _nft_tables(ns):
    return sh(["ip", "netns", "exec", ns, "nft", "list", "tables"]).stdout


def _qdiscs(ns, dev):
    return sh(["tc", "-n", ns, "qdisc", "show", "dev", dev]).stdout


def _ns_pids(ns):
    return sh(["ip", "netns", "pids", ns], check=False).stdout.split()


def _bound_queues(ns):
    """NFQUEUE numbers bound in ``ns`` (by any process: the shared delayer runs outside it)."""
    out = sh(["ip", "netns", "exec", ns, "cat", "/proc/net/netfilter/nfnetlink_queue"], check=False).stdout
    return sorted(int(line.split()[0]) for line in out.splitlines() if line.strip())


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _shaped(measure, field, lo, hi, tries=3):
    """``measure()``'s ``field`` until lo < it: a shaper's cap is a ceiling that no
    attempt may exceed (``hi``, checked on every one), while falling short of it is what a
    sender that lost its CPU to another job on the two shared cores does (a CI run measured
    37 of 50 Mbit/s, and 70 of 100, on a busy host where these pass alone). A shaper set
    too low fails all the tries; the measurements are in the message."""
    seen = []
    for _ in range(tries):
        r = measure()
        value = getattr(r, field)
        assert value < hi, r
        seen.append(r)
        if value > lo:
            return
    pytest.fail(f"below {lo} in {tries} tries: {seen}")


def test_detect_engine_is_cached_and_valid():
    e = detect_engine()
    assert e in ("netem", "fallback") and detect_engine() is e


@pytest.mark.parametrize("rate", [10, 50])
def test_rate_is_the_configured_l2_rate(pair, emu, rate):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=rate))
    _shaped(lambda: measure_rate(pair.a, pair.b, pair.dev_b, pair.addr_b, seconds=2.0, warmup=1.0,
                                 udp_mbit=1.3 * rate), "l2_mbit", 0.94 * rate, 1.06 * rate)


def test_tcp_goodput_is_below_but_near_the_l2_rate(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=20))
    # TCP payload over 1514-byte frames is at most 95.6 % of the L2 rate.
    _shaped(lambda: measure_rate(pair.a, pair.b, pair.dev_b, pair.addr_b, seconds=2.0, warmup=1.0, port=5203),
            "goodput_mbit", 0.85 * 20, 0.965 * 20)


@pytest.mark.parametrize("rate,delay", [(50, 5), (100, 10)])
def test_tcp_over_a_delayed_link_fills_the_rate(pair, emu, rate, delay):
    """The outgoing direction is delayed where it arrives: a sender's socket is not charged
    for packets the delayer holds, so TCP Small Queues do not cap the flow (they did when
    the delay sat on the sender's egress: 9 Mbit/s at 50 Mbit/s + 5 ms)."""
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=rate, delay_ms=delay))
    for src, dst, dev, addr, port in ((pair.a, pair.b, pair.dev_b, pair.addr_b, 5204),
                                      (pair.b, pair.a, pair.dev_a, pair.addr_a, 5205)):
        _shaped(lambda: measure_rate(src, dst, dev, addr, seconds=3.0, warmup=1.0, port=port),
                "goodput_mbit", 0.85 * rate, 0.965 * rate)


def test_loss_is_not_a_send_error_for_udp(pair, emu):
    """A lost frame is lost on the wire: the UDP sender's sendto() never fails."""
    import sys

    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, loss_pct=20))
    code = ("import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); err=0\n"
            "for i in range(2000):\n"
            "    try: s.sendto(b'x'*100, (%r, 9))\n"
            "    except OSError: err+=1\n"
            "print(err)" % pair.addr_b)
    cp = sh(["ip", "netns", "exec", pair.a, sys.executable, "-c", code])
    assert cp.stdout.strip() == "0"


def test_rate_applies_to_the_reverse_direction_too(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=20))
    _shaped(lambda: measure_rate(pair.b, pair.a, pair.dev_a, pair.addr_a, seconds=2.0, warmup=1.0, port=5202,
                                 udp_mbit=30), "l2_mbit", 0.94 * 20, 1.06 * 20)


@pytest.mark.measures
@pytest.mark.parametrize("emu,delay", [("c", 10), ("python", 10), (None, 50)], indirect=["emu"])
def test_ping_rtt_is_twice_the_one_way_delay(pair, emu, delay):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, delay_ms=delay))
    p = ping(pair.b, pair.addr_a, count=20, interval=0.05)
    assert p.received == 20
    assert 2 * delay - 0.2 <= p.rtt_min
    assert p.rtt_avg <= 2 * delay + 4.0
    prog = emu.delayer_info()["program"]
    assert prog["impl"] == (emu.delayer_impl or "c"), prog   # C by default: scripts/bootstrap builds it
    exe = os.readlink(f"/proc/{emu.state()['delayer']['pid']}/exe")
    assert (exe == prog["path"]) if prog["impl"] == "c" else "python" in os.path.basename(exe)


@pytest.mark.measures
@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_jitter_spreads_rtt_within_bounds(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, delay_ms=20, jitter_ms=5))
    p = ping(pair.a, pair.addr_b, count=40, interval=0.06)
    assert p.received == 40
    assert p.rtt_min >= 2 * 15 - 0.2 and p.rtt_max <= 2 * 25 + 5
    assert p.rtt_mdev > 1.0           # without jitter mdev is ~0.05 ms


@pytest.mark.measures
def test_loss_matches_configured_per_direction(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, loss_pct=5))
    p = ping(pair.a, pair.addr_b, count=2500, interval=0.002, timeout=1)
    # One-way 5 % on both directions: round-trip loss 9.75 %, sd of the estimate ~0.4 pp.
    assert p.loss_one_way * 100 == pytest.approx(5, abs=1.5)


@pytest.mark.measures
def test_rate_delay_and_loss_together(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b,
                   LinkParams(rate_mbit=10, delay_ms=10, loss_pct=10))
    p = ping(pair.a, pair.addr_b, count=300, interval=0.01, timeout=1)
    assert p.rtt_min >= 19.8 and p.rtt_avg <= 24
    assert p.loss_one_way * 100 == pytest.approx(10, abs=4)
    assert "htb" in _qdiscs(pair.a, pair.dev_a) and "htb" in _qdiscs(pair.b, pair.dev_b)


@pytest.mark.measures
@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_reapply_replaces_previous_parameters(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, delay_ms=30))
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, delay_ms=5))
    p = ping(pair.a, pair.addr_b, count=10, interval=0.05)
    assert 9.8 <= p.rtt_min and p.rtt_avg < 14
    # one rule per side: traffic into a is delayed in a, traffic out of a where it arrives, in b
    assert len(_mangle_rules(pair.a)) == 1 and len(_mangle_rules(pair.b)) == 1


def test_clear_removes_rules_qdiscs_and_delayer(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=10, delay_ms=20, loss_pct=5))
    pid = emu.state()["delayer"]["pid"]
    for ns in (pair.a, pair.b):
        assert len(_mangle_rules(ns)) == 1 and "le_loss" in _nft_tables(ns)
        assert len(_bound_queues(ns)) == 1 and _ns_pids(ns) == []   # served from outside
    assert {d["ns"] for d in emu.delayers()} == {pair.a, pair.b}
    emu.clear(pair.a, pair.dev_a)
    for ns in (pair.a, pair.b):
        assert _mangle_rules(ns) == [] and "le_loss" not in _nft_tables(ns)
        assert _bound_queues(ns) == []
    time.sleep(0.05)
    assert not _alive(pid) and emu.delayers() == []   # nothing left to delay: the delayer stopped
    assert "htb" not in _qdiscs(pair.a, pair.dev_a) and "htb" not in _qdiscs(pair.b, pair.dev_b)
    p = ping(pair.a, pair.addr_b, count=5, interval=0.05)
    assert p.received == 5 and p.rtt_avg < 5


def test_close_stops_the_delayer_of_every_namespace(tmp_path):
    """One delayer process serves the queues of all four namespaces; close stops it."""
    em = LinkEmulator(tag="le", state_dir=str(tmp_path / "st"))
    with veth_pair(_prefix(), subnet=79) as p1, veth_pair(_prefix(), subnet=80) as p2:
        try:
            em.apply_link(p1.a, p1.dev_a, p1.b, p1.dev_b, LinkParams(rate_mbit=50, delay_ms=5))
            em.apply_link(p2.a, p2.dev_a, p2.b, p2.dev_b, LinkParams(rate_mbit=50, delay_ms=5))
            served = em.delayers()
            assert {d["ns"] for d in served} == {p1.a, p1.b, p2.a, p2.b}
            assert len({d["pid"] for d in served}) == 1 and all(d["alive"] for d in served)
            pid = served[0]["pid"]
            for ns in (p1.a, p1.b, p2.a, p2.b):
                assert len(_bound_queues(ns)) == 1
        finally:
            em.close()
        em.close()   # idempotent
        for ns in (p1.a, p1.b, p2.a, p2.b):
            assert _bound_queues(ns) == [] and _mangle_rules(ns) == []
        assert not _alive(pid)
        assert em.state()["delayers"] == [] and em.state()["delayer"]["pid"] is None


def test_cleanup_from_state_after_a_crash(pair, tmp_path):
    em = LinkEmulator(tag="le", state_dir=str(tmp_path / "st"))
    try:
        em.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=50, delay_ms=5, loss_pct=1))
        st = json.loads(json.dumps(em.state()))   # must survive a JSON round trip
        pids = [st["delayer"]["pid"]]
        assert pids[0] and len(st["delayers"]) == 2  # one shared delayer, a record per side
        em._procs.clear()                           # the crashed process could not reap it
        cleanup(st)
        cleanup(st)                                 # tolerant of things already gone
        time.sleep(0.1)
        for ns in (pair.a, pair.b):
            assert _bound_queues(ns) == [] and _mangle_rules(ns) == []
            assert "le_loss" not in _nft_tables(ns)
        assert not _alive(pids[0])
        for pid in pids:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
    finally:
        em.close()


@pytest.mark.measures
@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_a_stopped_delayer_releases_what_it_holds_at_once(pair, emu):
    """SIGTERM (teardown) accepts every held packet then and there: an echo request held for
    1.5 s is answered right after close(), not dropped with the queue nor kept to its due time."""
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=100, delay_ms=1500))
    p = subprocess.Popen(["ip", "netns", "exec", pair.a, "ping", "-n", "-c", "1", "-W", "8", pair.addr_b],
                         stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)                   # the request is held now (due at ~1.5 s)
    t0 = time.monotonic()
    emu.close()
    out = p.communicate(timeout=15)[0]
    waited = time.monotonic() - t0
    assert " 0% packet loss" in out, out
    assert waited < 0.9, waited       # released at once (1.1 s were left); a dropped one is never answered
    rtt = float(re.search(r"time=([\d.]+) ms", out).group(1))
    assert 300 < rtt < 1300, rtt      # held ~0.4 s: not passed undelayed, not kept to 1.5 s (or 3 s)


@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_dead_delayer_drops_instead_of_passing_undelayed(pair, emu):
    emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=50, delay_ms=10))
    pid = emu.state()["delayer"]["pid"]
    os.kill(pid, 9)
    time.sleep(0.2)
    p = ping(pair.a, pair.addr_b, count=5, interval=0.05, timeout=1)
    assert p.received == 0
    # Reported, not silently restarted: the next change names the dead delayer.
    with pytest.raises(BackendError, match=f"delayer \\(pid {pid}\\) was killed by signal 9"):
        emu.apply_link(pair.a, pair.dev_a, pair.b, pair.dev_b, LinkParams(rate_mbit=50, delay_ms=20))


@pytest.mark.measures
@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_delayer_serves_several_queues_with_different_delays(emu):
    """Two links of one namespace (a router-like node) share one delayer process."""
    pre = _prefix()
    hub, x, y = f"{pre}h", f"{pre}x", f"{pre}y"
    try:
        for ns in (hub, x, y):
            sh(["ip", "netns", "add", ns])
        for i, (ns, d) in enumerate(((x, 5), (y, 25))):
            hd, nd = f"{pre}h{i}", f"{pre}n{i}"
            sh(["ip", "-n", hub, "link", "add", hd, "type", "veth", "peer", "name", nd, "netns", ns])
            sh(["ip", "-n", hub, "addr", "add", f"10.81.{i}.1/24", "dev", hd])
            sh(["ip", "-n", ns, "addr", "add", f"10.81.{i}.2/24", "dev", nd])
            sh(["ip", "-n", hub, "link", "set", hd, "up"])
            sh(["ip", "-n", ns, "link", "set", nd, "up"])
            emu.apply_link(hub, hd, ns, nd, LinkParams(rate_mbit=100, delay_ms=d))
        assert len(_bound_queues(hub)) == 2 and len({d["pid"] for d in emu.delayers()}) == 1
        px = ping(hub, "10.81.0.2", count=10, interval=0.05)
        py = ping(hub, "10.81.1.2", count=10, interval=0.05)
        assert 9.8 <= px.rtt_min and px.rtt_avg < 14
        assert 49.8 <= py.rtt_min and py.rtt_avg < 54
    finally:
        emu.close()
        for ns in (hub, x, y):
            sh(["ip", "netns", "del", ns], check=False)


@pytest.fixture
def cell():
    """AP namespace with a bridge; stations s1, s2 and a server attached to bridge ports."""
    pre = _prefix()
    ap = f"{pre}ap"
    nodes = {"s1": f"{pre}s1", "s2": f"{pre}s2", "srv": f"{pre}sv"}
    ports = {}
    try:
        sh(["ip", "netns", "add", ap])
        sh(["ip", "-n", ap, "link", "add", f"{pre}br", "type", "bridge"])
        sh(["ip", "-n", ap, "link", "set", f"{pre}br", "up"])
        for i, (role, ns) in enumerate(nodes.items()):
            sh(["ip", "netns", "add", ns])
            port, dev = f"{pre}p{role}", f"{pre}e{role}"
            sh(["ip", "-n", ap, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns])
            sh(["ip", "-n", ap, "link", "set", port, "master", f"{pre}br"])
            sh(["ip", "-n", ap, "link", "set", port, "up"])
            sh(["ip", "-n", ns, "addr", "add", f"10.82.0.{i + 2}/24", "dev", dev])
            sh(["ip", "-n", ns, "link", "set", dev, "up"])
            sh(["ip", "-n", ns, "link", "set", "lo", "up"])
            ports[role] = (port, dev)
        yield {"ap": ap, "pre": pre, "nodes": nodes, "ports": ports,
               "addr": {r: f"10.82.0.{i + 2}" for i, r in enumerate(nodes)}}
    finally:
        for ns in (ap, *nodes.values()):
            sh(["ip", "netns", "del", ns], check=False)


@pytest.mark.measures
@pytest.mark.parametrize("emu", ["c", "python"], indirect=True)
def test_bridge_port_peer_gets_delay_applied_on_node_side(cell, emu):
    ap, (port, dev) = cell["ap"], cell["ports"]["s1"]
    emu.apply_link(cell["nodes"]["s1"], dev, ap, port, LinkParams(rate_mbit=50, delay_ms=10))
    p = ping(cell["nodes"]["srv"], cell["addr"]["s1"], count=10, interval=0.05)
    assert p.received == 10 and 19.8 <= p.rtt_min and p.rtt_avg < 24


def _mac(ns, dev):
    return json.loads(sh(["ip", "-n", ns, "-j", "link", "show", dev]).stdout)[0]["address"]


def _upload_rates(cell, seconds=2.0):
    """Two simultaneous iperf3 uploads s1, s2 -> srv: Mbit/s (L2) of s1, s2 at the AP, and at srv."""
    ap, srv, srv_dev = cell["ap"], cell["nodes"]["srv"], cell["ports"]["srv"][1]
    servers = [subprocess.Popen(["ip", "netns", "exec", srv, "iperf3", "-s", "-1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in (5301, 5302)]
    try:
        time.sleep(0.3)
        clients = [subprocess.Popen(["ip", "netns", "exec", cell["nodes"][r], "iperf3", "-c", cell["addr"]["srv"],
                                     "-p", str(port), "-t", str(seconds + 2)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL) for r, port in (("s1", 5301), ("s2", 5302))]
        time.sleep(1.2)
        ports = [cell["ports"]["s1"][0], cell["ports"]["s2"][0]]
        b0 = [rx_bytes(ap, p) for p in ports] + [rx_bytes(srv, srv_dev)]
        t0 = time.monotonic()
        time.sleep(seconds)
        b1 = [rx_bytes(ap, p) for p in ports] + [rx_bytes(srv, srv_dev)]
        dt = time.monotonic() - t0
        for c in clients:
            c.wait(timeout=20)
    finally:
        for s in servers:
            s.kill()
            s.wait()
    return [(y - x) * 8 / dt / 1e6 for x, y in zip(b0, b1)]


def _shared_cell(cell, emu, rates):
    """Per-station links at ``rates`` (s1, s2), then one 20 Mbit/s airtime budget with per-station shares."""
    ap = cell["ap"]
    for role, rate in zip(("s1", "s2"), rates):
        port, dev = cell["ports"][role]
        emu.apply_link(cell["nodes"][role], dev, ap, port, LinkParams(rate_mbit=rate))
    ports = [cell["ports"][r][0] for r in ("s1", "s2")]
    macs = [_mac(cell["nodes"][r], cell["ports"][r][1]) for r in ("s1", "s2")]
    emu.apply_shared_medium(ap, "cell", ports, 20, macs)
    return emu.ifb_name("cell")


@pytest.mark.measures
def test_shared_medium_splits_capacity_evenly_between_two_senders(cell, emu):
    ap = cell["ap"]
    ifb = _shared_cell(cell, emu, (100, 100))
    # Composes with apply_link: the port keeps its HTB root, the clsact sits beside it.
    q = _qdiscs(ap, cell["ports"]["s1"][0])
    assert "htb 1:" in q and "clsact" in q

    # Station-to-station crosses the shared medium twice per packet (up and down).
    before = int(json.loads(sh(["ip", "-n", ap, "-j", "-s", "link", "show", ifb]).stdout)[0]["stats64"]["tx"]["packets"])
    p = ping(cell["nodes"]["s1"], cell["addr"]["s2"], count=20, interval=0.01)
    after = int(json.loads(sh(["ip", "-n", ap, "-j", "-s", "link", "show", ifb]).stdout)[0]["stats64"]["tx"]["packets"])
    assert p.received == 20 and 80 <= after - before <= 120   # 20 x (2 request + 2 reply) + ARP/ND

    s1, s2, total = _upload_rates(cell)
    assert total == pytest.approx(20, rel=0.12)
    # Each station has its own HTB class: DCF-like equal shares even on a FIFO leaf.
    assert s1 == pytest.approx(10, rel=0.15) and s2 == pytest.approx(10, rel=0.15)
    # And the classes were really used: both stations' classes carried bytes.
    out = sh(["tc", "-n", ap, "-s", "class", "show", "dev", ifb]).stdout  # this tc has no -j for classes
    sent = {cid: int(b) for cid, b in re.findall(r"class htb (\S+) .*\n Sent (\d+) bytes", out)}
    assert sent["a:100"] > 1e6 and sent["a:101"] > 1e6


def test_shared_medium_charges_a_broadcast_once_not_once_per_station(cell, emu):
    """The bridge floods a station's broadcast to every port; the air carries it once."""
    ap = cell["ap"]
    ifb = _shared_cell(cell, emu, (100, 100))
    s2_port, s2_dev = cell["ports"]["s2"]

    def tx(ns, dev):
        return int(json.loads(sh(["ip", "-n", ns, "-j", "-s", "link", "show", dev]).stdout)[0]["stats64"]["tx"]["packets"])

    i0, f0 = tx(ap, ifb), tx(ap, s2_port)
    sh(["ip", "netns", "exec", cell["nodes"]["s1"], "ping", "-b", "-c", "20", "-i", "0.01", "-W", "0.2",
        "10.82.0.255"], check=False)  # nobody answers a broadcast echo (icmp_echo_ignore_broadcasts)
    charged, flooded = tx(ap, ifb) - i0, tx(ap, s2_port) - f0
    assert flooded >= 20          # s2 still receives every broadcast ...
    # ... but only the sender's upstream copies crossed the budget (plus a few IPv6 ND/MLD
    # frames the stations send on their own); flooded copies would add another 20.
    assert 20 <= charged <= 30


@pytest.mark.measures
def test_shared_medium_lends_an_idle_share_to_the_busy_station(cell, emu):
    """s1's own link caps it at 4 Mbit/s: s2 borrows the rest of the 20 Mbit/s budget."""
    _shared_cell(cell, emu, (4, 100))
    s1, s2, total = _upload_rates(cell)
    assert s1 == pytest.approx(4, rel=0.15)
    # Far above its guaranteed third (6.7) and the even split (10): it borrowed s1's unused share.
    assert s2 >= 13.5
    assert total == pytest.approx(20, rel=0.12)


@pytest.mark.measures
def test_cli_apply_and_clear_in_the_current_namespace(pair):
    """The NixOS module's path: no peer namespace, run inside the node's namespace."""
    import sys
    base = ["ip", "netns", "exec", pair.a, sys.executable, "-m", "edgelab.linkemu"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        cp = subprocess.run(base + ["apply", "--dev", pair.dev_a, "--rate-mbit", "20", "--delay-ms", "10",
                                    "--loss-pct", "1", "--tag", "le-cli"], capture_output=True, text=True, env=env)
        assert cp.returncode == 0, cp.stderr
        assert len(_ns_pids(pair.a)) == 1 and len(_mangle_rules(pair.a)) == 2
        p = ping(pair.b, pair.addr_a, count=10, interval=0.05)
        assert p.rtt_min >= 19.8
        cp = subprocess.run(base + ["clear", "--dev", pair.dev_a, "--tag", "le-cli"], capture_output=True,
                            text=True, env=env)
        assert cp.returncode == 0, cp.stderr
        assert _ns_pids(pair.a) == [] and _mangle_rules(pair.a) == []
        assert "htb" not in _qdiscs(pair.a, pair.dev_a)
        bad = subprocess.run(base + ["apply", "--dev", pair.dev_a, "--loss-pct", "200", "--tag", "le-cli"],
                             capture_output=True, text=True, env=env)
        assert bad.returncode == 1 and "loss_pct" in bad.stderr
    finally:
        for pid in _ns_pids(pair.a):
            os.kill(int(pid), 15)
        subprocess.run(["rm", "-rf", "/run/le-cli-linkemu"])
