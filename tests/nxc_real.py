"""Running the REAL nixos-compose CLI (the venv's ``nxc``) on a copy of this
project, with recording shims for nix, qemu-kvm, vde_switch, ssh and nmap
first on PATH (tests/nxc_shims). Shared by test_backend_nxc and test_backend_g5k."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHIMS = Path(__file__).resolve().parent / "nxc_shims"
NXC_SRC = ROOT.parent / "shared" / "nix" / "nixos-compose"
VENV_BIN = Path(sys.executable).parent
#: What nxc needs of the project (flake.nix references setup.toml; the nix shim plans compositions).
PROJECT_FILES = ("flake.nix", "flake.lock", "nxc.json", "setup.toml", "compositions", "nix", "pkgs")


def nxc_available() -> str | None:
    """Why the real-nxc tests cannot run here, or None."""
    if not (VENV_BIN / "nxc").exists():
        return "nixos-compose is not installed in the venv (pip install nixos-compose==0.7.11)"
    if not (NXC_SRC / "nix" / "flavours" / "shared" / "common.nix").is_file():
        return f"{NXC_SRC} (pinned nixos-compose sources, for its qemu script) is absent"
    return None


def sshd_available() -> str | None:
    if os.geteuid() != 0:
        return "needs root: the shims' OpenSSH servers let root in, as NixOS nodes do"
    if not Path("/usr/sbin/sshd").exists() or not shutil.which("ssh-keygen"):
        return "OpenSSH server not installed (Debian: openssh-server)"
    return None


def port_free(address: str, port: int) -> bool:
    """Nothing accepts connections there (a bind test would trip on TIME_WAIT)."""
    try:
        socket.create_connection((address, port), timeout=1).close()
        return False
    except OSError:
        return True


class ShimEnv:
    """A project copy and the environment the real nxc runs in."""

    def __init__(self, tmp: Path, monkeypatch):
        self.project = tmp / "project"
        self.project.mkdir()
        for name in PROJECT_FILES:
            src = ROOT / name
            if src.is_dir():
                shutil.copytree(src, self.project / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif src.exists():
                shutil.copy2(src, self.project / name)
        self.state = tmp / "shim-state"
        self.log = tmp / "shim.log"
        (tmp / "tmp").mkdir()
        monkeypatch.setenv("PATH", f"{SHIMS}:{VENV_BIN}:{os.environ['PATH']}")
        monkeypatch.setenv("EDGELAB_SHIM_LOG", str(self.log))
        monkeypatch.setenv("EDGELAB_SHIM_STATE", str(self.state))
        monkeypatch.setenv("EDGELAB_NXC_SRC", str(NXC_SRC))
        monkeypatch.setenv("PYTHONPATH", str(ROOT))
        monkeypatch.setenv("TMPDIR", str(tmp / "tmp"))  # nxc's driver keeps VM state dirs there
        monkeypatch.setenv("USER", os.environ.get("USER", "root"))  # nxc records it in the deployment
        monkeypatch.delenv("DEPLOY", raising=False)

    def calls(self, tool: str) -> list[list[str]]:
        if not self.log.exists():
            return []
        rows = [json.loads(line) for line in self.log.read_text().splitlines()]
        return [r[1:] for r in rows if r[0] == tool]

    def kill_leftovers(self) -> list[int]:
        """SIGKILL every sshd the shims started that still runs (a failed test's); returns their pids."""
        alive = []
        pids = self.state / "pids"
        for pid in (int(p) for p in pids.read_text().split()) if pids.exists() else ():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:   # it exited (down's SIGTERM) between the two looks: not a leftover
                continue
            if b"sshd" in cmd and str(self.state).encode() in cmd:
                alive.append(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        return alive


@pytest.fixture
def shim_env(tmp_path, monkeypatch):
    why = nxc_available()
    if why:
        pytest.skip(why)
    env = ShimEnv(tmp_path, monkeypatch)
    yield env
    env.kill_leftovers()


@contextlib.contextmanager
def guest_namespaces(plan, monkeypatch, *, default_route: bool = False):
    """Give each stand-in guest a network namespace of its own: ``<prefix>-<node>`` with ``eth1``
    on one bridge and the node's plan address -- what nxc's vde switch (or a Grid'5000 job's
    network) and the composition's edgelab.netem give a booted node. The shims' sshd then runs
    every session there (tests/nxc_shims/_shim.py, ``EDGELAB_SHIM_GUEST_NETNS``), so what a test
    changes on the guests (routes, sysctls, IFBs) stays off this machine. ``default_route``: the
    guests' default route leaves by eth1 (a Grid'5000 node's testbed NIC is found that way).
    Yields the prefix; removes the namespaces, and any AP undo script a failed run left, after."""
    if not shutil.which("nsenter"):
        pytest.skip("nsenter (util-linux) is not installed")
    prefix = f"elnx{os.getpid() % 100000}"
    made = []

    def sh(*argv):
        subprocess.run(list(argv), check=True, capture_output=True, text=True)

    try:
        sw = f"{prefix}-sw"
        made.append(sw)
        sh("ip", "netns", "add", sw)
        sh("ip", "-n", sw, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", sw, "link", "set", "br0", "up")
        for i, n in enumerate(plan.nodes):
            ns = f"{prefix}-{n.name}"
            made.append(ns)
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", "eth1", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", sw)
            sh("ip", "-n", sw, "link", "set", f"p{i}", "master", "br0", "up")
            sh("ip", "-n", ns, "addr", "add", n.interfaces[0].address, "dev", "eth1")
            sh("ip", "-n", ns, "link", "set", "eth1", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if default_route:
                sh("ip", "-n", ns, "route", "add", "default", "dev", "eth1")
        monkeypatch.setenv("EDGELAB_SHIM_GUEST_NETNS", prefix)
        yield prefix
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        from edgelab.remote.ap import undo_path
        from edgelab.remote.testbed import link_tag

        for n in plan.nodes:   # the guests' workdir is this machine's /tmp/edgelab
            Path(undo_path("/tmp/edgelab", link_tag(plan.topology.name, n.name))).unlink(missing_ok=True)


def in_ns(ns: str, cmd: str) -> str:
    """``cmd``'s output inside network namespace ``ns``."""
    return subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", cmd], capture_output=True, text=True).stdout
