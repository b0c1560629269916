"""The state file: what a testbed created, written *before* creating it.

``/run/edgelab/<testbed>.json`` lets ``LocalBackend().down(name)`` clean up
after a run that crashed or was SIGKILLed. It is replaced atomically
(write to a temporary file, fsync, rename) so a crash never leaves half a
record, and it lives on tmpfs (/run) so a reboot, which also removes every
namespace and cgroup, removes it too. The directory must be root's alone and
the file is never opened through a symlink (``edgelab.safefs``): teardown
deletes what the record lists.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ...errors import BackendError
from ...safefs import UnsafePathError, create_exclusive, read_own, remove_record, write_atomic
from .naming import STATE_DIR, state_path


class StateFile:
    def __init__(self, testbed: str, state_dir: str = STATE_DIR) -> None:
        self.testbed = testbed
        self.path = Path(state_path(testbed, state_dir))
        self.data: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.exists()

    def create(self, data: dict[str, Any]) -> None:
        """Claim the name: fails if a state file exists (another run, or a crashed one)."""
        try:
            create_exclusive(self.path)
        except UnsafePathError as e:
            raise BackendError(f"state directory: {e}") from None
        except FileExistsError:
            raise BackendError(
                f"testbed {self.testbed!r} is already up or was not torn down (state file {self.path} "
                f"exists); run `edgelab down {self.testbed}` first") from None
        self.data = data
        self.save()

    def save(self) -> None:
        # Not fsynced: the record only matters while the kernel objects it lists exist, and
        # those do not survive the machine (safefs.write_atomic).
        write_atomic(self.path, json.dumps(self.data, indent=1), durable=False)

    def update(self, **kw: Any) -> None:
        self.data.update(kw)
        self.save()

    def load(self) -> dict[str, Any]:
        try:
            text = read_own(self.path).decode()
            if not text.strip():
                # Claimed (O_EXCL) but killed before the first record was written:
                # teardown then finds the testbed's objects by their names alone.
                self.data = {"testbed": self.testbed}
                return self.data
            self.data = json.loads(text)
        except FileNotFoundError:
            raise BackendError(f"no testbed named {self.testbed!r} is known here (no state file {self.path})") from None
        except (UnsafePathError, OSError) as e:  # a symlink (ELOOP), not ours...
            raise BackendError(f"state file {self.path} is not trusted: {e}") from None
        except ValueError as e:
            raise BackendError(f"state file {self.path} is unreadable ({e}); remove it after checking "
                               f"`ip netns | grep el-{self.testbed}.`") from None
        if not isinstance(self.data, dict) or self.data.get("testbed") != self.testbed:
            raise BackendError(f"state file {self.path} does not describe testbed {self.testbed!r}; "
                               "inspect and remove it")
        return self.data

    def remove(self) -> None:
        """Delete the state file, and the state directory once no testbed has one there."""
        remove_record(self.path)
