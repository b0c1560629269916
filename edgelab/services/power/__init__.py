"""Power meter service: Tasmota-compatible emulated plug, real-plug readers, sampler.

Run: ``python -m edgelab.services.power --help``.
"""

from .energy import EnergyIntegrator, EnergyState, J_PER_KWH, trapezoid_j
from .meter import PowerMeter
from .sampler import PowerSample, PowerSampler
from .sources import (DEVICE_CLASSES, ConstantSource, DeviceClass, ModelledSource, Reading, SourceError,
                      TasmotaHttpSource, TasmotaMqttSource, Utilisation, cgroup_cpu_seconds,
                      device_class, proc_cpu_seconds)
from .tasmota import Resolution

__all__ = [
    "EnergyIntegrator", "EnergyState", "J_PER_KWH", "trapezoid_j", "PowerMeter", "PowerSample",
    "PowerSampler", "DEVICE_CLASSES", "ConstantSource", "DeviceClass", "ModelledSource", "Reading",
    "SourceError", "TasmotaHttpSource", "TasmotaMqttSource", "Utilisation", "cgroup_cpu_seconds",
    "device_class", "proc_cpu_seconds", "Resolution",
]
