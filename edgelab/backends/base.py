"""The one interface experiments use, whatever runs the nodes."""

from __future__ import annotations

import contextlib
import subprocess
from abc import ABC, abstractmethod
from typing import Any, ContextManager, Optional, Sequence

from ..plan import Plan


class Testbed(ABC):
    """A running testbed: run commands on nodes, know their addresses.

    Usable as a context manager: leaving the ``with`` block (normally, by an
    exception or by SIGINT/SIGTERM turned into an exception) tears it down.
    """

    plan: Plan

    @abstractmethod
    def run(self, node: str, argv: Sequence[str], *, timeout: Optional[float] = None,
            check: bool = True, **kw: Any) -> subprocess.CompletedProcess:
        """Run a command on ``node`` to completion, capturing text output."""

    @abstractmethod
    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
        """Start a long-running command on ``node``; the testbed stops it at teardown."""

    def address(self, node: str, network: Optional[str] = None) -> str:
        """IPv4 address of ``node`` (on ``network``, or its first interface)."""
        n = self.plan.node(node)
        if network is None:
            return n.interfaces[0].ip
        return n.address(network)

    def cpu_seconds(self, node: str) -> Optional[float]:
        """Cumulative CPU seconds ``node`` has used, or None where the backend cannot tell
        (experiments then record no CPU/power figures rather than invented ones)."""
        return None

    def full_speed(self, nodes: Sequence[str]) -> ContextManager[None]:
        """A context in which ``nodes`` run without their emulated CPU limit, for what is not
        measured: starting services and warming them up. A phone capped at 0.1 core takes
        seconds to import its service's libraries; every sweep point would pay them. Backends
        whose nodes are real devices (or that cannot lift a limit) change nothing."""
        return contextlib.nullcontext()

    def health_checks(self) -> list:
        """:class:`~edgelab.health.Check` s of what the backend runs for the testbed itself
        (link emulation...): a point measured while one failed measured the failure.
        Backends with nothing of their own to watch return none."""
        return []

    @abstractmethod
    def facts(self) -> dict:
        """What the results manifest must record about this testbed
        (backend, link-emulation engine, kernel, placement...)."""

    def set_station_mcs(self, node: str, network: str, mcs: Optional[int]) -> dict:
        """Move a Wi-Fi station to another MCS while the testbed runs (a phone walking away);
        returns the cell's new budget. Backends that cannot re-rate a running cell say so."""
        from ..errors import BackendError

        raise BackendError(f"the {type(self).__name__} backend cannot change a station's rate while it runs")

    @abstractmethod
    def down(self) -> None:
        """Tear everything down. Idempotent."""

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


class Backend(ABC):
    name: str

    def dry_run(self, plan: Plan) -> str:
        """What ``up(plan)`` would create, reserve or run, as text; touches nothing.
        Backends that reserve or deploy say exactly what (commands, reservations)."""
        cores = sum(n.resources.host_cpu for n in plan.nodes)
        return (f"{self.name} backend: {len(plan.nodes)} nodes ({cores:g} cores of CPU quota); "
                f"`edgelab plan` shows their addresses and links\n")

    @abstractmethod
    def up(self, plan: Plan) -> Testbed:
        """Bring the plan up and return the running testbed."""

    @abstractmethod
    def down(self, testbed_name: str) -> None:
        """Tear down a testbed by name, also one left by a crashed run."""
