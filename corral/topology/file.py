"""The topology file (YAML or JSON): ``cpus: [{id, core, socket, numa, l3}]``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from corral.errors import TopologyError
from corral.topology.model import Cpu, Topology

_KEYS = ("id", "core", "socket", "numa", "l3")


def parse_topology_document(doc: Any, *, name: str = "file") -> Topology:
    """Build a topology from an already-parsed document; errors name the field."""
    if not isinstance(doc, dict) or "cpus" not in doc:
        raise TopologyError(
            "cpus",
            "the document needs a top-level 'cpus' list",
            "write cpus: [{id, core, socket, numa, l3}, ...]",
        )
    unknown_top = set(doc) - {"cpus", "name"}
    if unknown_top:
        raise TopologyError(
            ", ".join(sorted(unknown_top)),
            "unknown top-level key(s)",
            "only 'cpus' and 'name' are allowed",
        )
    entries = doc["cpus"]
    if not isinstance(entries, list):
        raise TopologyError("cpus", f"must be a list, got {type(entries).__name__}")
    records = []
    for index, entry in enumerate(entries):
        where = f"cpus[{index}]"
        if not isinstance(entry, dict):
            raise TopologyError(where, "must be a mapping with id, core, socket, numa, l3")
        unknown = set(entry) - set(_KEYS)
        if unknown:
            raise TopologyError(
                f"{where}.{sorted(unknown)[0]}",
                "unknown key",
                "allowed keys are id, core, socket, numa, l3",
            )
        values: dict[str, int] = {}
        for key in _KEYS:
            if key not in entry:
                raise TopologyError(f"{where}.{key}", "is missing")
            value = entry[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TopologyError(
                    f"{where}.{key}", f"must be a non-negative integer, got {value!r}"
                )
            values[key] = value
        records.append(Cpu(**values))
    return Topology.from_records(records, name=str(doc.get("name") or name))


def load_topology_file(path: Path | str) -> Topology:
    """Read a YAML or JSON topology file (JSON is YAML, so one parser serves both)."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as err:
        raise TopologyError(str(file), f"cannot read: {err.strerror or err}") from err
    import yaml  # noqa: PLC0415 - only files need it: `corral topology`/`place` start faster

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise TopologyError(str(file), f"not valid YAML or JSON: {err}") from err
    return parse_topology_document(doc, name=file.stem)


def topology_to_document(topology: Topology) -> dict[str, Any]:
    """The topology file form of ``topology`` (round-trips through `parse_topology_document`)."""
    return {
        "name": topology.name,
        "cpus": [
            {"id": c.id, "core": c.core, "socket": c.socket, "numa": c.numa, "l3": c.l3}
            for c in topology.cpus
        ],
    }


def dump_topology_json(topology: Topology) -> str:
    """The topology file as JSON text."""
    return json.dumps(topology_to_document(topology), indent=2)
