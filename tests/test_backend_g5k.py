"""g5k backend: EnOSlib reservation config, folding, netem constraints from the
plan, dry-run text, and the up()/down() glue. No Grid'5000 access needed:
EnOSlib objects are built offline and inspected; the provider is injected."""

from __future__ import annotations

import json
import re
import subprocess
from types import SimpleNamespace

import enoslib as en
import pytest

from edgelab.backends import get_backend
from edgelab.backends.g5k import G5kBackend, dry_run, g5k_access_problems, split_options
from edgelab.backends.g5k_netem import build_netem, netem_constraints, netem_options
from edgelab.backends.g5k_reservation import (
    G5kSettings,
    build_g5k_conf,
    fold_nodes,
    job_types,
    plan_reservation,
)
from edgelab.errors import BackendError, FoldingError
from edgelab.linkemu.commands import DEFAULT_CLASS_SHARE
from edgelab.model import LinkParams
from edgelab.plan import make_plan
from edgelab.topology import parse_topology

from nxc_real import ROOT, guest_namespaces, in_ns, port_free, shim_env, sshd_available  # noqa: F401
from remote_helpers import wifi_plan


# -- reservation ------------------------------------------------------------------------------

@pytest.mark.parametrize("phones", [4, 12])
def test_g5k_conf_for_n_phones(phones):
    plan = wifi_plan(phones)
    res = plan_reservation(plan, G5kSettings(site="lyon", cluster="nova", walltime="02:30:00"), "g5k-ramdisk")
    d = build_g5k_conf(res).to_dict()
    assert d["job_name"] == "edgelab-wifi" and d["walltime"] == "02:30:00"
    assert d["job_type"] == ["origin=enoslib_g5k"]  # no deploy: kexec flavours need root, granted by EnOSlib
    [machine] = d["resources"]["machines"]
    assert machine == {"roles": ["edgelab"], "primary_network": "prod-lyon", "secondary_networks": [],
                       "cluster": "nova", "nodes": phones + 1}
    assert d["resources"]["networks"] == [{"id": "prod-lyon", "type": "prod", "roles": ["prod"], "site": "lyon"}]
    assert res.oar_resources == f"{{cluster='nova'}}/nodes={phones + 1},walltime=02:30:00"


def test_g5k_image_needs_a_deploy_job():
    res = plan_reservation(wifi_plan(), G5kSettings(exotic=True), "g5k-image")
    d = build_g5k_conf(res).to_dict()
    assert d["job_type"] == ["deploy", "exotic", "origin=enoslib_g5k"] and d["env_name"] == "debian12-min"
    assert job_types("g5k-ramdisk") == () and job_types("g5k-nfs-store", exotic=True) == ("exotic",)


def test_folding_respects_cpu_memory_and_count():
    plan = wifi_plan(6)  # server 0.5 cpu/512 MiB, phones 0.25 cpu/256 MiB
    assert fold_nodes(plan.nodes, 16, 131072, 1) == [[n.name] for n in plan.nodes]
    assert fold_nodes(plan.nodes, 1.0, 131072, 10) == [
        ["server-1", "phone-1", "phone-2"], ["phone-3", "phone-4", "phone-5", "phone-6"]]
    assert fold_nodes(plan.nodes, 16, 768, 10) == [
        ["server-1", "phone-1"], ["phone-2", "phone-3", "phone-4"], ["phone-5", "phone-6"]]
    with pytest.raises(FoldingError, match="server-1 needs 0.5 cores"):
        fold_nodes(plan.nodes, 0.4, 131072, 4)


def test_explicit_placement_is_used_and_checked():
    plan = wifi_plan(2)
    res = plan_reservation(plan, G5kSettings(placement={"server-1": 0, "phone-1": 1, "phone-2": 1}), "g5k-ramdisk")
    assert res.placement == (("server-1",), ("phone-1", "phone-2")) and res.nodes == 2
    with pytest.raises(FoldingError, match=r"missing \['phone-2'\]"):
        plan_reservation(plan, G5kSettings(placement={"server-1": 0, "phone-1": 1}), "g5k-ramdisk")


# -- netem ------------------------------------------------------------------------------------

def test_netem_options_string():
    assert netem_options(LinkParams(rate_mbit=65, delay_ms=2, jitter_ms=0.5, loss_pct=0.5)) == \
        "delay 2ms 0.5ms loss 0.5% rate 65mbit"
    assert netem_options(LinkParams(rate_mbit=1000, delay_ms=0.05)) == "delay 0.05ms rate 1000mbit"
    assert netem_options(LinkParams(rate_mbit=0)) == ""


def _parse(options: str) -> dict:
    tok = options.split()
    out = {}
    if "delay" in tok:
        i = tok.index("delay")
        out["delay_ms"] = float(tok[i + 1].removesuffix("ms"))
        nxt = tok[i + 2] if i + 2 < len(tok) else ""
        out["jitter_ms"] = float(nxt.removesuffix("ms")) if nxt.endswith("ms") else 0.0
    if "loss" in tok:
        out["loss_pct"] = float(tok[tok.index("loss") + 1].removesuffix("%"))
    if "rate" in tok:
        out["rate_mbit"] = float(tok[tok.index("rate") + 1].removesuffix("mbit"))
    return out


def test_netem_constraints_equal_each_interface_link():
    plan = make_plan(parse_topology("""
name: mixed
networks:
  - {name: wlan, profile: wifi-80211n-2.4ghz}
  - {name: lan, kind: ethernet, link: {rate_mbit: 100, delay_ms: 1.5, loss_pct: 0.1}}
nodes:
  - {group: server, role: k3s-server, networks: [{name: wlan, uplink: true}, lan]}
  - {group: phone, role: phone, count: 3, networks: [wlan]}
"""))
    cons = netem_constraints(plan)
    for node in plan.nodes:
        got = cons[node.name]
        assert len(got) == 2 * len(node.interfaces)
        for itf in node.interfaces:
            mine = [c for c in got if c.device == itf.ifname]
            assert {type(c) for c in mine} == {en.NetemOutConstraint, en.NetemInConstraint}
            for c in mine:
                want = {"rate_mbit": itf.link.rate_mbit, "delay_ms": itf.link.delay_ms,
                        "jitter_ms": itf.link.jitter_ms, "loss_pct": itf.link.loss_pct}
                want = {k: v for k, v in want.items() if v or k == "rate_mbit"}
                if "jitter_ms" in want or "delay_ms" in want:
                    want.setdefault("jitter_ms", 0.0)
                assert _parse(c.options) == pytest.approx(want)


def test_build_netem_produces_tc_commands_on_mapped_devices():
    plan = wifi_plan(2)
    hosts = {n.name: en.Host(f"172.16.97.{i}", alias=n.name, user="root") for i, n in enumerate(plan.nodes, 3)}
    netem = build_netem(plan, hosts, devices={"wlan0": "eno1", "eth0": "eno1"})
    assert len(netem.sources) == 3
    src = netem.sources[hosts["phone-1"]]
    assert [c.options for c in src.outbounds] == ["delay 2ms 0.5ms loss 0.5% rate 65mbit"]
    _, add, apply = src.all_commands()
    assert "tc qdisc add dev eno1 root netem delay 2ms 0.5ms loss 0.5% rate 65mbit" in add
    assert any(cmd.startswith("tc qdisc add dev ifb") and cmd.endswith("netem delay 2ms 0.5ms loss 0.5% rate 65mbit")
               for cmd in apply)
    # the Wi-Fi access point's NIC gets no `tc qdisc add dev X ingress` (its station filters need that hook)
    ap = build_netem(plan, hosts, devices={"wlan0": "eno1", "eth0": "eno1"}, egress_only={"server-1"})
    _, add, apply = ap.sources[hosts["server-1"]].all_commands()
    assert "tc qdisc add dev eno1 root netem delay 0.05ms rate 1000mbit" in add
    assert not any("ingress" in c for c in add + apply), (add, apply)
    _, add, _ = ap.sources[hosts["phone-1"]].all_commands()
    assert "tc qdisc add dev eno1 ingress" in add


# -- dry run ----------------------------------------------------------------------------------

def test_dry_run_text():
    text = dry_run(wifi_plan(4), {"composition": "k3s-phones", "cluster": "gros", "site": "nancy",
                                  "walltime": "00:45:00"})
    assert "site: nancy   cluster: gros   nodes: 5   walltime: 00:45:00" in text
    assert "job type: default (no deploy)" in text
    assert "OAR resources: {cluster='gros'}/nodes=5,walltime=00:45:00" in text
    assert "Folding: 5 virtual nodes on 5 physical nodes, at most 1 per node" in text
    assert f"nxc (in the project directory {ROOT})" in text
    assert f"$ nxc --envdir {ROOT} build -C k3s-phones::g5k-ramdisk --setup-param k3s_phones=4" in text
    assert (f"$ nxc --envdir {ROOT} start -C k3s-phones::g5k-ramdisk -r server=server-1 "
            f"-r phone=phone-1,phone-2,phone-3,phone-4 -i {ROOT}/.edgelab/ssh/id_ed25519.pub -m") in text
    # every plan interface is on the node's one testbed NIC, found on each node at bring-up
    assert "phone-3      <default-route NIC> out delay 2ms 0.5ms loss 0.5% rate 65mbit" in text
    assert "<default-route NIC>: the device of each node's default route" in text
    assert "server-1     <default-route NIC> in  delay 0.05ms rate 1000mbit" in text
    # the Wi-Fi cell's access point as a node (the uplink server): budget, per-station classes, routes
    assert "not emulated" not in text
    cap = wifi_plan(4).network("wlan").segments[0].capacity_mbit
    assert (f"Wi-Fi cell wlan/0: access point server-1 (10.77.0.1) [uplink node], airtime budget {cap:.1f} Mbit/s "
            "(Bianchi, 4 stations)") in text
    assert ("on server-1: sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.send_redirects=0 "
            "net.ipv4.conf.<default-route NIC>.send_redirects=0") in text
    assert (f"on server-1: python3 -m edgelab.linkemu shared --dev '<default-route NIC>' --name air0 "
            f"--capacity-mbit {cap:.6g} --tag ") in text
    assert text.count("--station-mac '<MAC of phone-") == 4
    share = (cap * (1 - DEFAULT_CLASS_SHARE)) / 4
    per = re.search(r"per station: (.*)", text).group(1)
    assert per.count(f"Mbit/s (ceil {cap:.1f})") == 4 and f"phone-4 {share:.2f} Mbit/s" in per, (per, share)
    # every station reaches every other plan address through the AP (3 peers each), no route on the AP
    routes = re.findall(r"on (\S+): ip route replace (\S+) via 10\.77\.0\.1 dev <default-route NIC>", text)
    assert len(routes) == 4 * 3 and {n for n, _ in routes} == {f"phone-{i}" for i in range(1, 5)}
    assert "server-1     <default-route NIC> in  delay 0.05ms rate 1000mbit  [not applied: Wi-Fi access point" in text
    off = dry_run(wifi_plan(4), {"composition": "k3s-phones", "airtime": False})
    assert "not emulated (airtime=false" in off and "wlan/segment0" in off and "access point" not in off


def test_oar_project_and_flake_dir_are_separate_options():
    text = dry_run(wifi_plan(1), {"project": "lab-edge", "flake_dir": "/home/alice/edgelab"})
    assert "'project': 'lab-edge'" in text and "$ nxc --envdir /home/alice/edgelab build" in text


def test_dry_run_netem_off_and_nic_option():
    text = dry_run(wifi_plan(1), {"netem": False})
    assert "none from EnOSlib (netem=false)" in text and "out delay" not in text
    text = dry_run(wifi_plan(1), {"iface": "enp24s0f0"})
    assert "phone-1      enp24s0f0 out delay 2ms" in text


def test_dry_run_folding_and_bad_options():
    text = get_backend("g5k", max_per_host=4, host_cpu=1.0).dry_run(wifi_plan(6))
    assert "7 virtual nodes on 2 physical nodes, at most 4 per node" in text
    assert "physical 1: server-1, phone-1, phone-2  (1 cores, 1024 MiB)" in text
    with pytest.raises(BackendError, match=r"unknown g5k backend options \['clustr'\]"):
        split_options({"clustr": "x"})
    with pytest.raises(BackendError, match="Grid'5000 nxc flavour"):
        split_options({"flavour": "vm"})


# -- up()/down() ------------------------------------------------------------------------------

def test_up_without_grid5000_access_raises(tmp_path):
    problems = g5k_access_problems(home=str(tmp_path), hostname="laptop.example.org")
    assert any(".python-grid5000.yaml" in p for p in problems)
    backend = G5kBackend(access_check=lambda: g5k_access_problems(home=str(tmp_path), hostname="laptop"),
                         which=lambda n: None, flake_dir=str(tmp_path))
    with pytest.raises(BackendError) as err:
        backend.up(wifi_plan())
    assert "Grid'5000 API access" in str(err.value) and "`nxc` (NixOS-Compose) is not on PATH" in str(err.value)


def test_folded_up_needs_grid5000_access_but_not_nxc(tmp_path):
    """Above factor 1 each machine runs its share with the local backend (tests/test_multihost.py
    brings one up over SSH-lab machines): no nxc needed, only the API."""
    backend = G5kBackend(max_per_host=3, flake_dir=str(tmp_path), access_check=lambda: ["no API here"],
                         which=lambda n: None)
    with pytest.raises(BackendError) as err:
        backend.up(wifi_plan())
    assert "no API here" in str(err.value) and "nxc" not in str(err.value)


class FakeProvider:
    """Stands in for enoslib.G5k (Grid'5000's API is not reachable from here):
    returns the hosts a job would, records calls."""

    def __init__(self, conf, addresses):
        self.conf = conf
        self.addresses = addresses
        self.calls = []

    def init(self):
        self.calls.append("init")
        return {"edgelab": [en.Host(a) for a in self.addresses]}, {}

    def destroy(self):
        self.calls.append("destroy")

    jobs = []


JOB_NODES = ["127.0.0.3", "127.0.0.2", "127.0.0.4"]


def test_up_reserves_deploys_with_real_nxc_and_reaches_the_job_nodes(shim_env, monkeypatch):
    """Reservation (injected provider) -> machine file -> the REAL `nxc build`/`nxc start -m`
    (kexec over the ssh shim, nmap shim probing port 22) -> nxc's deployment file -> the job's
    nodes as a RemoteTestbed over SSH -> the Wi-Fi cell's access point on the uplink machine ->
    EnOSlib netem on them -> teardown undoes the AP and releases the job. Each stand-in node's
    sessions run in a network namespace of its own (nxc_real.guest_namespaces: its NIC eth1,
    carrying its default route and plan address), so the AP's routes and sysctls stay off this machine."""
    why = sshd_available()
    if why:
        pytest.skip(why)
    busy = [a for a in JOB_NODES if not port_free(a, 22)]
    if busy:
        pytest.skip(f"port 22 on {busy} is in use (the stand-in Grid'5000 nodes serve SSH there)")
    import sys

    deployed = []
    monkeypatch.setattr(en.Netem, "deploy", lambda self, *a, **k: deployed.append(self))
    monkeypatch.setattr(en.Netem, "destroy", lambda self, *a, **k: deployed.append("destroyed"))
    providers = []

    def provider_factory(conf):
        providers.append(FakeProvider(conf, JOB_NODES))
        return providers[-1]

    plan = wifi_plan(2)
    with guest_namespaces(plan, monkeypatch, default_route=True) as prefix:
        backend = G5kBackend(provider_factory=provider_factory, access_check=lambda: [],
                             flake_dir=str(shim_env.project), ready_timeout=60, node_python=sys.executable)
        tb = backend.up(plan)
        try:
            assert providers[0].conf.to_dict()["resources"]["machines"][0]["nodes"] == 3
            machine_file = shim_env.project / ".edgelab" / "wifi.machines"
            assert machine_file.read_text().split() == sorted(JOB_NODES)
            kexecs = [c for c in shim_env.calls("ssh") if any("kexec.sh" in a for a in c)]
            assert sorted(c[-2] for c in kexecs) == sorted(JOB_NODES)  # nxc kexec'ed every reserved node
            assert [c[:2] for c in shim_env.calls("nmap")][0] == ["-p22", "-Pn"]
            deployment = json.loads((shim_env.project / "deploy" / "k3s-phones::g5k-ramdisk.json").read_text())
            assert {v["host"]: ip for ip, v in deployment["deployment"].items()} == \
                {n: tb.transport.device(n).host for n in tb.nodes}
            assert {tb.transport.device(n).port for n in tb.nodes} == {22}
            assert tb.run("phone-1", ["id", "-un"]).stdout.strip() == "root"
            [netem] = deployed
            assert {h.address for h in netem.sources} == set(JOB_NODES)
            # the NIC netem shapes is the one each node routes by default (found over SSH on the node)
            assert {c.device for src in netem.sources.values() for c in src.outbounds} == {"eth1"}
            assert tb.transport.device("phone-1").ifname("wlan0") == "eth1"
            assert {h.keyfile for h in netem.sources} == {str(shim_env.project / ".edgelab" / "ssh" / "id_ed25519")}
            # the access point (the uplink machine) gets egress netem only; the phones both directions
            by_alias = {h.alias: src for h, src in netem.sources.items()}
            assert by_alias["server-1"].inbounds == [] and by_alias["server-1"].outbounds
            assert by_alias["phone-1"].inbounds
            # ... and the cell's budget, routes and forwarding (the nxc testbed's apply_cells)
            ap_ip = tb.address("server-1")
            assert f"via {ap_ip} dev eth1" in tb.run("phone-1", ["ip", "route", "get", tb.address("phone-2")]).stdout
            assert "air0" in in_ns(f"{prefix}-server-1", "ip -o link")
            assert in_ns(f"{prefix}-server-1", "sysctl -n net.ipv4.ip_forward").strip() == "1"
            facts = tb.facts()
            assert facts["backend"] == "g5k" and facts["reservation"]["cluster"] == "paravance"
            assert facts["link_engine"] == "enoslib-netem" and facts["devices"]["server-1"]["kernel"]
            assert facts["access_points"][0]["ap"] == "server-1" and facts["unemulated"] == []
        finally:
            tb.down()
        tb.down()
        assert providers[0].calls == ["init", "destroy"] and deployed[-1] == "destroyed"
        assert "air0" not in in_ns(f"{prefix}-server-1", "ip -o link")
        assert in_ns(f"{prefix}-server-1", "sysctl -n net.ipv4.ip_forward").strip() == "0"
        assert "via" not in in_ns(f"{prefix}-phone-1", "ip route")
    # the stand-in nodes keep running, as machines do until the job ends: the fixture stops them


def test_up_releases_the_job_when_nxc_fails(shim_env):
    providers = []
    backend = G5kBackend(provider_factory=lambda conf: providers.append(FakeProvider(conf, JOB_NODES[:1]))
                         or providers[-1], access_check=lambda: [], flake_dir=str(shim_env.project), max_per_host=1)
    with pytest.raises(BackendError, match="Grid'5000 gave 1 nodes, 3 were asked for"):
        backend.up(wifi_plan(2))
    assert providers[0].calls == ["init", "destroy"]


def test_down_by_name_destroys_the_named_job():
    seen = []
    backend = G5kBackend(provider_factory=lambda conf: seen.append(conf) or SimpleNamespace(
        destroy=lambda: seen.append("destroy")))
    backend.down("wifi")
    assert seen[0].job_name == "edgelab-wifi" and seen[1] == "destroy"
