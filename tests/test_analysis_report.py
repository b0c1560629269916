import shutil
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from analysis.load import ResultsError
from analysis.report import write_report
from analysis_fixtures import RESULTS, WIFI


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("an_report") / "results"
    shutil.copytree(RESULTS, root)
    return root, write_report(root)


def test_report_over_all_runs_writes_figures_and_summaries(full_report):
    root, summary = full_report
    assert summary == root / "report" / "summary.md"
    out = summary.parent
    stems = ["wifi_scaling-20241122T120000-a1b2c3-saturation", "folding-20241122T130000-d4e5f6-folding",
             "faas_energy-20241122T140000-0a0b0c-energy", "network_topologies-20241122T150000-112233-topologies"]
    for stem in stems:
        with Image.open(out / f"{stem}.png") as im:
            assert im.format == "PNG" and im.size[0] >= 900 and im.size[1] >= 500
        svg = ET.parse(out / f"{stem}.svg").getroot()
        assert svg.tag.endswith("svg")
        assert "20241122T" in (out / f"{stem}.svg").read_text()  # the provenance caption is in the figure
    md = summary.read_text()
    assert "Saturation point: N = 4 phones" in md
    assert "Maximum faithful folding factor: 8" in md
    assert "Lowest energy per invocation: 0.187 J with 4 worker(s)" in md
    assert "wifi at 8 req/s: fits up to 4 phones (8 failed)" in md
    assert "faas_energy 20241122T140000-0a0b0c (INTERRUPTED)" in md and "partial line" in md
    for stem in stems:
        assert f"]({stem}.png)" in md
    html = (out / "summary.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and "Saturation point: N = 4 phones" in html
    assert html.count("<img ") == 4 and "<table>" in html and "class=\"warn\"" in html
    assert "0123456789abcdef" in html  # git revision in the provenance table


def test_report_on_a_single_run_directory(tmp_path):
    run = tmp_path / WIFI.name
    shutil.copytree(WIFI, run)
    summary = write_report(run)
    assert summary == run / "report" / "summary.md"
    assert sorted(p.name for p in summary.parent.iterdir()) == [
        "summary.html", "summary.md", f"wifi_scaling-{WIFI.name}-saturation.png",
        f"wifi_scaling-{WIFI.name}-saturation.svg"]
    assert "N = 4 phones" in summary.read_text()
    write_report(run)  # rerunning over its own report/ directory works


def test_a_broken_run_is_reported_and_the_others_still_analysed(tmp_path):
    shutil.copytree(WIFI, tmp_path / "wifi_scaling" / WIFI.name)
    bad = tmp_path / "wifi_scaling" / "broken"
    bad.mkdir()
    (bad / "manifest.json").write_text("{oops")
    odd = tmp_path / "wifi_scaling" / "no-goodput"
    shutil.copytree(WIFI, odd)
    csv = odd / "measurements.csv"
    csv.write_text("".join(l for l in csv.read_text().splitlines(keepends=True) if ",goodput_mbit," not in l))
    (odd / "health.json").unlink()  # a run from before health records: no row counts to hold the file to
    md = write_report(tmp_path).read_text()
    assert "N = 4 phones" in md
    assert "invalid JSON" in md
    assert "could not be analysed" in md and "no 'goodput_mbit' measurements" in md


def test_unknown_experiment_gets_a_table_of_means(tmp_path):
    run = tmp_path / "custom"
    shutil.copytree(WIFI, run)
    m = (run / "manifest.json").read_text().replace('"wifi_scaling"', '"my_experiment"')
    (run / "manifest.json").write_text(m)
    md = write_report(run).read_text()
    assert "no specific analysis" in md and "goodput_mbit" in md


def test_no_runs_is_an_error(tmp_path):
    with pytest.raises(ResultsError, match="no run directories"):
        write_report(tmp_path)


def test_reads_what_the_results_store_writes(tmp_path):
    """End to end with the real writer (edgelab.results, on main): a crash-cut append is tolerated."""
    results = pytest.importorskip("edgelab.results", reason="edgelab.results not in this checkout")
    run = results.ResultsStore(tmp_path).open_run("wifi_scaling", params={"latency_threshold_ms": 100.0},
                                                  param_names=["n_phones", "rep"], backend="local")
    run.record_facts({"link_engine": "fallback"})
    sweep = run.sweep([{"n_phones": n, "rep": r} for n in (1, 2, 4, 8) for r in (0, 1)])
    goodput = {1: 8.0, 2: 16.0, 4: 30.0, 8: 40.0}
    for p in sweep:
        n = p["n_phones"]
        sweep.complete(p, [results.Measurement("goodput_mbit", goodput[n] + 0.1 * p["rep"], "Mbit/s", ""),
                           results.Measurement("goodput_mbit", goodput[n] / n, "Mbit/s", "phone-1"),
                           results.Measurement("latency_ms_p95", 30.0 * n, "ms", "")])
    run.finish()
    with open(run.measurements_path, "a") as fh:
        fh.write('"n_phones=16,rep=0",16,0,goodput_mb')
    md = write_report(tmp_path).read_text()
    assert "Saturation point: N = 4 phones" in md and "mean p95 latency 120 ms exceeds 100 ms" in md
    assert "partial line" in md
