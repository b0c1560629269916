"""Inventory validation, the ssh commands the transport builds, and the ssh backend's preflight logic
(pure: no ssh connection; tests/test_ssh_devices.py runs the same code against real sshd)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from edgelab.errors import BackendError, TopologyError
from edgelab.remote import Transport, load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
defaults:
  user: pmos
  sudo: true
devices:
  - node: server-1
    host: 192.168.1.10
    user: root
    sudo: false
  - node: phone-1
    host: phone1.local
    port: 2222
    interface: wlan0
    power: {url: http://192.168.1.50/}
    cgroup: /edgelab
"""


def test_a_valid_inventory_maps_plan_nodes_to_devices():
    inv = parse_inventory(GOOD, "inv.yaml", REPO)
    ph = inv.device("phone-1")
    assert (ph.host, ph.port, ph.user, ph.sudo, ph.cgroup) == ("phone1.local", 2222, "pmos", True, "/edgelab")
    assert ph.power.url == "http://192.168.1.50" and ph.ifname("wlan0") == "wlan0" and ph.ifname("eth0") == "wlan0"
    assert inv.device("server-1").user == "root" and inv.device("server-1").data_address == "192.168.1.10"
    assert set(inv.subset(["phone-1"]).devices) == {"phone-1"}
    with pytest.raises(BackendError, match=r"no device for plan node\(s\) phone-2; add a `- node: phone-2`"):
        inv.check_covers(["phone-1", "phone-2"])


@pytest.mark.parametrize("text, where, what", [
    ("devices:\n  - node: phone-1\n    hots: x\n", "inv.yaml:3: devices[0].hots", "unknown key 'hots'"),
    ("devices:\n  - node: phone-1\n", "inv.yaml:2: devices[0]", "missing required key 'host'"),
    ("devices:\n  - {node: phone-1, host: a}\n  - {node: phone-1, host: b}\n", "inv.yaml:3: devices[1].node",
     "already on devices[0]"),
    ("devices:\n  - node: phone-1\n    host: a\n    port: 70000\n", "inv.yaml:4: devices[0].port", "TCP port"),
    ("devices:\n  - node: phone-1\n    host: a\n    power: {url: ftp://x}\n", "inv.yaml:4: devices[0].power.url",
     "http(s) URL"),
    ("devices:\n  - node: phone-1\n    host: a\n    power: {url: http://x, mqtt: t}\n", "inv.yaml:4: devices[0].power",
     "exactly one of"),
    ("devices:\n  - node: phone-1\n    host: a\n    cgroup: edgelab\n", "inv.yaml:4: devices[0].cgroup",
     "absolute cgroup path"),
    ("defaults: {sudo: yes please}\ndevices:\n  - {node: phone-1, host: a}\n", "inv.yaml:1: defaults.sudo",
     "true or false"),
    ("devices: []\n", "inv.yaml:1: devices", "non-empty list"),
    ("devices:\n  - node: phone-1\n    host: a\n    identity_file: /nonexistent/key\n",
     "inv.yaml:4: devices[0].identity_file", "does not exist"),
    ("devices:\n  - node: Phone 1\n    host: a\n", "inv.yaml:2: devices[0].node", "plan node name"),
])
def test_inventory_errors_name_file_line_and_fix(text, where, what):
    with pytest.raises(TopologyError) as e:
        parse_inventory(text, "inv.yaml", REPO)
    assert str(e.value).startswith(where) and what in str(e.value), str(e.value)


def test_load_inventory_names_a_missing_file(tmp_path):
    with pytest.raises(BackendError, match="cannot read inventory"):
        load_inventory(tmp_path / "nope.yaml")


def test_remote_commands_use_the_device_python_edgelab_copy_cgroup_and_sudo():
    inv = parse_inventory(GOOD, "inv.yaml", REPO)
    tr = Transport(inv)
    try:
        ph = inv.device("phone-1")
        tr._pythonpath[ph.name] = "/tmp/edgelab/edgelab-abc"
        cmd = tr.remote_command(ph, ["python3", "-m", "edgelab.linkemu", "detect"], sudo=True, confine=True,
                                pidfile="/tmp/edgelab/pids/1-1")
        # sudo -n sh -c '<record pid>; <join /edgelab>; exec env PYTHONPATH=... python3 -m ...'
        outer = shlex.split(cmd)
        assert outer[:4] == ["sudo", "-n", "sh", "-c"]
        inner = outer[4]
        assert inner.index("pids/1-1") < inner.index("/sys/fs/cgroup/edgelab/cgroup.procs") < inner.index("exec env")
        assert "PYTHONPATH=/tmp/edgelab/edgelab-abc python3 -m edgelab.linkemu detect" in inner
        srv = inv.device("server-1")   # root: no sudo; cgroup "/": nothing to join; no PYTHONPATH yet
        assert tr.remote_command(srv, ["tc", "qdisc", "show"], sudo=True, confine=True) == "tc qdisc show"
        argv = tr.ssh_argv(ph, "true")
        assert argv[0] == "ssh" and "BatchMode=yes" in argv and "phone1.local" == argv[-2]
        assert "Port=2222" in argv and "User=pmos" in argv and "-tt" not in argv
    finally:
        tr.close()


def test_preflight_names_what_is_missing_with_install_lines():
    from edgelab.backends.ssh import PreflightRow, missing_from, preflight_table

    ok = {"python": "3.11", "ip": "/sbin/ip", "tc": "/sbin/tc", "iperf3": "/usr/bin/iperf3", "uid": "0", "cpu": "v2"}
    assert missing_from(ok) == []
    bad = dict(ok, python="3.8", tc="", uid="1000", cpu="")
    assert missing_from(bad) == ["python", "tc", "root", "cpu-accounting"]
    inv = parse_inventory(GOOD, "inv.yaml", REPO)
    row = PreflightRow("phone-1", inv.device("phone-1"), missing_from(bad), os_id="postmarketos")
    line = row.line()
    assert line.startswith("node phone-1 (pmos@phone1.local:2222): missing Python >= 3.9")
    assert "install: postmarketOS: apk add python3 iproute2-tc sudo" in line and "\n" not in line
    generic = PreflightRow("phone-1", inv.device("phone-1"), ["iperf3"]).line()
    assert "apt install iperf3" in generic and "apk add iperf3" in generic and "pkgs; [ iperf3 ]" in generic
    table = preflight_table([row])
    assert "MISSING" in table and table.splitlines()[0].startswith("plan node")


def test_ssh_dry_run_shows_devices_and_the_linkemu_commands(tmp_path, capsys):
    sys.path.insert(0, str(REPO / "experiments"))
    import wifi_scaling

    inv = tmp_path / "inv.yaml"
    inv.write_text("devices:\n" + "".join(f"  - {{node: {n}, host: 10.9.9.{i + 1}, interface: wlan0}}\n"
                                          for i, n in enumerate(["server-1", "phone-1", "phone-2"])))
    assert wifi_scaling.main(["--inventory", str(inv), "--dry-run", "--phones", "2"]) == 0
    out = capsys.readouterr().out
    assert "phone-2        -> phone-2 (root@10.9.9.3:22)" in out
    assert "on phone-1: python3 -m edgelab.linkemu apply --dev wlan0" in out and "--rate-mbit 65" in out
    # the cell's access point: the uplink server (no wlan-ap device listed), its budget and the routes
    assert "Wi-Fi cell wlan/0: access point server-1 (10.9.9.1) [uplink node]" in out
    assert "on server-1: python3 -m edgelab.linkemu shared --dev wlan0 --name air0" in out
    assert "--station-mac '<MAC of phone-1>' --station-mac '<MAC of phone-2>'" in out
    assert "on phone-1: ip route replace 10.9.9.3/32 via 10.9.9.1 dev wlan0" in out


def test_ssh_backend_without_inventory_is_a_clear_error():
    sys.path.insert(0, str(REPO / "experiments"))
    import wifi_scaling
    from edgelab.errors import EdgelabError

    with pytest.raises(EdgelabError, match="--backend ssh needs --inventory FILE"):
        wifi_scaling.main(["--backend", "ssh", "--dry-run", "--phones", "1"])
