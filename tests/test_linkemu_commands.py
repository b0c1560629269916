"""Pure tests of the linkemu command builders, delayer scheduling and input checks (no root)."""

import random
import subprocess

import pytest

from edgelab.errors import BackendError
from edgelab.linkemu import LinkParams
from edgelab.linkemu import commands as C
from edgelab.linkemu.__main__ import _dry_run
from edgelab.linkemu.delayer import release_time
from edgelab.linkemu.emulator import LinkEmulator, _check_link
from edgelab.linkemu.nsexec import in_ns


def test_htb_rate_cmds_cap_rate_and_ceil():
    cmds = C.htb_rate_cmds("v0", 10)
    assert cmds[0] == ["tc", "qdisc", "replace", "dev", "v0", "root", "handle", "1:", "htb", "default", "10"]
    cls = cmds[1]
    assert cls[cls.index("rate") + 1] == "10mbit" and cls[cls.index("ceil") + 1] == "10mbit"
    assert cls[cls.index("classid") + 1] == "1:10"


def test_htb_burst_scales_with_rate_but_has_a_floor():
    assert C.htb_burst_bytes(1) == 4 * C.FRAME_BYTES          # 1 Mbit/s: floor of 4 frames
    assert C.htb_burst_bytes(200) == 25000                    # 200 Mbit/s: 1 ms of traffic
    assert C.htb_quantum_bytes(1000) == 200000 and C.htb_quantum_bytes(0.1) == C.FRAME_BYTES


def test_fractional_values_are_formatted_without_exponent():
    cmds = C.htb_rate_cmds("v0", 0.5)
    assert "0.5mbit" in cmds[1]
    assert C.netem_args(LinkParams(1, delay_ms=2, jitter_ms=0.25, loss_pct=0.5))[:5] == \
        ["delay", "2ms", "0.25ms", "loss", "0.5%"]


def test_netem_engine_puts_netem_under_the_htb_class():
    cmds = C.netem_egress_cmds("v0", LinkParams(50, delay_ms=10, jitter_ms=1, loss_pct=5))
    assert len(cmds) == 3
    netem = cmds[2]
    assert netem[netem.index("parent") + 1] == "1:10" and "netem" in netem
    assert netem[netem.index("delay") + 1:netem.index("delay") + 3] == ["10ms", "1ms"]
    assert netem[netem.index("loss") + 1] == "5%"


def test_netem_engine_without_rate_uses_root_netem_and_nothing_when_all_zero():
    cmds = C.netem_egress_cmds("v0", LinkParams(0, delay_ms=5))
    assert len(cmds) == 1 and cmds[0][5] == "root" and "netem" in cmds[0] and "loss" not in cmds[0]
    assert C.netem_egress_cmds("v0", LinkParams(0)) == []
    assert len(C.netem_egress_cmds("v0", LinkParams(10))) == 2   # rate only: no netem child


def test_netem_limit_covers_bandwidth_delay_product():
    link = LinkParams(200, delay_ms=100)
    bdp_packets = 200e6 / 8 * 0.1 / 1514
    assert C.netem_limit(link) >= 2 * bdp_packets - 1
    assert C.netem_limit(LinkParams(1, delay_ms=1)) == 1000


def test_nft_loss_threshold_and_both_directions():
    cmds = C.nft_loss_cmds("le", "v-0.x", 5)
    table = cmds[0][-1]
    assert table == "le_loss_v_0_x"                         # valid nft identifier
    rules = [c for c in cmds if c[:3] == ["nft", "add", "rule"]]
    assert {r[6] for r in rules} == {"iifname", "oifname"}
    for r in rules:
        assert r[7] == "v-0.x" and r[r.index("mod") + 1] == "10000" and r[r.index("<") + 1] == "500"
        assert r[-1] == "drop"
    assert C.loss_threshold(0.01) == 1 and C.loss_threshold(100) == 10000
    assert C.nft_loss_clear_cmds("le", "v-0.x") == [["nft", "delete", "table", "inet", "le_loss_v_0_x"]]


def test_nfqueue_rules_have_no_bypass_and_delete_mirrors_add():
    add = C.iptables_nfqueue_cmds("v0", 1000, 1001)
    dele = C.iptables_nfqueue_cmds("v0", 1000, 1001, delete=True)
    assert all("--queue-bypass" not in c for c in add)
    assert [c[0] for c in add] == ["iptables", "iptables", "ip6tables", "ip6tables"]
    assert ["-A", "PREROUTING", "-i", "v0", "-j", "NFQUEUE", "--queue-num", "1000"] == add[0][4:]
    assert ["-A", "POSTROUTING", "-o", "v0", "-j", "NFQUEUE", "--queue-num", "1001"] == add[1][4:]
    assert [[x if x != "-D" else "-A" for x in c] for c in dele] == add


def test_shared_medium_redirects_both_hooks_of_every_port_via_clsact():
    cmds = C.shared_medium_cmds("le-ifb", ["p1", "p2"], 30, ["pfifo", "limit", "1000"])
    assert cmds[0] == ["ip", "link", "add", "le-ifb", "type", "ifb"]
    cls = next(c for c in cmds if c[1] == "class")
    assert cls[cls.index("rate") + 1] == "30mbit" and cls[cls.index("parent") + 1] == "a:"
    # No MACs: the default class is the only child, it may use the whole budget.
    children = [c for c in cmds if c[1] == "class" and c[c.index("parent") + 1] == "a:1"]
    assert [c[c.index("classid") + 1] for c in children] == ["a:10"]
    assert children[0][children[0].index("ceil") + 1] == "30mbit"
    redirects = [c for c in cmds if c[1] == "filter" and "redirect" in c]
    assert {(c[4], c[5]) for c in redirects} == {("p1", "ingress"), ("p1", "egress"),
                                                 ("p2", "ingress"), ("p2", "egress")}
    assert all(c[-4:] == ["egress", "redirect", "dev", "le-ifb"] for c in redirects)
    # Flooded broadcast/multicast copies leave towards stations uncharged, ahead of the redirect.
    passes = [c for c in cmds if c[1] == "filter" and "u8" in c]
    assert {(c[4], c[5]) for c in passes} == {("p1", "egress"), ("p2", "egress")}
    assert all(c[c.index("u8") + 1:c.index("u8") + 5] == ["0x01", "0x01", "at", "-14"] for c in passes)
    for port in ("p1", "p2"):
        prio = {("pass" if "u8" in c else "redirect"): int(c[c.index("prio") + 1])
                for c in cmds if c[1] == "filter" and c[4] == port and c[5] == "egress"}
        assert prio["pass"] < prio["redirect"]
    assert ["tc", "qdisc", "replace", "dev", "p1", "clsact"] in cmds
    with pytest.raises(ValueError):
        C.redirect_filter_cmd("p1", "sideways", "x")


def test_shared_medium_gives_each_station_a_class_found_by_its_mac():
    macs = ["02:ed:00:00:00:01", "02:ed:00:00:00:02", "02:ed:00:00:00:03"]
    cmds = C.shared_medium_cmds("le-ifb", ["p1", "p2", "p3"], 30, ["pfifo", "limit", "250"], macs)
    children = {c[c.index("classid") + 1]: c for c in cmds if c[1] == "class" and "a:1" == c[c.index("parent") + 1]}
    assert set(children) == {"a:10", "a:100", "a:101", "a:102"}
    # The stations' equal guarantees fill the budget but for the default class's 1 %; every
    # class may borrow up to the whole budget, with one quantum.
    assert {cid: c[c.index("rate") + 1] for cid, c in children.items()} == {
        "a:10": "0.3mbit", "a:100": "9.9mbit", "a:101": "9.9mbit", "a:102": "9.9mbit"}
    assert all(c[c.index("ceil") + 1] == "30mbit" for c in children.values())
    assert len({c[c.index("quantum") + 1] for c in children.values()}) == 1
    leaves = [c for c in cmds if c[1] == "qdisc" and c[-3:] == ["pfifo", "limit", "250"]]
    assert sorted(c[c.index("parent") + 1] for c in leaves) == sorted(children)
    classify = [c for c in cmds if c[1] == "filter" and c[4] == "le-ifb"]
    # Source before destination: a station-to-station frame is charged to its sender on both legs.
    assert [(c[c.index("prio") + 1], c[c.index("ether") + 1], c[c.index("ether") + 2], c[-1]) for c in classify] == [
        ("1", "src", macs[0], "a:100"), ("1", "src", macs[1], "a:101"), ("1", "src", macs[2], "a:102"),
        ("2", "dst", macs[0], "a:100"), ("2", "dst", macs[1], "a:101"), ("2", "dst", macs[2], "a:102")]
    with pytest.raises(ValueError, match="2 station MACs for 3 ports"):
        C.shared_medium_cmds("le-ifb", ["p1", "p2", "p3"], 30, ["pfifo"], macs[:2])
    assert C.station_classid(0xFF) == "a:1ff"
    with pytest.raises(ValueError):
        C.station_classid(-1)


def test_run_batched_groups_consecutive_tc_commands(monkeypatch):
    from edgelab.linkemu import nsexec
    calls = []

    def fake_run(argv, input=None, **kw):
        calls.append((argv, input))
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(nsexec.subprocess, "run", fake_run)
    nsexec.run_batched("ns1", [["ip", "link", "add", "x", "type", "ifb"],
                               ["tc", "qdisc", "replace", "dev", "x", "root", "htb"],
                               ["tc", "class", "replace", "dev", "x", "classid", "a:1"],
                               ["ip", "link", "set", "x", "up"],
                               ["tc", "filter", "add", "dev", "x"]])
    assert [c[0] for c in calls] == [
        ["ip", "-n", "ns1", "link", "add", "x", "type", "ifb"],
        ["tc", "-n", "ns1", "-batch", "-"],
        ["ip", "-n", "ns1", "link", "set", "x", "up"],
        ["tc", "-n", "ns1", "-batch", "-"]]
    assert calls[1][1] == "qdisc replace dev x root htb\nclass replace dev x classid a:1\n"
    with pytest.raises(ValueError, match="cannot be passed"):
        nsexec.run_batched(None, [["tc", "qdisc", "add", "dev", "a b"]])


def test_run_batched_reports_the_failing_batch(monkeypatch):
    from edgelab.linkemu import nsexec
    monkeypatch.setattr(nsexec.subprocess, "run", lambda argv, **kw: subprocess.CompletedProcess(
        argv, 1, "", "Command failed -:2"))
    with pytest.raises(BackendError, match=r"(?s)Command failed -:2.*class replace dev x"):
        nsexec.run_batched(None, [["tc", "qdisc", "add", "dev", "x"], ["tc", "class", "replace", "dev", "x"]])


def test_ingress_ifb_netem_for_real_nodes():
    cmds = C.ingress_ifb_netem_cmds("wlan0", "edgelab-in", LinkParams(65, delay_ms=2, loss_pct=1))
    assert ["tc", "filter", "add", "dev", "wlan0", "ingress"] == cmds[3][:6]
    netem = cmds[-1]
    assert netem[4] == "edgelab-in" and "netem" in netem and "loss" in netem


def test_dry_run_per_engine():
    link = LinkParams(65, delay_ms=2, jitter_ms=0.5, loss_pct=0.5)
    fb = [" ".join(c) for c in _dry_run("fallback", "edgelab", "wlan0", link)]
    assert any("NFQUEUE" in c for c in fb) and any("numgen random" in c for c in fb)
    assert not any("netem" in c for c in fb)
    ne = [" ".join(c) for c in _dry_run("netem", "edgelab", "wlan0", link)]
    assert any("netem delay 2ms 0.5ms loss 0.5%" in c for c in ne)
    assert not any("NFQUEUE" in c for c in ne)


def test_in_ns_prefix():
    assert in_ns("n1", ["tc", "qdisc"]) == ["tc", "-n", "n1", "qdisc"]
    assert in_ns("n1", ["nft", "-f", "-"]) == ["ip", "netns", "exec", "n1", "nft", "-f", "-"]
    assert in_ns(None, ["tc"]) == ["tc"]


def _simulate(gap_s, n=5000, delay=0.010, jitter=0.005):
    rng = random.Random(1)
    last, now, outs = 0.0, 0.0, []
    for _ in range(n):
        now += gap_s
        t = release_time(now, delay, jitter, last, rng)
        assert t >= last                       # never reorders
        assert now + delay - jitter - 1e-12 <= t <= now + delay + jitter + 1e-12
        last = t
        outs.append(t - now)
    return sum(outs) / n


def test_release_time_sparse_packets_get_unbiased_jitter():
    # Packets further apart than 2x jitter never wait for their predecessor: mean = delay.
    assert _simulate(gap_s=0.011) == pytest.approx(0.010, abs=0.0003)


def test_release_time_dense_packets_keep_order_at_the_cost_of_a_higher_mean():
    # Back-to-back packets: keeping order pushes the mean towards delay + jitter (documented).
    mean = _simulate(gap_s=0.0001)
    assert 0.012 < mean <= 0.015


def test_release_time_without_jitter_is_exact():
    assert release_time(1.0, 0.05, 0.0, 0.0, random.Random(0)) == pytest.approx(1.05)


@pytest.mark.parametrize("kw,msg", [({"rate_mbit": -1}, "rate_mbit"), ({"loss_pct": 150}, "loss_pct"),
                                    ({"delay_ms": 1, "jitter_ms": 2}, "jitter_ms"),
                                    ({"delay_ms": float("nan")}, "delay_ms")])
def test_bad_link_params_are_rejected_with_the_field_name(kw, msg):
    base = {"rate_mbit": 10}
    base.update(kw)
    with pytest.raises(BackendError, match=msg):
        _check_link(LinkParams(**base), "link n1/v0")


def test_unknown_engine_is_a_clear_error():
    with pytest.raises(BackendError, match="unknown link emulation engine"):
        LinkEmulator("tbf-magic", tag="le")


def test_ifb_names_fit_ifnamsiz():
    em = LinkEmulator.__new__(LinkEmulator)
    em.tag = "le"
    assert em.ifb_name("cell") == "le-cell"
    long = em.ifb_name("a-very-long-cell-name")
    assert len(long) <= 15 and long.startswith("le-")
    assert long != em.ifb_name("a-very-long-cell-name2")


def test_peer_side_loss_filters_frames_entering_a_bridge_port():
    cmds = C.nft_loss_cmds("le", "phone-1", 5, egress=False, family="bridge")
    assert cmds[0] == ["nft", "add", "table", "bridge", "le_loss_phone_1"]
    assert not any("postrouting" in " ".join(c) for c in cmds)
    assert cmds[-1][5:] == ["in", "iifname", "phone-1", "numgen", "random", "mod", str(C.LOSS_SCALE), "<",
                            str(C.loss_threshold(5)), "counter", "drop"]
    assert C.nft_loss_clear_cmds("le", "phone-1", "bridge") == [["nft", "delete", "table", "bridge",
                                                                  "le_loss_phone_1"]]
    with pytest.raises(ValueError):
        C.nft_loss_cmds("le", "p", 5, family="bridge")  # a bridge port has no egress hook here


def test_peer_side_delay_matches_the_bridge_port_with_physdev():
    (spec,) = C.nfqueue_rule_specs("phone-1", 1001, None, bridge_port=True)
    assert spec == ["PREROUTING", "-m", "physdev", "--physdev-in", "phone-1", "-j", "NFQUEUE", "--queue-num", "1001"]
    (spec,) = C.nfqueue_rule_specs("eth0", 1002)
    assert spec[:3] == ["PREROUTING", "-i", "eth0"]
    cmds = C.iptables_nfqueue_cmds("phone-1", 1001, None, delete=True, families=("iptables",), bridge_port=True)
    assert cmds == [["iptables", "-w", "-t", "mangle", "-D", "PREROUTING", "-m", "physdev", "--physdev-in",
                     "phone-1", "-j", "NFQUEUE", "--queue-num", "1001"]]


def test_a_control_port_returns_before_the_queue_in_both_directions():
    specs = C.nfqueue_rule_specs("eth0", 7, 8, control_port=8022)
    assert specs == [
        ["PREROUTING", "-i", "eth0", "-p", "tcp", "--dport", "8022", "-j", "RETURN"],
        ["PREROUTING", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", "7"],
        ["POSTROUTING", "-o", "eth0", "-p", "tcp", "--sport", "8022", "-j", "RETURN"],
        ["POSTROUTING", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", "8"]]
    # deleted with the same port, or the RETURN rules would stay behind
    dels = C.iptables_nfqueue_cmds("eth0", 7, 8, delete=True, families=("iptables",), control_port=8022)
    assert [c[5:] for c in dels] == specs and all(c[4] == "-D" for c in dels)
    assert C.nfqueue_rule_specs("eth0", 7, 8) == [specs[1], specs[3]]


def test_batched_peer_side_rules_are_one_restore_and_one_nft_transaction():
    specs = C.nfqueue_rule_specs("phone-1", 1000, None, bridge_port=True) + \
        C.nfqueue_rule_specs("phone-2", 1001, None, bridge_port=True)
    text = C.iptables_restore_text(specs)
    assert text.splitlines() == [
        "*mangle",
        "-A PREROUTING -m physdev --physdev-in phone-1 -j NFQUEUE --queue-num 1000",
        "-A PREROUTING -m physdev --physdev-in phone-2 -j NFQUEUE --queue-num 1001",
        "COMMIT"]
    script = C.nft_script(C.nft_loss_cmds("le", "phone-1", 5, egress=False, family="bridge"))
    assert script.splitlines()[0] == "add table bridge le_loss_phone_1"
    assert len(script.splitlines()) == 3
    with pytest.raises(ValueError):
        C.nft_script([["iptables", "-A"]])


@pytest.mark.parametrize("macs,msg", [(["02:ed:00:00:00:01"], "1 station MACs for 2 ports"),
                                      (["02:ed:00:00:00:01", "02-ed-00-00-00-02"], "'02-ed-00-00-00-02' is not a MAC")])
def test_shared_medium_rejects_bad_station_macs_before_touching_anything(macs, msg):
    em = LinkEmulator.__new__(LinkEmulator)  # no kernel state: the check must come first
    em.tag = "le"
    with pytest.raises(BackendError, match=msg):
        em.apply_shared_medium("el-x-ap", "cell", ["p1", "p2"], 20, macs)
