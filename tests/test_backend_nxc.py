"""nxc backend: exact nxc argv, deployment-file parsing and node mapping,
remote command construction, and honest failure where nxc cannot run.

Nothing here needs nix or a network: nxc is driven through an injected
runner/spawner that records argv (and, like nxc, writes the deployment file).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from edgelab.backends import get_backend
from edgelab.backends.nxc import (
    NxcBackend,
    NxcOptions,
    build_argv,
    missing_requirements,
    start_argv,
    stop_argv,
)
from edgelab.backends.nxc_deploy import (
    NxcNode,
    map_plan_nodes,
    parse_deployment,
    remote_argv,
    role_distribution,
)
from edgelab.errors import BackendError
from edgelab.plan import make_plan
from edgelab.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
FIX = Path(__file__).resolve().parent / "fixtures" / "nxc"


@pytest.fixture
def plan():
    return make_plan(load_topology(ROOT / "topologies" / "wifi-phones.yaml"))


def fixture(name: str) -> dict:
    return json.loads((FIX / name).read_text())


# -- argv -------------------------------------------------------------------------------------

DIST = {"server": ["server-1"], "phone": ["phone-1", "phone-2", "phone-3", "phone-4"]}


@pytest.mark.parametrize("flavour", ["vm", "docker", "g5k-ramdisk", "g5k-image"])
def test_build_argv_per_flavour(flavour):
    opts = NxcOptions(composition="wifi", flavour=flavour)
    assert build_argv(opts) == ["nxc", "--envdir", "compositions/wifi", "build", "-f", flavour, "-C", "composition"]


def test_start_argv_vm_waits_for_signal():
    opts = NxcOptions(composition="wifi", flavour="vm")
    assert start_argv(opts, DIST) == [
        "nxc", "--envdir", "compositions/wifi", "start", "-C", "composition::vm",
        "-r", "server=server-1", "-r", "phone=phone-1,phone-2,phone-3,phone-4", "-w",
    ]


def test_start_argv_docker():
    opts = NxcOptions(composition="wifi", flavour="docker", build_dir="/srv/wifi")
    assert start_argv(opts, DIST) == [
        "nxc", "--envdir", "/srv/wifi", "start", "-C", "composition::docker",
        "-r", "server=server-1", "-r", "phone=phone-1,phone-2,phone-3,phone-4",
    ]
    assert stop_argv(opts) == ["nxc", "--envdir", "/srv/wifi", "stop", "-d",
                               "/srv/wifi/deploy/composition::docker.json"]


@pytest.mark.parametrize("flavour", ["g5k-ramdisk", "g5k-image"])
def test_start_argv_g5k_needs_machine_file(flavour):
    opts = NxcOptions(composition="wifi", flavour=flavour, machines="/home/alice/machines", identity_file="k.pub")
    assert start_argv(opts, {"phone": ["phone-1"]}) == [
        "nxc", "--envdir", "compositions/wifi", "start", "-C", f"composition::{flavour}",
        "-r", "phone=phone-1", "-m", "/home/alice/machines", "-i", "k.pub",
    ]
    with pytest.raises(BackendError, match="machines="):
        start_argv(NxcOptions(flavour=flavour), {"phone": ["phone-1"]})


def test_unknown_flavour_is_refused():
    with pytest.raises(BackendError, match="nspawn-foo.*vm, docker"):
        NxcOptions(flavour="nspawn-foo")


def test_role_distribution_follows_plan_groups_and_overrides(plan):
    assert role_distribution(plan, {}) == DIST
    assert role_distribution(plan, {"server": "k3sServer"}) == {"k3sServer": ["server-1"], "phone": DIST["phone"]}


# -- deployment file --------------------------------------------------------------------------

def test_parse_vm_deployment_uses_forwarded_ssh_ports():
    nodes = parse_deployment(fixture("deploy-vm.json"), "vm")
    assert list(nodes) == ["server-1", "phone-1", "phone-2", "phone-3", "phone-4"]
    assert nodes["phone-2"] == NxcNode(host="phone-2", role="phone", address="127.0.0.1", port=22024,
                                       ip="192.168.1.3", vm_id=3)


def test_parse_g5k_deployment_uses_node_ips():
    nodes = parse_deployment(fixture("deploy-g5k.json"), "g5k-ramdisk")
    assert {h: (n.address, n.port, n.role) for h, n in nodes.items()} == {
        "server-1": ("172.16.97.3", 22, "server"),
        "phone-1": ("172.16.97.4", 22, "phone"),
        "phone-2": ("172.16.97.5", 22, "phone"),
        "phone-3": ("172.16.97.6", 22, "phone"),
        "phone-4": ("172.16.97.7", 22, "phone"),
    }


def test_map_plan_nodes_by_host_name(plan):
    mapping = map_plan_nodes(plan, parse_deployment(fixture("deploy-g5k.json"), "g5k-ramdisk"), {})
    assert {k: v.address for k, v in mapping.items()} == {
        "server-1": "172.16.97.3", "phone-1": "172.16.97.4", "phone-2": "172.16.97.5",
        "phone-3": "172.16.97.6", "phone-4": "172.16.97.7"}


def test_map_plan_nodes_by_role_when_nxc_chose_host_names(plan):
    """docker fixture: nxc's own names (phone1..phone4, server)."""
    nodes = parse_deployment(fixture("deploy-docker.json"), "docker")
    mapping = map_plan_nodes(plan, nodes, {})
    assert {k: v.host for k, v in mapping.items()} == {
        "server-1": "server", "phone-1": "phone1", "phone-2": "phone2", "phone-3": "phone3", "phone-4": "phone4"}


def test_map_plan_nodes_natural_order_beyond_nine(plan):
    topo = plan.topology.scaled("phone", 11)
    big = make_plan(topo)
    nodes = {f"phone{i}": NxcNode(host=f"phone{i}", role="phone", address=f"10.0.0.{i}") for i in range(1, 12)}
    nodes["srv"] = NxcNode(host="srv", role="server", address="10.0.0.100")
    mapping = map_plan_nodes(big, nodes, {})
    assert mapping["phone-10"].host == "phone10" and mapping["phone-2"].host == "phone2"


def test_map_plan_nodes_reports_missing_hosts(plan):
    nodes = parse_deployment(fixture("deploy-g5k.json"), "g5k-ramdisk")
    del nodes["phone-4"]
    with pytest.raises(BackendError, match=r"phone-4.*roles=\{group: role\}"):
        map_plan_nodes(plan, nodes, {})


def test_parse_rejects_non_deployment():
    with pytest.raises(BackendError, match="deployment"):
        parse_deployment({"nodes": []}, "vm")


# -- remote commands --------------------------------------------------------------------------

def test_remote_argv_ssh_to_vm():
    node = parse_deployment(fixture("deploy-vm.json"), "vm")["phone-1"]
    argv = remote_argv(node, ["iperf3", "-c", "10.77.0.1", "-t", "5"], identity_file="/k/id")
    assert argv[0] == "ssh"
    assert argv[-2:] == ["127.0.0.1", "iperf3 -c 10.77.0.1 -t 5"]
    opts = argv[1:-2]
    assert "User=root" in opts and "Port=22023" in opts and "StrictHostKeyChecking=no" in opts
    assert opts[opts.index("-i") + 1] == "/k/id"


def test_remote_argv_quotes_shell_metacharacters():
    node = NxcNode(host="phone-1", role="phone", address="172.16.97.4")
    assert remote_argv(node, ["sh", "-c", "echo $HOME; ls"])[-1] == "sh -c 'echo $HOME; ls'"


def test_remote_argv_docker_exec():
    node = parse_deployment(fixture("deploy-docker.json"), "docker")["phone3"]
    assert remote_argv(node, ["ip", "-br", "addr"]) == [
        "docker", "compose", "-f",
        "/home/alice/edgelab/compositions/wifi/artifact/composition/docker/docker-compose.json",
        "exec", "-u", "root", "-T", "phone3", "ip", "-br", "addr"]


# -- up()/down() orchestration ----------------------------------------------------------------

class RecordingNxc:
    """Runner/spawner doubles: record argv; on `nxc start`, write the
    deployment file the way nixos-compose does (deploy/<prefix>.json)."""

    def __init__(self, deployment: dict, rc: int = 0):
        self.deployment = deployment
        self.calls: list[list[str]] = []
        self.rc = rc

    def _maybe_deploy(self, argv):
        if argv[0] == "nxc" and argv[3] == "start":
            envdir = Path(argv[2])
            prefix = argv[argv.index("-C") + 1]
            (envdir / "deploy").mkdir(exist_ok=True)
            (envdir / "deploy" / f"{prefix}.json").write_text(json.dumps(self.deployment))

    def runner(self, argv, **kw):
        self.calls.append(list(argv))
        self._maybe_deploy(argv)
        rc = self.rc if argv[0] == "nxc" else 0
        return subprocess.CompletedProcess(argv, rc, "", "error: flake 'path:...' does not provide attribute" if rc else "")

    def spawner(self, argv, **kw):
        self.calls.append(list(argv))
        self._maybe_deploy(argv)
        return subprocess.Popen(["sleep", "30"])


@pytest.fixture
def composition(tmp_path):
    d = tmp_path / "compositions" / "wifi"
    d.mkdir(parents=True)
    (d / "flake.nix").write_text("{ outputs = { self }: { }; }\n")
    return d


def every_tool(name):
    return f"/usr/bin/{name}"


def test_up_vm_runs_build_then_start_and_maps_nodes(plan, composition):
    rec = RecordingNxc(fixture("deploy-vm.json"))
    backend = NxcBackend(runner=rec.runner, spawner=rec.spawner, which=every_tool, sleep=lambda s: None,
                         composition="wifi", compositions_dir=str(composition.parent), flavour="vm")
    tb = backend.up(plan)
    try:
        env = str(composition)
        assert rec.calls[0] == ["nxc", "--envdir", env, "build", "-f", "vm", "-C", "composition"]
        assert rec.calls[1] == ["nxc", "--envdir", env, "start", "-C", "composition::vm", "-r", "server=server-1",
                                "-r", "phone=phone-1,phone-2,phone-3,phone-4", "-w"]
        probes = [c for c in rec.calls[2:] if c[0] == "ssh"]
        assert sorted(c[-2] + ":" + c[-1] for c in probes) == ["127.0.0.1:true"] * 5
        assert tb.facts()["placement"]["phone-4"] == {"host": "phone-4", "role": "phone", "address": "127.0.0.1",
                                                      "port": 22026, "via": "ssh"}
        tb.run("phone-1", ["hostname"])
        assert rec.calls[-1][-2:] == ["127.0.0.1", "hostname"] and "Port=22023" in rec.calls[-1]
        assert set(tb.execo_hosts()) == {"server-1", "phone-1", "phone-2", "phone-3", "phone-4"}
        start_proc = tb._start
        assert (composition / ".edgelab" / "wifi.json").is_file()
    finally:
        tb.down()
    assert start_proc.poll() is not None, "teardown must stop `nxc start -w` (that stops the VMs)"
    assert not (composition / ".edgelab" / "wifi.json").exists()
    tb.down()  # idempotent


def test_up_docker_stops_with_nxc_stop(plan, composition):
    rec = RecordingNxc(fixture("deploy-docker.json"))
    backend = get_backend("nxc", runner=rec.runner, spawner=rec.spawner, which=every_tool, sleep=lambda s: None,
                          build_dir=str(composition), flavour="docker", skip_build=True)
    with backend.up(plan) as tb:
        assert rec.calls[0][3] == "start"
        assert tb.nodes["server-1"].host == "server"
    assert rec.calls[-1] == ["nxc", "--envdir", str(composition), "stop", "-d",
                             str(composition / "deploy" / "composition::docker.json")]


def test_build_failure_surfaces_nxc_output(plan, composition):
    rec = RecordingNxc(fixture("deploy-vm.json"), rc=1)
    backend = NxcBackend(runner=rec.runner, spawner=rec.spawner, which=every_tool, build_dir=str(composition))
    with pytest.raises(BackendError, match=r"nxc build failed \(exit 1\)(.|\n)*does not provide attribute"):
        backend.up(plan)
    assert len(rec.calls) == 1


def test_up_without_nxc_says_what_is_missing(plan, composition):
    backend = NxcBackend(which=lambda name: None, build_dir=str(composition), flavour="vm")
    with pytest.raises(BackendError) as err:
        backend.up(plan)
    msg = str(err.value)
    assert "`nxc` (NixOS-Compose) is not on PATH" in msg and "pip install nixos-compose" in msg
    assert "`nix` is not installed" in msg


def test_up_on_this_machine_fails_clearly_without_composition(plan, tmp_path):
    """Real environment check, nothing injected: no composition in tmp_path."""
    backend = NxcBackend(compositions_dir=str(tmp_path), composition="absent", flavour="docker")
    with pytest.raises(BackendError, match=r"no composition at .*absent/flake.nix"):
        backend.up(plan)


def test_missing_requirements_checks_flavour_tools(composition):
    only_nix = {"nxc": "/x/nxc", "nix": "/x/nix"}.get
    assert any("docker" in p for p in missing_requirements(NxcOptions(flavour="docker", build_dir=str(composition)),
                                                           only_nix))
    assert any("QEMU" in p for p in missing_requirements(NxcOptions(flavour="vm", build_dir=str(composition)),
                                                         only_nix))
    assert missing_requirements(NxcOptions(flavour="g5k-ramdisk", build_dir=str(composition)), only_nix) == []


def test_down_by_name_stops_a_left_over_start(composition):
    """A crashed run left `nxc start -w` running: down(name) finds it via the state file."""
    script = composition / "nxc"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), "start", "-w"], start_new_session=True)
    try:
        backend = NxcBackend(build_dir=str(composition), flavour="vm")
        backend._save_state("wifi", proc)
        # /proc/<pid>/cmdline of a `#!/bin/sh` script is `/bin/sh .../nxc start -w`
        backend.down("wifi")
        assert proc.wait(timeout=10) != 0
        assert not backend.opts.state_file("wifi").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
