"""Errors a researcher can act on: each names where the problem is and what to do."""

from __future__ import annotations

from typing import Optional


class EdgelabError(Exception):
    """Base class for errors reported to the user without a traceback."""


class TopologyError(EdgelabError):
    """Invalid topology input: carries the file, line and key path."""

    def __init__(self, message: str, *, file: Optional[str] = None, path: str = "", line: Optional[int] = None):
        self.file = file
        self.path = path
        self.line = line
        self.message = message
        where = file or "<topology>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {path + ': ' if path else ''}{message}")


class PlanError(EdgelabError):
    """A topology that is valid but cannot be realised (addresses, placement)."""


class FoldingError(PlanError):
    """Virtual nodes do not fit onto the physical hosts offered."""


class BackendError(EdgelabError):
    """A backend could not bring a testbed up or down."""
