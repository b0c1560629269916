"""Tasmota's command console for the emulated plug: one interpreter for HTTP ``/cm`` and MQTT ``cmnd/``.

A command is parsed as Tasmota's ``CommandHandler`` parses it (support_command.ino): a name of
letters/digits/underscores whose trailing digits are its index (``FriendlyName2``, ``Status8``),
then the data, whose number is ``strtol`` of it or -99.  Every command returns a :class:`Reply`:
the JSON the HTTP API answers and the MQTT messages Tasmota publishes for it (``stat/<topic>/RESULT``,
``stat/<topic>/POWER``, ``stat/<topic>/STATUS<N>``).  Bad values get Tasmota's own answer
(``{"Command":"Error"}``, the unchanged setting, or ``{"Command":"Unknown"}``); nothing raises.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Callable, Protocol

from .tasmota import MAX_FRIENDLYNAMES, MAX_STATUS, tasmota_payload, teleperiod_setting

ERROR = {"Command": "Error"}
UNKNOWN = {"Command": "Unknown"}
MAX_BACKLOG = 30          # Tasmota's MAX_BACKLOG
FRIENDLYNAME_LEN = 32     # the setting's size in Tasmota (SET_FRIENDLYNAME: 32 characters)


@dataclass
class Reply:
    http: dict
    mqtt: list[tuple[str, str]] = field(default_factory=list)   # (stat/<topic>/ suffix, payload)


class Plug(Protocol):
    """What the console needs from the meter."""

    relay_on: bool
    friendly_names: list
    tele_period: int

    def status(self) -> dict[int, dict]: ...
    def set_relay(self, on: bool) -> None: ...
    def set_tele_period(self, value: int) -> None: ...


_NAME = re.compile(r"\s*(?:[A-Za-z0-9_]*/)*([A-Za-z0-9_]+)(.*)", re.S)


def parse(cmnd: str) -> tuple[str, int, bool, str]:
    """(COMMAND, index, index_given, data) as CommandHandler splits ``cmnd``."""
    m = _NAME.match(cmnd or "")
    if not m:
        return "", 1, False, ""
    word, data = m.group(1).upper(), m.group(2).strip()
    digits = re.search(r"\d+$", word)
    if digits and digits.start() > 0:
        return word[:digits.start()], int(digits.group(0)), True, data
    return word, 1, False, data


def _result(obj: dict) -> Reply:
    return Reply(obj, [("RESULT", json.dumps(obj))])


def execute(plug: Plug, cmnd: str) -> Reply:
    """Run one console command against ``plug``."""
    name, index, given, data = parse(cmnd)
    if not name:
        return _result(UNKNOWN)
    handler = _COMMANDS.get(name)
    if handler is None:
        return _result(UNKNOWN)
    return handler(plug, index, given, data)


def _status(plug: Plug, index: int, given: bool, data: str) -> Reply:
    payload = tasmota_payload(data) if data else -99
    if given and not data:           # "Status0", "Status8": the index spelling
        payload = index
    if payload > MAX_STATUS or payload in (12, 13) or (payload < 0 and payload != -99):
        return _result(ERROR)        # 12: no crash dump, 13: no shutters (CmndStatus returns early)
    parts = plug.status()
    if payload == -99:               # plain "Status"
        obj = parts[0]
        return Reply(obj, [("STATUS", json.dumps(obj))])
    if payload == 0:
        merged: dict = {}
        for n in (0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11):
            merged.update(parts[n])
        return Reply(merged, [("STATUS0", json.dumps(merged))])
    obj = parts[payload]
    return Reply(obj, [(f"STATUS{payload}", json.dumps(obj))])


def _power(plug: Plug, index: int, given: bool, data: str) -> Reply:
    if index > 1:                    # one relay: Power2.. are not this device's (Unknown in Tasmota)
        return _result(UNKNOWN)
    p = tasmota_payload(data) if data else -99
    if p in (0, 1):
        plug.set_relay(bool(p))
    elif p == 2:
        plug.set_relay(not plug.relay_on)
    # anything else: POWER_SHOW_STATE (CmndPower) -> just the state
    state = "ON" if plug.relay_on else "OFF"
    return Reply({"POWER": state}, [("RESULT", json.dumps({"POWER": state})), ("POWER", state)])


def _teleperiod(plug: Plug, index: int, given: bool, data: str) -> Reply:
    payload = tasmota_payload(data) if data else -99
    plug.set_tele_period(teleperiod_setting(plug.tele_period, payload))   # also restarts the timer
    return _result({"TelePeriod": plug.tele_period})


def _friendlyname(plug: Plug, index: int, given: bool, data: str) -> Reply:
    if not 1 <= index <= MAX_FRIENDLYNAMES:
        return _result(ERROR)
    names = plug.friendly_names
    while len(names) < index:
        names.append("Tasmota" if not names else f"Tasmota{len(names) + 1}")
    if data:
        if tasmota_payload(data) == 1 and data.strip() == "1":     # reset to the firmware default
            names[index - 1] = "Tasmota" if index == 1 else f"Tasmota{index}"
        else:
            names[index - 1] = data[:FRIENDLYNAME_LEN]
    return _result({f"FriendlyName{index}": names[index - 1]})


def _backlog(plug: Plug, index: int, given: bool, data: str) -> Reply:
    """``Backlog cmd1; cmd2; ...``: each runs in order and publishes its own answer; the
    Backlog command itself answers nothing (CmndBacklog clears the response)."""
    if not data:
        return _result({"Backlog": "Empty"})
    out: list[tuple[str, str]] = []
    for part in [c.strip() for c in data.split(";")][:MAX_BACKLOG]:
        while part.upper().startswith("BACKLOG"):
            part = part[7:].lstrip("0123456789").strip()
        if not part or part.upper().startswith("RESET"):      # Reset is refused in a backlog
            continue
        out += execute(plug, part).mqtt
    return Reply({}, out)


_COMMANDS: dict[str, Callable[[Plug, int, bool, str], Reply]] = {
    "STATUS": _status,
    "POWER": _power,
    "TELEPERIOD": _teleperiod,
    "FRIENDLYNAME": _friendlyname,
    "BACKLOG": _backlog,
}
