"""Provenance: what a results manifest records so a run can be re-run a year later."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Optional

from . import __version__

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def git_info(root: Path = PROJECT_ROOT) -> dict:
    """Revision and dirtiness of the checkout the code runs from (None outside git)."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"rev": rev, "dirty": bool(status) if status is not None else None}


def flake_lock_sha256(root: Path = PROJECT_ROOT) -> Optional[str]:
    lock = root / "flake.lock"
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.exists() else None


def host_facts() -> dict:
    mem_mib = None
    try:
        with open("/proc/meminfo") as fh:
            mem_mib = next(int(l.split()[1]) for l in fh if l.startswith("MemTotal:")) // 1024
    except OSError:
        pass
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "memory_mib": mem_mib,
        "python": sys.version.split()[0],
        "os": _os_release(),
    }


def _os_release() -> Optional[str]:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        return None
    return None


def provenance() -> dict:
    return {
        "git": git_info(),
        "flake_lock_sha256": flake_lock_sha256(),
        "host": host_facts(),
        "edgelab_version": __version__,
        "argv": sys.argv,
    }
