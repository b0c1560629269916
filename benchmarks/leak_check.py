"""Leak check: many up/down cycles of the local backend, some of them killed.

    sudo .venv/bin/python benchmarks/leak_check.py [--cycles 50] [--kill-every 3]

Every ``kill-every``-th cycle runs ``up`` in a child process and SIGKILLs it
at a random moment (during bring-up or after), then calls
``LocalBackend().down(name)`` from here, as ``edgelab down`` would. At the
end it asserts that nothing named after the testbed is left: network
namespaces, interfaces in the root namespace, cgroups, processes (delayers,
commands), state files. Exit status 1 and a list if anything leaked.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgelab.backends.local import LocalBackend, netns  # noqa: E402
from edgelab.backends.local import privdirs  # noqa: E402
from edgelab.errors import BackendError  # noqa: E402
from edgelab.plan import make_plan  # noqa: E402
from edgelab.topology import parse_topology  # noqa: E402

NAME = "lbleak"
TOPO = f"""
name: {NAME}
networks:
  - name: wlan
    profile: wifi-80211n-2.4ghz
  - name: lan
    kind: ethernet
    link: {{rate_mbit: 100, delay_ms: 1}}
nodes:
  - group: srv
    role: k3s-server
    networks: [{{name: wlan, uplink: true}}, lan]
  - group: ph
    role: phone
    count: 4
    networks: [wlan]
  - group: sbc
    role: beaglepaas-worker
    count: 2
    private: {{scratch_mib: 16}}     # per-node mount namespace + loop scratch disk (privdirs.py)
    networks: [lan]
"""

CHILD = f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
from edgelab.backends.local import LocalBackend
from edgelab.plan import make_plan
from edgelab.topology import parse_topology
tb = LocalBackend().up(make_plan(parse_topology(sys.stdin.read())))
tb.popen("ph-1", ["sleep", "600"])
tb.popen("sbc-1", ["sleep", "600"])
print("UP", flush=True)
time.sleep(600)
"""


def leftovers() -> dict[str, list]:
    tag = f"el-{NAME}"
    ns = netns.list_owned(NAME) if os.path.isdir("/run/netns") else []
    links = [l for l in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
             if tag in l or NAME in l]
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"**/edgelab/{NAME}") if p.is_dir()]
    procs = []
    for e in os.scandir("/proc"):
        if e.name.isdigit():
            try:
                cmd = Path(f"/proc/{e.name}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if tag in cmd and int(e.name) != os.getpid():
                procs.append(f"{e.name}: {cmd[:100]}")
            elif cmd.startswith("sleep 600"):
                procs.append(f"{e.name}: {cmd}")
    files = [p for p in (f"/run/edgelab/{NAME}.json", f"/run/{tag}-linkemu") if os.path.exists(p)]
    private = privdirs.leftovers(NAME)  # mount namespaces, scratch mounts and loop devices, directories
    return {k: v for k, v in dict(netns=ns, links=links, cgroups=cgroups, processes=procs, files=files,
                                  private=private).items() if v}


def killed_cycle(rng: random.Random) -> str:
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    p.stdin.write(TOPO)
    p.stdin.close()
    when = rng.choice(["during", "after"])
    if when == "during":
        time.sleep(rng.uniform(0.2, 1.2))  # interpreter start ~0.2 s, bring-up ~1 s
    else:
        p.stdout.readline()
    p.send_signal(signal.SIGKILL)
    p.wait()
    try:
        LocalBackend().down(NAME)
    except BackendError as e:
        if "no testbed named" not in str(e):  # killed before it claimed the name: nothing to do
            raise
    return when


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=50)
    ap.add_argument("--kill-every", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root")
    if leftovers():
        sys.exit(f"leftovers before starting: {leftovers()}")
    rng = random.Random(args.seed)
    plan = make_plan(parse_topology(TOPO))
    counts = {"clean": 0, "during": 0, "after": 0}
    t0 = time.monotonic()
    for i in range(args.cycles):
        if (i + 1) % args.kill_every == 0:
            counts[killed_cycle(rng)] += 1
        else:
            with LocalBackend().up(plan) as tb:
                tb.popen("ph-1", ["sleep", "600"])
                tb.popen("sbc-1", ["sleep", "600"])
                got = tb.run("sbc-2", ["sh", "-c", f"echo x > {tb.private['sbc-2'].scratch}/f && "
                                                 "echo y > /var/lib/f && cat /var/lib/f"]).stdout
                assert got == "y\n", f"cycle {i}: sbc-2's private /var/lib read back {got!r}"
                ping = tb.run("ph-2", ["ping", "-c1", "-W2", tb.address("srv-1", "wlan")], check=False)
                assert ping.returncode == 0, f"cycle {i}: ph-2 cannot ping srv-1: {ping.stdout}{ping.stderr}"
            counts["clean"] += 1
        left = leftovers()
        if left:
            print(f"cycle {i}: LEAK {left}")
            sys.exit(1)
    print(f"{args.cycles} cycles in {time.monotonic() - t0:.1f}s: {counts['clean']} clean up/down, "
          f"{counts['during']} SIGKILLed during bring-up, {counts['after']} SIGKILLed after bring-up; "
          f"leaked: 0 netns, 0 links, 0 cgroups, 0 processes, 0 state files, 0 private mounts/loop devices/dirs")


if __name__ == "__main__":
    main()
