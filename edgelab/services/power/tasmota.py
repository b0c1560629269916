"""Tasmota smart-plug JSON payloads (pure functions).

Shapes checked against the Tasmota source (arendst/Tasmota):
- ``tasmota/tasmota_xdrv_driver/xdrv_03_energy.ino`` ``EnergyShow(true)`` appends
  ``"ENERGY":{"TotalStartTime":"...","Total":..,"Yesterday":..,"Today":..,
  ["Period":..,] "Power":..,"ApparentPower":..,"ReactivePower":..,"Factor":..,
  "Voltage":..,"Current":..}`` in that order; ``Period`` (Wh since the previous
  telemetry) only in the TelePeriod message.  Total/Yesterday/Today are kWh
  printed with ``EnergyRes`` decimals (default 3), Power/ApparentPower/
  ReactivePower with ``WattRes`` (default 0), Factor with 2 decimals, Voltage
  with ``VoltRes`` (default 0), Current with ``AmpRes`` (default 3).
- ``support_command.ino`` ``CmndStatus``: ``Status 8`` and ``Status 10`` both
  answer ``{"StatusSNS": <MqttShowSensor>}``; ``MqttShowSensor`` starts with
  ``"Time":"YYYY-MM-DDTHH:MM:SS"`` (``ResponseAppendTime``, local time, no zone).
- MQTT telemetry: ``tele/<topic>/SENSOR`` carries the same ``{"Time":..,"ENERGY":{..}}``
  object every ``TelePeriod`` seconds (default 300); ``tele/<topic>/LWT`` is
  ``Online``/``Offline`` (retained).
- ``Power`` answers ``{"POWER":"ON"}`` / ``{"POWER":"OFF"}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Optional, Union

Number = Union[int, float]


@dataclass(frozen=True)
class Resolution:
    """Decimals Tasmota prints (EnergyRes, WattRes, VoltRes, AmpRes).

    Tasmota's default WattRes is 0 (whole watts); that is too coarse for 1-6 W
    boards, so edgelab's meter defaults to 2 (a real plug accepts ``WattRes 2``).
    """

    energy: int = 3
    watt: int = 2
    volt: int = 0
    amp: int = 3


def fmt(value: float, decimals: int) -> Number:
    """Round as Tasmota prints: integer when 0 decimals."""
    if decimals <= 0:
        return int(round(value))
    return round(value, decimals)


def tasmota_time(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


@dataclass(frozen=True)
class EnergySnapshot:
    """Everything one ENERGY object needs (SI units, energy in kWh)."""

    total_start_time: datetime
    total_kwh: float
    yesterday_kwh: float
    today_kwh: float
    power_w: float
    voltage_v: float
    current_a: float
    factor: float
    apparent_va: Optional[float] = None
    reactive_var: Optional[float] = None


def energy_object(s: EnergySnapshot, res: Resolution = Resolution(),
                  period_wh: Optional[float] = None) -> dict:
    apparent = s.apparent_va if s.apparent_va is not None else s.voltage_v * s.current_a
    if s.reactive_var is not None:
        reactive = s.reactive_var
    else:
        reactive = math.sqrt(max(apparent * apparent - s.power_w * s.power_w, 0.0))
    out: dict = {
        "TotalStartTime": tasmota_time(s.total_start_time),
        "Total": fmt(s.total_kwh, res.energy),
        "Yesterday": fmt(s.yesterday_kwh, res.energy),
        "Today": fmt(s.today_kwh, res.energy),
    }
    if period_wh is not None:
        out["Period"] = fmt(period_wh, res.watt)
    out.update({
        "Power": fmt(s.power_w, res.watt),
        "ApparentPower": fmt(apparent, res.watt),
        "ReactivePower": fmt(reactive, res.watt),
        "Factor": round(s.factor, 2),
        "Voltage": fmt(s.voltage_v, res.volt),
        "Current": fmt(s.current_a, res.amp),
    })
    return out


def sensor_object(now: datetime, s: EnergySnapshot, res: Resolution = Resolution(),
                  period_wh: Optional[float] = None) -> dict:
    """The MqttShowSensor object: what ``tele/<topic>/SENSOR`` carries."""
    return {"Time": tasmota_time(now), "ENERGY": energy_object(s, res, period_wh)}


def status_sns(now: datetime, s: EnergySnapshot, res: Resolution = Resolution()) -> dict:
    """Answer to ``Status 8`` and ``Status 10``."""
    return {"StatusSNS": sensor_object(now, s, res)}


def power_state(on: bool) -> dict:
    return {"POWER": "ON" if on else "OFF"}


def parse_energy(payload: dict) -> dict:
    """The ENERGY object out of a Status 8/10 answer or a tele SENSOR message.

    Raises ValueError naming what is missing, so a misconfigured plug URL or
    topic is reported clearly.
    """
    sns = payload.get("StatusSNS", payload)
    if not isinstance(sns, dict) or not isinstance(sns.get("ENERGY"), dict):
        raise ValueError(f"no StatusSNS.ENERGY / ENERGY object in Tasmota payload: {str(payload)[:200]}")
    energy = sns["ENERGY"]
    if "Power" not in energy:
        raise ValueError(f"Tasmota ENERGY object has no 'Power': {energy}")
    return energy
