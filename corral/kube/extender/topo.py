"""A node's NUMA zones and GPUs as numbers the extender computes with, read from its
NodeResourceTopology object (`corral.kube.nrt`).

* CPU in milli-CPUs, memory in bytes, GPU memory in MiB; the zone's ``available`` is what
  a new pod may take (the node agent subtracts exclusive CPUs and NUMA-bound requests).
* Sockets: a zone's ``socket`` attribute, else its parent ``socket-<id>``, else zones
  whose NUMA distance is below `SAME_SOCKET_DISTANCE` share a socket (Intel sub-NUMA
  clusters report 11-12, AMD NPS 12, another socket 20 or more); with no distances each
  zone is its own socket (so no multi-zone placement is ever guessed).
* SMT: the top-level attribute ``threadsPerCore`` (1 when absent).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final

from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.quantity import cpu_millis, whole_units

SAME_SOCKET_DISTANCE: Final = 20
"""NUMA distances below this are read as zones of one socket (SLIT: 10 local, 20+ remote)."""
ATTR_THREADS_PER_CORE: Final = nrt.ATTR_THREADS_PER_CORE
ATTR_SOCKET: Final = nrt.ATTR_SOCKET
SOCKET_PARENT_PREFIX: Final = "socket-"


@dataclass(frozen=True, slots=True)
class ZoneState:
    """One NUMA zone: allocatable (the most it can ever give) and available (now)."""

    id: int
    socket: int
    cpu_allocatable: int
    cpu_available: int
    memory_allocatable: int
    memory_available: int
    batch_cpu: int = 0
    distances: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GpuState:
    """One GPU device's memory in MiB."""

    index: int
    memory_total: int
    memory_available: int
    numa: int | None = None


@dataclass(frozen=True, slots=True)
class NodeTopo:
    """A node's zones (by id order) and GPUs (by index order)."""

    name: str
    zones: tuple[ZoneState, ...]
    gpus: tuple[GpuState, ...] = ()
    threads_per_core: int = 1
    policy: str = "none"
    fingerprint: str | None = None

    @property
    def sockets(self) -> dict[int, tuple[ZoneState, ...]]:
        """The zones of each socket."""
        out: dict[int, list[ZoneState]] = {}
        for zone in self.zones:
            out.setdefault(zone.socket, []).append(zone)
        return {s: tuple(z) for s, z in sorted(out.items())}

    def zone(self, zone_id: int) -> ZoneState | None:
        """The zone with id ``zone_id``, or None."""
        return next((z for z in self.zones if z.id == zone_id), None)

    def gpu(self, index: int) -> GpuState | None:
        """The GPU with ``index``, or None."""
        return next((g for g in self.gpus if g.index == index), None)

    def with_zones(self, zones: tuple[ZoneState, ...], gpus: tuple[GpuState, ...]) -> NodeTopo:
        """A copy with other zone and GPU numbers."""
        return replace(self, zones=zones, gpus=gpus)


def _value(zone: nrt.Zone, name: str, attr: str, *, cpu: bool = False) -> int:
    info = zone.resource(name)
    if info is None:
        return 0
    text = getattr(info, attr)
    where = f"zones[{zone.name}].{name}.{attr}"
    return max(0, cpu_millis(text, field=where) if cpu else whole_units(text, field=where))


def _distances(zone: nrt.Zone) -> dict[int, int]:
    out: dict[int, int] = {}
    for cost in zone.costs:
        digits = cost.name.removeprefix(nrt.NUMA_PREFIX)
        if digits.isdigit():
            out[int(digits)] = cost.value
    return out


def _socket_of(zones: list[nrt.Zone], distances: dict[int, dict[int, int]]) -> dict[int, int]:
    """Socket id per zone id: published attribute/parent, else grouped by distance."""
    sockets: dict[int, int] = {}
    for zone in zones:
        if zone.numa_id is None:  # not a NUMA zone: it has no socket of its own
            continue
        text = zone.attribute(ATTR_SOCKET) or zone.parent.removeprefix(SOCKET_PARENT_PREFIX)
        if text.isdigit():
            sockets[zone.numa_id] = int(text)
    if len(sockets) == len(zones):
        return sockets
    ids = sorted(z.numa_id for z in zones if z.numa_id is not None)
    group: dict[int, int] = {}
    for zid in ids:
        near = [
            o
            for o in ids
            if o in group
            and min(distances.get(zid, {}).get(o, 255), distances.get(o, {}).get(zid, 255))
            < SAME_SOCKET_DISTANCE
        ]
        group[zid] = group[near[0]] if near else (max(group.values(), default=-1) + 1)
    return group


def node_topo(obj: nrt.NodeResourceTopology) -> NodeTopo:
    """The numbers of ``obj``; `InputError` (from the quantity parser) names a bad field."""
    numa = sorted(obj.numa_zones, key=lambda z: z.numa_id or 0)
    distances = {z.numa_id: _distances(z) for z in numa if z.numa_id is not None}
    sockets = _socket_of(list(numa), distances)
    zones = tuple(
        ZoneState(
            id=z.numa_id,
            socket=sockets[z.numa_id],
            cpu_allocatable=_value(z, "cpu", "allocatable", cpu=True),
            cpu_available=_value(z, "cpu", "available", cpu=True),
            memory_allocatable=_value(z, "memory", "allocatable"),
            memory_available=_value(z, "memory", "available"),
            batch_cpu=_value(z, ann.BATCH_CPU, "available"),
            distances=distances[z.numa_id],
        )
        for z in numa
        if z.numa_id is not None
    )
    gpus = []
    for z in obj.gpu_zones:
        digits = z.name.removeprefix(nrt.GPU_PREFIX)
        if not digits.isdigit() or z.resource(ann.GPU_MEM) is None:
            continue
        numa_text = z.attribute(nrt.ATTR_GPU_NUMA) or ""
        gpus.append(
            GpuState(
                index=int(digits),
                memory_total=_value(z, ann.GPU_MEM, "allocatable"),
                memory_available=_value(z, ann.GPU_MEM, "available"),
                numa=int(numa_text) if numa_text.isdigit() else None,
            )
        )
    tpc_text = obj.attribute(ATTR_THREADS_PER_CORE) or "1"
    return NodeTopo(
        name=obj.name,
        zones=zones,
        gpus=tuple(sorted(gpus, key=lambda g: g.index)),
        threads_per_core=max(1, int(tpc_text)) if tpc_text.isdigit() else 1,
        policy=obj.attribute(nrt.ATTR_POLICY) or "none",
        fingerprint=obj.attribute(nrt.ATTR_FINGERPRINT),
    )
