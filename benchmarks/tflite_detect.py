#!/usr/bin/env python3
"""How much a phone's LiteRT face detection costs per image, against the Haar cascade and gray.

Runs each mode of edgelab.services.phone.detect on the Grace Hopper photograph (matplotlib's
sample data) and on a synthetic 125 kB JPEG (the load generator's image), single-threaded, and
prints wall and CPU milliseconds per image (median of N after a warm-up).
Usage: .venv/bin/python benchmarks/tflite_detect.py [N]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cv2  # noqa: E402
import matplotlib.cbook as cbook  # noqa: E402

from edgelab.services.phone.detect import detect, grayscale, tflite  # noqa: E402
from edgelab.workload.loadgen import synthetic_jpeg  # noqa: E402


def bench(fn, data: bytes, n: int) -> tuple[float, float, int]:
    fn(data)
    wall, cpu = [], []
    for _ in range(n):
        t, c = time.perf_counter(), time.thread_time()
        out = fn(data)
        wall.append(time.perf_counter() - t)
        cpu.append(time.thread_time() - c)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu), len(out.get("detections", []))


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    cv2.setNumThreads(1)
    images = {"grace_hopper.jpg (512x600)": open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read(),
              "synthetic 125 kB JPEG": synthetic_jpeg(125_000)}
    modes = {"tflite": tflite, "faces (Haar)": lambda d: detect(d, "faces"), "gray": lambda d: grayscale(d)}
    print(f"{'image':28} {'mode':13} {'wall ms':>8} {'cpu ms':>8} {'faces':>5}")
    for iname, data in images.items():
        for mname, fn in modes.items():
            w, c, k = bench(fn, data, n)
            print(f"{iname:28} {mname:13} {w:8.1f} {c:8.1f} {k:5d}")


if __name__ == "__main__":
    main()
