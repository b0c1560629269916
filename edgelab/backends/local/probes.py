"""Real-traffic probes run inside testbed nodes: ping (delay/jitter/loss) and iperf3 (rate).

Thin adapters that parse the tools' output into numbers; used by
``calibrate`` and by the integration tests.

``ping -U`` is used on purpose: by default ping takes the receive time from
the kernel's arrival timestamp, which is set *before* an ingress delay
(the fallback engine's NFQUEUE hold on PREROUTING), so the last hop's
ingress delay would be invisible. ``-U`` measures user-to-user latency,
which is what an application sees.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...errors import BackendError
from ...linkemu.fidelity import PingResult, parse_ping_summary

#: UDP payload used for rate probes, and the L2 frame it makes (UDP 8 + IPv4 20 + Ethernet 14).
UDP_PAYLOAD = 1400
UDP_FRAME = UDP_PAYLOAD + 42


def ping(tb: Any, src: str, dst_ip: str, *, count: int = 50, interval: float = 0.02,
         timeout: float = 60) -> PingResult:
    cp = tb.run(src, ["ping", "-U", "-n", "-q", "-c", str(count), "-i", str(interval), "-W", "1", dst_ip],
                timeout=timeout, check=False)
    result = parse_ping_summary(cp.stdout)
    if result is None:
        raise BackendError(f"ping from {src} to {dst_ip} gave no summary: {cp.stdout[-300:]} {cp.stderr[-300:]}")
    return result


def iperf3(tb: Any, client: str, server: str, server_ip: str, *, seconds: float = 2.0, udp_mbit: float = 0,
           port: int = 5201, reverse: bool = False, extra: tuple[str, ...] = ()) -> dict:
    """One iperf3 run (TCP, or UDP at ``udp_mbit`` offered load); returns its parsed JSON ``end``.

    The server is a one-shot (``-1``) process in ``server``; the testbed's
    popen tracking kills it at teardown should the client fail.
    """
    srv = tb.popen(server, ["iperf3", "-s", "-1", "-p", str(port)], stdout=open("/dev/null", "w"),
                   stderr=open("/dev/null", "w"))
    argv = ["iperf3", "-c", server_ip, "-p", str(port), "-t", str(seconds), "-J", "--connect-timeout", "3000"]
    if udp_mbit:
        # 8 MB socket buffer: an egress NFQUEUE hold keeps datagrams charged to the socket.
        argv += ["-u", "-b", f"{udp_mbit}M", "-l", str(UDP_PAYLOAD), "-w", "8M"]
    if reverse:
        argv.append("-R")
    argv += list(extra)
    try:
        for attempt in range(20):  # wait until the server listens
            cp = tb.run(client, argv, timeout=seconds + 30, check=False)
            out = json.loads(cp.stdout) if cp.stdout.strip().startswith("{") else {}
            if out.get("end", {}).get("sum_received") or out.get("end", {}).get("sum"):
                if not out.get("error"):
                    return out["end"]
            err = out.get("error", "") + cp.stderr
            if not any(w in err for w in ("refused", "timed out")):
                raise BackendError(f"iperf3 {client} -> {server_ip} failed: {out.get('error') or cp.stderr[-300:]}")
            time.sleep(0.1)
        raise BackendError(f"iperf3 server on {server} never accepted a connection")
    finally:
        try:
            srv.wait(timeout=3)
        except Exception:  # noqa: BLE001 - a stuck one-shot server is killed instead
            srv.kill()
            srv.wait()


def tcp_goodput_mbit(end: dict) -> float:
    return end["sum_received"]["bits_per_second"] / 1e6


def udp_received_mbit(end: dict) -> float:
    """Received UDP payload rate: the receiver's view (``sum_received``, iperf3 >= 3.10),
    which, unlike ``sum``, is right in both directions (with and without ``-R``)."""
    return end["sum_received"]["bits_per_second"] / 1e6


def rx_bytes(tb: Any, node: str, dev: str) -> int:
    """Layer-2 bytes received by ``dev`` of ``node`` (netlink counters, via ``ip -j -s``).

    /sys/class/net would show the root namespace's devices: commands enter
    only the node's network namespace, not a fresh sysfs mount.
    """
    cp = tb.run(node, ["ip", "-j", "-s", "link", "show", "dev", dev])
    return int(json.loads(cp.stdout)[0]["stats64"]["rx"]["bytes"])
