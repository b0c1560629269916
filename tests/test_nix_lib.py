"""The Nix layer: every .nix file parses, the pure helpers in nix/lib.nix
compute what they should, Nix and the Python planner agree on node names,
roles, addresses, routes and link parameters, and flake.lock is a valid pin.

Only nix-instantiate (Nix 2.8 is enough) is needed. Module and composition
evaluation is tests/test_nix_eval.py; building is `nix flake check`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgelab.plan import make_plan

ROOT = Path(__file__).resolve().parent.parent
NIX = shutil.which("nix-instantiate")
pytestmark = [
    pytest.mark.nix,
    pytest.mark.skipif(NIX is None, reason="nix-instantiate not found: install Nix (Debian: nix-bin) to test the Nix layer"),
]
COMPOSITIONS = ["k3s-phones", "beaglepaas", "mesh"]
sys.path.insert(0, str(ROOT / "nix"))
from check_agreement import disagreements  # noqa: E402
from make_plan import scaled_topology  # noqa: E402


def nix_eval(expr: str) -> object:
    """Evaluate a Nix expression strictly (no nixpkgs) and return it as Python."""
    proc = subprocess.run([NIX, "--eval", "--strict", "--json", "-E", expr], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"nix-instantiate failed on:\n{expr}\n{proc.stderr}")
    return json.loads(proc.stdout)


def lib_call(body: str, plan_path: Path | None = None) -> object:
    plan = f'l.readPlan {plan_path}' if plan_path else "null"
    return nix_eval(f"let l = import {ROOT}/nix/lib.nix; p = {plan}; in {body}")


def write_plan(tmp_path: Path, topology: Path, **counts: int) -> tuple[Path, object]:
    """The plan pkgs/plan.nix would write (nix/make_plan.py: a count of 0 drops a group)."""
    topo = scaled_topology(str(topology), counts)
    plan = make_plan(topo)
    path = tmp_path / f"{topo.name}-{'-'.join(f'{g}{n}' for g, n in counts.items()) or 'default'}.json"
    path.write_text(json.dumps(plan.to_dict()))
    return path, plan


def nix_view(plan_path: Path) -> list[dict]:
    """What nix/lib.nix derives for every node (the flake check's view)."""
    return lib_call('map (n: { inherit (n) name; settings = l.nodeSettings { plan = p; inherit (n) name; }; '
                    'commands = l.linkCommands { plan = p; inherit (n) name; }; '
                    'ap_routes = l.cellRouteCommands { plan = p; inherit (n) name; }; }) p.nodes', plan_path)


# ------------------------------------------------------------------ parsing

def nix_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.nix") if ".venv" not in p.parts and ".git" not in p.parts)


def test_every_nix_file_parses():
    files = nix_files()
    assert {"flake.nix", "nix/lib.nix", "modules/default.nix", "pkgs/edgelab.nix"} <= {
        str(p.relative_to(ROOT)) for p in files}
    for path in files:
        proc = subprocess.run([NIX, "--parse", str(path)], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, f"{path.relative_to(ROOT)} does not parse:\n{proc.stderr}"


def test_parse_catches_a_broken_file(tmp_path):
    bad = tmp_path / "bad.nix"
    bad.write_text("{ a = 1; b = ; }")
    assert subprocess.run([NIX, "--parse", str(bad)], capture_output=True).returncode != 0


# ---------------------------------------------------------- pure helpers

def test_role_multiplication_names_and_values():
    got = lib_call('{ names = l.nodeNamesFor "phone" 4; set = l.multiply "phone" 3 (i: i * 10); '
                   'zero = l.multiply "phone" 0 (i: i); }')
    assert got["names"] == ["phone-1", "phone-2", "phone-3", "phone-4"]
    assert got["set"] == {"phone-1": 10, "phone-2": 20, "phone-3": 30}
    assert got["zero"] == {}


def test_roles_distribution_follows_counts(tmp_path):
    path, plan = write_plan(tmp_path, ROOT / "compositions/k3s-phones/topology.yaml", phone=7, relay=0)
    got = lib_call("{ rd = l.rolesDistribution p; counts = l.roleCounts p; }", path)
    assert got["rd"] == {"server": ["server-1"], "phone": [f"phone-{i}" for i in range(1, 8)]}
    assert got["counts"] == {"k3s-server": 1, "phone": 7}
    path, plan = write_plan(tmp_path, ROOT / "compositions/k3s-phones/topology.yaml", phone=2, relay=2)
    got = lib_call("l.rolesDistribution p", path)
    assert got == {"server": ["server-1"], "relay": ["relay-1", "relay-2"], "phone": ["phone-1", "phone-2"]}


def test_per_node_link_settings_and_interface_map(tmp_path):
    path, plan = write_plan(tmp_path, ROOT / "topologies/wifi-phones.yaml")
    got = lib_call('{ s = l.nodeSettings { plan = p; name = "phone-2"; ifmap = { wlan0 = "eth1"; }; }; '
                   'c = l.linkCommands { plan = p; name = "phone-2"; python = "/bin/py"; engine = "netem"; }; }', path)
    node = plan.node("phone-2")
    itf = node.interfaces[0]
    assert got["s"]["links"] == [{"dev": "eth1", "network": "wlan", **itf.link.to_dict()}]
    assert got["s"]["addresses"] == [{"dev": "eth1", "ip": itf.ip, "prefixLength": int(itf.address.split("/")[1])}]
    assert got["c"] == ["/bin/py -m edgelab.linkemu apply --dev wlan0 --rate-mbit 65 --delay-ms 2 "
                        "--jitter-ms 0.5 --loss-pct 0.5 --engine netem"]


def test_mesh_routes_and_address_commands(tmp_path):
    path, plan = write_plan(tmp_path, ROOT / "compositions/mesh/topology.yaml", phone=5)
    got = lib_call('l.addressCommands { plan = p; name = "phone-1"; ifmap = { mesh0 = "eth1"; }; }', path)
    n1 = plan.node("phone-1")
    assert got[0] == f"ip addr replace {n1.interfaces[0].address} dev eth1"
    routes = [c for c in got if " route " in c]
    # phone-1 reaches all 4 others through its only neighbour, phone-2.
    via = plan.node("phone-2").address("mesh")
    # src: replies leave with the node's mesh address, not the flavour's own one on eth1.
    assert len(routes) == 4 and all(r.endswith(f"via {via} dev eth1 onlink src {n1.address('mesh')}") for r in routes), routes
    assert {r.split()[3] for r in routes} == {r.destination for r in n1.routes}


def test_required_kernel_modules_are_checked_by_kernel_check():
    """The modules the NixOS side loads at boot are what `edgelab kernel-check` checks on a device."""
    from edgelab.kernelcheck import REQUIREMENTS

    got = lib_call("l.requiredKernelModules")
    assert got["serviceLB"] == ["xt_multiport"]
    checked_modules = {r.module for r in REQUIREMENTS if r.module}
    assert set(got["serviceLB"]) <= checked_modules, checked_modules


def test_resources_to_systemd():
    got = lib_call('{ m = l.memoryMax { memory_mib = 256; cpu = 0.5; speed = 0.5; }; '
                   'q = l.cpuQuota { memory_mib = 256; cpu = 0.5; speed = 0.5; }; }')
    assert got == {"m": "256M", "q": "25%"}


def test_unknown_node_is_a_clear_error(tmp_path):
    path, _ = write_plan(tmp_path, ROOT / "topologies/wifi-phones.yaml")
    proc = subprocess.run([NIX, "--eval", "--strict", "-E",
                           f'let l = import {ROOT}/nix/lib.nix; in l.node (l.readPlan {path}) "phone-99"'],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0 and "phone-99" in proc.stderr and "phone-1" in proc.stderr


# -------------------------------------------- the boot script really runs

def test_per_node_boot_script_runs_this_nodes_commands(tmp_path):
    path, plan = write_plan(tmp_path, ROOT / "compositions/mesh/topology.yaml", phone=3)
    recorder = tmp_path / "fakepy"
    log = tmp_path / "calls.log"
    recorder.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    recorder.chmod(recorder.stat().st_mode | stat.S_IEXEC)
    script = lib_call(f'l.perNodeScript {{ plan = p; commandsFor = n: l.linkCommands '
                      f'{{ plan = p; name = n; python = "{recorder}"; ifmap = {{ mesh0 = "eth1"; mesh1 = "eth1"; }}; }}; }}', path)
    (tmp_path / "boot.sh").write_text(script)
    env = {**os.environ, "EDGELAB_NODE": "phone-2"}
    proc = subprocess.run(["bash", str(tmp_path / "boot.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    calls = log.read_text().splitlines()
    # phone-2 has two mesh interfaces, both mapped onto eth1: impaired once.
    link = plan.node("phone-2").interfaces[0].link
    assert calls == [f"-m edgelab.linkemu apply --dev eth1 --rate-mbit {link.rate_mbit:g} --delay-ms {link.delay_ms:g} "
                     f"--jitter-ms {link.jitter_ms:g} --loss-pct {link.loss_pct:g} --engine auto"]
    env["EDGELAB_NODE"] = "phone-9"
    proc = subprocess.run(["bash", str(tmp_path / "boot.sh")], env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1 and "phone-9" in proc.stderr and "phone-3" in proc.stderr


# --------------------------------------------- Python and Nix agree

@pytest.mark.parametrize("topology,counts", [
    ("topologies/wifi-phones.yaml", {}),
    ("compositions/k3s-phones/topology.yaml", {"phone": 6, "relay": 0}),
    ("compositions/k3s-phones/topology.yaml", {"phone": 2, "relay": 3}),
    ("compositions/beaglepaas/topology.yaml", {"worker": 5}),
    ("compositions/mesh/topology.yaml", {"phone": 6}),
])
def test_python_and_nix_agree(tmp_path, topology, counts):
    path, plan = write_plan(tmp_path, ROOT / topology, **counts)
    view = nix_view(path)
    assert [v["name"] for v in view] == [n.name for n in plan.nodes]
    assert [v["settings"]["role"] for v in view] == [n.role for n in plan.nodes]
    # The same checker the flake check runs.
    assert disagreements(str(ROOT / topology), view, counts) == []


def test_agreement_checker_detects_a_difference(tmp_path):
    path, _ = write_plan(tmp_path, ROOT / "topologies/wifi-phones.yaml")
    view = nix_view(path)
    view[1]["commands"][0] = view[1]["commands"][0].replace("--delay-ms 2", "--delay-ms 3")
    view[2]["settings"]["addresses"][0]["ip"] = "10.9.9.9"
    view[3]["ap_routes"] = view[3]["ap_routes"][:-1]
    errs = disagreements(str(ROOT / "topologies/wifi-phones.yaml"), view)
    assert any("--delay-ms" in e for e in errs) and any("addresses" in e for e in errs), errs
    assert any(e.startswith(f"{view[3]['name']}: AP routes") for e in errs), errs


# ------------------------------------------------------------ compositions

@pytest.mark.parametrize("name", COMPOSITIONS)
def test_composition_topology_validates_and_test_script_compiles(name):
    from edgelab.topology import load_topology

    load_topology(ROOT / "compositions" / name / "topology.yaml")
    script = (ROOT / "compositions" / name / "test.py").read_text()
    script = re.sub(r"@[A-Z_]+@", "1", script)
    compile(script, f"compositions/{name}/test.py", "exec")


def test_compositions_are_nxc_shaped():
    text = (ROOT / "compositions/compositions.nix").read_text()
    for name in COMPOSITIONS:
        assert f"{name} = " in text
        comp = (ROOT / "compositions" / name / "composition.nix").read_text()
        assert "roles = {" in comp and "rolesDistribution" in comp and "testScript" in comp
    flake = (ROOT / "flake.nix").read_text()
    assert "nxc.lib.compose" in flake and "compositions/compositions.nix" in flake


# --------------------------------------------------------------- the lock

def test_flake_lock_is_valid_and_pins_both_inputs():
    lock = json.loads((ROOT / "flake.lock").read_text())
    assert lock["version"] == 7 and lock["root"] in lock["nodes"]
    nodes = lock["nodes"]

    def resolve(ref, seen=0):
        if isinstance(ref, str):
            assert ref in nodes, f"input refers to missing node {ref!r}"
            return ref
        assert seen < 10, "follows cycle"
        node = lock["root"]
        for name in ref:  # a `follows` path from the root
            node = resolve(nodes[node]["inputs"][name], seen + 1)
        return node

    for name, node in nodes.items():
        for ref in node.get("inputs", {}).values():
            resolve(ref)
        if name != lock["root"]:
            locked = node["locked"]
            assert re.fullmatch(r"[0-9a-f]{40}", locked["rev"]), name
            assert re.fullmatch(r"sha256-[A-Za-z0-9+/]{43}=", locked["narHash"]), name
            assert isinstance(locked["lastModified"], int) and locked["lastModified"] > 1.5e9, name
    root = nodes[lock["root"]]["inputs"]
    assert set(root) == {"nixpkgs", "nxc"}
    assert nodes[root["nixpkgs"]]["original"] == {"owner": "NixOS", "ref": "23.11", "repo": "nixpkgs", "type": "github"}
    assert nodes[root["nxc"]]["locked"]["owner"] == "oar-team"
    assert nodes[root["nxc"]]["locked"]["repo"] == "nixos-compose"
    # nxc follows our nixpkgs, as flake.nix says.
    assert resolve(nodes[root["nxc"]]["inputs"]["nixpkgs"]) == root["nixpkgs"]
    flake = (ROOT / "flake.nix").read_text()
    assert 'nxc.inputs.nixpkgs.follows = "nixpkgs"' in flake
    assert 'github:NixOS/nixpkgs/23.11' in flake and 'github:oar-team/nixos-compose/23.11' in flake


# ------------------------------------------------------------- CI workflow

def test_workflow_prepares_what_nxc_start_needs():
    """The GitHub workflow: an ssh key before `nxc start` (nxc reads ~/.ssh/id_rsa.pub),
    3 GiB VMs for k3s, every VM answering ssh before `nxc driver -t`, and the NixOS
    tests of every composition built with KVM."""
    import yaml

    wf = yaml.safe_load((ROOT / ".github/workflows/nix.yml").read_text())
    steps = wf["jobs"]["compositions"]["steps"]
    runs = [s.get("run", "") for s in steps]
    keygen = next(i for i, r in enumerate(runs) if "ssh-keygen" in r)
    start = next(i for i, r in enumerate(runs) if "nxc start" in r)
    assert keygen < start
    start_step = steps[start]
    assert int(start_step["env"]["MEM"]) >= 3072
    script = start_step["run"]
    assert script.index("ssh ") < script.index("nxc driver -t") and "22021 + id" in script
    matrix = wf["jobs"]["nixos-tests"]["strategy"]["matrix"]["composition"]
    assert sorted(matrix) == sorted(COMPOSITIONS)
    assert "nixos-test-${{ matrix.composition }}" in wf["jobs"]["nixos-tests"]["steps"][-1]["run"]
    shell = (ROOT / "flake.nix").read_text()
    assert "pkgs.qemu_kvm" in shell and "pkgs.vde2" in shell


def test_setup_params_keep_the_names_the_nxc_backend_passes():
    """The nxc backend passes plan counts as --setup-param with these names; every
    one is read by compositions/compositions.nix."""
    import tomllib

    params = tomllib.loads((ROOT / "setup.toml").read_text())["params"]
    assert {"k3s_phones", "workers", "mesh_phones", "batman", "relays"} <= set(params)
    text = (ROOT / "compositions/compositions.nix").read_text()
    for name in params:
        assert f'"{name}"' in text, name


def test_plan_builds_from_the_sources_with_only_pyyaml(tmp_path):
    """pkgs/plan.nix runs nix/make_plan.py with a Python that has only PyYAML and a
    copy of edgelab/ (no OpenCV, no execo): the same here, site-packages off."""
    import yaml

    src = tmp_path / "src"
    shutil.copytree(ROOT / "edgelab", src / "edgelab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(Path(yaml.__file__).parent, src / "yaml", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-S", str(ROOT / "nix/make_plan.py"),
                           str(ROOT / "compositions/k3s-phones/topology.yaml"), "phone=2", "relay=0"],
                          env={"PYTHONPATH": str(src), "PATH": os.environ.get("PATH", "")},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [n["name"] for n in json.loads(proc.stdout)["nodes"]] == ["server-1", "phone-1", "phone-2"]
