"""The folded testbed on a Grid'5000 job's machines: :class:`~edgelab.remote.folded.FoldedTestbed`
(each machine runs its share with the local backend, VXLAN between them) that also releases the
job when it goes down."""

from __future__ import annotations

from typing import Any

from ..remote.folded import FoldedTestbed


class G5kFoldedTestbed(FoldedTestbed):
    provider: Any = None

    def facts(self) -> dict:
        facts = super().facts()
        from .g5k import _jobs   # late: g5k imports this module when a job is folded

        facts["jobs"] = [getattr(j, "uid", str(j)) for j in _jobs(self.provider)]
        return facts

    def down(self) -> None:
        """Every share down, then the job destroyed, whatever fails on the way."""
        from .g5k import release_job

        try:
            super().down()
        finally:
            release_job(self)
