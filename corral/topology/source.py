"""Resolve a topology source as users write it: ``sysfs``, a preset name, or a file."""

from __future__ import annotations

from pathlib import Path

from corral.errors import TopologyError
from corral.topology.file import load_topology_file
from corral.topology.lscpu import parse_lscpu
from corral.topology.model import Topology
from corral.topology.presets import PRESETS, preset
from corral.topology.sysfs import load_sysfs


def load_topology(source: str, *, sysfs_root: Path | str = "/sys") -> Topology:
    """Load ``source``: ``sysfs`` (live host), a preset name, a YAML/JSON topology file, or
    a file of ``lscpu -p=CPU,CORE,SOCKET,NODE,CACHE`` output (``.lscpu``/``.txt`` or any
    file whose first line is an lscpu comment)."""
    if source == "sysfs":
        return load_sysfs(sysfs_root)
    if source in PRESETS:
        return preset(source)
    path = Path(source)
    if not path.exists():
        raise TopologyError(
            "topology",
            f"{source!r} is not 'sysfs', a preset or a file",
            f"presets: {', '.join(PRESETS)}",
        )
    try:
        head = path.read_text()
    except OSError as err:
        raise TopologyError(str(path), f"cannot read: {err.strerror or err}") from err
    if path.suffix in (".lscpu", ".txt", ".csv") or head.lstrip().startswith("# The following"):
        return parse_lscpu(head, name=path.stem)
    return load_topology_file(path)
