"""The local backend: network namespaces, veths, bridges and cgroups on one machine.

``LocalBackend().up(plan)`` returns a :class:`LocalTestbed`; ``down(name)``
removes a testbed from its state file in ``/run/edgelab`` (also after a crash).
"""

from .backend import LocalBackend, LocalTestbed

__all__ = ["LocalBackend", "LocalTestbed"]
