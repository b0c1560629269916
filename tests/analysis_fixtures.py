"""Paths to the recorded results used by the analysis tests (regenerate with tests/fixtures/make_results.py)."""

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "fixtures" / "results"
WIFI = RESULTS / "wifi_scaling" / "20241122T120000-a1b2c3"
FOLDING = RESULTS / "folding" / "20241122T130000-d4e5f6"
ENERGY = RESULTS / "faas_energy" / "20241122T140000-0a0b0c"
TOPOLOGIES = RESULTS / "network_topologies" / "20241122T150000-112233"
