"""Names of every kernel object a local testbed creates (pure functions).

Every name carries the testbed name so that two testbeds (or two helpers'
tests) can coexist on one machine, and so that teardown can tell what is
ours from what is not.
"""

from __future__ import annotations

IFNAMSIZ = 15  # usable characters of an interface name
NETNS_DIR = "/run/netns"
STATE_DIR = "/run/edgelab"
CGROUP_ROOT = "edgelab"
BRIDGE = "br0"
#: Cgroup (under the testbed's) of the shared link-emulation delayer. Node names
#: always contain '-' and never start with '_', so it cannot collide with a node's.
DELAYER_CGROUP = "_linkemu"
#: Memory cap of that cgroup: the delayer holds packet ids, not payloads (~10 MiB at 1000 nodes).
DELAYER_MEMORY_MIB = 512


def netns_prefix(testbed: str) -> str:
    return f"el-{testbed}-"


def netns_name(testbed: str, element: str) -> str:
    """Namespace of a node or an infrastructure element (``el-<testbed>-<element>``)."""
    return f"{netns_prefix(testbed)}{element}"


def cgroup_rel(testbed: str, node: str | None = None) -> str:
    """Cgroup path relative to a hierarchy root (``edgelab/<testbed>[/<node>]``)."""
    return f"{CGROUP_ROOT}/{testbed}" + (f"/{node}" if node else "")


def state_path(testbed: str, state_dir: str = STATE_DIR) -> str:
    return f"{state_dir}/{testbed}.json"


def linkemu_tag(testbed: str) -> str:
    """Tag handed to LinkEmulator: prefixes its IFBs, nft tables, delayer argv, state dir."""
    return f"el-{testbed}"


def port_name(node: str, position: int) -> str:
    """Name of a member's veth end inside an infrastructure namespace.

    The node name when it fits IFNAMSIZ (readable in ``tc``/``bridge`` output),
    else ``p<position>``. Node names always contain '-', so the two forms
    cannot collide.
    """
    return node if len(node) <= IFNAMSIZ else f"p{position}"


def shared_medium_name(segment: int) -> str:
    """Name passed to ``apply_shared_medium`` for a wifi segment (unique within its AP)."""
    return f"air{segment}"
