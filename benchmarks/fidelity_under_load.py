"""Link fidelity under load: every station of a 100-station Wi-Fi cell probes at 100/s and streams.

    sudo .venv/bin/python benchmarks/fidelity_under_load.py [--stations 100] [--seconds 10]
        [--stream-pps 10] [--stream-bytes 1000]

topologies/wifi-phones.yaml scaled to N phones, with the profile's full link
emulation (per-station rate, 2 ms +- 0.5 ms each way, 0.5 % loss each way, the
shared airtime budget). Each phone runs two pings to the server for
``--seconds``: the probe (100 per second, 56-byte payload) and a stream
(``--stream-pps`` packets of ``--stream-bytes`` per second). Printed:
configured vs measured round-trip delay and loss of the probes, and the
probes *never sent* (expected ``seconds * 100`` minus what ping transmitted:
a sender starved of CPU, or blocked by a delayer that cannot keep up), plus
the delayer's CPU over the run. The stream keeps the cell under load; it is
sized below the cell's airtime budget so that queueing in the budget does not
add to the delay (that would be the emulation working, not its error).

Every ping is spawned first and held at a gate, then all start at once (spawning
200 processes on a loaded machine takes seconds: the first were done before the
last began). ``--rtt both`` (the default) gives half the stations kernel receive
timestamps (the network's delay, taken on arrival in the station's namespace,
after every delay of the bridge path) and half ``ping -U`` (plus ping's wait for
a core). iputils ping does not keep a 10 ms interval on this HZ=250 kernel even
alone (~50-70/s of 100/s), so one ping runs alone first and "never sent" is also
given against its rate. Also printed: NFQUEUE passes and drops, and where the
host's cores went.

``--prober inproc`` (the default) sends the probes from one process instead of 100 pings
(benchmarks/prober.py: a socket per station namespace, one timerfd schedule, kernel receive
timestamps): it keeps 100/s per station, so "never sent" measures the host and the delayer, not
ping; its RTT is the network's (taken on arrival), and its own lateness and CPU are printed. The
streams stay iputils pings. ``--prober ping`` is the former measurement.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgelab.backends.local import LocalBackend  # noqa: E402
from edgelab.plan import make_plan  # noqa: E402
from edgelab.topology import load_topology, parse_topology  # noqa: E402

NAME = "lbfid"
_TX = re.compile(r"(\d+) packets transmitted, (\d+) received")
_RTT = re.compile(r"= [\d.]+/([\d.]+)/[\d.]+/[\d.]+ ms")


def parse_ping(out: str) -> tuple[int, int, float]:
    """(transmitted, received, mean RTT in ms) from ``ping -q`` output."""
    m = _TX.search(out)
    if not m:
        raise ValueError(f"no ping summary in {out[-300:]!r}")
    r = _RTT.search(out)
    return int(m.group(1)), int(m.group(2)), float(r.group(1)) if r else float("nan")


def gated(argv: list[str]) -> list[str]:
    """``argv`` started once its stdin closes: spawning 200 processes takes seconds on a loaded
    machine, and the first pings would be done before the last began (the load never whole)."""
    return ["sh", "-c", 'read _ ; exec "$@"', "gate", *argv]


def host_cpu() -> list[int]:
    """The host's CPU ticks: user, nice, system, idle, iowait, irq, softirq (/proc/stat)."""
    return [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]


def cpu_split(a: list[int], b: list[int]) -> str:
    """Where the cores went between two host_cpu() samples, in % of all cores."""
    d = [y - x for x, y in zip(a, b)]
    tot = sum(d) or 1
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq")
    return ", ".join(f"{n} {100 * v / tot:.0f} %" for n, v in zip(names, d) if n in ("user", "system", "softirq", "idle"))


def queue_stats(tb, nodes) -> dict[str, int]:
    """Sum of the NFQUEUE counters (/proc/net/netfilter/nfnetlink_queue) in the given namespaces:
    packets queued (id sequence), dropped by the kernel (queue full), dropped for want of
    room in the delayer's socket (user_dropped)."""
    tot = {"queued": 0, "queue_dropped": 0, "user_dropped": 0}
    for n in nodes:
        out = tb.run(n, ["cat", "/proc/net/netfilter/nfnetlink_queue"]).stdout if n in tb.blueprint.node_ns \
            else subprocess.run(["ip", "netns", "exec", tb.netns(n), "cat", "/proc/net/netfilter/nfnetlink_queue"],
                                capture_output=True, text=True).stdout
        for line in out.splitlines():
            f = line.split()
            tot["queue_dropped"] += int(f[5])
            tot["user_dropped"] += int(f[6])
            tot["queued"] += int(f[7])
    return tot


def proc_user_sys(pid) -> tuple[float, float]:
    """(user, system) CPU seconds of one process so far (/proc/<pid>/stat utime, stime): the
    delayer's own work against the kernel's, which forwards each accepted packet inside the
    verdict call (nan if it is gone)."""
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(f[11]) / tick, int(f[12]) / tick
    except (OSError, ValueError, IndexError, TypeError):
        return float("nan"), float("nan")


def ksoftirqd_cpu() -> float:
    """CPU seconds the ksoftirqd threads used so far: softirq work the kernel deferred to them (more
    than ~2 ms in one go), which then waits as a normal task behind a SCHED_FIFO delayer."""
    from edgelab.hostload import process_cpu_seconds

    tot = 0.0
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                if Path(f"/proc/{e.name}/comm").read_text().startswith("ksoftirqd/"):
                    tot += process_cpu_seconds(int(e.name))
            except (OSError, ValueError, IndexError):
                pass
    return tot


def throttled(tb, nodes) -> dict[str, float]:
    """Per node, the seconds its cgroup's CPU quota held it off the cores so far (cpu.stat
    ``throttled_time`` in ns, v1, or ``throttled_usec``, v2): a phone has 0.25 core."""
    out = {}
    for n in nodes:
        for d in tb.layout.dirs(f"edgelab/{tb.name}/{n}"):
            try:
                st = dict(l.split() for l in (d / "cpu.stat").read_text().splitlines())
            except (OSError, ValueError):
                continue
            if "throttled_time" in st:
                out[n] = int(st["throttled_time"]) / 1e9
            elif "throttled_usec" in st:
                out[n] = int(st["throttled_usec"]) / 1e6
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=100)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--probe-pps", type=int, default=100)
    ap.add_argument("--stream-pps", type=int, default=None,
                    help="stream packets per second per station (default 10 with --prober ping, 5 with inproc: "
                         "probes really sent at 100/s plus a 10/s stream would exceed the cell's airtime "
                         "budget, and its queueing is the emulation working, not its error)")
    ap.add_argument("--stream-bytes", type=int, default=1000)
    ap.add_argument("--ref-seconds", type=float, default=3.0,
                    help="how long one ping runs alone first, for the rate ping itself keeps")
    ap.add_argument("--no-delay", action="store_true",
                    help="no delay on any link (rate, loss, airtime kept): what the kernel path alone adds at this load")
    ap.add_argument("--rtt", choices=("both", "user", "kernel"), default=None,
                    help="RTT of a reply read by ping (-U), or kernel-timestamped on arrival; both: half each "
                         "(the default; with --station-delay: user, the only one that sees that delay)")
    ap.add_argument("--per-process", action="store_true",
                    help="bring the cell up link by link, a tc/nft/iptables process each (the old path)")
    ap.add_argument("--station-delay", action="store_true",
                    help="delay each station's incoming frames in its namespace (LocalBackend(bridge_delay=False))")
    ap.add_argument("--delayer-priority", action="store_true",
                    help="the delayer's cgroup at the top CPU weight (LocalBackend(delayer_priority=True): better "
                         "link delay under contention, worse for the nodes' processes; off by default)")
    ap.add_argument("--prober", choices=("inproc", "ping"), default="inproc",
                    help="inproc (default): one process sends every station's probes on a timerfd schedule from "
                         "a socket per station namespace and takes kernel receive timestamps (benchmarks/prober.py); "
                         "ping: one iputils ping per station (cannot keep 100/s on this HZ=250 kernel)")
    ap.add_argument("--delayer-normal", action="store_true",
                    help="the delayer as a normal task (LocalBackend(delayer_rt=False)); by default it is "
                         "SCHED_FIFO at the lowest real-time priority, its cgroup given a bounded real-time budget")
    args = ap.parse_args()
    if args.station_delay and args.prober == "inproc":
        sys.exit("--station-delay needs --prober ping: the station's incoming delay is applied after the kernel "
                 "timestamps a reply on arrival, so only ping -U sees it")
    if args.rtt is None:
        args.rtt = "user" if args.station_delay else "both"
    if args.stream_pps is None:
        args.stream_pps = 10 if args.prober == "ping" else 5
    if os.geteuid() != 0:
        sys.exit("needs root")
    src = ROOT / "topologies/wifi-phones.yaml"
    if args.no_delay:
        # The kernel path alone at this load: rates, loss and the airtime budget as configured,
        # no delay anywhere, so no packet goes to the delayer.
        text = src.read_text().replace("    profile: wifi-80211n-2.4ghz\n", "    profile: wifi-80211n-2.4ghz\n"
                                       "    link: {delay_ms: 0, jitter_ms: 0}\n    uplink_link: {delay_ms: 0}\n", 1)
        base = parse_topology(text, str(src))
    else:
        base = load_topology(src)
    topo = dataclasses.replace(base.scaled("phone", args.stations), name=NAME)
    plan = make_plan(topo)
    tb = LocalBackend(inprocess=not args.per_process, bridge_delay=not args.station_delay,
                      delayer_priority=args.delayer_priority, delayer_rt=not args.delayer_normal).up(plan)
    prober = None
    try:
        server = tb.address("server-1")
        phones = [f"phone-{i}" for i in range(1, args.stations + 1)]
        dl = tb.delayer_facts() or {}
        deadline = str(int(args.seconds))
        probes, streams, users = [], [], []
        # What ping sends with the machine otherwise idle: iputils does not keep a 10 ms interval
        # (its timing works in whole milliseconds and jiffies: ~61/s of 100/s asked, on this HZ=250
        # kernel with no emulation at all), so "never sent" is also told against this.
        if args.prober == "ping":
            ref = parse_ping(tb.run(phones[0], ["ping", "-q", "-n", "-i", f"{1 / args.probe_pps:.3f}", "-w",
                                                str(int(args.ref_seconds)), server], check=False).stdout)
            ref_rate = ref[0] / int(args.ref_seconds)
        else:
            # One process for every station's probes (benchmarks/prober.py): its sockets are opened in
            # the stations' namespaces now; it starts sending when the gate opens.
            prober = subprocess.Popen([sys.executable, str(ROOT / "benchmarks/prober.py")], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
            prober.stdin.write(json.dumps({"netns": [f"/run/netns/{tb.netns(p)}" for p in phones], "dst": server,
                                           "rate": args.probe_pps, "seconds": args.seconds}) + "\n")
            prober.stdin.flush()
            if prober.stdout.readline().strip() != "READY":
                raise SystemExit("the prober did not start")
        spaces = list(tb.blueprint.infra_ns) + ["server-1"] + phones
        t0 = time.monotonic()
        for i, p in enumerate(phones):
            # -U: the RTT measured when ping reads the reply, not when the kernel timestamps it on
            # arrival in the namespace, before a delay applied there (a mesh link's; with
            # --station-delay, every station's incoming delay): without it that delay is unseen.
            # With it, the RTT also holds how long ping waited for a core after the reply came
            # (the workload's scheduling, not the network's delay): --rtt both gives half the
            # stations each way.
            user = args.prober == "ping" and (args.rtt == "user" or (args.rtt == "both" and i % 2 == 0))
            users.append(user)
            if args.prober == "ping":
                probes.append(tb.popen(p, gated(["ping", "-q", "-n", *(["-U"] if user else []), "-i",
                                             f"{1 / args.probe_pps:.3f}", "-w", deadline, server]),
                                   stdin=-1, stdout=-1, stderr=-1, text=True))
            if args.stream_pps:
                streams.append(tb.popen(p, gated(["ping", "-q", "-n", "-U", "-i", f"{1 / args.stream_pps:.3f}",
                                                  "-s", str(args.stream_bytes), "-w", deadline, server]),
                                        stdin=-1, stdout=-1, stderr=-1, text=True))
        started = time.monotonic() - t0
        q0 = queue_stats(tb, spaces)
        th0 = throttled(tb, phones)
        cpu0 = (tb.delayer_facts() or {}).get("cpu_s")
        us0 = proc_user_sys(dl.get("pid"))
        ks0 = ksoftirqd_cpu()
        late0 = tb.delayer_lateness()
        c0 = host_cpu()
        t0 = time.monotonic()
        for pr in probes + streams:   # the gate: every ping starts now, none before the last is spawned
            pr.stdin.close()
            pr.stdin = None   # communicate() must not flush it
        if args.prober == "inproc":
            prober.stdin.write("go\n")
            prober.stdin.close()
            res = json.loads(prober.stdout.readline())
            prober.wait(timeout=30)
            stats = [(tx_, rx_, m if m is not None else float("nan"))
                     for tx_, rx_, m in zip(res["sent"], res["received"], res["rtt_ms_mean"])]
        else:
            outs = [pr.communicate(timeout=args.seconds + 60)[0] for pr in probes]
            stats = [parse_ping(o) for o in outs]
        gate_wall = time.monotonic() - t0
        for s in streams:
            s.communicate(timeout=args.seconds + 60)
        wall = time.monotonic() - t0
        c1 = host_cpu()
        cpu1 = (tb.delayer_facts() or {}).get("cpu_s")
        us1 = proc_user_sys(dl.get("pid"))
        ks1 = ksoftirqd_cpu()
        time.sleep(0.3)   # its counters are written every 0.25 s while packets flow
        late1 = tb.delayer_lateness()
        q1 = queue_stats(tb, spaces)
        th1 = throttled(tb, phones)
    finally:
        if prober is not None and prober.poll() is None:
            prober.kill()
        tb.down()
    wifi = next(s for n in plan.networks for s in n.segments if s.kind == "wifi").link
    uplink = plan.networks[0].uplink_link
    cfg_rtt = 2 * (wifi.delay_ms + uplink.delay_ms)
    cfg_loss = 100 * (1 - (1 - wifi.loss_pct / 100) ** 2 * (1 - uplink.loss_pct / 100) ** 2)
    expected = int(args.seconds * args.probe_pps)
    tx = sum(s[0] for s in stats)
    rx = sum(s[1] for s in stats)
    never = sum(max(0, expected - s[0]) for s in stats)
    means = [s[2] for s in stats if s[2] == s[2]]
    mean_rtt = statistics.fmean(means) if means else float("nan")
    by_kind = {u: [s[2] for s, uu in zip(stats, users) if uu == u and s[2] == s[2]] for u in (True, False)}
    print(f"\n{args.stations} stations x {args.probe_pps} probes/s + stream {args.stream_pps} x "
          f"{args.stream_bytes} B/s, {args.seconds:g} s (all started together after {started:.1f} s spawning them; {gate_wall:.1f} s until the probes ended); load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; link engine {tb.emulator.engine}")
    print(f"  round-trip delay: configured {cfg_rtt:.2f} ms, measured mean {mean_rtt:.2f} ms "
          f"(error {mean_rtt - cfg_rtt:+.2f} ms; per-station means {min(means):.2f}..{max(means):.2f} ms)")
    for u, what in ((False, "kernel receive timestamp (the network's delay)"),
                    (True, "ping -U, when ping read the reply (+ its wait for a core)")):
        if by_kind[u]:
            m = statistics.fmean(by_kind[u])
            print(f"    {what}: {m:.2f} ms (error {m - cfg_rtt:+.2f} ms, {len(by_kind[u])} stations)")
    worst = sorted(((s[2], phones[i], s[0], users[i]) for i, s in enumerate(stats) if s[2] == s[2]), reverse=True)[:3]
    print("    slowest stations: " + ", ".join(f"{n} {m:.2f} ms ({tx_} sent{', -U' if u else ''})" for m, n, tx_, u in worst))
    th = {n: th1[n] - th0.get(n, 0.0) for n in th1}
    if th:
        print(f"    stations' CPU quota (their ping processes' wait, in the -U figure): {sum(1 for v in th.values() if v > 0)} "
              f"of {len(th)} throttled, {sum(th.values()):.1f} s in all; the slowest: "
              + ", ".join(f"{n} {th.get(n, 0):.2f} s" for _, n, _, _ in worst))
    seg = next(s for n in plan.networks for s in n.segments if s.kind == "wifi")
    # L2 bytes both ways (request and reply cross the medium): ICMP + IP + Ethernet headers
    offered = args.stations * 2 * 8e-6 * (args.probe_pps * (56 + 8 + 20 + 14)
                                          + args.stream_pps * (args.stream_bytes + 8 + 20 + 14))
    if seg.capacity_mbit:
        print(f"  offered to the cell (probes at the rate asked + streams, both ways): {offered:.1f} Mbit/s of its "
              f"{seg.capacity_mbit:.1f} Mbit/s airtime budget" + (" -- OVER IT: the budget's queueing adds delay "
                                                               "(the emulation working, not its error)"
                                                               if offered > seg.capacity_mbit else ""))
    print(f"  probe loss: configured {cfg_loss:.2f} %, measured {100 * (1 - rx / tx) if tx else float('nan'):.2f} %")
    print(f"  probes never sent: {never} of {expected * args.stations} "
          f"({100 * never / (expected * args.stations):.2f} %)")
    if args.prober == "ping":
        ref_expected = ref_rate * args.seconds
        ref_never = sum(max(0.0, ref_expected - s[0]) for s in stats)
        print(f"    ping alone on an idle machine sends {ref_rate:.1f}/s of the {args.probe_pps}/s asked; against that, "
              f"never sent under load: {ref_never:.0f} ({100 * ref_never / (ref_expected * args.stations):.2f} %)")
    else:
        print(f"    prober (one process, benchmarks/prober.py): sent {res['send_late_ms_mean']:.3f} ms after each slot "
              f"on average (worst {res['send_late_ms_max']:.1f} ms), {res['never_sent']} not sent within one interval "
              f"after the window; its CPU {res['cpu_s']:.2f} s ({100 * res['cpu_s'] / args.seconds:.0f} % of one core); "
              f"before it, {res['warm_up_rounds']} warm-up round(s) resolved the stations' ARP entries"
              + (f" ({res['warm_up_unanswered']} stations never answered)" if res["warm_up_unanswered"] else ""))
    dq = {k: q1[k] - q0[k] for k in q0}
    print(f"  NFQUEUE: {dq['queued']} packets queued ({dq['queued'] / wall:.0f}/s), {dq['queue_dropped']} dropped "
          f"(queue full), {dq['user_dropped']} dropped (delayer's socket full)")
    print(f"  host CPU over the run: {cpu_split(c0, c1)}; ksoftirqd threads {ks1 - ks0:.2f} CPU-s (softirq work deferred to them)")
    from edgelab.linkemu.lateness import window

    lw = window(late0, late1)
    if lw is not None:
        late1_ = late1.late_max_s if late1 is not None else float("nan")
        print(f"  delayer release lateness: mean {lw[0]:.3f} ms per packet released, {100 * lw[1]:.2f} % "
              f"of {lw[2]} more than 1 ms late (worst since start {1000 * late1_:.1f} ms)")
    if cpu0 is not None and cpu1 is not None:
        print(f"  delayer: {dl.get('queues')} queues, {cpu1 - cpu0:.2f} CPU-s over the run "
              f"({100 * (cpu1 - cpu0) / wall:.0f} % of one core): its process {us1[0] - us0[0]:.2f} s user, "
              f"{us1[1] - us0[1]:.2f} s system (the kernel forwarding what it accepts); "
              f"{1e6 * (us1[0] - us0[0]) / max(1, dq['queued']):.1f} us of user time per queue pass")
    sched = dl.get("sched") or {}
    print(f"  delayer scheduling: {sched.get('live')}" + (f" (asked for SCHED_FIFO, refused: {sched['reason']})"
                                                         if sched.get("reason") else "")
          + f"; its cgroup's CPU weight {dl.get('cpu_weight')}")
    prog = dl.get("program") or {}
    print(f"  delayer program: {prog.get('impl')} ({prog.get('path')}; {prog.get('why')}; EDGELAB_DELAYER=c|python)")


if __name__ == "__main__":
    main()
