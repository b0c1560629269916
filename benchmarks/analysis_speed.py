#!/usr/bin/env python3
"""How long the analysis takes on a large run and on the fixture results.

Why: a full wifi_scaling sweep with per-node rows can reach ~10^5-10^6 rows;
`edgelab report` should stay interactive. Run: python benchmarks/analysis_speed.py
"""

from __future__ import annotations

import csv
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.load import load_run  # noqa: E402
from analysis.report import write_report  # noqa: E402
from analysis.saturation import saturation_point  # noqa: E402


def synth_run(d: Path, rows_target: int) -> int:
    shutil.copy(ROOT / "tests/fixtures/results/wifi_scaling/20241122T120000-a1b2c3/manifest.json", d)
    n_rows = 0
    with open(d / "measurements.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["point", "n_phones", "rep", "metric", "value", "unit", "node", "time"])
        rep = 0
        while n_rows < rows_target:
            for n in (1, 2, 4, 8, 16, 32, 64):
                pt = f"n_phones={n},rep={rep}"
                w.writerow([pt, n, rep, "goodput_mbit", repr(min(8.0 * n, 26.0)), "Mbit/s", "", "0.0"])
                w.writerow([pt, n, rep, "latency_ms_p95", repr(40.0 * n), "ms", "", "0.0"])
                for k in range(n):
                    for metric in ("goodput_mbit", "cpu_util", "power_w"):
                        w.writerow([pt, n, rep, metric, "1.0", "", f"phone-{k}", "0.0"])
                n_rows += 2 + 3 * n
            rep += 1
    return n_rows


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="an-bench-") as tmp:
        d = Path(tmp)
        rows = synth_run(d, 500_000)
        t0 = time.perf_counter()
        run = load_run(d)
        t1 = time.perf_counter()
        res = saturation_point(run.df, threshold_ms=500.0)
        t2 = time.perf_counter()
        print(f"load_run: {rows} rows in {t1 - t0:.2f} s; saturation_point in {t2 - t1:.2f} s (N={res.n})")
        fx = d / "fixtures"
        shutil.copytree(ROOT / "tests/fixtures/results", fx)
        t3 = time.perf_counter()
        write_report(fx)
        print(f"write_report over the 4 fixture runs (4 figures, PNG+SVG): {time.perf_counter() - t3:.2f} s")


if __name__ == "__main__":
    main()
