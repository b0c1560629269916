"""Names of every kernel object a local testbed creates (pure functions).

Every name carries the testbed name so that two testbeds (or two helpers'
tests) can coexist on one machine, and so that teardown can tell what is
ours from what is not.

Ownership must be exact: testbed and group names may contain '-', so with
``el-<testbed>-<element>`` the testbed ``a`` with a node ``b-phone-1`` and the
testbed ``a-b`` with a node ``phone-1`` would both own ``el-a-b-phone-1``, and
a prefix match for ``a`` would take everything of ``a-b``. The testbed and the
element are therefore separated by ``.``, a character no name may contain
(``edgelab.topology.TESTBED_NAME_RE``): ``el-<testbed>.<element>``, and the
prefix ``el-<testbed>.`` belongs to exactly one testbed.
"""

from __future__ import annotations

import re

from ...errors import BackendError

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


#: What a testbed name may be (as ``edgelab.topology.TESTBED_NAME_RE``; a name becomes
#: file and cgroup paths, so this is checked again wherever a name arrives from outside).
_TESTBED_RE = re.compile(r"[a-z][a-z0-9-]{0,15}")
#: Separator between the testbed and the element in a namespace name: no name contains it.
SEP = "."
#: An element (node or infrastructure) name: group/network names plus '-<index>' or '-ap'.
_ELEMENT_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")


def check_testbed_name(name: object) -> str:
    """``name`` if it is a valid testbed name, else a BackendError (no path traversal, no '.')."""
    if not isinstance(name, str) or not _TESTBED_RE.fullmatch(name):
        raise BackendError(f"{name!r} is not a testbed name (1-16 characters: a lowercase letter, then "
                           "lowercase letters, digits or '-')")
    return name


def netns_prefix(testbed: str) -> str:
    """Prefix of every namespace of ``testbed``, and of no other testbed's (see module docstring)."""
    return f"el-{check_testbed_name(testbed)}{SEP}"


def owns_netns(testbed: str, ns: str) -> bool:
    """True if namespace ``ns`` is named as one of ``testbed``'s: the whole testbed name, then an element."""
    prefix = netns_prefix(testbed)
    return ns.startswith(prefix) and bool(_ELEMENT_RE.fullmatch(ns[len(prefix):]))


def netns_name(testbed: str, element: str) -> str:
    """Namespace of a node or an infrastructure element (``el-<testbed>.<element>``)."""
    return f"{netns_prefix(testbed)}{element}"


def cgroup_rel(testbed: str, node: str | None = None) -> str:
    """Cgroup path relative to a hierarchy root (``edgelab/<testbed>[/<node>]``)."""
    if node is not None and not _ELEMENT_RE.fullmatch(node):
        raise BackendError(f"{node!r} is not a node name")
    return f"{CGROUP_ROOT}/{check_testbed_name(testbed)}" + (f"/{node}" if node else "")


def state_path(testbed: str, state_dir: str = STATE_DIR) -> str:
    return f"{state_dir}/{check_testbed_name(testbed)}.json"


def linkemu_tag(testbed: str) -> str:
    """Tag handed to LinkEmulator: prefixes its IFBs, nft tables, delayer argv, state dir."""
    return f"el-{check_testbed_name(testbed)}"


def linkemu_state_dir(testbed: str) -> str:
    """The link emulator's directory of a testbed (root-owned, under /run)."""
    return f"/run/{linkemu_tag(testbed)}-linkemu"


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
