"""The filter decision for one pod on one node: which NUMA zones (and GPU) would hold it, or
why none can. Pure.

Managed pods (policy ``exclusive`` or ``numa``) take one NUMA zone when one holds their CPU
and memory; a pod bigger than every zone may take the fewest zones of ONE socket (closest
by NUMA distance); two sockets only with ``corral.io/allow-cross-socket: "true"``.
``exclusive`` pods count free whole cores on SMT nodes and book whole cores.

A refusal is *unresolvable* when the pod would not fit the node even empty (so preempting
pods cannot help); otherwise it is an ordinary refusal that preemption might resolve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

from corral.kube.extender.gpu import choose_device, could_ever_fit
from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.topo import NodeTopo, ZoneState

MAX_COMBINATION_ZONES = 16
"""Zones beyond this are not combined (2^16 subsets; real hosts have 8 or fewer)."""


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a pod goes on a node: milli-CPUs and bytes booked per zone, and its GPU."""

    zones: tuple[int, ...] = ()
    cpu_by_zone: tuple[tuple[int, int], ...] = ()
    memory_by_zone: tuple[tuple[int, int], ...] = ()
    gpu: int | None = None
    gpu_mem_mib: int = 0
    sockets: int = 0
    """How many sockets the zones span (0: no zones)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the node cannot take the pod, in words for the pod's events."""

    reason: str
    unresolvable: bool


def gib(value: int) -> str:
    """Bytes as ``1.5GiB``."""
    return f"{value / 2**30:.1f}GiB"


def _cpus(millis: int) -> str:
    return f"{millis / 1000:g}"


def _cores_needed(pod: PodRequest, tpc: int) -> int:
    return -(-pod.cpu_millis // (1000 * tpc))


def _cpu_room(zone: ZoneState, pod: PodRequest, tpc: int, *, empty: bool) -> int:
    """What the zone can give: whole cores (exclusive) or milli-CPUs (numa)."""
    millis = zone.cpu_allocatable if empty else zone.cpu_available
    return millis // (1000 * tpc) if pod.exclusive else millis


def _cpu_need(pod: PodRequest, tpc: int) -> int:
    return _cores_needed(pod, tpc) if pod.exclusive else pod.cpu_millis


def _fits(zones: Sequence[ZoneState], pod: PodRequest, tpc: int, *, empty: bool) -> bool:
    cpu = sum(_cpu_room(z, pod, tpc, empty=empty) for z in zones)
    mem = sum(z.memory_allocatable if empty else z.memory_available for z in zones)
    return cpu >= _cpu_need(pod, tpc) and mem >= pod.memory_bytes


def _avg_distance(zones: Sequence[ZoneState]) -> float:
    if len(zones) < 2:
        return 10.0
    pairs = [(a, b) for a in zones for b in zones if a.id != b.id]
    return sum(a.distances.get(b.id, 255) for a, b in pairs) / len(pairs)


def _leftover(zones: Sequence[ZoneState], pod: PodRequest) -> int:
    return sum(z.cpu_available for z in zones) - pod.cpu_millis


def _best_group(
    pools: Sequence[Sequence[ZoneState]], pod: PodRequest, tpc: int, *, empty: bool
) -> tuple[ZoneState, ...] | None:
    """The fewest zones of one pool (closest, then tightest, then lowest ids) that fit."""
    best: tuple[tuple[int, float, int, tuple[int, ...]], tuple[ZoneState, ...]] | None = None
    for pool in pools:
        zones = list(pool)[:MAX_COMBINATION_ZONES]
        for k in range(1, len(zones) + 1):
            if best is not None and k > best[0][0]:
                break
            for group in combinations(zones, k):
                if _fits(group, pod, tpc, empty=empty):
                    rank = (
                        k,
                        _avg_distance(group),
                        _leftover(group, pod),
                        tuple(z.id for z in group),
                    )
                    if best is None or rank < best[0]:
                        best = (rank, group)
    return None if best is None else best[1]


def _book(group: Sequence[ZoneState], pod: PodRequest, tpc: int) -> Placement:
    """Split the pod's CPU and memory over ``group`` (fullest use of the first zones)."""
    cpu_left = _cores_needed(pod, tpc) * tpc * 1000 if pod.exclusive else pod.cpu_millis
    mem_left = pod.memory_bytes
    cpu_by: list[tuple[int, int]] = []
    mem_by: list[tuple[int, int]] = []
    for i, zone in enumerate(group):
        last = i == len(group) - 1
        room = zone.cpu_available
        if pod.exclusive:
            room = (zone.cpu_available // (1000 * tpc)) * tpc * 1000
        take_cpu = cpu_left if last else min(cpu_left, room)
        take_mem = mem_left if last else min(mem_left, zone.memory_available)
        cpu_by.append((zone.id, take_cpu))
        mem_by.append((zone.id, take_mem))
        cpu_left -= take_cpu
        mem_left -= take_mem
    return Placement(
        zones=tuple(z.id for z in group),
        cpu_by_zone=tuple(cpu_by),
        memory_by_zone=tuple(mem_by),
        sockets=len({z.socket for z in group}),
    )


def _pools(node: NodeTopo, pod: PodRequest) -> list[Sequence[Sequence[ZoneState]]]:
    """Where the pod may go, by its size against the node when empty: one zone when some
    zone could ever hold it; else the zones of one socket; else (when the pod allows it)
    any zones (also when no socket has room now)."""
    tpc = node.threads_per_core
    singles = [[z] for z in node.zones]
    if _best_group(singles, pod, tpc, empty=True) is not None:
        return [singles]
    sockets = list(node.sockets.values())
    if _best_group(sockets, pod, tpc, empty=True) is not None:
        return [sockets, [node.zones]] if pod.allow_cross_socket else [sockets]
    if pod.allow_cross_socket and _best_group([node.zones], pod, tpc, empty=True) is not None:
        return [[node.zones]]
    return []


def numa_fit(node: NodeTopo, pod: PodRequest) -> Placement | Refusal:
    """The zones for a managed pod on ``node``: one zone when the pod is not bigger than
    every zone, else the fewest zones of one socket, else -- only when the pod allows it --
    zones of several sockets; or the refusal."""
    tpc = node.threads_per_core
    if not node.zones:
        return Refusal("corral: the node publishes no NUMA zones", unresolvable=True)
    unit = (
        f"{_cores_needed(pod, tpc)} free whole cores"
        if pod.exclusive and tpc > 1
        else f"{_cpus(pod.cpu_millis)} free CPUs"
    )
    pools = _pools(node, pod)
    if not pools:
        where = "set of NUMA zones" if pod.allow_cross_socket else "NUMA zone or socket"
        return Refusal(
            f"corral: no {where} of this node is big enough for {unit} and "
            f"{gib(pod.memory_bytes)} even when empty",
            unresolvable=True,
        )
    for pool in pools:
        group = _best_group(pool, pod, tpc, empty=False)
        if group is not None:
            return _book(group, pod, tpc)
    single = len(pools[0][0]) == 1 and all(len(p) == 1 for p in pools[0])
    where = "NUMA zone" if single else "socket" if pools[0] != [node.zones] else "set of zones"
    return Refusal(
        f"corral: no {where} has {unit} and {gib(pod.memory_bytes)} free", unresolvable=False
    )


def gpu_fit(node: NodeTopo, pod: PodRequest) -> tuple[int, int] | Refusal:
    """(device index, MiB) for a GPU pod, or the refusal."""
    if not node.gpus:
        return Refusal("corral: the node publishes no GPU (NRT zones of type GPU)", True)
    device = choose_device(node.gpus, pod.gpu_mem_mib)
    if device is not None:
        return device.index, pod.gpu_mem_mib
    return Refusal(
        f"corral: no GPU has {pod.gpu_mem_mib}MiB free on one device",
        unresolvable=not could_ever_fit(node.gpus, pod.gpu_mem_mib),
    )


def fit(node: NodeTopo | None, pod: PodRequest) -> Placement | Refusal:
    """Where ``pod`` would go on ``node`` (an empty `Placement` for pods that corral does
    not place), or why it cannot. ``node`` None: no topology object for the node yet."""
    if pod.problem and pod.managed:
        return Refusal(f"corral: {pod.problem}", unresolvable=True)
    needs_topology = pod.managed or pod.gpu_mem_mib > 0
    if not needs_topology:
        return Placement()
    if node is None:
        return Refusal("corral: no NodeResourceTopology for this node yet", unresolvable=False)
    placement = Placement()
    if pod.managed:
        numa = numa_fit(node, pod)
        if isinstance(numa, Refusal):
            return numa
        placement = numa
    if pod.gpu_mem_mib > 0:
        gpu = gpu_fit(node, pod)
        if isinstance(gpu, Refusal):
            return gpu
        placement = Placement(
            zones=placement.zones,
            cpu_by_zone=placement.cpu_by_zone,
            memory_by_zone=placement.memory_by_zone,
            gpu=gpu[0],
            gpu_mem_mib=gpu[1],
            sockets=placement.sockets,
        )
    return placement
