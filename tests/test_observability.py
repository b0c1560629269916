"""Observation stack: the Grafana dashboards (structure; every query names a metric that a live
edgelab service really exports), promtool on every /metrics page, and modules/observability.nix
evaluated with nixpkgs' lib against a plan."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.cbook as cbook
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from edgelab.plan import make_plan
from edgelab.scenario_topologies import faas_topology
from edgelab.services.metrics import EXPORTED, PROMETHEUS_BUILTIN

from svhelpers import free_port, service, url_of, wait_port

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
PROMQL_WORDS = {"sum", "rate", "increase", "irate", "avg", "min", "max", "count", "by", "without", "on",
                "ignoring", "histogram_quantile", "le", "and", "or", "unless", "offset", "bool"}


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (label matchers, ranges, strings and functions removed)."""
    e = re.sub(r'"[^"]*"', "", expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(r"\b(by|without)\s*\([^)]*\)", "", e)
    return {t for t in re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", e) if t not in PROMQL_WORDS}


def dashboard_metrics() -> set[str]:
    return {m for d in DASHBOARDS for p in json.loads(d.read_text())["panels"] for t in p["targets"]
            for m in metric_names(t["expr"])}


def test_metric_name_extraction():
    assert metric_names('sum by (le) (rate(edgelab_phone_request_seconds_bucket{mode="tflite"}[1m]))') \
        == {"edgelab_phone_request_seconds_bucket"}
    assert metric_names('sum(up{job="phones"}) / 2') == {"up"}


def test_dashboards_are_grafana_dashboards_on_the_provisioned_datasource():
    assert {d.stem for d in DASHBOARDS} == {"edgelab-power", "edgelab-faas", "edgelab-phones"}
    uids = set()
    for path in DASHBOARDS:
        d = json.loads(path.read_text())
        assert d["uid"] not in uids and d["title"] and isinstance(d["schemaVersion"], int), path
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)) and d["panels"], path
        for p in d["panels"]:
            assert p["type"] in ("timeseries", "stat", "gauge") and p["title"], (path, p)
            assert set(p["gridPos"]) == {"h", "w", "x", "y"} and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            assert p["datasource"] == {"type": "prometheus", "uid": "edgelab-prometheus"}
            assert p["targets"] and all(t["expr"] and t["refId"] for t in p["targets"])
            for t in p["targets"]:
                names = metric_names(t["expr"])
                assert names, (path, t["expr"])
                assert names <= set(EXPORTED) | PROMETHEUS_BUILTIN, (path, names - set(EXPORTED))


def scrape(url: str) -> tuple[str, set[str]]:
    text = requests.get(url, timeout=5).text
    return text, {s.name for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_dashboard_metric_is_on_a_live_metrics_page():
    """Start the plug, the phone service and the orchestrator with a worker, use each once,
    scrape them: the dashboards' metrics must all be there (and pass promtool)."""
    pages: dict[str, str] = {}
    seen: set[str] = set()
    phone_m, orch_m = free_port(), free_port()
    with service("edgelab.services.power", "--port", "0", "--watts", "2", "--interval", "0.1") as (_, pl), \
         service("edgelab.services.phone", "--port", "0", "--metrics-port", str(phone_m)) as (_, ph), \
         service("edgelab.services.beaglepaas", "orchestrator", "--port", "0", "--metrics-port", str(orch_m),
                 "--meter", f"w1={url_of(pl)}", "--meter-interval", "0.1") as (_, orch):
        worker = subprocess.Popen([sys.executable, "-m", "edgelab.services.beaglepaas", "worker", "--connect",
                                   url_of(orch).split("//")[1], "--id", "w1"], cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            hopper = open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), "rb").read()
            assert requests.post(url_of(ph) + "/detect?mode=tflite", data=hopper, timeout=60).status_code == 200
            host, port = url_of(orch).split("//")[1].rsplit(":", 1)
            out = subprocess.run([sys.executable, "-m", "edgelab.services.beaglepaas", "submit",
                                  "--connect", f"{host}:{port}", "--function", "float_operations", "--count", "2",
                                  "--wait", "30"], capture_output=True, text=True, timeout=60, cwd=ROOT)
            assert out.returncode == 0, out.stderr
            time.sleep(0.5)                                   # the plug's samples cover the executions
            wait_port(phone_m)
            for name, url in (("plug", url_of(pl) + "/metrics"), ("phone", f"http://127.0.0.1:{phone_m}/metrics"),
                              ("orchestrator", f"http://127.0.0.1:{orch_m}/metrics")):
                pages[name], names = scrape(url)
                seen |= names
        finally:
            worker.terminate()
            worker.wait(10)
    missing = dashboard_metrics() - seen - PROMETHEUS_BUILTIN
    assert not missing, f"dashboards query metrics no service exported: {missing}"
    assert set(EXPORTED) <= seen, set(EXPORTED) - seen
    if shutil.which("promtool"):
        for name, text in pages.items():
            r = subprocess.run(["promtool", "check", "metrics"], input=text, text=True, capture_output=True)
            assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (name, r.stdout + r.stderr)


SHARED = ROOT.parent / "shared" / "nix" / "nixpkgs-lib" / "lib"
NIX = shutil.which("nix-instantiate")


@pytest.mark.skipif(NIX is None or not SHARED.exists(),
                    reason="needs nix-instantiate and ../shared/nix/nixpkgs-lib (see ../shared/nix/README.md)")
def test_observability_module_scrapes_what_the_plan_implies(tmp_path):
    plan = make_plan(faas_topology(2))
    pf = tmp_path / "plan.json"
    pf.write_text(json.dumps(plan.to_dict()))
    # stubs stand in for the nixpkgs options the module sets (their real types are checked by
    # `nix flake check` where nixpkgs is available)
    expr = f"""
      let lib = import {SHARED};
          stub = {{ lib, ... }}: {{ options = {{
            services.prometheus = lib.mkOption {{ type = lib.types.anything; default = {{}}; }};
            services.grafana = lib.mkOption {{ type = lib.types.anything; default = {{}}; }};
            networking.firewall.allowedTCPPorts = lib.mkOption {{ type = lib.types.listOf lib.types.port; default = []; }};
          }}; }};
          ev = lib.evalModules {{ modules = [ stub {ROOT}/modules/observability.nix
            {{ edgelab.observability = {{ enable = true; planFile = {pf}; nodeExporters = true; }}; }} ]; }};
          c = ev.config;
      in {{ jobs = c.services.prometheus.scrapeConfigs; interval = c.services.prometheus.globalConfig.scrape_interval;
            ds = c.services.grafana.provision.datasources.settings.datasources;
            dash = toString (builtins.head c.services.grafana.provision.dashboards.settings.providers).options.path;
            ports = c.networking.firewall.allowedTCPPorts; }}
    """
    r = subprocess.run([NIX, "--eval", "--strict", "--json", "-E", expr], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in out["jobs"]}
    addr = {n.name: n.interfaces[0].address.split("/")[0] for n in plan.nodes}
    assert jobs["plugs"] == [f"{addr['power-1']}:8100", f"{addr['power-1']}:8101"]
    assert jobs["faas"] == [f"{addr['orchestrator-1']}:9102"]
    assert sorted(jobs["nodes"]) == sorted(f"{a}:9100" for a in addr.values())
    assert "phones" not in jobs                                     # no phone in this plan: no empty job
    assert out["interval"] == "5s" and out["ports"] == [9090, 3000]
    assert out["ds"][0]["uid"] == "edgelab-prometheus" and out["ds"][0]["url"] == "http://127.0.0.1:9090"
    assert Path(out["dash"]).resolve() == (ROOT / "dashboards").resolve()
