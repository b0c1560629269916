"""BeaglePaaS: a MicroFaaS-style FaaS for single-board computers.

Run: ``python -m edgelab.services.beaglepaas {orchestrator,worker,submit} --help``.
"""

from .client import BeaglePaaSClient, BeaglePaaSError
from .functions import FUNCTIONS
from .invocation import Invocation, Limits, Overloaded
from .orchestrator import Orchestrator
from .worker import run_job, run_worker

__all__ = ["BeaglePaaSClient", "BeaglePaaSError", "FUNCTIONS", "Invocation", "Limits", "Orchestrator", "Overloaded",
           "run_job", "run_worker"]
