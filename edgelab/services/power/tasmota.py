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
import time
from dataclasses import dataclass
from datetime import datetime, timezone
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


# --------------------------------------------------------------------------- device status
# Everything below follows the Tasmota source (arendst/Tasmota; support_command.ino at commit 325c722,
# the other files at the development versions read alongside it), cited as
# ``file@char`` (character offset of the function in that file version; the reference index
# this was checked with serves offsets, not line numbers):
#   SC = tasmota/tasmota_support/support_command.ino (CmndStatus @32917 with one block per
#        Status N, CmndTeleperiod @95617, CommandHandler's ``payload = strtol(..)`` / -99 and its
#        default {"Command":"Error"} / {"Command":"Unknown"} answers, CmndBacklog just after it)
#   ST = tasmota/tasmota_support/support_tasmota.ino (MqttShowState @31024; PerformEverySecond's
#        TelePeriod counter, which CmndTeleperiod resets so telemetry follows at once)
#   MQ = tasmota/tasmota_xdrv_driver/xdrv_02_mqtt.ino (MqttConnected: INFO1-3 @36469)
#   DI = tasmota/tasmota_xdrv_driver/xdrv_12_discovery.ino (TasDiscoverMessage @1537,
#        TasDiscovery: tasmota/discovery/<MAC>/config and /sensors, both retained)

#: What edgelab's plug reports as firmware (StatusFWR.Version, discovery "sw").
FIRMWARE = "14.3.0(edgelab)"
TELE_PERIOD_DEFAULT = 300      # my_user_config.h TELE_PERIOD; ``TelePeriod 1`` restores it (SC@95617)
MAX_STATUS = 13                # SC: ``if (payload > MAX_STATUS) return;`` -> {"Command":"Error"}
MAX_FRIENDLYNAMES = 8


@dataclass
class DeviceInfo:
    """The identity and settings a Tasmota plug reports in Status, INFO and discovery."""

    topic: str
    mac: str                                 # "AA:BB:CC:DD:EE:FF"
    ip: str = "127.0.0.1"
    hostname: str = ""
    device_name: str = "edgelab plug"
    friendly_names: list = None              # FriendlyName1..8; default ["Tasmota"]
    module: str = "edgelab emulated plug"
    mqtt_host: str = ""
    mqtt_port: int = 1883
    tele_period: int = TELE_PERIOD_DEFAULT   # Settings->tele_period (0 = off)
    started: float = 0.0                     # epoch of boot (Uptime, StartupUTC)

    def __post_init__(self):
        if self.friendly_names is None:
            self.friendly_names = ["Tasmota"]
        if not self.hostname:
            self.hostname = f"{self.topic}-{self.mac_id[-4:]}"

    @property
    def mac_id(self) -> str:
        """NetworkUniqueId(): the MAC without colons, upper case (discovery topic, DI)."""
        return self.mac.replace(":", "").upper()

    @property
    def client_id(self) -> str:
        """Tasmota's default MqttClient DVES_%06X (last 3 MAC bytes)."""
        return "DVES_" + self.mac_id[-6:]


def stable_mac(seed: str) -> str:
    """A locally administered MAC derived from ``seed`` (the topic), stable across restarts."""
    import hashlib

    b = bytearray(hashlib.sha256(seed.encode()).digest()[:6])
    b[0] = (b[0] & 0xFC) | 0x02
    return ":".join(f"{x:02X}" for x in b)


def uptime_text(seconds: float) -> str:
    """GetUptime(): ``"<days>T<HH>:<MM>:<SS>"``."""
    s = max(int(seconds), 0)
    return f"{s // 86400}T{s % 86400 // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def tasmota_payload(data: str) -> int:
    """XdrvMailbox.payload as CommandHandler computes it (SC, CommandHandler): strtol(data, 0) (decimal,
    0x hex, 0 octal), -99 when no digits start the text; ON/OFF/TOGGLE (GetStateNumber) give 1/0/2."""
    d = data.strip()
    state = {"off": 0, "false": 0, "stop": 0, "on": 1, "true": 1, "start": 1, "toggle": 2, "blink": 3,
             "blinkoff": 4}.get(d.lower())
    if state is not None:
        return state
    import re

    m = re.match(r"[+-]?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", d)
    if not m:
        return -99
    text = m.group(0)
    sign = -1 if text.startswith("-") else 1
    body = text.lstrip("+-")
    if body.lower().startswith("0x"):
        value = int(body, 16)
    elif body.startswith("0") and len(body) > 1:
        value = int(body, 8)
    else:
        value = int(body)
    return max(min(sign * value, 2**31 - 1), -2**31)


def teleperiod_setting(current: int, payload: int) -> int:
    """New Settings->tele_period after ``TelePeriod <payload>`` (SC@95617, CmndTeleperiod):
    0..3600 accepted, 1 means the default 300, 2..9 become 10, anything else leaves it unchanged."""
    if 0 <= payload < 3601:
        value = TELE_PERIOD_DEFAULT if payload == 1 else payload
        if 0 < value < 10:
            value = 10
        return value
    return current


def status_object(d: DeviceInfo, power_on: bool) -> dict:
    """``Status`` / part of ``Status 0`` (SC, CmndStatus): ``{"Status":{Module,DeviceName,FriendlyName,...}}``."""
    return {"Status": {
        "Module": 0, "DeviceName": d.device_name, "FriendlyName": list(d.friendly_names),
        "Topic": d.topic, "ButtonTopic": "0", "Power": "1" if power_on else "0", "PowerLock": "0",
        "PowerOnState": 3, "LedState": 1, "LedMask": "FFFF", "SaveData": 1, "SaveState": 1,
        "SwitchTopic": "0", "SwitchMode": [0] * 8, "ButtonRetain": 0, "SwitchRetain": 0,
        "SensorRetain": 0, "PowerRetain": 0, "InfoRetain": 0, "StateRetain": 0, "StatusRetain": 0}}


def status_parts(d: DeviceInfo, now: datetime, power_on: bool, sns: dict, sts: dict) -> dict[int, dict]:
    """Every ``Status N`` answer, keyed by N (SC, CmndStatus).  Status 8 and 10 are both
    StatusSNS, Status 11 is StatusSTS (MqttShowState).  Status 9 is StatusPTH (energy margins,
    xdrv_03_energy.ino EnergyMarginStatus; all thresholds off)."""
    up = time.time() - d.started if d.started else 0.0
    started_utc = datetime.fromtimestamp(d.started or time.time(), timezone.utc)
    utc = now.astimezone(timezone.utc)
    return {
        0: status_object(d, power_on),
        1: {"StatusPRM": {"Baudrate": 115200, "SerialConfig": "8N1", "GroupTopic": "tasmotas",
                          "OtaUrl": "", "RestartReason": "Power On", "Uptime": uptime_text(up),
                          "StartupUTC": tasmota_time(started_utc.replace(tzinfo=None)), "Sleep": 50,
                          "CfgHolder": 4617, "BootCount": 1, "BCResetTime": tasmota_time(started_utc.replace(tzinfo=None)),
                          "SaveCount": 1}},
        2: {"StatusFWR": {"Version": FIRMWARE, "BuildDateTime": "2024-01-01T00:00:00", "Core": "edgelab",
                          "SDK": "python", "CpuFrequency": 0, "Hardware": "edgelab emulated plug"}},
        3: {"StatusLOG": {"SerialLog": 0, "WebLog": 2, "MqttLog": 0, "SysLog": 0, "LogHost": "",
                          "LogPort": 514, "SSId": ["", ""], "TelePeriod": d.tele_period,
                          "Resolution": "558180C0", "SetOption": ["00008009", "2805C80001000600003C5A0A192800000000",
                                                                   "00000080", "00006000", "00004000", "00000000"]}},
        4: {"StatusMEM": {"ProgramSize": 0, "Free": 0, "Heap": 0, "ProgramFlashSize": 0, "FlashSize": 0,
                          "FlashChipId": "000000", "FlashFrequency": 0, "FlashMode": "DOUT",
                          "Features": ["00000000"], "Drivers": "3", "Sensors": ""}},
        5: {"StatusNET": {"Hostname": d.hostname, "IPAddress": d.ip, "Gateway": "0.0.0.0",
                          "Subnetmask": "255.255.255.0", "DNSServer1": "0.0.0.0", "DNSServer2": "0.0.0.0",
                          "Mac": d.mac, "Webserver": 2, "HTTP_API": 1, "WifiConfig": 4, "WifiPower": 17.0}},
        6: {"StatusMQT": {"MqttHost": d.mqtt_host, "MqttPort": d.mqtt_port, "MqttClientMask": "DVES_%06X",
                          "MqttClient": d.client_id, "MqttUser": "DVES_USER", "MqttCount": 1 if d.mqtt_host else 0,
                          "MAX_PACKET_SIZE": 1200, "KEEPALIVE": 30, "SOCKET_TIMEOUT": 4}},
        7: {"StatusTIM": {"UTC": tasmota_time(utc.replace(tzinfo=None)), "Local": tasmota_time(now),
                          "StartDST": "1970-01-01T00:00:00", "EndDST": "1970-01-01T00:00:00", "Timezone": "+00:00"}},
        8: {"StatusSNS": sns},
        9: {"StatusPTH": {"PowerDelta": [0], "PowerLow": 0, "PowerHigh": 0, "VoltageLow": 0,
                          "VoltageHigh": 0, "CurrentLow": 0, "CurrentHigh": 0}},
        10: {"StatusSNS": sns},
        11: {"StatusSTS": sts},
    }


def state_object(d: DeviceInfo, now: datetime, power_on: bool) -> dict:
    """MqttShowState (ST@31024): ``tele/<topic>/STATE`` and StatusSTS."""
    up = time.time() - d.started if d.started else 0.0
    return {"Time": tasmota_time(now), "Uptime": uptime_text(up), "UptimeSec": int(up), "Heap": 0,
            "SleepMode": "Dynamic", "Sleep": 50, "LoadAvg": 19, "MqttCount": 1 if d.mqtt_host else 0,
            "POWER": "ON" if power_on else "OFF",
            "Wifi": {"AP": 1, "SSId": "edgelab", "BSSId": "00:00:00:00:00:00", "Channel": 1, "Mode": "11n",
                     "RSSI": 100, "Signal": -40, "LinkCount": 1, "Downtime": "0T00:00:00"},
            "Hostname": d.hostname, "IPAddress": d.ip}


def info_messages(d: DeviceInfo) -> list[tuple[str, dict]]:
    """``tele/<topic>/INFO1..3`` published once after connecting (MQ@36469)."""
    return [("INFO1", {"Info1": {"Module": d.module, "Version": FIRMWARE, "FallBackTopic": f"cmnd/{d.client_id}_fb/",
                                 "GroupTopic": "cmnd/tasmotas/"}}),
            ("INFO2", {"Info2": {"WebServerMode": "Admin", "Hostname": d.hostname, "IPAddress": d.ip}}),
            ("INFO3", {"Info3": {"RestartReason": "Power On", "BootCount": 1}})]


def discovery_config(d: DeviceInfo) -> dict:
    """``tasmota/discovery/<MAC>/config`` (DI@1537, TasDiscoverMessage): one relay (rl[0]=1)."""
    names = list(d.friendly_names[:MAX_FRIENDLYNAMES]) + [None] * (MAX_FRIENDLYNAMES - len(d.friendly_names))
    return {"ip": d.ip, "dn": d.device_name, "fn": names, "hn": d.hostname, "mac": d.mac_id, "md": d.module,
            "ty": 0, "if": 0, "ofln": "Offline", "onln": "Online", "state": ["OFF", "ON", "TOGGLE", "HOLD"],
            "sw": FIRMWARE, "t": d.topic, "ft": "%prefix%/%topic%/", "tp": ["cmnd", "stat", "tele"],
            "rl": [1] + [0] * 27, "swc": [-1] * 28, "swn": [None] * 28, "btn": [0] * 8,
            "so": {"4": 0, "11": 0, "13": 0, "17": 0, "20": 0, "30": 0, "68": 0, "73": 0, "82": 0,
                   "114": 0, "117": 0},
            "lk": 0, "lt_st": 0, "sho": [0, 0, 0, 0], "sht": [[0, 0, 0]] * 4, "ver": 1}


def discovery_sensors(sensor: dict) -> dict:
    """``tasmota/discovery/<MAC>/sensors`` (DI, TasDiscovery): ``{"sn": <MqttShowSensor>, "ver": 1}``."""
    return {"sn": sensor, "ver": 1}
