"""The delayer's bridge queue: a bridged frame's in-port and out-port delays in one queue pass.

No kernel objects: a Delayer's port stages are driven with stand-in packets that record
when they are accepted (the NFQUEUE sockets are what tests/test_inprocess_root.py and
benchmarks/fidelity_under_load.py exercise for real).
"""

from __future__ import annotations

import pytest

from edgelab.linkemu import commands as C
from edgelab.linkemu.delayer import BridgePorts, Delayer, QueueState, parse_config


class Pkt:
    """What the delayer reads of a packet: its mark (the in-stage), out-port index, verdict."""

    def __init__(self, mark: int, physoutdev: int, clock: list) -> None:
        self.mark, self.physoutdev, self._clock, self.accepted_at = mark, physoutdev, clock, None

    def accept(self) -> None:
        assert self.accepted_at is None, "verdict given twice"
        self.accepted_at = self._clock[0]


def _delayer(tmp_path, stages: dict[int, tuple[float, float, str, str]], clock: list, seed: int = 1):
    """A Delayer with bridge queue 1000 and ``stages`` {num: (delay_ms, jitter_ms, dev, dir)}
    wired as its reload would (ports by mark / by interface index = the number here), on the
    test's clock."""
    d = Delayer(str(tmp_path / "dl.json"), seed=seed, clock=lambda: clock[0])
    b = d.bridges[("ap", 1000)] = BridgePorts()
    for num, (dl, j, dev, kind) in stages.items():
        q = d.queues[("ap", num)] = QueueState("ap", num, dl / 1000, j / 1000, index=num)
        q.via, q.dev, q.dir = 1000, dev, kind
        (b.ins if kind == "from-peer" else b.outs)[num] = q
    return d, d._make_bridge_callback(b)


def _run(d, cb, arrivals: list[tuple[float, Pkt]], clock: list, until: float, step: float = 1e-5) -> None:
    """Feed packets at their arrival instants and release what is due, every ``step``."""
    arrivals = sorted(arrivals, key=lambda a: a[0])
    t = 0.0
    while t <= until:
        clock[0] = t
        while arrivals and arrivals[0][0] <= t:
            cb(arrivals.pop(0)[1])
        d.release_due(t)
        t = round(t + step, 9)


def test_a_bridged_frame_gets_its_in_port_and_out_port_delay_in_one_pass(tmp_path):
    # phone-1 (in-stage 1002, 2 ms; out-stage 1003, 2 ms) <-> server-1 (1000 in 0.05 ms, 1001 out 0.05 ms)
    clock = [0.0]
    stages = {1000: (0.05, 0, "server-1", "from-peer"), 1001: (0.05, 0, "server-1", "to-peer"),
              1002: (2.0, 0, "phone-1", "from-peer"), 1003: (2.0, 0, "phone-1", "to-peer")}
    d, cb = _delayer(tmp_path, stages, clock)
    up = Pkt(mark=1002, physoutdev=1001, clock=clock)      # phone-1 -> server-1
    down = Pkt(mark=1000, physoutdev=1003, clock=clock)    # server-1 -> phone-1
    unknown = Pkt(mark=0, physoutdev=99, clock=clock)      # between two undelayed ports
    _run(d, cb, [(0.001, up), (0.001, down), (0.001, unknown)], clock, until=0.01)
    assert up.accepted_at == pytest.approx(0.001 + 0.00205, abs=2e-5)
    assert down.accepted_at == pytest.approx(0.001 + 0.00205, abs=2e-5)
    assert unknown.accepted_at == pytest.approx(0.001, abs=1e-9)


def test_out_stage_starts_when_the_in_stage_was_due_and_keeps_order_per_port(tmp_path):
    # Two stations' frames to the same out-port: each waits its own in-delay, then they share the
    # out-port's FIFO in the order they left their in-stages (as two kernel queue passes would).
    clock = [0.0]
    stages = {1002: (3.0, 0, "phone-1", "from-peer"), 1004: (1.0, 0, "phone-2", "from-peer"),
              1001: (0.5, 0, "server-1", "to-peer")}
    d, cb = _delayer(tmp_path, stages, clock)
    a = Pkt(1002, 1001, clock)   # arrives first, long in-delay
    b = Pkt(1004, 1001, clock)   # arrives later, short in-delay: overtakes a (other port)
    _run(d, cb, [(0.0, a), (0.0005, b)], clock, until=0.01)
    assert b.accepted_at == pytest.approx(0.0005 + 0.0015, abs=2e-5)
    assert a.accepted_at == pytest.approx(0.0035, abs=2e-5)


def test_a_port_stage_never_reorders_its_frames_under_jitter(tmp_path):
    clock = [0.0]
    stages = {1002: (2.0, 1.0, "phone-1", "from-peer"), 1003: (2.0, 1.0, "phone-1", "to-peer")}
    d, cb = _delayer(tmp_path, stages, clock, seed=7)
    pkts = [Pkt(1002, 0, clock) for _ in range(200)]
    _run(d, cb, [(i * 0.0001, p) for i, p in enumerate(pkts)], clock, until=0.05)
    times = [p.accepted_at for p in pkts]
    assert all(t is not None for t in times)
    assert times == sorted(times)
    assert all(t - i * 0.0001 >= 0.001 - 2e-5 for i, t in enumerate(times))   # delay - jitter at least


def test_parse_config_tells_bridge_queues_and_port_stages_apart():
    gen, spaces = parse_config({"generation": 3, "namespaces": {"ap": {"netns": "/run/netns/ap", "queues": {
        "1000": {"delay_ms": 0, "jitter_ms": 0, "bridge": True},
        "1001": {"delay_ms": 2, "jitter_ms": 0.5, "via": 1000, "dev": "phone-1", "dir": "from-peer"},
        "1005": {"delay_ms": 1, "jitter_ms": 0}}}}})
    assert gen == 3
    qs = spaces["ap"][1]
    assert qs[1000][4] == "bridge" and qs[1000][2] is None
    assert qs[1001] == (0.002, 0.0005, 1000, "phone-1", "from-peer")
    assert qs[1005][2] is None
    with pytest.raises(ValueError, match="dir from-peer or to-peer"):
        parse_config({"namespaces": {"ap": {"queues": {"7": {"via": 1000, "dir": "in"}}}}})


def test_bridge_rule_and_ports_table_commands():
    assert C.nfqueue_bridge_rule_specs(1000) == [
        ["POSTROUTING", "-m", "physdev", "--physdev-is-bridged", "-j", "NFQUEUE", "--queue-num", "1000"]]
    script = C.nft_script(C.bridge_ports_cmds("el_x") + C.bridge_port_cmds("el_x", "phone-1", 1002)
                          + C.bridge_port_loss_cmds("el_x", "phone-1", 0.5))
    assert "add table bridge el_x_ports" in script
    assert "meta mark set iifname map @inport" in script
    assert "iifname vmap @loss" in script
    assert 'add element bridge el_x_ports inport { "phone-1" : 1002 }' in script
    assert 'add element bridge el_x_ports loss { "phone-1" : jump loss_phone_1 }' in script
    assert "numgen random mod 10000 < 50 counter drop" in script
    assert C.bridge_port_loss_cmds("el_x", "phone-1", 0, delete=True)[-1] == [
        "nft", "delete", "chain", "bridge", "el_x_ports", "loss_phone_1"]


def test_the_delayer_counts_release_lateness_as_linkemu_lateness_reads_it(tmp_path):
    from edgelab.linkemu import delayer, emulator, lateness

    assert delayer.STATS_FILE == lateness.STATS_FILE == emulator.DELAYER_STATS_FILE
    assert delayer.LATE_S == lateness.LATE_S
    clock = [0.0]
    d, cb = _delayer(tmp_path, {1002: (2.0, 0, "phone-1", "from-peer"), 1003: (2.0, 0, "phone-1", "to-peer")},
                     clock)
    on_time, late = Pkt(1002, 0, clock), Pkt(0, 1003, clock)
    cb(on_time)                 # due at 2 ms
    clock[0] = 0.001
    cb(late)                    # due at 3 ms
    d.release_due(0.002)        # on time
    d.release_due(0.0055)       # 2.5 ms late
    d.dump_lateness()
    got = lateness.read(tmp_path)
    assert got.released == 2 and got.late == 1
    assert got.late_sum_s == pytest.approx(0.0025) and got.late_max_s == pytest.approx(0.0025)
    assert on_time.accepted_at is not None and late.accepted_at is not None


def test_the_counters_are_rewritten_in_place_and_a_torn_record_is_not_believed(tmp_path):
    """The delayer rewrites one file in place (no new file and rename per dump: those stalled its
    loop for ~2 ms on a disk-backed /run); a reader that catches a half-written record sees its CRC
    fail and does not return made-up counters."""
    import os

    from edgelab.linkemu import lateness

    clock = [0.0]
    d, cb = _delayer(tmp_path, {1002: (1.0, 0, "phone-1", "from-peer")}, clock)
    d.dump_lateness()
    path = tmp_path / lateness.STATS_FILE
    inode = os.stat(path).st_ino
    cb(Pkt(1002, 0, clock))
    d.release_due(0.003)        # 2 ms late
    d.dump_lateness()
    assert os.stat(path).st_ino == inode                      # the same file, rewritten
    got = lateness.read(tmp_path)
    assert (got.released, got.late) == (1, 1) and got.pid == os.getpid()
    raw = path.read_bytes()
    body, check = raw.split(b"\n")[:2]
    path.write_bytes(body.replace(b'"released": 1', b'"released": 7') + b"\n" + check + b"\n")
    assert lateness.read(tmp_path) is None                    # old CRC, new bytes: torn
    path.write_bytes(body.replace(b'"released": 1', b'"released": 7'))
    assert lateness.read(tmp_path).released == 7             # plain JSON (Lateness.dump) is read as is
