"""Pure builders of tc / nft / iptables argv lists for link impairments.

Nothing here runs a command: each function returns argv lists (without any
``ip netns exec`` prefix) so the exact commands can be unit-tested without
root and printed by ``--dry-run``. The adapter in ``nsexec`` runs them.

Rate accounting (what ``rate_mbit`` means): HTB charges each packet its
``skb->len``, i.e. the layer-2 frame *including* the 14-byte Ethernet header
and *excluding* preamble, FCS and inter-frame gap. So ``rate_mbit`` is the
L2 throughput of the link; TCP goodput over a 1500-byte MTU with timestamps
is 1448/1514 = 95.6 % of it. The benchmark compares ``rate_mbit`` with the
L2 byte counter of the receiving interface, not with iperf3's goodput.
"""

from __future__ import annotations

import re
from typing import Optional

from ..model import LinkParams

#: HTB handle / class used for the per-link rate on an egress.
HTB_HANDLE = "1:"
HTB_CLASS = "1:10"
NETEM_HANDLE = "10:"
#: Handle of the shared-medium HTB on the IFB device (distinct from 1: so a
#: class id of one tree can never be mistaken for one of the other).
SHARED_HANDLE = "a:"
SHARED_CLASS = "a:10"
# Guaranteed share of the default class when stations have classes of their own.
DEFAULT_CLASS_SHARE = 0.01
#: Ethernet MTU + header: the largest non-GSO frame HTB will see.
FRAME_BYTES = 1514
#: Resolution of the loss draw: 1/10000 = 0.01 percentage point.
LOSS_SCALE = 10000


def _fmt(x: float) -> str:
    """Format a number for tc without exponent notation or trailing zeros."""
    s = f"{x:.6f}".rstrip("0").rstrip(".")
    return s or "0"


def htb_burst_bytes(rate_mbit: float) -> int:
    """Bucket size: 1 ms of traffic but at least a few full frames.

    Small enough that short measurements are not inflated by the initial
    burst at low rates; large enough for HTB to keep up at 200 Mbit/s and
    with the kernel's 1 ms timer granularity.
    """
    per_ms = rate_mbit * 1e6 / 8 / 1000
    return int(max(per_ms, 4 * FRAME_BYTES))


def htb_quantum_bytes(rate_mbit: float) -> int:
    """HTB DRR quantum: rate/10 clamped to [MTU, 200000] to avoid kernel warnings."""
    return int(min(max(rate_mbit * 1e6 / 8 / 10, FRAME_BYTES), 200000))


def netem_args(link: LinkParams, *, limit: Optional[int] = None) -> list[str]:
    """netem options for delay/jitter/loss (one direction)."""
    args: list[str] = []
    if link.delay_ms > 0 or link.jitter_ms > 0:
        args += ["delay", f"{_fmt(link.delay_ms)}ms"]
        if link.jitter_ms > 0:
            args += [f"{_fmt(link.jitter_ms)}ms"]
    if link.loss_pct > 0:
        args += ["loss", f"{_fmt(link.loss_pct)}%"]
    if limit is None:
        limit = netem_limit(link)
    args += ["limit", str(limit)]
    return args


def netem_limit(link: LinkParams) -> int:
    """Packets netem must be able to hold: 2x the bandwidth-delay product (>= 1000)."""
    rate = link.rate_mbit if link.rate_mbit > 0 else 1000.0
    bdp = rate * 1e6 / 8 * (link.delay_ms + link.jitter_ms) / 1000 / FRAME_BYTES
    return int(max(1000, 2 * bdp))


def needs_netem(link: LinkParams) -> bool:
    return link.delay_ms > 0 or link.jitter_ms > 0 or link.loss_pct > 0


def needs_delay(link: LinkParams) -> bool:
    return link.delay_ms > 0 or link.jitter_ms > 0


# --------------------------------------------------------------------------- tc

def htb_rate_cmds(dev: str, rate_mbit: float) -> list[list[str]]:
    """HTB root with a single default class capped at ``rate_mbit`` (both rate and ceil)."""
    r = f"{_fmt(rate_mbit)}mbit"
    burst = str(htb_burst_bytes(rate_mbit))
    return [
        ["tc", "qdisc", "replace", "dev", dev, "root", "handle", HTB_HANDLE, "htb", "default", "10"],
        ["tc", "class", "replace", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, "htb",
         "rate", r, "ceil", r, "burst", burst, "cburst", burst,
         "quantum", str(htb_quantum_bytes(rate_mbit))],
    ]


def netem_egress_cmds(dev: str, link: LinkParams) -> list[list[str]]:
    """netem engine, one egress: HTB rate class with a netem child, or netem alone.

    The netem child sits below the HTB class so packets are delayed first and
    then released no faster than the link rate, the usual tc arrangement.
    """
    cmds: list[list[str]] = []
    if link.rate_mbit > 0:
        cmds += htb_rate_cmds(dev, link.rate_mbit)
        if needs_netem(link):
            cmds.append(["tc", "qdisc", "replace", "dev", dev, "parent", HTB_CLASS,
                         "handle", NETEM_HANDLE, "netem", *netem_args(link)])
    elif needs_netem(link):
        cmds.append(["tc", "qdisc", "replace", "dev", dev, "root", "handle", HTB_HANDLE,
                     "netem", *netem_args(link)])
    return cmds


def clear_root_cmds(dev: str) -> list[list[str]]:
    """Delete the root qdisc (the kernel restores the default one)."""
    return [["tc", "qdisc", "del", "dev", dev, "root"]]


def clsact_cmds(dev: str) -> list[list[str]]:
    return [["tc", "qdisc", "replace", "dev", dev, "clsact"]]


def clear_clsact_cmds(dev: str) -> list[list[str]]:
    return [["tc", "qdisc", "del", "dev", dev, "clsact"]]


def redirect_filter_cmd(dev: str, direction: str, ifb: str, prio: str = "1") -> list[str]:
    """Redirect every frame of ``dev``'s ``direction`` (ingress/egress) hook to ``ifb``.

    u32 ``match u32 0 0`` is used rather than matchall because it exists on
    every kernel with tc (matchall is not built into all of them, e.g. here).
    The clsact hooks run before the root qdisc, so this composes with the
    per-link HTB root installed by ``apply_link``: after the IFB the frame
    re-enters the port's root qdisc and gets the link's own rate/delay.
    """
    if direction not in ("ingress", "egress"):
        raise ValueError(f"direction must be ingress or egress, not {direction!r}")
    return ["tc", "filter", "add", "dev", dev, direction, "protocol", "all", "prio", prio,
            "u32", "match", "u32", "0", "0",
            "action", "mirred", "egress", "redirect", "dev", ifb]


def group_frames_pass_cmd(dev: str, direction: str) -> list[str]:
    """Let broadcast/multicast frames (I/G bit of the destination MAC set) skip the later filters.

    On the shared medium's egress hooks: the bridge floods a broadcast to
    every station port, but an access point sends it once on the air, and
    the sender's upstream copy has already been charged. Without this, one
    ARP request from a station of a 100-station cell would put 100 frames in
    that station's queue. ``at -14`` is the first byte of the Ethernet
    destination (u32 offsets are relative to the network header). A match
    with a class id and no action ends classification with "pass" (the
    ``gact`` action module that ``action ok`` needs is missing here).
    """
    return ["tc", "filter", "add", "dev", dev, direction, "protocol", "all", "prio", "1",
            "u32", "match", "u8", "0x01", "0x01", "at", "-14", "flowid", "1:1"]


def ifb_create_cmds(ifb: str) -> list[list[str]]:
    return [["ip", "link", "add", ifb, "type", "ifb"], ["ip", "link", "set", ifb, "up"]]


def ifb_delete_cmds(ifb: str) -> list[list[str]]:
    return [["ip", "link", "del", ifb]]


def station_classid(index: int) -> str:
    """HTB class of the ``index``-th station (0-based) on the shared-medium IFB.

    tc reads class minors as hexadecimal; stations start at 0x100 so they
    never collide with the default class ``a:10``.
    """
    if not 0 <= index < 0xFFFF - 0x100:
        raise ValueError(f"station index {index} out of range for an HTB class minor")
    return f"{SHARED_HANDLE}{0x100 + index:x}"


#: tc filter priorities of the station-only redirects (an access point that is a node on a remote
#: backend: one port that also carries wired frames); distinct from every other filter edgelab adds
#: to a clsact hook, so :func:`station_redirect_clear_cmds` removes exactly these.
AP_PASS_PRIO = "7"
AP_REDIRECT_PRIO = "8"


def station_budgets(capacity_mbit: float, n: int,
                    station_rates: Optional[list[tuple[float, float]]] = None) -> tuple[float, list[tuple[float, float]]]:
    """(default class rate, [(guaranteed rate, ceil)] per station) under one airtime budget.

    ``station_rates``: each station's (share, ceil) from the airtime model
    (its DCF share when every station is saturated, and what it can reach
    alone); they are scaled so that, with the default class's
    ``DEFAULT_CLASS_SHARE``, the guarantees fill the budget. Without them:
    equal shares, each able to borrow the whole budget.
    """
    if not n:
        return capacity_mbit, []
    default_rate = capacity_mbit * DEFAULT_CLASS_SHARE
    if station_rates is None:
        share = (capacity_mbit - default_rate) / n
        return default_rate, [(share, capacity_mbit)] * n
    if len(station_rates) != n:
        raise ValueError(f"{len(station_rates)} station rates for {n} stations")
    total = sum(r for r, _ in station_rates)
    if not total > 0:
        raise ValueError("station shares must add up to more than 0")
    scale = (capacity_mbit - default_rate) / total
    return default_rate, [(r * scale, min(capacity_mbit, max(c, r * scale))) for r, c in station_rates]


def shared_medium_cmds(ifb: str, ports: list[str], capacity_mbit: float,
                       leaf: list[str], station_macs: Optional[list[str]] = None,
                       station_rates: Optional[list[tuple[float, float]]] = None,
                       station_only: bool = False) -> list[list[str]]:
    """IFB shaped to ``capacity_mbit`` fed by both directions of every port.

    Every frame that a station sends or receives through the access point is
    charged to one airtime budget (HTB class ``a:1``). With ``station_macs``
    (aligned with ``ports``) each station gets its own child class, classified
    by its MAC (source first, so station-to-station frames are charged to the
    sender on both legs, then destination for frames from the uplink): an
    equal guaranteed share of the budget, the unused part lent to whoever is
    busy. That is 802.11 DCF's long-run throughput fairness between
    contending stations, and it holds whatever the leaf qdisc is. The
    default class (frames of no station: none in a testbed built by the
    backend) keeps ``DEFAULT_CLASS_SHARE`` of the budget as its guarantee.
    Without ``station_macs``, one class and one leaf: fairness is then only
    as good as the leaf (flow-fair with fq_codel/sfq, none with a FIFO).

    ``leaf`` is the leaf qdisc argv tail (e.g. ``["fq_codel"]``, ``["sfq",
    "perturb", "10"]`` or ``["pfifo", "limit", "1000"]``) chosen from what the
    kernel offers (see ``engine.shared_leaf``); every class gets one.

    ``station_only``: the access point is a node of a remote backend, with one
    port (its real interface) that carries the stations' frames *and* the
    wired side's (the uplink server, the routed hop). Only frames from a
    station (ingress, source MAC) or to a station (egress, destination MAC)
    are charged, so a station-to-server exchange costs airtime once per
    direction, as on the local backend's bridge; ``station_macs`` are then
    required and ``ports`` may be shorter than them.
    """
    if station_only:
        if not station_macs:
            raise ValueError("station_only needs the stations' MAC addresses")
    elif station_macs is not None and len(station_macs) != len(ports):
        raise ValueError(f"{len(station_macs)} station MACs for {len(ports)} ports")
    macs = list(station_macs or [])
    if station_rates is not None and not macs:
        raise ValueError("per-station rates need the stations' MACs")
    cmds = ifb_create_cmds(ifb) + [
        ["tc", "qdisc", "replace", "dev", ifb, "root", "handle", SHARED_HANDLE, "htb", "default", "10"],
    ]
    cmds += budget_class_cmds(ifb, capacity_mbit, len(macs), station_rates, op="replace")
    for cid in [SHARED_CLASS] + [station_classid(i) for i in range(len(macs))]:
        cmds.append(["tc", "qdisc", "replace", "dev", ifb, "parent", cid, *leaf])
    for prio, field in (("1", "src"), ("2", "dst")):
        for i, mac in enumerate(macs):
            cmds.append(["tc", "filter", "add", "dev", ifb, "parent", SHARED_HANDLE, "protocol", "all",
                         "prio", prio, "u32", "match", "ether", field, mac, "flowid", station_classid(i)])
    for port in ports:
        cmds += clsact_cmds(port)
        if station_only:
            cmds += station_redirect_cmds(port, ifb, macs)
            continue
        cmds.append(redirect_filter_cmd(port, "ingress", ifb))
        cmds.append(group_frames_pass_cmd(port, "egress"))
        cmds.append(redirect_filter_cmd(port, "egress", ifb, prio="2"))
    return cmds


def station_redirect_cmds(port: str, ifb: str, macs: list[str]) -> list[list[str]]:
    """Redirect to ``ifb`` only the frames a station sends (ingress, source MAC) or receives
    (egress, destination MAC) on ``port``; broadcasts on egress pass (sent once on the air)."""
    cmds = [group_frames_pass_cmd(port, "egress")]
    cmds[0][cmds[0].index("prio") + 1] = AP_PASS_PRIO
    for direction, field in (("ingress", "src"), ("egress", "dst")):
        for mac in macs:
            cmds.append(["tc", "filter", "add", "dev", port, direction, "protocol", "all", "prio", AP_REDIRECT_PRIO,
                         "u32", "match", "ether", field, mac,
                         "action", "mirred", "egress", "redirect", "dev", ifb])
    return cmds


def station_redirect_clear_cmds(port: str) -> list[list[str]]:
    """Remove what :func:`station_redirect_cmds` added (by priority), nothing else on ``port``."""
    return [["tc", "filter", "del", "dev", port, d, "prio", p]
            for d in ("ingress", "egress") for p in (AP_PASS_PRIO, AP_REDIRECT_PRIO)]


def budget_class_cmds(ifb: str, capacity_mbit: float, n_stations: int,
                      station_rates: Optional[list[tuple[float, float]]] = None, *,
                      op: str = "replace") -> list[list[str]]:
    """The airtime budget's HTB classes: ``a:1`` at ``capacity_mbit``, the default class and one per station.

    The stations' guarantees add up to (almost) the whole budget: saturated
    stations then each get exactly their share from HTB's rate guarantee,
    which is precise, and never depend on how HTB splits borrowed excess,
    which is not (three saturated stations got 8.0/11.5/11.5 Mbit/s of 33
    when a quarter of the budget was the default class's to lend). ``op``
    ``change`` re-rates classes that exist, without touching their queues:
    how a station's rate changes while traffic flows.
    """
    if op not in ("replace", "change"):
        raise ValueError(f"op must be replace or change, not {op!r}")
    r = f"{_fmt(capacity_mbit)}mbit"
    burst = str(htb_burst_bytes(capacity_mbit))
    parent = f"{SHARED_HANDLE}1"
    cmds = [["tc", "class", op, "dev", ifb, "parent", SHARED_HANDLE, "classid", parent, "htb",
             "rate", r, "ceil", r, "burst", burst, "cburst", burst, "quantum", str(htb_quantum_bytes(capacity_mbit))]]
    if n_stations:
        default_rate, per_station = station_budgets(capacity_mbit, n_stations, station_rates)
    else:
        default_rate, per_station = capacity_mbit, []
    quantum = str(htb_quantum_bytes(min([g for g, _ in per_station] or [capacity_mbit])))
    classes = [(SHARED_CLASS, default_rate, capacity_mbit)] + [
        (station_classid(i), g, c) for i, (g, c) in enumerate(per_station)]
    for cid, rate, ceil in classes:
        cmds.append(["tc", "class", op, "dev", ifb, "parent", parent, "classid", cid, "htb",
                     "rate", f"{_fmt(rate)}mbit", "ceil", f"{_fmt(ceil)}mbit", "burst", str(htb_burst_bytes(rate)),
                     "cburst", str(htb_burst_bytes(ceil)), "quantum", quantum])
    return cmds


def link_rate_change_cmds(dev: str, rate_mbit: float) -> list[list[str]]:
    """Re-rate a link's HTB class in place (``tc class change``): its queue and any netem
    child, loss rules and delayer stay as they are."""
    r = f"{_fmt(rate_mbit)}mbit"
    burst = str(htb_burst_bytes(rate_mbit))
    return [["tc", "class", "change", "dev", dev, "parent", HTB_HANDLE, "classid", HTB_CLASS, "htb",
             "rate", r, "ceil", r, "burst", burst, "cburst", burst, "quantum", str(htb_quantum_bytes(rate_mbit))]]


def ingress_ifb_netem_cmds(dev: str, ifb: str, link: LinkParams) -> list[list[str]]:
    """netem engine, no peer namespace (real node): ingress delay/loss via an IFB."""
    netem_only = LinkParams(rate_mbit=0, delay_ms=link.delay_ms, jitter_ms=link.jitter_ms,
                            loss_pct=link.loss_pct)
    return ifb_create_cmds(ifb) + clsact_cmds(dev) + [
        redirect_filter_cmd(dev, "ingress", ifb),
        *netem_egress_cmds(ifb, netem_only),
    ]


# ---------------------------------------------------------------- nft (loss)

def _ident(s: str) -> str:
    """A valid nft identifier from an arbitrary string (interface names may hold '-' or '.')."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", s)
    return s if s[:1].isalpha() else "t" + s


def loss_table(tag: str, dev: str) -> str:
    return _ident(f"{tag}_loss_{dev}")


def loss_threshold(loss_pct: float) -> int:
    """Draws in [0, LOSS_SCALE) below this value are dropped."""
    return int(round(loss_pct / 100 * LOSS_SCALE))


def nft_loss_cmds(tag: str, dev: str, loss_pct: float, *, egress: bool = True,
                  family: str = "inet") -> list[list[str]]:
    """Random loss on ``dev`` with ``numgen random``: frames arriving on it, and
    (``egress``) frames leaving it.

    Ingress runs at raw priority (-300) on prerouting so a lost packet is never
    handed to the delayer; egress at -200 on postrouting, before the mangle
    NFQUEUE rule (-150), for the same reason. ``family="bridge"`` filters frames
    entering a bridge port (``dev`` is the port): that is how a node's outgoing
    loss is applied where its frames arrive, on the access point's side, so the
    sender sees a lost frame, not a local error (a netfilter drop on a host's
    own output returns EPERM to UDP senders).
    """
    if family not in ("inet", "bridge"):
        raise ValueError(f"family must be inet or bridge, not {family!r}")
    if family == "bridge" and egress:
        raise ValueError("bridge-family loss is ingress only")
    t = loss_table(tag, dev)
    k = str(loss_threshold(loss_pct))
    cmds = [
        ["nft", "add", "table", family, t],
        ["nft", "add", "chain", family, t, "in", "{ type filter hook prerouting priority -300 ; }"],
        ["nft", "add", "rule", family, t, "in", "iifname", dev, "numgen", "random", "mod",
         str(LOSS_SCALE), "<", k, "counter", "drop"],
    ]
    if egress:
        cmds[2:2] = [["nft", "add", "chain", family, t, "out", "{ type filter hook postrouting priority -200 ; }"]]
        cmds.append(["nft", "add", "rule", family, t, "out", "oifname", dev, "numgen", "random", "mod",
                     str(LOSS_SCALE), "<", k, "counter", "drop"])
    return cmds


def nft_loss_clear_cmds(tag: str, dev: str, family: str = "inet") -> list[list[str]]:
    return [["nft", "delete", "table", family, loss_table(tag, dev)]]


# ------------------------------------------------------- iptables (NFQUEUE)

def nfqueue_rule_specs(dev: str, q_in: int, q_out: Optional[int] = None, *,
                       bridge_port: bool = False, control_port: Optional[int] = None) -> list[list[str]]:
    """The mangle rules (without -A/-D) sending ``dev``'s traffic to the delayer.

    ``q_out`` None: arriving traffic only. ``bridge_port``: ``dev`` is a port of
    a bridge, matched with ``physdev`` (bridged frames reach iptables through
    br_netfilter). No ``--queue-bypass``: if the delayer is not running,
    packets are dropped, which shows up at once, instead of silently passing
    undelayed.

    ``control_port``: a device's own interface also carries its controller's SSH session
    (``edgelab.remote``); TCP to and from that port returns before the queue, so a delayer
    that dies leaves the device reachable — to be reported and cleared — instead of cut off
    until someone reboots it. Only that port's traffic skips the delay; rate and loss still apply.
    """
    match = ["-m", "physdev", "--physdev-in", dev] if bridge_port else ["-i", dev]
    keep_in = ([["PREROUTING", *match, "-p", "tcp", "--dport", str(control_port), "-j", "RETURN"]]
               if control_port else [])
    specs = keep_in + [["PREROUTING", *match, "-j", "NFQUEUE", "--queue-num", str(q_in)]]
    if q_out is not None:
        # A bridge port: frames the bridge forwards out of it (br_netfilter runs POSTROUTING
        # for them), i.e. the delay of frames to the node behind the port.
        out = ["-m", "physdev", "--physdev-out", dev] if bridge_port else ["-o", dev]
        if control_port:
            specs.append(["POSTROUTING", *out, "-p", "tcp", "--sport", str(control_port), "-j", "RETURN"])
        specs.append(["POSTROUTING", *out, "-j", "NFQUEUE", "--queue-num", str(q_out)])
    return specs


def ports_table(tag: str) -> str:
    return _ident(f"{tag}_ports")


def bridge_ports_cmds(tag: str) -> list[list[str]]:
    """A bridge namespace's one bridge-family table for its ports' loss and delay (the local
    backend's ``bridge_delay``): one base chain with a map lookup per frame, not a table (a
    base chain walked by every frame) per port.

    - ``loss``: port name to a verdict, ``jump`` to that port's chain with its ``numgen``
      drop (what nft_loss_cmds(family="bridge") does with a table per port). Priority -300,
      as there, so a lost frame is never handed to the delayer.
    - ``inport``: port name to a ``meta mark``, the number of the port's in-stage in the
      bridge queue: at POSTROUTING, where the bridge queue sees the frame, the kernel reports
      its out-port but no longer its in-port (nfnetlink_queue sends PHYSINDEV only when the
      hook has an input device, and POSTROUTING has none). The mark does not leave the
      namespace (a veth that crosses namespaces scrubs it).
    """
    t = ports_table(tag)
    return [
        ["nft", "add", "table", "bridge", t],
        ["nft", "add", "map", "bridge", t, "loss", "{ type ifname : verdict ; }"],
        ["nft", "add", "map", "bridge", t, "inport", "{ type ifname : mark ; }"],
        ["nft", "add", "chain", "bridge", t, "pre", "{ type filter hook prerouting priority -300 ; }"],
        ["nft", "add", "rule", "bridge", t, "pre", "iifname", "vmap", "@loss"],
        ["nft", "add", "rule", "bridge", t, "pre", "meta", "mark", "set", "iifname", "map", "@inport"],
    ]


def bridge_port_cmds(tag: str, dev: str, mark: int, *, delete: bool = False) -> list[list[str]]:
    """Add (or delete) port ``dev``'s element of the ports table's ``inport`` map: its frames get ``mark``."""
    if delete:
        return [["nft", "delete", "element", "bridge", ports_table(tag), "inport", f'{{ "{dev}" }}']]
    return [["nft", "add", "element", "bridge", ports_table(tag), "inport", f'{{ "{dev}" : {mark} }}']]


def bridge_port_loss_cmds(tag: str, dev: str, loss_pct: float, *, delete: bool = False) -> list[list[str]]:
    """Port ``dev``'s random loss of arriving frames in the ports table (or its removal)."""
    t, c = ports_table(tag), _ident(f"loss_{dev}")
    if delete:
        return [["nft", "delete", "element", "bridge", t, "loss", f'{{ "{dev}" }}'],
                ["nft", "delete", "chain", "bridge", t, c]]
    return [["nft", "add", "chain", "bridge", t, c],
            ["nft", "add", "rule", "bridge", t, c, "numgen", "random", "mod", str(LOSS_SCALE), "<",
             str(loss_threshold(loss_pct)), "counter", "drop"],
            ["nft", "add", "element", "bridge", t, "loss", f'{{ "{dev}" : jump {c} }}']]


def nfqueue_bridge_rule_specs(q: int) -> list[list[str]]:
    """The one mangle rule of a bridge queue: every frame the bridge forwards, after the bridge
    chose its out-port (POSTROUTING), so both its ports are known (see delayer.py's bridge
    queues). Bridged frames reach iptables through br_netfilter, as for nfqueue_rule_specs."""
    return [["POSTROUTING", "-m", "physdev", "--physdev-is-bridged", "-j", "NFQUEUE", "--queue-num", str(q)]]


def iptables_nfqueue_cmds(dev: str, q_in: int, q_out: Optional[int] = None, *, delete: bool = False,
                          families: tuple[str, ...] = ("iptables", "ip6tables"),
                          bridge_port: bool = False, control_port: Optional[int] = None) -> list[list[str]]:
    op = "-D" if delete else "-A"
    cmds = []
    for tool in families:
        for spec in nfqueue_rule_specs(dev, q_in, q_out, bridge_port=bridge_port, control_port=control_port):
            cmds.append([tool, "-w", "-t", "mangle", op, spec[0], *spec[1:]])
    return cmds


def iptables_restore_text(specs: list[list[str]]) -> str:
    """An ``iptables-restore --noflush`` script appending mangle rules (one transaction
    for many rules: per-rule ``iptables -A`` re-reads the whole table each time)."""
    lines = ["*mangle"] + ["-A " + " ".join(spec) for spec in specs] + ["COMMIT", ""]
    return "\n".join(lines)


def nft_script(cmds: list[list[str]]) -> str:
    """``nft -f`` input for a list of ``nft ...`` argv lists (one atomic transaction)."""
    out = []
    for c in cmds:
        if c[0] != "nft":
            raise ValueError(f"not an nft command: {c}")
        out.append(" ".join(c[1:]))  # the nft CLI joins its argv the same way
    return "\n".join(out) + "\n"
