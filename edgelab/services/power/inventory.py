"""Which real plug meters which node: the ``plugs:`` inventory experiments read for
``--power-source plug``, and the two options every experiment with energy figures shares."""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import EdgelabError

SCHEMES = ("http://", "https://", "mqtt://")


def load_plug_inventory(path: str | Path) -> dict[str, str]:
    """``{node: plug}`` from YAML ``plugs: {node: http://PLUG | mqtt://BROKER:PORT/TOPIC}``."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise EdgelabError(f"{path}: cannot read the plug inventory ({exc})") from None
    plugs = doc.get("plugs") if isinstance(doc, dict) else None
    if not isinstance(plugs, dict) or not plugs:
        raise EdgelabError(f"{path}: expected a 'plugs:' mapping of node -> http://PLUG or mqtt://BROKER:PORT/TOPIC")
    for node, spec in plugs.items():
        if not isinstance(spec, str) or not spec.startswith(SCHEMES):
            raise EdgelabError(f"{path}: plug of {node!r} is {spec!r}; expected http://PLUG or mqtt://BROKER:PORT/TOPIC")
    return {str(k): v for k, v in plugs.items()}


def power_arguments(p: argparse.ArgumentParser, modelled: str) -> None:
    p.add_argument("--power-source", choices=["modelled", "plug"], default="modelled",
                   help=f"modelled: {modelled}; plug: read each node's Tasmota plug (HTTP or MQTT) listed in "
                        "--plugs (default %(default)s)")
    p.add_argument("--plugs", metavar="FILE",
                   help="YAML inventory of plugs: 'plugs: {NODE: http://PLUG, NODE2: mqtt://BROKER:1883/TOPIC}'")


def plugs_from_args(a: argparse.Namespace, p: argparse.ArgumentParser) -> dict[str, str]:
    """The inventory for ``--power-source plug`` (argparse errors name what to fix)."""
    if a.power_source == "plug":
        if not a.plugs:
            p.error("--power-source plug needs --plugs FILE (which plug meters which node)")
        try:
            return load_plug_inventory(a.plugs)
        except EdgelabError as exc:
            p.error(str(exc))
    elif a.plugs:
        p.error("--plugs is only read with --power-source plug")
    return {}
