#!/usr/bin/env python3
"""The same application over Wi-Fi, Ethernet, hybrid, USB tethering and a BATMAN mesh.

One edge server and N phones on a network of each kind (links from the named
profiles in edgelab/profiles/links.yaml); every phone uploads images to the
server at a fixed rate, as in wifi_scaling.py. For the mesh, the phones sit at
the far end of a chain of relay phones, so the hop count is swept. Measured per
point: aggregate goodput, request rate, error rate and latency percentiles.
The report gives, per network kind (and hop count) and rate, the largest phone
count whose p95 latency stays under the threshold with under 1 % errors, and
which application rates fit.

Quick default (about 2 minutes on a 2-core machine): wifi, ethernet, hybrid and
usb with 1, 4, 8 phones at 4 req/s, and the mesh at 1..3 hops with 1 phone.
``--full`` sweeps more phones, two rates, up to 4 hops, with repetitions.
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (puts the repository on sys.path)

from edgelab.experiment import (testbed_name, backend_from_args, common_arguments, dry_run, finish, float_list, int_list,
                                main_guard, run_sweep)
from edgelab.scenario_topologies import app_topology
from edgelab.scenarios import AppLoad, app_point

KINDS = ["wifi", "ethernet", "hybrid", "usb", "batman-mesh"]

#: NixOS-Compose composition of these nodes (nxc and g5k backends).
COMPOSITION = "k3s-phones"


#: This process's testbed name (unique on the machine: see edgelab.experiment.testbed_name).
TESTBED = testbed_name("topo")

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--networks", type=lambda s: s.split(","), default=None,
                   help=f"comma-separated network kinds among {','.join(KINDS)} (default: all)")
    p.add_argument("--phones", type=int_list, default=None, help="phone counts (quick 1,4,8; --full 1,2,4,8,16)")
    p.add_argument("--hops", type=int_list, default=None, help="mesh hop counts (quick 1,2,3; --full 1,2,3,4)")
    p.add_argument("--mesh-phones", type=int_list, default=None, help="phone counts at the mesh's far end (default 1)")
    p.add_argument("--rates", type=float_list, default=None, help="requests/s per phone (quick 4; --full 2,8)")
    p.add_argument("--reps", type=int, default=None, help="repetitions (quick 1, full 3)")
    p.add_argument("--seconds", type=float, default=None, help="load duration per point (quick 4, full 10)")
    p.add_argument("--image-kb", type=int, default=125, help="upload size in KB (default %(default)s)")
    p.add_argument("--iperf", action="store_true", help="also measure each phone's saturated TCP share")
    p.add_argument("--latency-threshold-ms", type=float, default=500.0,
                   help="p95 latency above which a configuration does not fit (default %(default)s)")
    p.add_argument("--full", action="store_true", help="the full sweep instead of the quick default")
    common_arguments(p)
    a = p.parse_args(argv)
    a.networks = a.networks or list(KINDS)
    unknown = [k for k in a.networks if k not in KINDS]
    if unknown:
        p.error(f"unknown network kind(s) {', '.join(unknown)}; choose among {', '.join(KINDS)}")
    a.phones = a.phones or ([1, 2, 4, 8, 16] if a.full else [1, 4, 8])
    a.hops = a.hops or ([1, 2, 3, 4] if a.full else [1, 2, 3])
    a.mesh_phones = a.mesh_phones or [1]
    a.rates = a.rates or ([2.0, 8.0] if a.full else [4.0])
    a.reps = a.reps or (3 if a.full else 1)
    a.seconds = a.seconds or (10.0 if a.full else 4.0)
    return a


def sweep_points(networks, phones, hops, mesh_phones, rates, reps) -> list[dict]:
    """Mesh points sweep the hop count; the other kinds have one 'hop' (the AP, switch or cable)."""
    out = []
    for net in networks:
        for h in (hops if net == "batman-mesh" else [1]):
            for n in (mesh_phones if net == "batman-mesh" else phones):
                for r in rates:
                    for rep in range(reps):
                        out.append({"network": net, "hops": h, "n_phones": n, "rate_rps": r, "rep": rep})
    return out


def main(argv=None) -> int:
    a = parse_args(argv)
    params = {"networks": a.networks, "phones": a.phones, "hops": a.hops, "mesh_phones": a.mesh_phones,
              "rates": a.rates, "reps": a.reps, "seconds": a.seconds, "image_kb": a.image_kb,
              "latency_threshold_ms": a.latency_threshold_ms}

    points = sweep_points(a.networks, a.phones, a.hops, a.mesh_phones, a.rates, a.reps)
    if a.dry_run:
        return dry_run(a, [app_topology(p["network"], p["n_phones"], hops=p["hops"], name=TESTBED) for p in points], COMPOSITION)
    backend = backend_from_args(a, COMPOSITION)

    def measure(point, run):
        topo = app_topology(point["network"], point["n_phones"], hops=point["hops"], name=TESTBED)
        load = AppLoad(seconds=a.seconds, rate_rps=point["rate_rps"], image_bytes=a.image_kb * 1000,
                       iperf=a.iperf, seed=1 + point["rep"])
        return app_point(topo, backend=backend, run=run, point=point, load=load)

    outcome = run_sweep(experiment="network_topologies",
                        points=points,
                        param_names=["network", "hops", "n_phones", "rate_rps", "rep"], measure=measure,
                        params=params, results_root=a.results, backend=a.backend, resume=a.resume,
                        keep_going=a.keep_going, will_report=not a.no_report)
    return finish(outcome, a)


if __name__ == "__main__":
    main_guard(main)
