#!/usr/bin/env python3
"""Print the airtime model's figures for the shipped Wi-Fi profiles (no root, no testbed).

Capacity of N saturated stations with the profile as shipped (A-MPDU + BlockAck,
AIFS, OFDM symbol timing), without aggregation, with the 20 µs long slot, and
per-phone shares of a cell with K phones at a low MCS (the performance anomaly).
These are the figures quoted in the README.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgelab.airtime import mixed_saturation, saturation  # noqa: E402
from edgelab.profiles import get_profile  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="wifi-80211n-2.4ghz")
    ap.add_argument("--stations", default="1,2,4,8,12,16,32,64")
    ap.add_argument("--slow-mcs", type=int, default=0)
    args = ap.parse_args(argv)
    air = get_profile(args.profile).airtime
    ns = [int(x) for x in args.stations.split(",")]
    variants = {
        "as shipped": air,
        "no aggregation": dataclasses.replace(air, ampdu_frames=1, block_ack=False),
        "long slot 20 us": dataclasses.replace(air, slot_us=20),
        "no aggr., long slot": dataclasses.replace(air, ampdu_frames=1, block_ack=False, slot_us=20),
    }
    print(f"{args.profile}: capacity (Mbit/s of 1500 B payload) of N saturated stations at "
          f"{air.phy_rate_mbit:g} Mbit/s, AIFS {air.ifs_us:g} us")
    print(f"{'N':>4} " + " ".join(f"{k:>20}" for k in variants))
    for n in ns:
        print(f"{n:>4} " + " ".join(f"{saturation(v, n).throughput_mbit:>20.1f}" for v in variants.values()))
    slow = air.mcs_rate(args.slow_mcs)
    print(f"\nper-phone share (Mbit/s) with K phones at MCS{args.slow_mcs} ({slow:g} Mbit/s), as shipped")
    print(f"{'N':>4} {'K':>3} {'fast phone':>11} {'slow phone':>11} {'cell':>8} {'all fast: phone':>16} {'cell':>8}")
    for n in ns:
        for k in sorted({1, n // 4} - {0}):
            if k >= n:
                continue
            m = mixed_saturation(air, [None] * (n - k) + [slow] * k)
            s = saturation(air, n)
            print(f"{n:>4} {k:>3} {m.per_station_mbit[0]:>11.2f} {m.per_station_mbit[-1]:>11.2f} "
                  f"{m.throughput_mbit:>8.1f} {s.per_station_mbit:>16.2f} {s.throughput_mbit:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
