"""Per-NUMA-node memory and distances from sysfs (``devices/system/node/node<N>``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

_MEMTOTAL = re.compile(r"^Node\s+\d+\s+MemTotal:\s+(\d+)\s*kB", re.MULTILINE)


def _node_dir(sysfs_root: Path, node: int) -> Path:
    return sysfs_root / "devices" / "system" / "node" / f"node{node}"


def node_memory_bytes(sysfs_root: Path, node: int) -> int | None:
    """MemTotal of NUMA node ``node`` in bytes (None when sysfs has no such node)."""
    try:
        text = (_node_dir(sysfs_root, node) / "meminfo").read_text()
    except OSError:
        return None
    match = _MEMTOTAL.search(text)
    return None if match is None else int(match.group(1)) * 1024


def numa_memory(sysfs_root: Path, nodes: Sequence[int], host_total: int | None) -> dict[int, int]:
    """Memory per NUMA node of ``nodes``: sysfs where it has every one of them, else the
    host's MemTotal split evenly (a preset topology on a host shaped differently)."""
    found = {n: node_memory_bytes(sysfs_root, n) for n in nodes}
    if all(v is not None for v in found.values()):
        return {n: int(v or 0) for n, v in found.items()}
    total = host_total or 0
    return {n: total // max(len(nodes), 1) for n in nodes}


def numa_distances(sysfs_root: Path, nodes: Sequence[int]) -> dict[int, dict[int, int]] | None:
    """``distances[a][b]`` for the nodes of ``nodes`` (SLIT values, 10 = local), or None
    when sysfs does not describe exactly these nodes (distances are then unknown)."""
    online = sorted(nodes)
    out: dict[int, dict[int, int]] = {}
    for node in online:
        try:
            values = [
                int(v) for v in (_node_dir(sysfs_root, node) / "distance").read_text().split()
            ]
        except (OSError, ValueError):
            return None
        listed = sorted(
            int(p.name[4:]) for p in (sysfs_root / "devices" / "system" / "node").glob("node[0-9]*")
        )
        if len(values) != len(listed) or listed != online:
            return None
        out[node] = dict(zip(listed, values, strict=True))
    return out
