"""Shared by the recording shims that stand in for nix, QEMU, vde_switch, ssh
and nmap under the REAL nixos-compose CLI (tests/test_backend_nxc.py).

Each shim appends its argv to $EDGELAB_SHIM_LOG (one JSON list per line) and
produces what nixos-compose reads next. Where the real tool would leave a
node reachable over SSH (a booted VM, a kexec'ed Grid'5000 node) the shim
starts a real OpenSSH server on that address, with root's authorized key
taken from the deployment nxc wrote -- what the NixOS node itself does at boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SHIM_DIR = Path(__file__).resolve().parent


def record(name: str) -> None:
    log = os.environ.get("EDGELAB_SHIM_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps([name, *sys.argv[1:]]) + "\n")


def state_dir() -> Path:
    d = Path(os.environ["EDGELAB_SHIM_STATE"])
    d.mkdir(parents=True, exist_ok=True)
    return d


def start_sshd(address: str, port: int, authorized_key: str, tag: str,
               netns: str | None = None) -> subprocess.Popen:
    """A real sshd on address:port letting root in with authorized_key only.

    ``netns``: every session runs inside that network namespace (``nsenter``,
    the mount namespace untouched), so the "guest" has its own interfaces,
    routes and sysctls -- what a booted VM has -- while sshd itself listens
    where nxc's hostfwd would (tests/test_backend_nxc.py makes the namespaces)."""
    d = state_dir() / f"sshd-{tag}"
    d.mkdir(parents=True, exist_ok=True)
    host_key = d / "host_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    (d / "authorized_keys").write_text(authorized_key.strip() + "\n")
    # The guest's own tools (guest/systemctl: the units a NixOS node runs at boot) come first on its PATH.
    units = os.environ.get("EDGELAB_SHIM_GUEST_UNITS", "")
    (d / "active-units").write_text("".join(f"{u}\n" for u in units.split(",") if u))
    guest_path = f"{SHIM_DIR / 'guest'}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    (d / "sshd_config").write_text(
        f"ListenAddress {address}:{port}\nHostKey {host_key}\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        f"UsePAM no\nStrictModes no\nPidFile {d}/sshd.pid\nLogLevel ERROR\n"
        f"SetEnv PATH={guest_path} EDGELAB_GUEST_STATE={d}"
        # the guest's edgelab: on a NixOS node the composition's; here this checkout
        + (f" PYTHONPATH={os.environ['PYTHONPATH']}" if netns and os.environ.get("PYTHONPATH") else "") + "\n"
        + (f'ForceCommand exec nsenter --net=/run/netns/{netns} -- /bin/sh -c "$SSH_ORIGINAL_COMMAND"\n'
           if netns else ""))
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(d / "sshd.log", "ab"))
    with open(state_dir() / "pids", "a") as f:
        f.write(f"{proc.pid}\n")
    return proc
