import json
import shutil

import pytest

from analysis.load import ResultsError, find_run_dirs, load_run, load_runs
from analysis_fixtures import ENERGY, RESULTS, WIFI


@pytest.fixture
def wifi_copy(tmp_path):
    dst = tmp_path / "wifi_scaling" / WIFI.name
    shutil.copytree(WIFI, dst)
    return dst


def test_load_run_types_and_params():
    run = load_run(WIFI)
    assert run.experiment == "wifi_scaling" and run.status == "complete" and run.warnings == []
    assert run.param_names == ["n_phones", "rep"]
    assert str(run.df["n_phones"].dtype) == "int64" and str(run.df["value"].dtype) == "float64"
    assert sorted(run.df["n_phones"].unique()) == [1, 2, 4, 8, 12]
    assert (run.df.loc[run.df["metric"] == "latency_ms_p95", "node"] == "").all()
    assert run.params["latency_threshold_ms"] == 500.0


def test_string_parameters_stay_strings():
    topo = [r for r in load_runs(RESULTS) if r.experiment == "network_topologies"][0]
    assert set(topo.df["network"]) == {"ethernet", "wifi", "usb", "batman-mesh"}
    assert str(topo.df["hops"].dtype) == "int64"


def test_recorded_partial_line_is_dropped_with_a_warning():
    run = load_run(ENERGY)
    assert run.status == "interrupted"
    assert 16 not in set(run.df["n_workers"])  # the cut-off row of the next point
    assert any("partial line" in w for w in run.warnings) and any("interrupted" in w for w in run.warnings)


def test_partial_line_appended_to_a_complete_file(wifi_copy):
    before = len(load_run(wifi_copy).df)
    with open(wifi_copy / "measurements.csv", "a") as fh:
        fh.write('"n_phones=16,rep=0",16,0,goodput_mbit,25.')
    run = load_run(wifi_copy)
    assert len(run.df) == before and 16 not in set(run.df["n_phones"])


def test_malformed_line_in_the_middle_is_an_error_with_its_line_number(wifi_copy):
    f = wifi_copy / "measurements.csv"
    lines = f.read_text().splitlines(keepends=True)
    lines[4] = '"n_phones=1,rep=0",1,0,goodput_mbit\n'
    f.write_text("".join(lines))
    with pytest.raises(ResultsError, match=r"measurements\.csv:5: 4 fields where the header has 8"):
        load_run(wifi_copy)


def test_non_numeric_value_is_reported(wifi_copy):
    f = wifi_copy / "measurements.csv"
    lines = f.read_text().splitlines(keepends=True)
    fields = lines[2].split(",")
    fields[5] = "fast"  # the quoted point holds a comma, so value is the 6th comma-separated piece
    lines[2] = ",".join(fields)
    f.write_text("".join(lines))
    with pytest.raises(ResultsError, match=r"measurements\.csv:3: value 'fast' is not a number"):
        load_run(wifi_copy)


def test_header_must_match_manifest_param_names(wifi_copy):
    m = json.loads((wifi_copy / "manifest.json").read_text())
    m["param_names"] = ["n_phones", "seed"]
    (wifi_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ResultsError, match="differ from the manifest's param_names"):
        load_run(wifi_copy)


@pytest.mark.parametrize("content,pattern", [
    ("{not json", r"manifest\.json:1:2: invalid JSON"),
    ('{"experiment": "x", "run_id": "r"}', "missing key.*status"),
    ('{"experiment": "x", "run_id": "r", "status": "done"}', "status 'done' is not one of"),
])
def test_bad_manifest(wifi_copy, content, pattern):
    (wifi_copy / "manifest.json").write_text(content)
    with pytest.raises(ResultsError, match=pattern):
        load_run(wifi_copy)


def test_missing_files(tmp_path, wifi_copy):
    with pytest.raises(ResultsError, match="manifest.json: missing"):
        load_run(tmp_path)
    (wifi_copy / "measurements.csv").unlink()
    with pytest.raises(ResultsError, match="measurements.csv: missing"):
        load_run(wifi_copy)


def test_find_and_load_runs(tmp_path, wifi_copy):
    assert find_run_dirs(WIFI) == [WIFI]
    runs = load_runs(RESULTS)
    assert [r.experiment for r in runs] == ["faas_energy", "folding", "network_topologies", "wifi_scaling"]
    # a report written inside a results directory is not mistaken for runs
    (tmp_path / "report" / "x").mkdir(parents=True)
    (tmp_path / "report" / "x" / "manifest.json").write_text("{}")
    assert find_run_dirs(tmp_path) == [wifi_copy]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ResultsError, match="no run directories"):
        find_run_dirs(empty)
