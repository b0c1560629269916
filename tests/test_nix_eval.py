"""Every module and every composition role evaluated here, for the vm and
g5k-ramdisk flavours, the way NixOS-Compose evaluates them (nix/eval): against
option declarations that mirror nixpkgs 23.11 (nix/eval/nixos-options.nix),
with nxc's own setup.nix and flavours, and each role's system.build.toplevel
forced. A misspelt option, a wrong type or a failed assertion fails here.

Needs nix-instantiate and ../shared/nix (nixpkgs' lib and nxc's sources,
pinned); skips with a message where either is absent. Plans come from
nix/make_plan.py, the script pkgs/plan.nix runs at build time.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "nix"
NIXPKGS_LIB = SHARED / "nixpkgs-lib" / "lib"
NXC = SHARED / "nixos-compose"
NIX = shutil.which("nix-instantiate")

pytestmark = [
    pytest.mark.nix,
    pytest.mark.skipif(NIX is None, reason="nix-instantiate not found: install Nix (Debian: nix-bin) to evaluate the Nix layer"),
    pytest.mark.skipif(not (NIXPKGS_LIB / "default.nix").is_file() or not (NXC / "nix" / "setup.nix").is_file(),
                       reason=f"{SHARED} (pinned nixpkgs lib + nixos-compose sources) is absent; "
                              "`nix flake check` evaluates the modules where nixpkgs can be fetched"),
]

sys.path.insert(0, str(ROOT / "nix"))
from make_plan import plan_dict  # noqa: E402

from edgelab.plan import make_plan  # noqa: E402
from make_plan import scaled_topology  # noqa: E402

FLAVOURS = ["vm", "g5k-ramdisk"]
#: composition -> (topology, plan name, {group: setup param}) as compositions/compositions.nix maps them.
COMPOSITIONS = {
    "k3s-phones": ("compositions/k3s-phones/topology.yaml", {"phone": "k3s_phones", "relay": "relays"}),
    "beaglepaas": ("compositions/beaglepaas/topology.yaml", {"worker": "workers"}),
    "mesh": ("compositions/mesh/topology.yaml", {"phone": "mesh_phones"}),
    "nfs": ("compositions/nfs/topology.yaml", {"server": "nfs_servers", "client": "nfs_clients"}),
    "orangefs": ("compositions/orangefs/topology.yaml", {"server": "orangefs_servers", "client": "orangefs_clients"}),
    "glusterfs": ("compositions/glusterfs/topology.yaml", {"server": "glusterfs_servers", "client": "glusterfs_clients"}),
    "cephfs": ("compositions/cephfs/topology.yaml", {"osd": "ceph_osds", "client": "ceph_clients"}),
}
DEFAULTS = {"k3s_phones": 3, "relays": 0, "workers": 2, "mesh_phones": 4, "nfs_servers": 1, "nfs_clients": 2,
            "orangefs_servers": 1, "orangefs_clients": 2, "glusterfs_servers": 2, "glusterfs_clients": 2,
            "ceph_osds": 3, "ceph_clients": 2}
DFS = ("nfs", "orangefs", "glusterfs", "cephfs")


def plan_name(name: str, counts: dict[str, int]) -> str:
    """nix/plan-name.nix: the name pkgs/plan.nix gives a plan (counts in sorted order)."""
    return "-".join([name] + [f"{g}{counts[g]}" for g in sorted(counts)]) + ".json"


def write_plans(plan_dir: Path, params: dict) -> dict[str, dict[str, int]]:
    """Write the plans the compositions ask for under ``params``; return their counts."""
    out = {}
    for comp, (topology, groups) in COMPOSITIONS.items():
        counts = {g: int(params.get(p, DEFAULTS[p])) for g, p in groups.items()}
        (plan_dir / plan_name(comp, counts)).write_text(json.dumps(plan_dict(str(ROOT / topology), counts)))
        out[comp] = counts
    return out


def nix_eval(args: str, *, expect_ok: bool = True) -> dict | str:
    expr = (f"import {ROOT}/nix/eval {{ nixpkgsLib = {NIXPKGS_LIB}; nxc = {NXC}; root = {ROOT}; {args} }}")
    proc = subprocess.run([NIX, "--readonly-mode", "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, timeout=180)
    if not expect_ok:
        assert proc.returncode != 0, f"evaluation succeeded but should have failed:\n{expr}"
        return proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"evaluation failed:\n{expr}\n{proc.stderr}")
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def default_eval(tmp_path_factory):
    """All compositions x flavours with setup.toml's own params (one evaluation)."""
    d = tmp_path_factory.mktemp("plans")
    counts = write_plans(d, {})
    return nix_eval(f"planDir = {d};"), counts


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("composition", sorted(COMPOSITIONS))
def test_every_role_evaluates(default_eval, composition, flavour):
    got, counts = default_eval
    c = got["compositions"][composition][flavour]
    topology, _ = COMPOSITIONS[composition]
    plan = make_plan(scaled_topology(str(ROOT / topology), counts[composition]))
    groups = sorted({n.group for n in plan.nodes})
    # One role per planned group, hostnames as the planner names them.
    assert sorted(c["roles"]) == groups
    assert c["rolesDistribution"] == {g: [n.name for n in plan.nodes if n.group == g] for g in groups}
    for role, r in c["roles"].items():
        assert r["toplevel"].startswith("/nix/store/"), role
        assert r["warnings"] == [], (role, r["warnings"])
        # No role rebuilds the kernel (nxc's all-in-one flavours boot the base
        # configuration's kernel anyway).
        assert r["kernelPatches"] == [], (role, r["kernelPatches"])
        # What experiments run on nodes over SSH.
        assert {"python3-3.11.6-env", "iperf-3.15", "iproute2-6.5.0"} <= set(r["packages"]), (role, r["packages"])
        assert r["etc"]["edgelab/plan.json"].endswith(plan_name(composition, counts[composition]))
        # k3s units only where k3s runs (an empty `k3s` unit used to be defined everywhere).
        assert ("k3s" in r["services"]) == (composition == "k3s-phones"), (role, sorted(r["services"]))
    # The testScript has every placeholder filled in and is Python.
    assert "@" not in re.sub(r"@/tmp/\w+\.png", "", c["testScript"]), c["testScript"]
    compile(c["testScript"], f"{composition}/test.py", "exec")


def test_flavour_decides_the_testbed_device(default_eval, tmp_path):
    """vm: eth1 (nxc's vde switch); g5k-ramdisk: the default route's device, found at
    boot (Grid'5000 interface names differ between clusters), flannel left to k3s."""
    got, _ = default_eval
    vm = got["compositions"]["k3s-phones"]["vm"]["roles"]["phone"]
    assert "--flannel-iface eth1" in vm["k3s"]["extraFlags"]
    assert "--dev eth1 " in vm["services"]["edgelab-netem"]["script"]
    g5k = got["compositions"]["k3s-phones"]["g5k-ramdisk"]["roles"]["phone"]
    assert "--flannel-iface" not in g5k["k3s"]["extraFlags"]
    script = g5k["services"]["edgelab-netem"]["script"]
    assert "--dev $EDGELAB_DEV " in script
    # The boot-time lookup, with an `ip` that answers as a Grid'5000 node would.
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "ip").write_text("#!/bin/sh\necho 'default via 172.16.63.254 dev enp24s0f0np0 proto dhcp src 172.16.48.5 metric 100'\n")
    (shim / "ip").chmod(0o755)
    probe = script.split('node="')[0] + 'echo "dev=$EDGELAB_DEV"\n'
    proc = subprocess.run(["bash", "-c", probe], env={"PATH": f"{shim}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "dev=enp24s0f0np0", (proc.stdout, proc.stderr)
    # No default route: a clear error, not `ip ... dev ` failing later.
    (shim / "ip").write_text("#!/bin/sh\nexit 0\n")
    proc = subprocess.run(["bash", "-c", probe], env={"PATH": f"{shim}:/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 1 and "no IPv4 default route" in proc.stderr and "iface" in proc.stderr


def run_script(script: str, tmp_path: Path, node: str, **env: str) -> subprocess.CompletedProcess:
    path = tmp_path / "unit.sh"
    path.write_text(script)
    return subprocess.run(["bash", str(path)], env={**os.environ, "EDGELAB_NODE": node, **env},
                          capture_output=True, text=True, timeout=30)


def test_every_k3s_node_gets_its_planned_node_ip(default_eval, tmp_path):
    """The boot script of each role image writes each node's own address (defect: only the server had one)."""
    got, counts = default_eval
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["k3s-phones"][0]), counts["k3s-phones"]))
    roles = got["compositions"]["k3s-phones"]["vm"]["roles"]
    for node in plan.nodes:
        role = roles[node.group]
        assert role["k3s"]["configPath"] == "/run/edgelab/k3s-config.yaml"
        assert "--config /run/edgelab/k3s-config.yaml" in role["services"]["k3s"]["serviceConfig"]["ExecStart"]
        out = tmp_path / node.name / "k3s.yaml"
        proc = run_script(role["services"]["edgelab-k3s-config"]["script"], tmp_path, node.name,
                          EDGELAB_K3S_CONFIG=str(out))
        assert proc.returncode == 0, proc.stderr
        want = [f"node-ip: {node.address('wlan')}"]
        if node.group == "server":
            want.append(f"advertise-address: {node.address('wlan')}")
        assert out.read_text().splitlines() == want
        assert "edgelab-k3s-config.service" in role["services"]["k3s"]["requires"]
    proc = run_script(roles["phone"]["services"]["edgelab-k3s-config"]["script"], tmp_path, "phone-99",
                      EDGELAB_K3S_CONFIG=str(tmp_path / "x"))
    assert proc.returncode == 1 and "phone-99" in proc.stderr


K3S_IMAGE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.zst", ".tar.lz4", ".tar.bz2", ".tar.xz")


def test_k3s_runs_offline(default_eval):
    """Images are linked with the suffix of their compression (defect: gzip named .tar),
    the pause image is local and nothing else is pulled."""
    got, _ = default_eval
    roles = got["compositions"]["k3s-phones"]["vm"]["roles"]
    for name, r in roles.items():
        links = [rule.split() for rule in r["tmpfiles"] if rule.startswith("L+ /var/lib/rancher/k3s/agent/images/")]
        images = {Path(link[1]).name: Path(link[-1]).name for link in links}
        assert "pause.tar.gz" in images and "servicelb.tar.gz" in images, images
        for file, target in images.items():
            suffix = next(s for s in K3S_IMAGE_SUFFIXES if target.endswith(s))
            assert file.endswith(suffix), f"{name}: {file} links to {target}"
        assert "--pause-image edgelab.local/pause:local" in r["k3s"]["extraFlags"]
        assert "edgelab-k3s-servicelb-image" in r["services"]
    assert "phone.tar.gz" in " ".join(roles["phone"]["tmpfiles"])
    server_flags = roles["server"]["k3s"]["extraFlags"]
    for component in ("traefik", "metrics-server", "coredns", "local-storage"):
        assert f"--disable {component}" in server_flags
    assert "--disable servicelb" not in server_flags
    # The kubeconfig (cluster-admin) is root's only.
    assert "--write-kubeconfig-mode 0600" in server_flags


def test_k3s_workload_is_a_deployment_behind_a_loadbalancer(default_eval):
    got, counts = default_eval
    server = got["compositions"]["k3s-phones"]["vm"]["roles"]["server"]
    manifest = [r for r in server["tmpfiles"] if "/server/manifests/edgelab-phone.yaml" in r]
    assert len(manifest) == 1
    # Where tools on the nodes (and the nxc backend) learn the Service's port.
    for r in got["compositions"]["k3s-phones"]["vm"]["roles"].values():
        assert "edgelab/k3s-services.json" in r["etc"]
    script = got["compositions"]["k3s-phones"]["vm"]["testScript"]
    assert "modprobe xt_multiport" in script and "/detect" in script
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["k3s-phones"][0]), counts["k3s-phones"]))
    planned = json.loads(re.search(r"planned_ips = json.loads\('(.*)'\)", script).group(1))
    assert planned == {n.name: n.address("wlan") for n in plan.nodes}


def test_workload_manifest_content(tmp_path):
    """The manifest itself: one replica per phone, limits from the plan, local image, LoadBalancer."""
    counts = write_plans(tmp_path, {"k3s_phones": 5})
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["k3s-phones"][0]), counts["k3s-phones"]))
    expr = (f'let lib = import {NIXPKGS_LIB}; pkgs = import {ROOT}/nix/eval/pkgs.nix {{ inherit lib; planDir = {tmp_path}; }}; '
            f'c = import {ROOT}/compositions/k3s-phones/composition.nix {{ inherit pkgs lib; phones = 5; }}; '
            f'm = (lib.evalModules {{ modules = [ {ROOT}/nix/eval/nixos-options.nix {{ _module.args.pkgs = pkgs; }} '
            f'c.roles.server ] ++ import {ROOT}/nix/node-modules.nix {{ edgelab = pkgs.python3; }}; }}).config; '
            f'in m.edgelab.k3s.manifests.edgelab-phone.text')
    proc = subprocess.run([NIX, "--readonly-mode", "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(d) for d in json.loads(proc.stdout).split("---\n") if d.strip()]
    deploy, svc = docs
    phone = plan.nodes_of(group="phone")[0]
    assert deploy["kind"] == "Deployment" and deploy["spec"]["replicas"] == 5
    pod = deploy["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"edgelab/group": "phone"}
    assert pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] \
        == "kubernetes.io/hostname"
    ctr = pod["containers"][0]
    assert ctr["image"] == "edgelab.local/phone:local" and ctr["imagePullPolicy"] == "Never"
    assert ctr["resources"]["limits"] == {"cpu": f"{round(phone.resources.cpu * phone.resources.speed * 1000)}m",
                                          "memory": f"{phone.resources.memory_mib}Mi"}
    assert svc["kind"] == "Service" and svc["spec"]["type"] == "LoadBalancer"
    # Not the experiments' own APP_PORT (8080 on the server), which ServiceLB would capture.
    from edgelab.scenarios.app import APP_PORT

    port = svc["spec"]["ports"][0]
    assert port["port"] == 8081 != APP_PORT and port["targetPort"] == ctr["ports"][0]["containerPort"] == 8080
    assert svc["spec"]["selector"] == {"app": "edgelab-phone"}


def test_mesh_routes_leave_with_the_mesh_address(default_eval):
    got, counts = default_eval
    script = got["compositions"]["mesh"]["vm"]["roles"]["phone"]["services"]["edgelab-netem"]["script"]
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["mesh"][0]), counts["mesh"]))
    for node in plan.nodes:
        block = script.split(f"'{node.name}')")[1].split(";;")[0]
        routes = [ln.strip() for ln in block.splitlines() if " route " in ln]
        assert len(routes) == len(node.routes) and all(r.endswith(f"src {node.address('mesh')}") for r in routes)


def test_faas_services_are_not_started_at_boot(default_eval):
    """The FaaS experiment starts its own orchestrator, workers and plugs on these ports."""
    got, _ = default_eval
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["beaglepaas"][0]), {"worker": 2}))
    roles = got["compositions"]["beaglepaas"]["vm"]["roles"]
    orch = roles["orchestrator"]["services"]["edgelab-beaglepaas-orchestrator"]
    assert orch["wantedBy"] == []
    argv = shlex.split(orch["script"])
    assert argv[argv.index("--bind") + 1] == plan.node("orchestrator-1").address("lan")
    assert roles["worker"]["services"]["edgelab-beaglepaas-worker"]["wantedBy"] == []
    meter = roles["power"]["services"]["edgelab-power-meter"]
    argv = shlex.split(meter["serviceConfig"]["ExecStart"])
    assert meter["wantedBy"] == [] and argv[argv.index("--bind") + 1] == plan.node("power-1").address("lan")
    # Quiet boot without a second loglevel= (NixOS passes loglevel=<consoleLogLevel>).
    assert roles["worker"]["consoleLogLevel"] == 3
    assert not any(p.startswith("loglevel=") for p in roles["worker"]["kernelParams"])


def nxc_setup(tmp_path: Path, params: list[str]) -> Path:
    """setup.toml with [override-params] written by nxc's own code (nixos_compose.setup.apply_setup)."""
    nxc_setup_mod = pytest.importorskip("nixos_compose.setup", reason="nixos-compose (venv) is needed to write override-params")
    env = tmp_path / "env"
    env.mkdir()
    shutil.copy(ROOT / "setup.toml", env / "setup.toml")
    shutil.copy(ROOT / "flake.nix", env / "flake.nix")
    ctx = types.SimpleNamespace(envdir=str(env), elog=print, wlog=print, log=print, vlog=print)
    nxc_setup_mod.apply_setup(ctx, None, None, None, None, None, params, None)
    return env / "setup.toml"


def test_setup_params_as_nxc_passes_them(tmp_path):
    """`--setup-param batman=true mesh_phones=3 relays=2`: nxc keeps "true" a string; it is coerced."""
    setup = nxc_setup(tmp_path, ["batman=true", "mesh_phones=3", "relays=2", "k3s_phones=2"])
    text = setup.read_text()
    assert "[override-params]" in text and 'batman = "true"' in text
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {"mesh_phones": 3, "relays": 2, "k3s_phones": 2})
    got = nix_eval(f"planDir = {plans}; setupFile = {setup}; flavours = [ \"vm\" ];")
    mesh = got["compositions"]["mesh"]["vm"]
    assert mesh["rolesDistribution"] == {"phone": ["phone-1", "phone-2", "phone-3"]}
    assert "edgelab-batman" in mesh["roles"]["phone"]["services"]
    assert "batman_adv" in mesh["roles"]["phone"]["kernelModules"]
    k3s = got["compositions"]["k3s-phones"]["vm"]
    assert k3s["rolesDistribution"]["relay"] == ["relay-1", "relay-2"]
    relay = k3s["roles"]["relay"]
    assert relay["sysctl"]["net.ipv4.conf.all.send_redirects"] == 0
    assert "--node-label edgelab/group=relay" in relay["k3s"]["extraFlags"]


def test_nxc_leaves_override_params_in_setup_toml(tmp_path):
    """Evidence for docs/nix.md: nxc writes [override-params] into setup.toml and a later
    build *without* --setup-param does not remove them from the file (it deletes them
    in memory only, nixos_compose/setup.py:52-69), so they still apply. Callers must
    pass every parameter each time (the nxc backend does)."""
    setup = nxc_setup(tmp_path, ["k3s_phones=8"])
    nxc_setup_mod = pytest.importorskip("nixos_compose.setup")
    ctx = types.SimpleNamespace(envdir=str(setup.parent), elog=print, wlog=print, log=print, vlog=print)
    nxc_setup_mod.apply_setup(ctx, None, None, None, None, None, [], None)
    assert "[override-params]" in setup.read_text() and "k3s_phones = 8" in setup.read_text()


def test_bad_setup_param_names_the_parameter(tmp_path):
    setup = nxc_setup(tmp_path, ["batman=maybe"])
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {})
    err = nix_eval(f"planDir = {plans}; setupFile = {setup}; only = \"mesh\"; flavours = [ \"vm\" ];", expect_ok=False)
    assert "setup parameter batman must be true or false" in err and "maybe" in err


@pytest.mark.parametrize("module,message", [
    # A misspelt edgelab option.
    ('{ edgelab.k3s.planNetwrok = "wlan"; }', "The option `edgelab.k3s.planNetwrok' does not exist"),
    # A misspelt nixpkgs option.
    ('{ services.k3s.extraFlag = "--x"; }', "The option `services.k3s.extraFlag' does not exist"),
    # The 23.11 type: extraFlags is a string there, a list only from 24.05 on.
    ('{ services.k3s.extraFlags = [ "--x" ]; }', "is not of type `string'"),
    # A failed assertion: an agent that cannot join.
    ('{ edgelab.k3s.serverAddr = pkgs.lib.mkForce ""; }', "edgelab.k3s.serverAddr must be set on an agent"),
    # A misspelt option of the access point role.
    ('{ edgelab.netem.accessPoint.resolveTimeot = 3; }', "The option `edgelab.netem.accessPoint.resolveTimeot' does not exist"),
    # Its type: a number of seconds, not a string.
    ('{ edgelab.netem.accessPoint = { enable = true; resolveTimeout = "5m"; }; }', "is not of type `positive integer"),
    # The AP role without the netem unit it runs after.
    ('{ edgelab.netem.enable = pkgs.lib.mkForce false; edgelab.netem.accessPoint.enable = true; }',
     "edgelab.netem.accessPoint.enable / routeViaAccessPoint need edgelab.netem.enable = true"),
    # A bad systemd value, checked as nixpkgs checks it.
    ('{ systemd.services.edgelab-netem.serviceConfig.Type = pkgs.lib.mkForce "oneshoot"; }', "Systemd service field `Type' cannot have value `oneshoot'"),
])
def test_mistakes_fail_the_evaluation(tmp_path, module, message):
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {})
    mod = tmp_path / "mistake.nix"
    mod.write_text("{ pkgs, ... }: " + module + "\n")
    err = nix_eval(f'planDir = {plans}; only = "k3s-phones"; flavours = [ "vm" ]; extraModules = [ {mod} ];',
                   expect_ok=False)
    assert message in err, err


def test_flake_outputs_with_nxc_compose(tmp_path):
    """flake.nix through nxc's real compose.nix: every composition x flavour, the
    `composition::<flavour>` names `nxc build -f <flavour>` asks for
    (nixos_compose/commands/cmd_build.py:248-251), NixOS tests with every planned
    node, and a dev shell with what `nxc start` runs (qemu, vde_switch)."""
    plans = tmp_path / "plans"
    plans.mkdir()
    counts = write_plans(plans, {})
    expr = f"import {ROOT}/nix/eval/flake.nix {{ root = {ROOT}; nixpkgsLib = {NIXPKGS_LIB}; nxcSrc = {NXC}; planDir = {plans}; }}"
    proc = subprocess.run([NIX, "--readonly-mode", "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    for comp in COMPOSITIONS:
        for flavour in ("vm", "vm-ramdisk", "g5k-ramdisk", "g5k-image"):
            assert f"{comp}::{flavour}" in got["packages"]
    for flavour in ("vm", "g5k-ramdisk"):
        assert f"composition::{flavour}" in got["packages"]
    assert {"modules-eval", "plan-agreement", "edgelab"} <= set(got["checks"])
    assert {"qemu-8.1.2", "vde2-2.3.3", "python3.11-nixos-compose-0.7.11"} <= set(got["shell"])
    for comp, (topology, _) in COMPOSITIONS.items():
        test = got["nixosTests"][f"nixos-test-{comp}"]
        plan = make_plan(scaled_topology(str(ROOT / topology), counts[comp]))
        assert sorted(test["nodes"]) == sorted(n.name for n in plan.nodes)
        if comp == "k3s-phones":
            assert test["nodes"]["server-1"] >= 3072 and min(test["nodes"].values()) >= 2048
        assert test["testScript"].startswith("start_all()\n")
        compile(test["testScript"], f"nixos-test-{comp}", "exec")


def test_kubeconfig_group_and_manifest_assertion(tmp_path):
    """Options no composition sets are evaluated too: a kubeconfig group (0640 after
    start, the group declared) and the assertion that only a server applies manifests."""
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {})
    mod = tmp_path / "group.nix"
    mod.write_text('{ edgelab.k3s.kubeconfigGroup = "k3s-admin"; }\n')
    got = nix_eval(f'planDir = {plans}; only = "k3s-phones"; flavours = [ "vm" ]; extraModules = [ {mod} ];')
    roles = got["compositions"]["k3s-phones"]["vm"]["roles"]
    post = roles["server"]["services"]["k3s"]["serviceConfig"]["ExecStartPost"]
    assert any(p.endswith("chgrp k3s-admin /etc/rancher/k3s/k3s.yaml") for p in post)
    assert any(p.endswith("chmod 0640 /etc/rancher/k3s/k3s.yaml") for p in post)
    assert "k3s-admin" in roles["server"]["groups"] and "k3s-admin" not in roles["phone"]["groups"]
    mod.write_text('{ pkgs, ... }: { edgelab.k3s.manifests.x = pkgs.writeText "x.yaml" "{}"; }\n')
    err = nix_eval(f'planDir = {plans}; only = "k3s-phones"; flavours = [ "vm" ]; extraModules = [ {mod} ];',
                   expect_ok=False)
    assert "edgelab.k3s.manifests are applied by the server" in err


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("iptables"),
                    reason="needs root, unshare and iptables (runs in a private network namespace)")
def test_servicelb_stand_in_installs_klipper_lb_rules():
    """The offline ServiceLB image's entry (pkgs/k3s-images.nix), run as k3s runs
    klipper-lb (SRC_PORT, DEST_PROTO, DEST_PORT, DEST_IPS), in a network namespace of
    its own that disappears with it: it DNATs the port to each IPv4 cluster IP, stops
    cleanly on SIGTERM, and refuses to run without IP forwarding."""
    expr = (f'let lib = import {NIXPKGS_LIB}; pkgs = import {ROOT}/nix/eval/pkgs.nix {{ inherit lib; }}; '
            f'in (import {ROOT}/pkgs/k3s-images.nix {{ inherit pkgs; }}).serviceLBEntry.text')
    proc = subprocess.run([NIX, "--readonly-mode", "--eval", "--strict", "--json", "-E", expr],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(proc.stdout)
    run = r'''
        set -e
        echo 1 > /proc/sys/net/ipv4/ip_forward
        SRC_PORT=8081 DEST_PROTO=TCP DEST_PORT=8081 DEST_IPS="10.43.12.7 fd00::7" bash -c "$ENTRY" &
        pid=$!
        for _ in $(seq 1 100); do iptables -t nat -S POSTROUTING | grep -q MASQUERADE && break; sleep 0.05; done
        iptables -t nat -S
        kill -TERM $pid; rc=0; wait $pid || rc=$?; echo "exit=$rc"
        echo 0 > /proc/sys/net/ipv4/ip_forward
        rc=0; SRC_PORT=1 DEST_PROTO=TCP DEST_PORT=1 DEST_IPS=10.0.0.1 bash -c "$ENTRY" || rc=$?; echo "noforward=$rc"
    '''
    proc = subprocess.run(["unshare", "--net", "bash", "-c", run], env={**os.environ, "ENTRY": entry},
                          capture_output=True, text=True, timeout=60)
    out = proc.stdout
    assert proc.returncode == 0, (out, proc.stderr)
    dnat = [ln for ln in out.splitlines() if "DNAT" in ln]
    assert len(dnat) == 1 and "--dport 8081" in dnat[0] and "--to-destination 10.43.12.7:8081" in dnat[0], out
    assert any("-d 10.43.12.7/32" in ln and "MASQUERADE" in ln for ln in out.splitlines()), out
    assert "fd00::7" not in out
    assert "exit=0" in out and "noforward=1" in out and "ip_forward is off" in proc.stderr


@pytest.mark.parametrize("args", [["-f", "vm"], ["-f", "g5k-ramdisk"], ["-C", "mesh::vm"]])
def test_nxc_build_targets_are_flake_outputs(tmp_path, args):
    """The real nxc CLI (venv) picks the flake attribute it builds; each is an output of
    this flake (nix/eval/flake.nix). `nix` is a shim: nothing is built."""
    nxc_bin = Path(sys.executable).parent / "nxc"
    if not nxc_bin.exists():
        pytest.skip("nixos-compose is not installed in the venv")
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    for name in ("flake.nix", "setup.toml", "nxc.json"):
        shutil.copy(ROOT / name, env_dir / name)
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "nix").write_text("#!/bin/sh\ncase \"$*\" in *flavoursJson*) exit 1 ;; esac\nexit 0\n")
    (shim / "nix").chmod(0o755)
    proc = subprocess.run([str(nxc_bin), "--envdir", str(env_dir), "build", *args, "--dry-run"],
                          env={**os.environ, "PATH": f"{shim}:{os.environ['PATH']}"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    target = re.search(r"\.#packages\.x86_64-linux\.(\S+)", proc.stdout).group(1)
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {})
    expr = f"(import {ROOT}/nix/eval/flake.nix {{ root = {ROOT}; nixpkgsLib = {NIXPKGS_LIB}; nxcSrc = {NXC}; planDir = {plans}; }}).packages"
    out = subprocess.run([NIX, "--readonly-mode", "--eval", "--strict", "--json", "-E", expr],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert target in json.loads(out.stdout), (target, args)


# ----------------------------------------------------------------- file systems
def test_dfs_setup_params_match_the_python_table():
    """edgelab.dfs.compositions (dry runs, fs_folding) names the same groups and setup
    parameters as compositions/compositions.nix and setup.toml."""
    from edgelab.dfs.compositions import COMPOSITIONS as PY

    assert set(PY) == set(DFS)
    for name, c in PY.items():
        _, groups = COMPOSITIONS[name]
        assert groups == {c.io_group: c.io_param, "client": c.client_param}, name
        assert c.io_param in (ROOT / "setup.toml").read_text() and c.client_param in (ROOT / "setup.toml").read_text()


@pytest.mark.parametrize("composition", DFS)
def test_dfs_disks_mounts_and_benchmarks(default_eval, composition):
    """I/O nodes: a data disk (vm: a loop file, nxc's vm flavour has no block device;
    g5k: the KDPL_TMP_disk0 partition, formatted at boot with user_xattr on ext4);
    clients: IOR (with mdtest) and fio, and a mount of the file system at /mnt/edgelab-fs;
    /etc/hosts with every planned node."""
    got, counts = default_eval
    topology, groups = COMPOSITIONS[composition]
    plan = make_plan(scaled_topology(str(ROOT / topology), counts[composition]))
    for flavour in FLAVOURS:
        roles = got["compositions"][composition][flavour]["roles"]
        io = "osd" if composition == "cephfs" else "server"
        client = roles["client"]
        assert {"ior-3.3.0", "fio-3.36"} <= set(client["packages"]), client["packages"]
        assert client["hosts"] == {n.interfaces[0].ip: [n.name] for n in plan.nodes}
        if composition == "orangefs":
            target = client["dfs"]["orangefsClient"][0]
            assert target["mountPoint"] == "/mnt/edgelab-fs"
            assert target["target"] == f"tcp://{plan.node('server-1').address('lan')}:3334/orangefs"
        else:
            fs = client["fileSystems"]["/mnt/edgelab-fs"]
            assert fs["fsType"] == {"nfs": "nfs", "glusterfs": "glusterfs", "cephfs": "ceph"}[composition]
            first = "mon-1" if composition == "cephfs" else "server-1"
            assert fs["device"].startswith(plan.node(first).address("lan") + ":/")
            assert "x-systemd.automount" in fs["options"] and "noauto" in fs["options"]
        if composition == "cephfs":
            continue  # OSDs take the raw disk (bluestore), checked below
        server = roles[io]
        if flavour == "vm":
            assert "edgelab-dfs-disk" in server["services"] and server["fileSystems"] == {}
            script = server["services"]["edgelab-dfs-disk"]["script"]
            assert "truncate -s 2048M" in script and "mkfs.ext4" in script and "loop,user_xattr" in script
        else:
            fs = server["fileSystems"]["/srv/edgelab-data"]
            assert fs["device"] == "/dev/disk/by-label/KDPL_TMP_disk0" and fs["fsType"] == "ext4"
            assert fs["autoFormat"] is True and "user_xattr" in fs["options"]
        assert "edgelab-dfs" in server["targets"]


def test_dfs_daemons(default_eval):
    got, counts = default_eval
    comps = got["compositions"]
    nfs = comps["nfs"]["vm"]["roles"]["server"]
    assert nfs["dfs"]["nfsExports"].startswith("/srv/edgelab-data *(rw")
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["orangefs"][0]), counts["orangefs"]))
    ofs = comps["orangefs"]["vm"]["roles"]["server"]
    assert ofs["dfs"]["orangefsServers"] == {n.name: f"tcp://{n.address('lan')}:3334"
                                             for n in plan.nodes if n.group == "server"}
    assert "pvfs2-server -f /etc/orangefs/server.conf" in ofs["services"]["edgelab-orangefs-format"]["script"]
    # GlusterFS: the volume over every brick, created once, on server-1 only.
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["glusterfs"][0]), counts["glusterfs"]))
    gl = comps["glusterfs"]["vm"]["roles"]["server"]
    assert gl["dfs"]["glusterfs"] is True
    vol = gl["services"]["edgelab-glusterfs-volume"]
    bricks = " ".join(f"{n.address('lan')}:/srv/edgelab-data/brick" for n in plan.nodes if n.group == "server")
    assert f"volume create edgelab transport tcp {bricks} force" in vol["script"]
    assert '[ "$(hostname)" = "server-1" ] || exit 0' in vol["script"]
    # Ceph: mon/mgr/mds on mon-1, one OSD unit per id in the shared OSD image, keyrings everywhere.
    osds = counts["cephfs"]["osd"]
    ceph = comps["cephfs"]["vm"]["roles"]
    assert ceph["mon"]["dfs"]["ceph"]["mon"] == ["a"] and ceph["mon"]["dfs"]["ceph"]["mds"] == ["a"]
    assert ceph["osd"]["dfs"]["ceph"]["osd"] == [str(i) for i in range(osds)]
    assert "id=$(( ${host#osd-} - 1 ))" in ceph["osd"]["services"]["edgelab-ceph-osd"]["script"]
    assert "--osd-id $id" in ceph["osd"]["services"]["edgelab-ceph-osd"]["script"]
    for role in ("mon", "osd", "client"):
        assert "ceph/ceph.client.admin.keyring" in ceph[role]["etc"]
        assert ceph[role]["dfs"]["ceph"]["monHost"] == ceph["mon"]["dfs"]["ceph"]["monHost"]
    g5k = comps["cephfs"]["g5k-ramdisk"]["roles"]["osd"]["services"]["edgelab-ceph-osd"]["script"]
    assert "KDPL_TMP_disk0" in g5k and "losetup" not in g5k


def test_dfs_setup_params_scale_and_name_the_disk(tmp_path):
    setup = nxc_setup(tmp_path, ["glusterfs_servers=3", "glusterfs_clients=4", "ceph_osds=2",
                                 "dfs_disk=/dev/sdb"])
    plans = tmp_path / "plans"
    plans.mkdir()
    write_plans(plans, {"glusterfs_servers": 3, "glusterfs_clients": 4, "ceph_osds": 2})
    got = nix_eval(f'planDir = {plans}; setupFile = {setup}; flavours = [ "g5k-ramdisk" ]; only = "glusterfs";')
    g = got["compositions"]["glusterfs"]["g5k-ramdisk"]
    assert g["rolesDistribution"] == {"server": ["server-1", "server-2", "server-3"],
                                      "client": [f"client-{i}" for i in range(1, 5)]}
    assert g["roles"]["server"]["fileSystems"]["/srv/edgelab-data"]["device"] == "/dev/sdb"
    assert "Number of Bricks" in g["testScript"]
    (tmp_path / "bad").mkdir()
    setup = nxc_setup(tmp_path / "bad", ["dfs_disk=sdb"])
    err = nix_eval(f'planDir = {plans}; setupFile = {setup}; flavours = [ "g5k-ramdisk" ]; only = "nfs";',
                   expect_ok=False)
    assert "setup parameter dfs_disk must be a device path under /dev/" in err


# -- the Wi-Fi access point as a node (modules/netem.nix accessPoint, setup param wifi_ap) ----------

def node_branch(script: str, node: str) -> list[str]:
    """The commands of ``node``'s branch in a role's per-node boot script (nix/lib.nix perNodeScript)."""
    lines = script.splitlines()
    start = lines.index(f"  '{node}')")
    end = lines.index("    ;;", start)
    return [line.strip() for line in lines[start + 1:end]]


@pytest.fixture(scope="module")
def ap_eval(tmp_path_factory):
    """k3s-phones (3 phones: one 3-station cell) with `--setup-param wifi_ap=true`, both flavours."""
    tmp = tmp_path_factory.mktemp("ap")
    setup = nxc_setup(tmp, ["wifi_ap=true"])
    plans = tmp / "plans"
    plans.mkdir()
    write_plans(plans, {})
    got = nix_eval(f'planDir = {plans}; setupFile = {setup}; only = "k3s-phones";')
    plan = make_plan(scaled_topology(str(ROOT / COMPOSITIONS["k3s-phones"][0]), {"phone": 3, "relay": 0}))
    return got["compositions"]["k3s-phones"], plan


def test_ap_role_unit_runs_the_backends_linkemu_argv(ap_eval):
    """The server (the cell's uplink) is the AP: its unit's ExecStart is edgelab.remote.ap's
    shared_argv for the 3-station cell (stations by address, resolved at boot), with the remote
    backends' link tag; it forwards without redirects; ExecStop removes the budget."""
    from edgelab.remote import ap as apmod
    from edgelab.remote.testbed import link_tag

    comp, plan = ap_eval
    (cell,) = apmod.ap_plan(plan, lambda n: False)
    assert (cell.ap, len(cell.stations)) == ("server-1", 3)
    ips = [plan.node(s).interfaces[0].ip for s in cell.stations]
    for flavour, dev in (("vm", "eth1"), ("g5k-ramdisk", "${EDGELAB_DEV}")):
        server = comp[flavour]["roles"]["server"]
        unit = server["services"]["edgelab-ap-wlan-0"]
        argv = unit["serviceConfig"]["ExecStart"].split()
        assert argv[0].startswith("/nix/store/") and argv[0].endswith("/bin/python"), argv
        want = apmod.shared_argv(argv[0], dev, cell, [], link_tag(plan.topology.name, "server-1"))
        want += [w for ip in ips for w in ("--station-ip", ip)] + ["--resolve-timeout", "300"]
        assert argv == want, (argv, want)
        assert unit["serviceConfig"]["ExecStop"].split() == [
            argv[0], "-m", "edgelab.linkemu", "unshared", "--dev", dev, "--name", "air0", "--tag", want[want.index("--tag") + 1]]
        assert unit["serviceConfig"]["ExecStartPre"].endswith(f"sysctl -qw net.ipv4.conf.{dev}.send_redirects=0")
        assert unit["serviceConfig"]["EnvironmentFile"] == "/run/edgelab/testbed-dev.env"
        assert unit["unitConfig"]["ConditionHost"] == "server-1"
        assert unit["requires"] == ["edgelab-netem.service"] and "multi-user.target" in unit["wantedBy"]
        assert "k3s.service" in unit["before"]
        assert {k: server["sysctl"].get(k) for k in ("net.ipv4.ip_forward", "net.ipv4.conf.all.send_redirects",
                                                   "net.ipv4.conf.default.send_redirects")} == \
            {"net.ipv4.ip_forward": 1, "net.ipv4.conf.all.send_redirects": 0, "net.ipv4.conf.default.send_redirects": 0}
        # the netem unit hands the AP unit its testbed device (found at boot on Grid'5000)
        shown = "$EDGELAB_DEV" if flavour == "g5k-ramdisk" else "eth1"
        assert f'mkdir -p /run/edgelab && echo "EDGELAB_DEV={shown}" > /run/edgelab/testbed-dev.env' in \
            node_branch(server["services"]["edgelab-netem"]["script"], "server-1")
        # phones are no AP: no unit, redirects untouched (k3s itself turns forwarding on everywhere)
        phone = comp[flavour]["roles"]["phone"]
        assert not any(u.startswith("edgelab-ap-") for u in phone["services"])
        assert "net.ipv4.conf.all.send_redirects" not in phone["sysctl"]
    # the argv is one linkemu accepts (its dry run prints the budget's tc commands)
    dry = subprocess.run([sys.executable, *[w.replace("${EDGELAB_DEV}", "eth1") for w in want[1:]], "--dry-run"], cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert dry.returncode == 0 and "htb" in dry.stdout, dry.stderr
    # per station: its class (classified by source MAC) and the redirect of its frames into the budget
    assert all(dry.stdout.count(f"match ether src <MAC of {ip}>") == 2 for ip in ips), dry.stdout


def test_ap_role_station_routes_match_the_remote_backends(ap_eval):
    """Each phone's boot script routes its cell peers via the AP exactly as
    edgelab.remote.ap.route_cmds does on remote backends; the AP itself adds none."""
    from edgelab.remote import ap as apmod

    comp, plan = ap_eval
    (cell,) = apmod.ap_plan(plan, lambda n: False)
    addr = lambda n: plan.node(n).interfaces[0].ip  # noqa: E731
    want = apmod.route_cmds(cell, addr, lambda n: "eth1")
    script = comp["vm"]["roles"]["phone"]["services"]["edgelab-netem"]["script"]
    for st in cell.stations:
        got = [c.removeprefix("ip route replace ") for c in node_branch(script, st) if c.startswith("ip route replace")]
        assert got == want[st] and len(got) == 2, (st, got, want[st])
    server = node_branch(comp["vm"]["roles"]["server"]["services"]["edgelab-netem"]["script"], "server-1")
    assert not [c for c in server if c.startswith("ip route replace")]
    g5k = comp["g5k-ramdisk"]["roles"]["phone"]["services"]["edgelab-netem"]["script"]
    assert f"ip route replace {addr('phone-2')}/32 via {addr('server-1')} dev $EDGELAB_DEV" in node_branch(g5k, "phone-1")


def test_ap_role_is_off_by_default(default_eval):
    """Without wifi_ap the compositions leave the AP to the nxc/g5k backends (no double budget)."""
    got, _ = default_eval
    for flavour in FLAVOURS:
        roles = got["compositions"]["k3s-phones"][flavour]["roles"]
        assert not any(u.startswith("edgelab-ap-") for r in roles.values() for u in r["services"])
        assert "net.ipv4.conf.all.send_redirects" not in roles["server"]["sysctl"]
        assert not [c for c in node_branch(roles["phone"]["services"]["edgelab-netem"]["script"], "phone-1")
                    if " via " in c]
