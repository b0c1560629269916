#!/usr/bin/env python3
"""How many phones can share one Wi-Fi access point before the application saturates?

N phones (swept) on one 802.11 access point each offload images to an edge
server wired behind the AP, at a fixed per-phone rate (open loop). Measured per
point: application goodput per phone and in aggregate, request latency
percentiles, the saturated TCP share of each phone (iperf3), CPU utilisation
of every node and its modelled power. The saturation point is the smallest N
where aggregate goodput stops rising or p95 latency exceeds the threshold.

The default is quick (under 3 minutes on a 2-core machine); ``--full`` sweeps
1..64 phones with repetitions.
"""

from __future__ import annotations

import argparse
import dataclasses

import _common  # noqa: F401  (puts the repository on sys.path)

from edgelab.experiment import (backend_from_args, common_arguments, dry_run, finish, int_list, main_guard, run_sweep,
                                testbed_name)
from edgelab.topology import load_topology
from edgelab.scenarios import wifi_point
from edgelab.services.power.inventory import plugs_from_args, power_arguments

DEFAULT_TOPOLOGY = _common.ROOT / "topologies" / "wifi-phones.yaml"

#: NixOS-Compose composition of these nodes (nxc and g5k backends).
COMPOSITION = "k3s-phones"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--topology", default=str(DEFAULT_TOPOLOGY), help="topology with a 'phone' group (default: %(default)s)")
    p.add_argument("--phones", type=int_list, default=None,
                   help="comma-separated phone counts (quick default 1,2,4,8,12; --full 1,2,4,8,16,32,64)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per count (quick 1, full 3)")
    p.add_argument("--seconds", type=float, default=None, help="duration of each measurement phase (quick 4, full 10)")
    p.add_argument("--rate", type=float, default=4.0, help="requests per second per phone (default %(default)s)")
    p.add_argument("--image-kb", type=int, default=125, help="size of each uploaded image in KB (default %(default)s)")
    p.add_argument("--latency-threshold-ms", type=float, default=500.0,
                   help="p95 latency above which the application counts as saturated (default %(default)s)")
    p.add_argument("--mode", choices=["gray", "tflite", "faces"], default="gray",
                   help="work per image: gray (resize, network-bound), tflite (LiteRT BlazeFace face detector, "
                        "the seeds' workload), faces (OpenCV Haar cascade) (default %(default)s)")
    p.add_argument("--inference", choices=["server", "phone", "k3s"], default="server",
                   help="where the images are processed: offloaded to the edge server, on each phone, or by "
                        "the k3s-phones composition's LoadBalancer Service (nxc/g5k; the Service's port and path "
                        "come from /etc/edgelab/k3s-services.json on the server node) (default %(default)s)")
    power_arguments(p, "phone device model on each phone's measured CPU")
    p.add_argument("--prometheus", action="store_true",
                   help="run a real Prometheus server on the edge server scraping every phone service's /metrics "
                        "(series of each point's window in raw/<point>/prometheus_series.csv)")
    p.add_argument("--slow-phones", type=int, default=0,
                   help="how many of the N phones (the last ones) use --slow-mcs: the 802.11 performance "
                        "anomaly (default %(default)s: all at the profile's rate)")
    p.add_argument("--slow-mcs", type=int, default=0, help="MCS of the slow phones (default %(default)s)")
    p.add_argument("--fast-mcs", type=int, default=None,
                   help="MCS of the other phones when --slow-phones is given (default: the profile's rate)")
    p.add_argument("--full", action="store_true", help="the full sweep instead of the quick default")
    common_arguments(p)
    args = p.parse_args(argv)
    args.phones = args.phones or ([1, 2, 4, 8, 16, 32, 64] if args.full else [1, 2, 4, 8, 12])
    args.reps = args.reps or (3 if args.full else 1)
    args.seconds = args.seconds or (10.0 if args.full else 4.0)
    args.plug_map = plugs_from_args(args, p)
    if args.slow_phones < 0:
        p.error("--slow-phones must be >= 0")
    return args


def point_topology(topology, n: int, slow_phones: int = 0, slow_mcs: int = 0, fast_mcs=None):
    """``topology`` with N phones, the last ``min(slow_phones, N)`` of them at ``slow_mcs``."""
    t = topology.scaled("phone", n)
    if not slow_phones:
        return t
    network = t.group("phone").attachments[0].network
    air = t.network(network).segments[0].airtime
    if air is None or not air.mcs_rates_mbit:
        raise SystemExit(f"--slow-phones needs a Wi-Fi profile with an MCS table on network {network!r}")
    top = len(air.mcs_rates_mbit) - 1
    if fast_mcs is None:
        rates = list(air.mcs_rates_mbit)
        fast_mcs = rates.index(air.phy_rate_mbit) if air.phy_rate_mbit in rates else top
    for name, v in (("--slow-mcs", slow_mcs), ("--fast-mcs", fast_mcs)):
        if not 0 <= v <= top:
            raise SystemExit(f"{name} {v}: the profile's MCS table has MCS 0-{top}")
    k = min(slow_phones, n)
    return t.with_station_mcs("phone", network, tuple([fast_mcs] * (n - k) + [slow_mcs] * k))


def sweep_points(phones: list[int], reps: int) -> list[dict]:
    return [{"n_phones": n, "rep": r} for n in phones for r in range(reps)]


def main(argv=None) -> int:
    args = parse_args(argv)
    topology = load_topology(args.topology)
    # This process's own name, so two runs on one machine never share a testbed.
    topology = dataclasses.replace(topology, name=testbed_name(topology.name))
    params = {"topology": args.topology, "phones": args.phones, "reps": args.reps, "seconds": args.seconds,
              "rate_rps": args.rate, "image_kb": args.image_kb, "latency_threshold_ms": args.latency_threshold_ms,
              "mode": args.mode, "inference": args.inference, "prometheus": args.prometheus,
              "power_source": args.power_source, "plugs": args.plug_map,
              "slow_phones": args.slow_phones, "slow_mcs": args.slow_mcs, "fast_mcs": args.fast_mcs}

    def topo_for(n: int):
        return point_topology(topology, n, args.slow_phones, args.slow_mcs, args.fast_mcs)

    points = sweep_points(args.phones, args.reps)
    if args.dry_run:
        return dry_run(args, [topo_for(p["n_phones"]) for p in points], COMPOSITION)
    backend = backend_from_args(args, COMPOSITION)

    def measure(point, run):
        return wifi_point(topo_for(point["n_phones"]), backend=backend, run=run, point=point,
                          seconds=args.seconds, rate_rps=args.rate, image_bytes=args.image_kb * 1000,
                          seed=1 + point["rep"], mode=args.mode, inference=args.inference,
                          prometheus=args.prometheus, power_source=args.power_source,
                          plugs=tuple(args.plug_map.items()))

    outcome = run_sweep(experiment="wifi_scaling", points=points,
                        param_names=["n_phones", "rep"], measure=measure, params=params,
                        results_root=args.results, backend=args.backend, resume=args.resume,
                        keep_going=args.keep_going, will_report=not args.no_report)
    return finish(outcome, args)


if __name__ == "__main__":
    main_guard(main)
