"""The file-system folding experiment without root: the I/O workload's command lines and
parsers (fio run for real on a temporary directory), the dry runs on nxc and g5k
(disks, node counts, IOR/mdtest per client), argument checks, and the analysis with
the paper's rule of thumb."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.folding import folding_verdict
from analysis.fs_folding import bandwidth_table, fs_folding_figure, rule_of_thumb, rule_table
from edgelab.dfs import bench
from edgelab.dfs.compositions import COMPOSITIONS, remote_dry_run, setup_params

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "experiments" / "fs_folding.py"


@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed (scripts/bootstrap installs it)")
def test_fio_phases_measure_on_a_real_directory(tmp_path):
    load = bench.IOLoad(size_mib=4, seconds=0.3, md_files=40)
    (tmp_path / "md-n1").mkdir()
    got = {}
    for phase in ("write", "read", "create"):
        p = subprocess.run(bench.fio_argv(phase, str(tmp_path), "n1", load), capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0, p.stderr
        got[phase] = bench.parse_fio(p.stdout, phase)
    assert got["write"]["mib_per_s"] > 0 and got["write"]["bytes"] >= 4 << 20
    assert got["read"]["mib_per_s"] > 0
    assert got["create"]["ops_per_s"] > 0 and got["create"]["ops"] == 40
    assert len(list((tmp_path / "md-n1").iterdir())) == 40
    with pytest.raises(ValueError, match="no JSON"):
        bench.parse_fio("fio: something went wrong", "write")


def test_mdtest_and_ior_parsers_reject_what_they_cannot_read():
    # mdtest's SUMMARY rows (IOR 3.3 text format: max, min, mean, stddev).
    text = ("SUMMARY rate: (of 1 iterations)\n   Operation   Max   Min   Mean   Std Dev\n"
            "   File creation     :   1500.1   1400.0   1450.5   10.0\n"
            "   File stat         :   9000.0   8000.0   8500.0   20.0\n")
    assert bench.parse_mdtest(text) == {"creation_ops_per_s": 1450.5, "stat_ops_per_s": 8500.0}
    with pytest.raises(ValueError, match="File creation"):
        bench.parse_mdtest("nothing here")
    with pytest.raises(ValueError, match="JSON summary"):
        bench.parse_ior_json("{}")
    with pytest.raises(ValueError):
        bench.IOLoad(size_mib=0)


@pytest.mark.parametrize("backend", ["nxc", "g5k"])
@pytest.mark.parametrize("fs", sorted(COMPOSITIONS))
def test_dry_run_shows_disks_counts_and_ior(fs, backend):
    out = remote_dry_run(fs, backend, 3, 2, bench.IOLoad(), ["site=nancy", "cluster=gros"] if backend == "g5k" else [])
    c = COMPOSITIONS[fs]
    assert f"--setup-param {c.io_param}=2 --setup-param {c.client_param}=3" in out
    assert ("loop file" in out) if backend == "nxc" else ("KDPL_TMP_disk0" in out)
    for i in (1, 2, 3):
        assert f"client-{i}: ior -a POSIX -w -r" in out and f"client-{i}: mdtest -F -C -T -r" in out
    assert setup_params(fs, 3, 2) == {c.io_param: 2, c.client_param: 3}


def test_script_dry_run_and_argument_errors():
    p = subprocess.run([sys.executable, str(SCRIPT), "--backend", "nxc", "--dry-run", "--factors", "2,4",
                        "--fs", "orangefs"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("### orangefs") == 2 and "orangefs_clients=3" in p.stdout
    p = subprocess.run([sys.executable, str(SCRIPT), "--fs", "nfs"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert p.returncode == 2 and "this kernel has no NFS" in p.stderr
    p = subprocess.run([sys.executable, str(SCRIPT), "--factors", "1,2"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 2 and "must exceed --io-nodes" in p.stderr
    p = subprocess.run([sys.executable, str(SCRIPT), "--backend", "ssh", "--dry-run"], capture_output=True, text=True,
                       timeout=60, cwd=ROOT)
    assert p.returncode == 2 and "ssh backend" in p.stderr


def _synthetic_run(drop_at: int) -> pd.DataFrame:
    """Three repetitions per factor; per-client bandwidth flat, then halved from ``drop_at``."""
    rows, point = [], 0
    for rep in range(3):
        for f in (2, 3, 4, 6):
            point += 1
            wobble = 1 + 0.01 * (rep - 1)
            for metric, base in (("throughput_write_mib_s", 100.0), ("throughput_read_mib_s", 200.0),
                                 ("throughput_create_ops_s", 500.0)):
                v = base * wobble * (0.5 if f >= drop_at else 1.0)
                rows.append({"point": point, "factor": f, "nb_cpu": f - 1, "nb_io": 1, "rep": rep, "metric": metric,
                             "value": v, "unit": "", "node": ""})
    return pd.DataFrame(rows)


def test_analysis_breaking_point_and_rule_of_thumb(tmp_path):
    df = _synthetic_run(drop_at=4)
    res = folding_verdict(df, list(bandwidth_table(df).filter(like="_mean").columns.str[:-5]), tolerance=0.1)
    assert res.breaking_point == 4 and res.max_factor == 3
    rules = rule_table(df)
    assert list(rules["factor"]) == [2, 3, 4, 6]
    assert math.isclose(rules.loc[0, "rule_f_break"], rule_of_thumb(1, 1)) and rule_of_thumb(16, 2) == pytest.approx(4.8)
    assert set(rules["rule_predicts"]) <= {"faithful", "broken"}
    fig = fs_folding_figure(df, res, {})
    labels = [t.get_text() for ax in fig.axes for t in (ax.get_legend().get_texts() if ax.get_legend() else [])]
    assert any("measured breaking point 4" in x for x in labels)
    assert any("f_break ≈ 1 + 0.3·nb_cpu − 0.5·nb_io" in x for x in labels)
