"""A topology as JSON, to hand one plan to every host of a folded testbed.

Why not YAML: experiments generate topologies in memory (``scaled``,
``with_station_mcs``...), so there is no file to send. Why not pickle: the
receiving side runs as root and must build nothing but edgelab's own model
classes, whatever it is given. Every host rebuilds the same :class:`Plan`
from this (planning is deterministic), and :func:`plan_digest` lets it check
that it did: hosts with another edgelab version would otherwise place
addresses or MACs differently without anyone noticing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from . import model
from .errors import BackendError

#: The only classes a wire document may name.
CLASSES = {c.__name__: c for c in (model.Topology, model.NodeGroup, model.Network, model.Segment, model.LinkParams,
                                   model.AirtimeParams, model.Resources, model.Attachment, model.PrivateDirs,
                                   model.Host)}


def to_wire(obj: Any) -> Any:
    """JSON-able form of a model object: dataclasses tagged with their class name, tuples as lists."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = type(obj).__name__
        if name not in CLASSES:
            raise BackendError(f"cannot send a {name} to a host (not a topology model class)")
        return {"__class__": name, **{f.name: to_wire(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, (list, tuple)):
        return [to_wire(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_wire(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    raise BackendError(f"cannot send a {type(obj).__name__} to a host")


def from_wire(data: Any, depth: int = 0) -> Any:
    """Inverse of :func:`to_wire`; only :data:`CLASSES` are built, lists become tuples (the
    model is immutable), and nesting is bounded."""
    if depth > 12:
        raise BackendError("topology document nested too deeply")
    if isinstance(data, dict) and "__class__" in data:
        cls = CLASSES.get(data["__class__"])
        if cls is None:
            raise BackendError(f"topology document names an unknown class {data['__class__']!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names - {"__class__"}
        if unknown:
            raise BackendError(f"{cls.__name__} has no field(s) {sorted(unknown)} (another edgelab version?)")
        return cls(**{k: from_wire(v, depth + 1) for k, v in data.items() if k != "__class__"})
    if isinstance(data, list):
        return tuple(from_wire(x, depth + 1) for x in data)
    if isinstance(data, dict):
        return {k: from_wire(v, depth + 1) for k, v in data.items()}
    return data


def plan_digest(plan: Any) -> str:
    """A digest of everything planned (names, addresses, links, budgets): equal on every host
    that planned the same topology with the same edgelab."""
    return hashlib.sha256(json.dumps(plan.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]
