"""A real Prometheus server (Debian's) scraping an edgelab plug, and the export of its series."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from edgelab.prometheus import PrometheusServer, config, free_port, read_series

from svhelpers import service, url_of

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="prometheus missing: Debian 'prometheus' (scripts/bootstrap installs it)")


def test_config_passes_promtool_and_drops_empty_jobs(tmp_path):
    text = config({"plugs": ["127.0.0.1:8100", "127.0.0.1:8101"], "phones": []}, 0.5)
    (tmp_path / "p.yml").write_text(text)
    assert "phones" not in text
    if shutil.which("promtool"):
        r = subprocess.run(["promtool", "check", "config", str(tmp_path / "p.yml")], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr


def test_scrapes_a_plug_and_exports_the_window(tmp_path):
    with service("edgelab.services.power", "--port", "0", "--watts", "7", "--interval", "0.1",
                 "--topic", "sv_prom") as (_, line):
        target = url_of(line).split("//")[1]
        srv = PrometheusServer({"plugs": [target]}, tmp_path / "prom", port=free_port(), interval_s=0.5).start()
        try:
            t0 = time.time()
            time.sleep(3.5)
            csv_text = srv.series(t0, time.time(), 0.5)
        finally:
            srv.stop()
    out = tmp_path / "series.csv"
    out.write_text(csv_text)
    power = read_series(out, "edgelab_power_watts")
    (labels, points), = power.items()
    assert "topic=sv_prom" in labels and "job=plugs" in labels
    assert len(points) >= 4 and all(v == 7.0 for _, v in points)
    energy = next(iter(read_series(out, "edgelab_energy_joules_total").values()))
    assert all(b[1] >= a[1] for a, b in zip(energy, energy[1:])) and energy[-1][1] > energy[0][1]
    up = next(iter(read_series(out, "up").values()))
    assert all(v == 1.0 for _, v in up)
    assert (tmp_path / "prom" / "tsdb").is_dir()          # the TSDB stays with the run
