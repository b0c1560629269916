"""Named link profiles shipped with edgelab (``profiles/links.yaml``).

The YAML file is the single source: its comments cite where each figure comes
from, and the Nix side reads the same file through the JSON export.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import yaml

from .model import AirtimeParams, LinkParams

PROFILES_FILE = Path(__file__).with_name("profiles") / "links.yaml"


@dataclass(frozen=True)
class Profile:
    name: str
    kind: str
    link: LinkParams
    airtime: Optional[AirtimeParams] = None


@lru_cache(maxsize=1)
def _load() -> dict[str, Profile]:
    raw = yaml.safe_load(PROFILES_FILE.read_text())
    out = {}
    for name, body in raw.items():
        air = body.get("airtime")
        out[name] = Profile(
            name=name,
            kind=body["kind"],
            link=LinkParams(**body["link"]),
            airtime=airtime_from_mapping(air) if air else None,
        )
    return out


def airtime_from_mapping(raw: dict) -> AirtimeParams:
    """AirtimeParams from the YAML mapping (lists become tuples: the dataclass is frozen and hashable)."""
    return AirtimeParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


def profile_names() -> list[str]:
    return sorted(_load())


def get_profile(name: str) -> Profile:
    return _load()[name]
