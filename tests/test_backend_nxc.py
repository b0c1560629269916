"""nxc backend: the argv it builds for the top-level flake, the node counts it
passes as setup parameters, and bring-up through the REAL nixos-compose CLI.

The end-to-end tests run the venv's ``nxc`` on a copy of this project with
recording shims for nix, qemu-kvm, vde_switch and ssh on PATH
(tests/nxc_shims): nxc itself parses every argv, writes setup.toml's
override, the build link and its deployment file; the shims stand in only for
what cannot run here (Nix builds, QEMU guests), and the "guests" serve real
SSH with the key nxc put in the deployment, so the backend's wait for every
node and its commands go over real SSH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgelab.backends import get_backend
from edgelab.backends.nxc import (
    COUNT_PARAMS,
    NxcBackend,
    NxcOptions,
    build_argv,
    composition_ap_conflict,
    composition_plan,
    declared_params,
    missing_requirements,
    plan_differences,
    setup_params,
    start_argv,
)
from edgelab.backends.nxc_deploy import VM_SSH_BASE, map_plan_nodes, parse_deployment, role_distribution
from edgelab.errors import BackendError
from edgelab.plan import make_plan
from edgelab.topology import load_topology

from nxc_real import ROOT, guest_namespaces, in_ns, port_free, shim_env, sshd_available  # noqa: F401
from remote_helpers import wifi_plan


# -- argv for the top-level flake -------------------------------------------------------------

@pytest.mark.parametrize("flavour", ["vm", "vm-ramdisk", "g5k-ramdisk", "g5k-image"])
def test_build_argv_names_composition_and_flavour(flavour):
    opts = NxcOptions(composition="beaglepaas", flavour=flavour, flake_dir="/srv/edgelab")
    assert build_argv(opts, {"workers": 3}) == [
        "nxc", "--envdir", "/srv/edgelab", "build", "-C", f"beaglepaas::{flavour}", "--setup-param", "workers=3"]


def test_start_argv_vm_waits_for_signal_and_installs_the_key():
    opts = NxcOptions(flake_dir="/srv/edgelab")
    dist = role_distribution(wifi_plan(2), {})
    assert start_argv(opts, dist, "/k/id.pub") == [
        "nxc", "--envdir", "/srv/edgelab", "start", "-C", "k3s-phones::vm",
        "-r", "server=server-1", "-r", "phone=phone-1,phone-2", "-i", "/k/id.pub", "-w"]


@pytest.mark.parametrize("flavour", ["g5k-ramdisk", "g5k-image"])
def test_start_argv_g5k_needs_machine_file(flavour):
    opts = NxcOptions(flavour=flavour, machines="/home/alice/machines", flake_dir="/p")
    assert start_argv(opts, {"phone": ["phone-1"]}, "k.pub")[-4:] == ["-i", "k.pub", "-m", "/home/alice/machines"]
    with pytest.raises(BackendError, match="machines="):
        start_argv(NxcOptions(flavour=flavour), {"phone": ["phone-1"]}, "k.pub")


def test_options_refuse_what_the_flake_cannot_build():
    with pytest.raises(BackendError, match="docker.*not one the flake builds.*vm, vm-ramdisk"):
        NxcOptions(flavour="docker")
    with pytest.raises(BackendError, match="flavour is the separate flavour= option"):
        NxcOptions(composition="k3s-phones::vm")
    with pytest.raises(BackendError, match="only integers and strings"):
        NxcOptions(setup_params={"batman": True})
    for bad in ({"k3s_phones": "3=4"}, {"a b": 1}, {"x": "1\n[options]"}):
        with pytest.raises(BackendError, match="plain identifier"):
            NxcOptions(setup_params=bad)


def test_setup_params_give_the_composition_the_plan_counts():
    declared = declared_params(ROOT)
    relays = {"relays": 0} if "relays" in declared else {}  # k3s-phones' optional relay group, where declared
    assert setup_params(wifi_plan(7), NxcOptions(flake_dir=str(ROOT)), declared) == {"k3s_phones": 7, **relays}
    faas = make_plan(load_topology(ROOT / "compositions" / "beaglepaas" / "topology.yaml").scaled("worker", 5))
    assert setup_params(faas, NxcOptions(composition="beaglepaas", flake_dir=str(ROOT)), declared) == {"workers": 5}
    with pytest.raises(BackendError, match=r"setup.toml: \[params\] declares no bogus"):
        setup_params(wifi_plan(1), NxcOptions(flake_dir=str(ROOT), setup_params={"bogus": 1}), declared)
    with pytest.raises(BackendError, match="unknown composition 'nope'"):
        setup_params(wifi_plan(1), NxcOptions(composition="nope"), declared)


def test_count_params_agree_with_the_nix_files():
    """The backend's table is what compositions.nix and each composition.nix wire: every count
    parameter setup.toml declares for a composition is in the table with the group it sizes; a
    table entry the Nix files lack is skipped by setup_params (older checkout)."""
    text = (ROOT / "compositions" / "compositions.nix").read_text()
    declared = declared_params(ROOT)
    blocks = dict(re.findall(r"^\s*([\w-]+)\s*=\s*args@(.*?)(?=^\s*[\w-]+\s*=\s*args@|\Z)", text, re.S | re.M))
    assert set(blocks) == set(COUNT_PARAMS)
    for comp, block in blocks.items():
        kw_of = {p: kw for kw, p in re.findall(r"(\w+)\s*=\s*[^;=]*?\bsetup\s+\"(\w+)\"", block)}
        counts = (ROOT / "compositions" / comp / "composition.nix").read_text()
        wired = dict(re.findall(r"(\w+)\s*=\s*(\w+);", re.search(r"counts\s*=\s*\{([^}]*)\}", counts).group(1)))
        group_of_kw = {kw: g for g, kw in wired.items()}
        for param, kw in kw_of.items():
            if kw in group_of_kw:   # a count parameter
                assert COUNT_PARAMS[comp].get(param) == group_of_kw[kw], f"{comp}: {param} sizes {group_of_kw[kw]}"
                assert param in declared, f"setup.toml [params] lacks {param}"
        for param in set(COUNT_PARAMS[comp]) - set(kw_of):
            assert param not in declared, f"{param} is declared but {comp} does not read it"


def test_plan_differences_block_other_nodes_and_record_other_links():
    opts = NxcOptions(flake_dir=str(ROOT))
    plan = wifi_plan(2)
    built = composition_plan(opts, {"k3s_phones": 2})
    blocking, recorded = plan_differences(plan, built)
    assert blocking == [] and any("phone-1: resources" in r for r in recorded)
    blocking, _ = plan_differences(plan, composition_plan(opts, {"k3s_phones": 3}))
    assert blocking and "phone-3" in blocking[0]


def test_dry_run_drives_the_top_level_flake():
    """The issue's bug: the dry run named compositions/k3s-phones/flake.nix, which does not exist."""
    proc = subprocess.run([str(Path(ROOT / ".venv/bin/python")), "experiments/wifi_scaling.py", "--backend", "nxc",
                           "--dry-run", "--phones", "1,2"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"nxc --envdir {ROOT} build -C k3s-phones::vm --setup-param k3s_phones=2" in out
    assert "start -C k3s-phones::vm -r server=server-1 -r phone=phone-1,phone-2 -i " in out
    assert "compositions/k3s-phones/flake" not in out and "-C composition" not in out
    assert (ROOT / "flake.nix").is_file()


# -- deployment file: validation of what we read -------------------------------------------------

def test_parse_deployment_rejects_what_nxc_would_not_write():
    with pytest.raises(BackendError, match="x.json: no 'deployment' table"):
        parse_deployment({"nodes": []}, "vm", "x.json")
    with pytest.raises(BackendError, match="has no 'role'"):
        parse_deployment({"deployment": {"10.0.0.1": {"host": "a"}}}, "g5k-ramdisk")
    with pytest.raises(BackendError, match="not an IP address"):
        parse_deployment({"deployment": {"phone-1": {"role": "phone"}}}, "g5k-ramdisk")
    with pytest.raises(BackendError, match="no integer 'vm_id'"):
        parse_deployment({"deployment": {"192.168.1.1": {"role": "phone", "host": "p"}}}, "vm")
    with pytest.raises(BackendError, match="deployed twice"):
        parse_deployment({"deployment": {"10.0.0.1": {"role": "p", "host": "a"},
                                         "10.0.0.2": {"role": "p", "host": "a"}}}, "g5k-ramdisk")


def test_missing_requirements_name_each_tool(tmp_path):
    none = lambda name: None  # noqa: E731
    msgs = missing_requirements(NxcOptions(flake_dir=str(tmp_path)), none)
    text = "\n".join(msgs)
    for what in ("`nxc` (NixOS-Compose) is not on PATH", "`nix` is not installed", "qemu-kvm", "vde_switch",
                 f"no flake.nix in the nxc project {tmp_path}", "no nxc.json"):
        assert what in text
    assert missing_requirements(NxcOptions(flake_dir=str(ROOT), flavour="g5k-ramdisk"), lambda n: "/bin/" + n) == []


# -- the real nxc ----------------------------------------------------------------------------

def test_real_nxc_builds_with_the_plan_counts_and_setup_toml_is_restored(shim_env):
    before = (shim_env.project / "setup.toml").read_text()
    backend = NxcBackend(flake_dir=str(shim_env.project))
    backend._build(build_argv(backend.opts, backend.params(wifi_plan(5))), str(shim_env.project))
    [nix] = shim_env.calls("nix")
    assert nix[-3:] == ["-o", str(shim_env.project / "build" / "k3s-phones::vm"),
                        ".#packages.x86_64-linux.k3s-phones::vm"]
    info = json.loads((shim_env.project / "build" / "k3s-phones::vm").read_text())
    # nxc wrote [override-params] k3s_phones=5 for the build; the composition read it:
    assert info["compositions_info"]["k3s-phones"]["roles_distribution"] == {
        "phone": ["phone-1", "phone-2", "phone-3", "phone-4", "phone-5"], "server": ["server-1"]}
    assert (shim_env.project / "setup.toml").read_text() == before


def test_real_nxc_start_failure_is_reported_with_its_output(shim_env):
    backend = NxcBackend(flake_dir=str(shim_env.project), skip_build=True, ready_timeout=30)
    with pytest.raises(BackendError, match=r"`nxc start` exited \(1\)(.|\n)*build composition first"):
        backend.up(wifi_plan(1))


@pytest.fixture
def vm_ports():
    why = sshd_available()
    if why:
        pytest.skip(why)
    busy = [p for p in range(VM_SSH_BASE + 1, VM_SSH_BASE + 4) if not port_free("127.0.0.1", p)]
    if busy:
        pytest.skip(f"ports {busy} on 127.0.0.1 are in use (nxc's VMs forward SSH there)")


def test_up_vm_through_real_nxc_then_commands_over_ssh(shim_env, vm_ports, monkeypatch):
    # the guests boot with a FaaS orchestrator unit the experiment would start itself, and k3s
    monkeypatch.setenv("EDGELAB_SHIM_GUEST_UNITS", "edgelab-beaglepaas-orchestrator,k3s")
    plan = wifi_plan(2)
    # airtime=False: these guests share this machine's network namespace (the AP test below gives them their own)
    backend = get_backend("nxc", flake_dir=str(shim_env.project), ready_timeout=60, airtime=False)
    tb = backend.up(plan)
    try:
        deployment = json.loads((shim_env.project / "deploy" / "k3s-phones::vm.json").read_text())
        # nxc named each host after its plan node and installed the backend's key:
        assert sorted(v["host"] for v in deployment["deployment"].values()) == ["phone-1", "phone-2", "server-1"]
        key = shim_env.project / ".edgelab" / "ssh" / "id_ed25519"
        assert deployment["ssh_key.pub"] == Path(f"{key}.pub").read_text().strip()
        # every node answers over SSH on 127.0.0.1:22021+vm_id, as the deployment says
        ports = {v["host"]: VM_SSH_BASE + v["vm_id"] for v in deployment["deployment"].values()}
        assert {n: tb.nodes[n].port for n in tb.nodes} == ports
        fwd = {int(m) for q in shim_env.calls("qemu-kvm") for m in re.findall(r"hostfwd=tcp::(\d+)-:22", " ".join(q))}
        assert fwd == set(ports.values())  # nxc's qemu script forwarded each VM's SSH there
        out = tb.run("phone-2", ["sh", "-c", "echo $0 $USER", "hello"]).stdout.split()
        assert out == ["hello", "root"]
        # the shared remote transport: CPU time from the node's cgroup, device facts, files back
        assert tb.cpu_seconds("server-1") > 0
        facts = tb.facts()
        assert facts["backend"] == "nxc" and facts["nxc_build"] == "k3s-phones::vm"
        assert facts["setup_params"]["k3s_phones"] == 2 and facts["devices"]["phone-1"]["kernel"]
        assert facts["placement"]["phone-1"]["port"] == ports["phone-1"]
        assert tb.address("phone-1") == plan.node("phone-1").interfaces[0].ip
        # bring-up stopped the unit the experiment starts itself, on every node, and only that one
        assert facts["stopped_composition_units"] == {n: ["edgelab-beaglepaas-orchestrator"] for n in ports}
        assert tb.run("server-1", "systemctl is-active --quiet k3s", check=False).returncode == 0
        assert tb.run("server-1", "systemctl is-active --quiet edgelab-beaglepaas-orchestrator",
                      check=False).returncode != 0
        assert (shim_env.project / ".edgelab" / "wifi.json").is_file()
    finally:
        tb.down()
    assert all(port_free("127.0.0.1", p) for p in ports.values()), "teardown must stop the VMs"
    assert shim_env.kill_leftovers() == []
    assert not (shim_env.project / ".edgelab" / "wifi.json").exists()


def test_a_node_without_ssh_is_named_and_nothing_is_left(shim_env, vm_ports, monkeypatch):
    """phone-2's guest (vm_id 2) never serves SSH: one error naming it, the VMs stopped."""
    monkeypatch.setenv("EDGELAB_SHIM_NO_SSH", str(VM_SSH_BASE + 2))
    backend = get_backend("nxc", flake_dir=str(shim_env.project), ready_timeout=3)
    with pytest.raises(BackendError) as err:
        backend.up(wifi_plan(2))
    msg = str(err.value)
    assert "not reachable over SSH after 3s" in msg and "phone-2" in msg
    assert "phone-1" not in msg and "server-1" not in msg
    assert all(port_free("127.0.0.1", VM_SSH_BASE + i) for i in (1, 2, 3))
    assert shim_env.kill_leftovers() == []
    assert not (shim_env.project / ".edgelab" / "wifi.json").exists()


def test_vm_flavour_refuses_more_vms_than_nxc_can_start(tmp_path):
    with pytest.raises(BackendError, match="8 nodes on nxc's vm flavour.*cannot start VM 8 or 9.*at most 7"):
        NxcBackend(flake_dir=str(ROOT), which=lambda n: "/bin/" + n).up(wifi_plan(7))


def test_nxc_qemu_script_cannot_start_vm_8_and_the_error_comes_at_once(shim_env, monkeypatch):
    """Why max_vms is 7: nixos-compose's own qemu script (the pinned source, run by the real nxc)
    fails for VM 08 (bash octal). The backend reports nxc's error instead of waiting out its timeout."""
    why = sshd_available()
    if why:
        pytest.skip(why)
    if not all(port_free("127.0.0.1", VM_SSH_BASE + i) for i in range(1, 10)):
        pytest.skip("ports 22022-22030 on 127.0.0.1 are in use")
    backend = get_backend("nxc", flake_dir=str(shim_env.project), ready_timeout=120, max_vms=20)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        backend.up(wifi_plan(8))
    assert time.monotonic() - t0 < 60
    assert "value too great for base" in str(err.value) and "phone-8" in str(err.value)
    assert all(port_free("127.0.0.1", VM_SSH_BASE + i) for i in range(1, 10))
    assert shim_env.kill_leftovers() == []


def test_map_plan_nodes_by_role_when_the_composition_names_hosts():
    """nxc's own names (role + index) when no -r is given: matched by role, in natural order."""
    nodes = {f"phone{i}": parse_deployment({"deployment": {f"10.0.0.{i}": {"role": "phone", "host": f"phone{i}"}}},
                                           "g5k-ramdisk")[f"phone{i}"] for i in range(1, 12)}
    nodes["server"] = parse_deployment({"deployment": {"10.0.0.99": {"role": "server"}}}, "g5k-ramdisk")["server"]
    mapping = map_plan_nodes(wifi_plan(11), nodes, {})
    assert mapping["phone-10"].host == "phone10" and mapping["phone-2"].host == "phone2"
    assert mapping["server-1"].address == "10.0.0.99"
    with pytest.raises(BackendError, match=r"phone-11.*roles=\{group: role\}"):
        del nodes["phone11"]
        map_plan_nodes(wifi_plan(11), nodes, {})


def test_down_by_name_stops_a_left_over_start(tmp_path):
    """A crashed run left `nxc start -w` running: down(name) finds it via the state file."""
    script = tmp_path / "nxc"
    script.write_text("#!/bin/sh\nsleep 30\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script), "start", "-w"], start_new_session=True)
    try:
        backend = NxcBackend(flake_dir=str(tmp_path))
        backend._save_state("wifi", proc)
        backend.down("wifi")
        assert proc.wait(timeout=10) != 0
        assert not backend.opts.state_file("wifi").exists()
    finally:
        if proc.poll() is None:
            proc.kill()


def test_real_nxc_build_f_vm_then_start_runs_the_default_composition(shim_env, vm_ports):
    """`nxc build -f vm` then `nxc start` (README, docs/nix.md): the build must name a composition
    that `nxc start` then finds in the build. nxc builds `composition::<flavour>` (the flake's
    alias of its default composition) but names the build link after nxc.json's "composition"
    label (cmd_build.py), and `nxc start` looks that name up in the build's compositions_info
    (actions.py read_compose_info): the label must be the default composition's name
    (with "compositions/compositions.nix" it failed: 'Composition named "compositions" is not in ...')."""
    import tomllib

    options = tomllib.loads((shim_env.project / "setup.toml").read_text()).get("options", {})
    flake = (shim_env.project / "flake.nix").read_text()
    if "composition-flavour" not in options and '"composition::' not in flake:
        pytest.skip("the flake names no default composition yet (setup.toml [options] composition-flavour, "
                    "or a composition::<flavour> output)")
    build = subprocess.run(["nxc", "build", "-f", "vm"], cwd=shim_env.project, capture_output=True, text=True,
                           timeout=120)
    assert build.returncode == 0, build.stdout + build.stderr
    key = shim_env.project / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    start = subprocess.Popen(["nxc", "start", "-i", f"{key}.pub", "-w"], cwd=shim_env.project,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not list((shim_env.project / "deploy").glob("*.json")) and start.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        out = "" if start.poll() is None else start.stdout.read()
        assert start.poll() is None, f"nxc start after nxc build -f vm failed:\n{out[-2000:]}"
        [deploy] = (shim_env.project / "deploy").glob("*.json")
        hosts = {v["host"] for v in json.loads(deploy.read_text())["deployment"].values()}
        assert "server-1" in hosts and "phone-1" in hosts
    finally:
        import os
        import signal

        if start.poll() is None:
            os.killpg(start.pid, signal.SIGTERM)
        start.wait(timeout=30)


# -- the access point as a node, on guests with their own network ------------------------------

@pytest.fixture
def netns_guests(shim_env, vm_ports, monkeypatch):
    """Each guest's SSH sessions run in a network namespace of its own (nxc_real.guest_namespaces)."""
    plan = wifi_plan(3)
    with guest_namespaces(plan, monkeypatch) as prefix:
        yield plan, prefix


def test_nxc_access_point_routes_shapes_and_crash_time_down_undoes_it(shim_env, netns_guests):
    """The real nxc starts the composition; the backend then makes the uplink server the cell's AP
    over SSH (the same apply_cells as the ssh backend): stations reach each other through it and its
    budget caps the cell. Then the controller "crashes" (the testbed is abandoned, its memory of what
    changed lost) and ``down(name)`` leaves nothing of the AP and stops the VMs."""
    import sys

    from edgelab.measure import concurrent_goodput

    plan, prefix = netns_guests
    server = f"{prefix}-server-1"
    backend = get_backend("nxc", flake_dir=str(shim_env.project), ready_timeout=60, node_python=sys.executable)
    tb = backend.up(plan)
    crashed = False
    try:
        (cell,) = tb.facts()["access_points"]
        cap = plan.network("wlan").segments[0].capacity_mbit
        assert (cell["ap"], cell["stations"], cell["capacity_mbit"]) == ("server-1", 3, pytest.approx(cap))
        assert "airtime budget on the access point" in tb.facts()["link_emulation"]
        ap_ip = tb.address("server-1")
        # phone -> phone crosses the AP (a routed hop: ttl 63), the AP forwards and sends no redirects
        assert f"via {ap_ip} dev eth1" in tb.run("phone-1", ["ip", "route", "get", tb.address("phone-3")]).stdout
        # three echoes: the Wi-Fi profile drops 0.5 % each way, and one lost echo is no routing fault
        assert "ttl=63" in tb.run("phone-1", ["ping", "-c", "3", "-i", "0.2", "-W", "2", tb.address("phone-3")]).stdout
        assert in_ns(server, "sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.send_redirects "
                             "net.ipv4.conf.eth1.send_redirects").split() == ["1", "0", "0"]
        # the budget on the AP's IFB: root, default class and one class per station
        classes = in_ns(server, "for i in $(ip -o link | awk -F': ' '/air0/{print $2}' | cut -d@ -f1); do "
                                "tc class show dev $i; done")
        assert classes.count("class htb a:") == 5, classes
        # every device's undo script is there before anything changed (what a crash-time down runs)
        undo = dict(tb.cell_state.undo_files)
        assert set(undo) == {"server-1", "phone-1", "phone-2", "phone-3"}, undo
        assert f"ip route del {tb.address('phone-3')}/32 via {ap_ip} dev eth1" in \
            tb.run("phone-1", ["cat", undo["phone-1"]]).stdout
        assert "sysctl -qw net.ipv4.ip_forward=0" in tb.run("server-1", ["cat", undo["server-1"]]).stdout
        shares = concurrent_goodput(tb, ["phone-1", "phone-2"], "server-1", seconds=1.0, network="wlan")
        total = sum(s["goodput_mbit"] for s in shares.values())
        assert 0.5 * cap <= total <= cap, (total, cap, shares)
        # the crash: connections dropped, nothing undone by the controller
        tb.detach()
        crashed = True
        assert "air0" in in_ns(server, "ip -o link")
        get_backend("nxc", flake_dir=str(shim_env.project)).down(plan.topology.name)
        tb._start.wait(timeout=30)
    finally:
        if not crashed:
            tb.down()
    assert "air0" not in in_ns(server, "ip -o link") and "clsact" not in in_ns(server, "tc qdisc show dev eth1")
    assert in_ns(server, "sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.send_redirects "
                         "net.ipv4.conf.eth1.send_redirects").split() == ["0", "1", "1"]
    for st in ("phone-1", "phone-2", "phone-3"):
        assert "via" not in in_ns(f"{prefix}-{st}", "ip route"), st
    assert undo and not any(Path(p).exists() for p in undo.values()), undo
    assert all(port_free("127.0.0.1", VM_SSH_BASE + i) for i in range(1, 5)), "down must stop the VMs"
    assert shim_env.kill_leftovers() == []


def test_composition_ap_and_backend_ap_are_not_both_installed(tmp_path):
    """wifi_ap=true (the composition's AP at boot) with the backend's airtime=true would be two budgets."""
    with pytest.raises(BackendError, match="wifi_ap=true.*airtime=false"):
        NxcBackend(flake_dir=str(ROOT), which=lambda n: "/bin/" + n, skip_build=True,
                   setup_params={"wifi_ap": "true"}).up(wifi_plan(2))
    assert composition_ap_conflict(NxcOptions(flake_dir=str(ROOT), airtime=False), {"wifi_ap": "true"}) == ""
    assert composition_ap_conflict(NxcOptions(flake_dir=str(ROOT)), {}) == ""   # setup.toml: wifi_ap = false
