"""Reservations the extender keeps while a node's NodeResourceTopology lags behind its
binds (stale data), behind one small interface (`ReservationCache`).

* `OverReserve` (default; upstream scheduler-plugins' overreserve idea): every bind
  reserves the zones (and GPU) it chose; the node's numbers are read as published minus
  its reservations, so two binds before the node agent catches up never book the same room
  twice. A node's reservations are dropped only when its NRT fingerprint
  (``nodeTopologyPodsFingerprint``, `corral.kube.fingerprint`) is the one of every pod the
  extender knows is bound there -- the published numbers then count those pods. A node
  that publishes no fingerprint keeps its reservations until their pods go away
  (pessimistic: false refusals, never double booking). Unlike upstream, which subtracts an
  assumed pod from every zone because kubelet picks the zone later, corral subtracts it from
  the zones it chose: the pod carries them in ``corral.io/numa-nodes`` and the agent
  follows them.
* `Passthrough`: no reservations (the published numbers as they are); for comparison.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from corral.kube import fingerprint as fp
from corral.kube.extender.fit import Placement
from corral.kube.extender.topo import GpuState, NodeTopo, ZoneState


class CacheKind(StrEnum):
    """Which reservation cache the extender runs."""

    OVERRESERVE = "overreserve"
    PASSTHROUGH = "passthrough"


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one bind booked on one node."""

    namespace: str
    name: str
    uid: str
    node: str
    placement: Placement
    batch_cpu_millis: int = 0
    lc_cpu_millis: int = 0
    """CPU an LC pod requests: it shrinks the node's BE capacity once the node sees it."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


class ReservationCache(Protocol):
    """Where binds book room until the node's published numbers include them."""

    def reserve(self, reservation: Reservation) -> None:
        """Book ``reservation`` (replacing one of the same pod)."""

    def release(self, key: str) -> Reservation | None:
        """Drop the pod's reservation (bind failed, pod gone); the dropped one or None."""

    def get(self, key: str) -> Reservation | None:
        """The pod's reservation, or None."""

    def on_node(self, node: str) -> tuple[Reservation, ...]:
        """The reservations held on ``node``."""

    def effective(self, topo: NodeTopo) -> NodeTopo:
        """The node's numbers with its reservations taken out."""

    def resync(self, node: str, fingerprint: str | None, bound: Iterable[tuple[str, str]]) -> int:
        """Reconcile with a fresh NRT: ``bound`` are the (namespace, name) of the pods known
        bound to ``node``. Returns how many reservations were dropped."""


class Passthrough:
    """No reservations: the published numbers are used as they are."""

    def reserve(self, reservation: Reservation) -> None:
        """Nothing is kept."""

    def release(self, key: str) -> Reservation | None:
        """Nothing to drop."""
        return None

    def get(self, key: str) -> Reservation | None:
        """Never any."""
        return None

    def on_node(self, node: str) -> tuple[Reservation, ...]:
        """Never any."""
        return ()

    def effective(self, topo: NodeTopo) -> NodeTopo:
        """``topo`` unchanged."""
        return topo

    def resync(self, node: str, fingerprint: str | None, bound: Iterable[tuple[str, str]]) -> int:
        """Nothing to drop."""
        return 0


def _subtract(topo: NodeTopo, reservations: Iterable[Reservation]) -> NodeTopo:
    cpu: dict[int, int] = {}
    mem: dict[int, int] = {}
    gpu: dict[int, int] = {}
    for r in reservations:
        for zone, value in r.placement.cpu_by_zone:
            cpu[zone] = cpu.get(zone, 0) + value
        for zone, value in r.placement.memory_by_zone:
            mem[zone] = mem.get(zone, 0) + value
        if r.placement.gpu is not None:
            gpu[r.placement.gpu] = gpu.get(r.placement.gpu, 0) + r.placement.gpu_mem_mib
    zones = tuple(
        ZoneState(
            id=z.id,
            socket=z.socket,
            cpu_allocatable=z.cpu_allocatable,
            cpu_available=max(0, z.cpu_available - cpu.get(z.id, 0)),
            memory_allocatable=z.memory_allocatable,
            memory_available=max(0, z.memory_available - mem.get(z.id, 0)),
            batch_cpu=z.batch_cpu,
            distances=z.distances,
        )
        for z in topo.zones
    )
    gpus = tuple(
        GpuState(g.index, g.memory_total, max(0, g.memory_available - gpu.get(g.index, 0)), g.numa)
        for g in topo.gpus
    )
    return topo.with_zones(zones, gpus)


class OverReserve:
    """Reservations kept per node until the node's fingerprint shows it caught up."""

    def __init__(self) -> None:
        self._by_key: dict[str, Reservation] = {}
        self._by_node: dict[str, dict[str, Reservation]] = {}
        self.resyncs = 0
        self.dropped = 0

    def reserve(self, reservation: Reservation) -> None:
        """Book ``reservation`` (replacing one of the same pod)."""
        self.release(reservation.key)
        self._by_key[reservation.key] = reservation
        self._by_node.setdefault(reservation.node, {})[reservation.key] = reservation

    def release(self, key: str) -> Reservation | None:
        """Drop the pod's reservation; the dropped one or None."""
        gone = self._by_key.pop(key, None)
        if gone is not None:
            node = self._by_node.get(gone.node, {})
            node.pop(key, None)
            if not node:
                self._by_node.pop(gone.node, None)
        return gone

    def get(self, key: str) -> Reservation | None:
        """The pod's reservation, or None."""
        return self._by_key.get(key)

    def on_node(self, node: str) -> tuple[Reservation, ...]:
        """The reservations held on ``node``."""
        return tuple(self._by_node.get(node, {}).values())

    def effective(self, topo: NodeTopo) -> NodeTopo:
        """The node's numbers minus its reservations (never below 0)."""
        held = self._by_node.get(topo.name)
        return _subtract(topo, held.values()) if held else topo

    def resync(self, node: str, fingerprint: str | None, bound: Iterable[tuple[str, str]]) -> int:
        """Drop the node's reservations when ``fingerprint`` is the one of ``bound`` plus
        the reserved pods (the published numbers then count them all)."""
        held = self._by_node.get(node)
        if not held or not fingerprint:
            return 0
        pods = set(bound) | {(r.namespace, r.name) for r in held.values()}
        if fp.check(fingerprint, pods) is not fp.FingerprintCheck.MATCH:
            return 0
        count = len(held)
        for key in list(held):
            self.release(key)
        self.resyncs += 1
        self.dropped += count
        return count


def make_cache(kind: CacheKind) -> ReservationCache:
    """The cache of ``kind``."""
    return OverReserve() if kind is CacheKind.OVERRESERVE else Passthrough()
