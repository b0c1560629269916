"""CLI for real nodes (used by the NixOS module): impair one interface in the current namespace.

    python -m edgelab.linkemu apply --dev wlan0 --rate-mbit 65 --delay-ms 2 --jitter-ms 0.5 \
        --loss-pct 0.5 [--engine auto|netem|fallback] [--tag edgelab] [--dry-run]
    python -m edgelab.linkemu rate --dev wlan0 --rate-mbit 6.5   # in place, e.g. a phone walking away
    python -m edgelab.linkemu clear --dev wlan0
    python -m edgelab.linkemu detect
    python -m edgelab.linkemu shared --dev eth0 --name air0 --capacity-mbit 29.3 \
        --station-mac 02:..:01 --station-mac 02:..:02 [--tag T] [--dry-run]
    python -m edgelab.linkemu shared ... --station-ip 10.77.0.2 --station-ip 10.77.0.3 \
        [--resolve-timeout 300]      # MACs resolved at start (a NixOS AP at boot)
    python -m edgelab.linkemu unshared --dev eth0 --name air0 [--tag T]

``shared`` makes this node the access point of a Wi-Fi cell on a remote
backend: one airtime budget, one HTB class per station, charged only for
the frames the listed stations send or receive through ``dev`` (the same
``apply_shared_medium`` the local backend runs in its AP namespace).

With no peer namespace, ``apply`` shapes the egress of ``dev`` and applies
delay/jitter/loss to both its egress and its ingress.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EdgelabError
from ..model import LinkParams
from . import commands as C
from .emulator import LinkEmulator
from .engine import detect_engine


def _dry_run(engine: str, tag: str, dev: str, link: LinkParams) -> list[list[str]]:
    """The tc/nft/iptables commands ``apply`` would run (delayer queues shown as 1000/1001)."""
    if engine == "netem":
        cmds = C.netem_egress_cmds(dev, link)
        if C.needs_netem(link):
            cmds += C.ingress_ifb_netem_cmds(dev, f"{tag}-in-{dev}"[:15], link)
        return cmds
    cmds = C.htb_rate_cmds(dev, link.rate_mbit) if link.rate_mbit > 0 else []
    if link.loss_pct > 0:
        cmds += C.nft_loss_cmds(tag, dev, link.loss_pct)
    if C.needs_delay(link):
        cmds += C.iptables_nfqueue_cmds(dev, 1000, 1001)
    return cmds


def _drop_empty_clsact(dev: str) -> None:
    """Remove the clsact hook ``shared`` added to ``dev`` once no filter uses it any more
    (``apply``'s ingress IFB redirect, on the same device, may still: then it stays)."""
    import subprocess

    def filters(direction: str) -> str:
        return subprocess.run(["tc", "filter", "show", "dev", dev, direction], capture_output=True, text=True).stdout

    qdiscs = subprocess.run(["tc", "qdisc", "show", "dev", dev], capture_output=True, text=True).stdout
    if "clsact" in qdiscs and not filters("ingress").strip() and not filters("egress").strip():
        subprocess.run(C.clear_clsact_cmds(dev)[0], capture_output=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edgelab.linkemu", description="edgelab link emulation")
    sub = ap.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("apply", help="impair an interface")
    a.add_argument("--dev", required=True)
    a.add_argument("--rate-mbit", type=float, default=0.0)
    a.add_argument("--delay-ms", type=float, default=0.0)
    a.add_argument("--jitter-ms", type=float, default=0.0)
    a.add_argument("--loss-pct", type=float, default=0.0)
    a.add_argument("--engine", choices=["auto", "netem", "fallback"], default="auto")
    a.add_argument("--tag", default="edgelab")
    a.add_argument("--keep-tcp-port", type=int, default=None, metavar="PORT",
                   help="TCP to and from this port (the controller's SSH) skips the userspace delayer, so a "
                        "delayer that dies does not cut the device off from whoever must clear it")
    a.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    a.add_argument("--report-engine", action="store_true",
                   help="print the engine used (netem or fallback) on stdout once applied")
    r = sub.add_parser("rate", help="change the rate of an applied link in place (tc class change)")
    r.add_argument("--dev", required=True)
    r.add_argument("--rate-mbit", type=float, required=True)
    r.add_argument("--engine", choices=["auto", "netem", "fallback"], default="auto")
    r.add_argument("--tag", default="edgelab")
    r.add_argument("--dry-run", action="store_true", help="print the commands instead of running them")
    c = sub.add_parser("clear", help="remove what apply installed")
    c.add_argument("--dev", required=True)
    c.add_argument("--engine", choices=["auto", "netem", "fallback"], default="auto")
    c.add_argument("--tag", default="edgelab")
    sub.add_parser("detect", help="print the engine this kernel supports")
    sh = sub.add_parser("shared", help="carry a Wi-Fi cell's airtime budget on this node's interface")
    sh.add_argument("--dev", required=True)
    sh.add_argument("--name", required=True, help="cell name, unique on this node (e.g. air0)")
    sh.add_argument("--capacity-mbit", type=float, required=True)
    who = sh.add_mutually_exclusive_group(required=True)
    who.add_argument("--station-mac", action="append", help="one per station, in order")
    who.add_argument("--station-ip", action="append",
                     help="one per station, in order: its MAC is resolved on --dev (ARP) at start, "
                          "waiting up to --resolve-timeout for stations that boot later")
    sh.add_argument("--resolve-timeout", type=float, default=300.0)
    sh.add_argument("--tag", default="edgelab")
    sh.add_argument("--dry-run", action="store_true")
    us = sub.add_parser("unshared", help="remove what shared installed")
    us.add_argument("--dev", required=True)
    us.add_argument("--name", required=True)
    us.add_argument("--tag", default="edgelab")
    ns = ap.parse_args(argv)
    try:
        if ns.cmd == "detect":
            print(detect_engine())
            return 0
        if ns.cmd == "shared":
            if ns.station_ip:
                if ns.dry_run:   # nothing is resolved in a dry run: the MACs are shown by address
                    ns.station_mac = [f"<MAC of {ip}>" for ip in ns.station_ip]
                else:
                    from .neigh import resolve_macs

                    ns.station_mac = resolve_macs(ns.station_ip, ns.dev, ns.resolve_timeout)
            if ns.dry_run:
                from .engine import shared_leaf

                emu = LinkEmulator("fallback", tag=ns.tag)
                for cmd in C.shared_medium_cmds(emu.ifb_name(ns.name), [ns.dev], ns.capacity_mbit,
                                                shared_leaf(32), ns.station_mac, station_only=True):
                    print(" ".join(cmd))
                return 0
            LinkEmulator("fallback", tag=ns.tag).apply_shared_medium(
                None, ns.name, [ns.dev], ns.capacity_mbit, ns.station_mac, station_only=True)
            return 0
        if ns.cmd == "unshared":
            from .nsexec import run_all

            emu = LinkEmulator("fallback", tag=ns.tag)
            run_all(None, C.station_redirect_clear_cmds(ns.dev) + C.ifb_delete_cmds(emu.ifb_name(ns.name)),
                    check=False)
            _drop_empty_clsact(ns.dev)
            return 0
        if ns.cmd == "apply":
            link = LinkParams(rate_mbit=ns.rate_mbit, delay_ms=ns.delay_ms, jitter_ms=ns.jitter_ms,
                              loss_pct=ns.loss_pct)
            if ns.dry_run:
                engine = detect_engine() if ns.engine == "auto" else ns.engine
                for cmd in _dry_run(engine, ns.tag, ns.dev, link):
                    print(" ".join(cmd))
                return 0
            emu = LinkEmulator(None if ns.engine == "auto" else ns.engine, tag=ns.tag)
            if ns.keep_tcp_port is not None and not 0 < ns.keep_tcp_port < 65536:
                print(f"error: --keep-tcp-port must be a TCP port (1-65535), got {ns.keep_tcp_port}", file=sys.stderr)
                return 2
            emu.apply_link(None, ns.dev, None, None, link, control_port=ns.keep_tcp_port)
            if ns.report_engine:
                print(emu.engine)
        elif ns.cmd == "rate":
            if ns.dry_run:
                for cmd in C.link_rate_change_cmds(ns.dev, ns.rate_mbit):
                    print(" ".join(cmd))
                return 0
            LinkEmulator(None if ns.engine == "auto" else ns.engine, tag=ns.tag).set_link_rate(
                None, ns.dev, ns.rate_mbit)
        else:
            emu = LinkEmulator(None if ns.engine == "auto" else ns.engine, tag=ns.tag)
            emu.clear(None, ns.dev)
            emu.close_if_idle(None)   # the device's last impaired interface: nothing left behind
        return 0
    except EdgelabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
