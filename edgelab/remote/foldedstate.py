"""The controller's record of a folded run, written before any host is touched.

A folded testbed (:mod:`edgelab.remote.folded`) leaves one local testbed,
``<testbed>-h<i>``, on each of its hosts. If the controller dies (SIGKILL,
power cut) those shares stay up, and only the controller knew which host got
which index. :class:`FoldedRecord` keeps that knowledge in a file of the
controller's: claimed (``O_EXCL``) before the first SSH command, updated with
the placement (host -> share index), the run's id and the controller's pid
before any share is built, removed after a clean teardown. ``edgelab down
<testbed> --inventory FILE`` reads it back and has each host remove exactly
its share, and only if that share's own state file names this folded run
(:func:`edgelab.backends.local.share.share_down`).

Where: ``/run/edgelab-folded/`` for root (tmpfs: a reboot of the controller
loses it, and ``down`` then sweeps the inventory's hosts by name), else
``$XDG_STATE_HOME/edgelab-folded`` (``~/.local/state``). The directory and
file are created and read with :mod:`edgelab.safefs` (ours alone, never
through a symlink), as the local backend's state file.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Optional

from ..errors import BackendError
from ..safefs import UnsafePathError, create_exclusive, read_own, remove_record, write_atomic

ROOT_DIR = "/run/edgelab-folded"


def record_dir() -> Path:
    """The directory of this user's folded-run records (see the module docstring)."""
    if os.geteuid() == 0:
        return Path(ROOT_DIR)
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    return base / "edgelab-folded"


def new_run_id() -> str:
    """A run's id: each host's share records it, so a later run of the same name is told apart."""
    return secrets.token_hex(8)


class FoldedRecord:
    """``<record_dir>/<testbed>.json``: see the module docstring."""

    def __init__(self, testbed: str, directory: Optional[Path] = None) -> None:
        from ..backends.local.naming import check_testbed_name

        self.testbed = check_testbed_name(testbed)   # it becomes a path
        self.dir = Path(directory) if directory else record_dir()
        self.path = self.dir / f"{self.testbed}.json"
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.exists()

    def create(self, data: dict[str, Any]) -> None:
        """Claim the name on this controller: refused while a record of it exists (a crashed run)."""
        try:
            create_exclusive(self.path, 0o600, 0o700)
        except UnsafePathError as e:
            raise BackendError(f"folded-run records: {e}") from None
        except FileExistsError:
            raise BackendError(f"folded testbed {self.testbed!r} is up or was not torn down (record {self.path}); "
                               f"run `edgelab down {self.testbed} --inventory FILE` first") from None
        self.data = {"testbed": self.testbed, **data}
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1), mode=0o600)

    def update(self, **kw: Any) -> None:
        self.data.update(kw)
        self.save()

    def load(self) -> dict[str, Any]:
        """The record, checked: it names this testbed, its hosts are names, its indices numbers."""
        try:
            text = read_own(self.path, max_bytes=16 << 20).decode()
        except FileNotFoundError:
            raise BackendError(f"no record of a folded testbed {self.testbed!r} here ({self.path})") from None
        except (UnsafePathError, OSError) as e:
            raise BackendError(f"record {self.path} is not trusted: {e}") from None
        if not text.strip():   # claimed, then killed before the first write: no host was touched yet
            self.data = {"testbed": self.testbed, "shares": {}}
            return self.data
        try:
            data = json.loads(text)
        except ValueError as e:
            raise BackendError(f"record {self.path} is unreadable ({e}); remove it after checking the hosts") from None
        shares = data.get("shares", {}) if isinstance(data, dict) else None
        if (not isinstance(data, dict) or data.get("testbed") != self.testbed or not isinstance(shares, dict)
                or not all(isinstance(h, str) and isinstance(i, int) and 0 < i < 10000 for h, i in shares.items())):
            raise BackendError(f"record {self.path} does not describe folded testbed {self.testbed!r}; "
                               "inspect and remove it")
        self.data = data
        return data

    def remove(self) -> None:
        remove_record(self.path)
