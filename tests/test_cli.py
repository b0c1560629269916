import json

from click.testing import CliRunner

from edgelab.cli import cli

TOPO = "topologies/wifi-phones.yaml"


def test_validate_ok():
    r = CliRunner().invoke(cli, ["validate", TOPO])
    assert r.exit_code == 0 and "5 nodes" in r.output


def test_validate_error_is_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnetworks: []\nnodes: []\n")
    r = CliRunner().invoke(cli, ["validate", str(bad)])
    assert r.exit_code == 2
    assert "bad.yaml:2: networks: must be a non-empty list" in r.output
    assert "Traceback" not in r.output


def test_plan_json_has_placement():
    r = CliRunner().invoke(cli, ["plan", TOPO, "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert set(d["placement"]) == {n["name"] for n in d["nodes"]}


def test_plan_table_shows_airtime_budget_and_factor():
    r = CliRunner().invoke(cli, ["plan", TOPO])
    assert r.exit_code == 0, r.output
    assert "folding factor 5.00" in r.output and "Mbit/s" in r.output


def test_export_writes_plan(tmp_path):
    out = tmp_path / "plan.json"
    r = CliRunner().invoke(cli, ["export", TOPO, "-o", str(out)])
    assert r.exit_code == 0
    assert json.loads(out.read_text())["name"] == "wifi"


def test_unknown_experiment():
    r = CliRunner().invoke(cli, ["run", "no_such_thing"])
    assert r.exit_code == 2 and "no experiment 'no_such_thing'" in r.output


def test_help_everywhere():
    for cmd in ([], ["validate"], ["plan"], ["up"], ["down"], ["run"], ["report"], ["calibrate"], ["export"]):
        r = CliRunner().invoke(cli, [*cmd, "--help"])
        assert r.exit_code == 0 and "Usage" in r.output


def test_up_dry_run_on_g5k_prints_the_plan_and_reserves_nothing():
    from click.testing import CliRunner

    from edgelab.cli import cli

    r = CliRunner().invoke(cli, ["up", "topologies/wifi-phones.yaml", "--backend", "g5k", "--dry-run",
                                 "-o", "site=lyon", "-o", "cluster=nova"])
    assert r.exit_code == 0, r.output
    assert "site: lyon   cluster: nova   nodes: 5" in r.output
    assert "nxc" in r.output and "Network constraints" in r.output
