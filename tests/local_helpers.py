"""Shared helpers of the local-backend tests: bring a YAML topology up, always tear it down,
and check that nothing of a testbed is left in the kernel."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import Iterator

from edgelab.backends.local import LocalBackend, LocalTestbed
from edgelab.backends.local import cgroups
from edgelab.backends.local.naming import netns_prefix
from edgelab.plan import make_plan
from edgelab.topology import parse_topology


#: Appended to the suites' testbed names, so two sessions (or CI and a developer) running the
#: root tests on one machine never claim the same names. Four characters keep every name
#: within the 16 a testbed name may have.
RUN_TAG = os.environ.get("EDGELAB_TEST_TAG") or secrets.token_hex(2)


def tbname(base: str) -> str:
    """This test run's testbed name for ``base`` (``base`` + RUN_TAG)."""
    return f"{base}{RUN_TAG}"


def wifi_cell(n: int, name: str, link: str = "delay_ms: 0, jitter_ms: 0, loss_pct: 0") -> str:
    """A Wi-Fi cell of ``n`` phones and a server on its uplink, ``link`` overriding the profile's
    per-station link (YAML flow-mapping body)."""
    return f"""
name: {name}
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
    link: {{{link}}}
nodes:
  - group: srv
    role: k3s-server
    networks: [{{name: wlan, uplink: true}}]
  - group: ph
    role: phone
    count: {n}
    networks: [wlan]
"""


def plan_of(yaml_text: str):
    return make_plan(parse_topology(yaml_text))


@contextlib.contextmanager
def running_testbed(yaml_text: str) -> Iterator[LocalTestbed]:
    plan = plan_of(yaml_text)
    tb = None
    try:
        tb = LocalBackend().up(plan)
        yield tb
    finally:
        if tb is not None:
            tb.down()
        elif Path(f"/run/edgelab/{plan.topology.name}.json").exists():
            LocalBackend().down(plan.topology.name)


def leftovers(name: str) -> dict[str, list]:
    """Everything of testbed ``name`` still present: namespaces, cgroups, processes, files."""
    ns = sorted(n for n in os.listdir("/run/netns") if n.startswith(netns_prefix(name))) \
        if os.path.isdir("/run/netns") else []
    layout = cgroups.detect_layout()
    cg = [str(d) for d in layout.dirs(f"edgelab/{name}") if d.exists()]
    tag = f"el-{name}"
    procs = []
    for e in os.scandir("/proc"):
        if e.name.isdigit() and int(e.name) != os.getpid():
            try:
                cmd = Path(f"/proc/{e.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"--tag {tag} " in cmd + " " or f"/run/{tag}-linkemu/" in cmd:
                procs.append((int(e.name), cmd))
    files = [p for p in (f"/run/edgelab/{name}.json", f"/run/{tag}-linkemu") if os.path.exists(p)]
    return {k: v for k, v in {"netns": ns, "cgroups": cg, "processes": procs, "files": files}.items() if v}


def named_testbeds(pattern: str) -> set[str]:
    """Names (full match of ``pattern``) of testbeds with anything in the kernel or /run."""
    rx = re.compile(pattern)
    found = set()
    if os.path.isdir("/run/netns"):
        found |= {n[3:].split(".", 1)[0] for n in os.listdir("/run/netns") if n.startswith("el-") and "." in n}
    if os.path.isdir("/run/edgelab"):
        found |= {f[:-5] for f in os.listdir("/run/edgelab") if f.endswith(".json")}
    for d in cgroups.detect_layout().dirs("edgelab"):
        if d.is_dir():
            found |= {c.name for c in d.iterdir() if c.is_dir()}
    return {n for n in found if rx.fullmatch(n)}
