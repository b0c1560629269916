"""Remote nodes: one inventory model and one SSH transport under every non-local backend.

* :mod:`.inventory` — :class:`Device` / :class:`Inventory` and ``load_inventory`` (YAML, file:line errors);
* :mod:`.transport` — :class:`Transport`: run, popen, put/get, CPU time, edgelab install (execo);
* :mod:`.testbed` — :class:`RemoteTestbed`, what the ``ssh``, ``nxc`` and ``g5k`` backends return.

A backend's job is only to produce an :class:`Inventory` (from a file, a
deployment, a reservation) and hand it to :func:`bring_up`-style code built on
these; experiments then see the same :class:`~edgelab.backends.base.Testbed`.
"""

from .inventory import Device, Inventory, PowerPlug, inventory_yaml, load_inventory, parse_inventory
from .testbed import RemoteTestbed
from .transport import RemoteCommandError, RemoteError, RemoteProcess, Transport

__all__ = ["Device", "Inventory", "PowerPlug", "RemoteCommandError", "RemoteError", "RemoteProcess",
           "RemoteTestbed", "Transport", "inventory_yaml", "load_inventory", "parse_inventory"]
