"""What each experiment measures at one sweep point, on any backend.

A point function brings its topology up, measures, tears it down and
returns :class:`~edgelab.results.Measurement` rows; experiment scripts only
build the sweep. Every point also records the testbed's facts (link engine,
kernel, cgroups, placement) in the run's manifest and its raw outputs under
``raw/<point>/`` in the run directory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Union

from ..backends import Backend, Testbed
from ..errors import BackendError
from ..health import Measured, cause, checks_of, failed
from ..model import Topology
from ..results import Measurement, Run
from .app import AppLoad, run_app
from .faas import FaasLoad, run_faas
from .folding import FoldLoad, run_fold
from .nodes import testbed

class UnhealthyTestbed(BackendError):
    """A point's measurement failed after a component of the testbed itself died."""


#: Facts that describe the whole run (the rest, e.g. timings, are per point).
RUN_FACTS = ("backend", "link_engine", "kernel", "cgroup_version", "flavour", "site", "cluster")


def record_facts(tb: Testbed, run: Run, raw: Path) -> dict:
    """Run-level facts into the manifest, the full facts of this point into ``raw/facts.json``."""
    facts = tb.facts()
    (raw / "facts.json").write_text(json.dumps(facts, indent=1, default=str))
    run.record_facts({k: facts[k] for k in RUN_FACTS if k in facts})
    return facts


def measure_on(topology: Topology, backend: Union[str, Backend], run: Run, point: dict,
               measure: Callable[[Testbed, Path], list[Measurement]]) -> Measured:
    """Bring ``topology`` up, record its facts, ``measure(testbed, raw_dir)``, tear it down.

    The rows come back with the point's health checks: the scenario's own and
    the testbed's (link-emulation delayers alive). When the measurement fails
    and something the testbed runs has died, the error names what died
    instead of the symptom it caused (an iperf3 that saw no data...).
    """
    raw = run.raw_dir(point)
    with testbed(topology, backend) as tb:
        record_facts(tb, run, raw)
        try:
            rows = measure(tb, raw)
        except Exception as exc:
            dead = failed(tb.health_checks())
            if dead:
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                raise UnhealthyTestbed(f"{cause(dead)} — the measurement then failed ({first})") from exc
            raise
        return Measured(rows, [*checks_of(rows), *tb.health_checks()])


def app_point(topology: Topology, *, backend: Union[str, Backend], run: Run, point: dict,
              load: AppLoad) -> list[Measurement]:
    """The image-offloading application (see :mod:`edgelab.scenarios.app`) on ``topology``."""
    return measure_on(topology, backend, run, point, lambda tb, raw: run_app(tb, load, raw))


def wifi_point(topology: Topology, *, backend: Union[str, Backend], run: Run, point: dict,
               seconds: float, rate_rps: float, image_bytes: int, seed: int = 1, mode: str = "gray",
               inference: str = "server", prometheus: bool = False, power_source: str = "modelled",
               plugs: tuple = ()) -> list[Measurement]:
    """Wi-Fi scaling: N phones on one access point (the topology is already scaled to N)."""
    return app_point(topology, backend=backend, run=run, point=point,
                     load=AppLoad(seconds=seconds, rate_rps=rate_rps, image_bytes=image_bytes, seed=seed,
                                  mode=mode, inference=inference, prometheus=prometheus,
                                  power_source=power_source, plugs=plugs))


def folding_point(topology: Topology, *, backend: Union[str, Backend], run: Run, point: dict,
                  load: FoldLoad) -> list[Measurement]:
    """Folding: the fixed per-phone workload of :mod:`edgelab.scenarios.folding` on ``topology``."""
    return measure_on(topology, backend, run, point, lambda tb, raw: run_fold(tb, load, raw))


def faas_point(topology: Topology, *, backend: Union[str, Backend], run: Run, point: dict,
               load: FaasLoad) -> list[Measurement]:
    """BeaglePaaS: a batch of invocations on the workers of ``topology`` (see :mod:`.faas`)."""
    return measure_on(topology, backend, run, point, lambda tb, raw: run_faas(tb, load, raw))


__all__ = ["FaasLoad", "faas_point", "measure_on", "run_faas", "FoldLoad", "folding_point", "run_fold", "AppLoad", "app_point", "record_facts", "run_app", "testbed", "wifi_point"]
