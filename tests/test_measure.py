import json
import math
import shutil
import subprocess

import pytest

from edgelab.errors import BackendError
from edgelab.measure import (CpuSample, concurrent_goodput, parse_iperf3, parse_ping, percentile,
                             tcp_bytes_by_local_port, utilisation)


def test_parse_iperf3_tcp():
    text = json.dumps({"end": {"sum_sent": {"retransmits": 3},
                               "sum_received": {"bits_per_second": 12.5e6, "seconds": 5.0, "bytes": 7812500}}})
    r = parse_iperf3(text)
    assert r["goodput_mbit"] == pytest.approx(12.5) and r["retransmits"] == 3


def test_parse_iperf3_udp_discounts_loss():
    text = json.dumps({"end": {"sum": {"bits_per_second": 10e6, "seconds": 5, "bytes": 1, "lost_percent": 10.0,
                                       "jitter_ms": 0.4}}})
    r = parse_iperf3(text)
    assert r["goodput_mbit"] == pytest.approx(9.0) and r["jitter_ms"] == 0.4


def test_parse_iperf3_error_and_garbage():
    with pytest.raises(BackendError, match="unable to connect"):
        parse_iperf3(json.dumps({"error": "unable to connect to server"}))
    with pytest.raises(BackendError, match="did not print JSON"):
        parse_iperf3("iperf3: error")


# `ss -tinH state established` in an iperf3 server node: per port a control and a data connection
SS = """0       0      [::ffff:10.77.0.1]:5201 [::ffff:10.77.0.5]:47802
\t bbr wscale:9,9 rto:204 cwnd:14 bytes_sent:4 bytes_acked:4 bytes_received:164 segs_out:6
1833524 0      [::ffff:10.77.0.1]:5201 [::ffff:10.77.0.5]:47812
\t cubic wscale:9,9 rto:200 cwnd:10 bytes_acked:1 bytes_received:4480102240 segs_in:96090
0       0      10.77.0.1:5202 10.77.0.6:40000
\t cubic rto:200 cwnd:10 bytes_sent:52000 bytes_acked:51000 bytes_received:37 segs_in:9
"""


def test_tcp_bytes_by_local_port_sums_a_ports_connections():
    assert tcp_bytes_by_local_port(SS) == {5201: 164 + 4480102240, 5202: 37}
    # bytes_acked only where it is a whole field (not the "delivered" or "bytes_sent" ones)
    assert tcp_bytes_by_local_port(SS, "bytes_acked") == {5201: 5, 5202: 51000}
    assert tcp_bytes_by_local_port("") == {}


class _Loopback:
    """Every node is this host, reached on 127.0.0.1: enough of a Testbed for concurrent_goodput.
    ``refuse`` names clients whose iperf3 is pointed at a closed port."""

    def __init__(self, refuse=(), stall=None):
        self.refuse = set(refuse)
        self.stall = stall or {}   # node -> port of a listener that accepts and never answers

    def address(self, node, network=None):
        return "127.0.0.1"

    def run(self, node, argv, check=True, **kw):
        return subprocess.run(argv, capture_output=True, text=True, check=check)

    def popen(self, node, argv, **kw):
        argv = list(argv)
        if node in self.refuse:
            argv[argv.index("-p") + 1] = "9"  # discard: nobody listens
        if node in self.stall:
            argv[argv.index("-p") + 1] = str(self.stall[node])
        return subprocess.Popen(argv, **kw)


needs_iperf3 = pytest.mark.skipif(not shutil.which("iperf3") or not shutil.which("ss"), reason="needs iperf3 and ss")


@needs_iperf3
def test_concurrent_goodput_counts_each_flow_over_one_window():
    out = concurrent_goodput(_Loopback(), ["a", "b"], "srv", seconds=0.5, settle=0.2)
    for r in out.values():
        assert r["seconds"] == pytest.approx(0.5, abs=0.2)
        assert r["bytes"] > 0 and r["goodput_mbit"] == pytest.approx(r["bytes"] * 8 / r["seconds"] / 1e6)
        assert r["iperf3_goodput_mbit"] > 0


@needs_iperf3
def test_concurrent_goodput_names_the_client_whose_flow_never_started():
    with pytest.raises(BackendError, match=r"iperf3 to srv ended before every flow carried data: "
                                           r"b: iperf3 failed: unable to connect to server"):
        concurrent_goodput(_Loopback(refuse=["b"]), ["a", "b"], "srv", seconds=0.5, settle=0.2)


@needs_iperf3
def test_concurrent_goodput_blames_the_silent_flow_not_the_client_that_ran_to_its_end():
    # b's packets vanish (as behind a dead link-emulation delayer) while a's iperf3 runs its
    # whole duration and exits 0: the error names b, and does not print a's iperf3 JSON.
    import socket

    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(4)
    try:
        with pytest.raises(BackendError) as e:
            concurrent_goodput(_Loopback(stall={"b": hole.getsockname()[1]}), ["a", "b"], "srv", seconds=0.3,
                               settle=0.1)
    finally:
        hole.close()
    msg = str(e.value)
    assert msg.startswith("iperf3 flows from b to srv carried no data while a ran to its end"), msg
    assert "exited 0" not in msg and "{" not in msg


def test_parse_ping():
    text = """PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.
64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=20.4 ms
64 bytes from 10.0.0.2: icmp_seq=3 ttl=64 time=19.6 ms

--- 10.0.0.2 ping statistics ---
4 packets transmitted, 2 received, 50% packet loss, time 3004ms
"""
    r = parse_ping(text)
    assert r["rtts_ms"] == [20.4, 19.6] and r["loss_pct"] == 50.0


def test_percentile_and_utilisation():
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([5], 95) == 5
    assert math.isnan(percentile([], 50))
    assert utilisation(CpuSample(0, 1.0), CpuSample(10, 2.0), 0.25) == pytest.approx(0.4)
