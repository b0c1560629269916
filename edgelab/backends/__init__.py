"""Backends turn a :class:`~edgelab.plan.Plan` into running nodes.

``local`` (network namespaces + cgroups on this machine) is the default; ``nxc``
(NixOS-Compose), ``g5k`` (Grid'5000) and ``ssh`` (devices in an inventory file) run the same plan on real or virtual
machines. Experiments only see the :class:`~edgelab.backends.base.Testbed`.
"""

from __future__ import annotations

from .base import Backend, Testbed


def get_backend(name: str, **options) -> Backend:
    """Instantiate a backend by name (imports lazily: each has its own deps)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(**options)
    if name == "nxc":
        from .nxc import NxcBackend

        return NxcBackend(**options)
    if name == "g5k":
        from .g5k import G5kBackend

        return G5kBackend(**options)
    if name == "ssh":
        from .ssh import SshBackend

        return SshBackend(**options)
    from ..errors import BackendError

    raise BackendError(f"unknown backend {name!r}; choose local, ssh, nxc or g5k")


__all__ = ["Backend", "Testbed", "get_backend"]
