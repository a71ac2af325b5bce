"""Read the live topology from sysfs (or from a directory tree shaped like it).

Reads ``devices/system/cpu/online``, each online CPU's ``topology/physical_package_id``
and ``topology/core_id``, its L3 cache id (``cache/indexN`` with ``level`` 3; when the
host exposes no L3, the socket stands in for it) and the NUMA nodes' ``cpulist``
(``devices/system/node/nodeN/cpulist``; without a node directory every CPU is on node 0).
Offline CPUs are left out: they cannot be given to anyone.
"""

from __future__ import annotations

import re
from pathlib import Path

from corral.errors import TopologyError
from corral.topology.cpuset import CpuSet
from corral.topology.model import Cpu, Topology

_NODE_DIR = re.compile(r"^node(\d+)$")
_INDEX_DIR = re.compile(r"^index(\d+)$")


def load_sysfs(sysfs_root: Path | str = "/sys") -> Topology:
    """Build the topology of the online CPUs under ``sysfs_root``.

    Raises `TopologyError` naming the file when a required file is missing or malformed.
    """
    root = Path(sysfs_root)
    cpu_dir = root / "devices/system/cpu"
    online = _read_cpulist(cpu_dir / "online")
    numa_of = _numa_map(root / "devices/system/node")
    raw: list[tuple[int, int, int, int, int]] = []  # cpu, socket, core_id, numa, l3
    for cpu_id in online:
        topo = cpu_dir / f"cpu{cpu_id}" / "topology"
        socket = _read_int(topo / "physical_package_id")
        core_id = _read_int(topo / "core_id")
        l3 = _l3_id(cpu_dir / f"cpu{cpu_id}" / "cache")
        raw.append((cpu_id, socket, core_id, numa_of.get(cpu_id, 0), -1 if l3 is None else l3))
    core_ids = {key: index for index, key in enumerate(sorted({(s, c) for _, s, c, _, _ in raw}))}
    records = []
    for cpu_id, socket, core_id, numa, l3 in raw:
        # No L3 in sysfs (some VMs): treat the socket as the last-level cache domain.
        records.append(
            Cpu(
                id=cpu_id,
                core=core_ids[(socket, core_id)],
                socket=socket,
                numa=numa,
                l3=socket if l3 < 0 else l3,
            )
        )
    return Topology.from_records(records, name="sysfs")


def read_online(sysfs_root: Path | str = "/sys") -> CpuSet:
    """The online CPUs as the kernel lists them."""
    return _read_cpulist(Path(sysfs_root) / "devices/system/cpu/online")


def _numa_map(node_dir: Path) -> dict[int, int]:
    numa_of: dict[int, int] = {}
    if not node_dir.is_dir():
        return numa_of
    for entry in node_dir.iterdir():
        match = _NODE_DIR.match(entry.name)
        if match and (entry / "cpulist").exists():
            for cpu in _read_cpulist(entry / "cpulist"):
                numa_of[cpu] = int(match.group(1))
    return numa_of


def _l3_id(cache_dir: Path) -> int | None:
    if not cache_dir.is_dir():
        return None
    for entry in sorted(cache_dir.iterdir()):
        if not _INDEX_DIR.match(entry.name):
            continue
        level = entry / "level"
        ident = entry / "id"
        if level.exists() and _read_int(level) == 3 and ident.exists():
            return _read_int(ident)
    return None


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise TopologyError(
            str(path), f"cannot read: {err.strerror or err}", "point --sysfs-root at a sysfs tree"
        ) from err


def _read_int(path: Path) -> int:
    text = _read_text(path).strip()
    try:
        return int(text)
    except ValueError as err:
        raise TopologyError(str(path), f"expected an integer, found {text!r}") from err


def _read_cpulist(path: Path) -> CpuSet:
    text = _read_text(path)
    try:
        return CpuSet.parse(text)
    except ValueError as err:
        raise TopologyError(str(path), str(err)) from err
