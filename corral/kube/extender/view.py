"""The cluster as the extender knows it, kept up to date by watches (Nodes, NRT objects,
pods) -- never listed per request. The handlers are called on the event loop by
`corral.kube.watch.Informer`; every read is from memory.

Each change to a node's pods or NRT reconciles that node's reservations
(`ReservationCache.resync`) against its published fingerprint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from corral.errors import InputError
from corral.kube import annotations as ann
from corral.kube.extender.podspec import PodRequest, pod_request
from corral.kube.extender.reserve import ReservationCache
from corral.kube.extender.topo import NodeTopo, node_topo
from corral.kube.nrt import nrt_from_json
from corral.kube.podmap import is_terminal
from corral.kube.quantity import whole_units
from corral.kube.watch import Change, ChangeType

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PodRecord:
    """A pod the extender watches (not terminated)."""

    namespace: str
    name: str
    uid: str
    node: str
    request: PodRequest | None
    annotations: Mapping[str, str]

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"


def pod_record(pod: Mapping[str, Any]) -> PodRecord:
    """The record of a pod object (its request None when it cannot be read)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    try:
        request: PodRequest | None = pod_request(pod)
    except InputError:
        request = None
    return PodRecord(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        uid=str(meta.get("uid") or ""),
        node=str(spec.get("nodeName") or ""),
        request=request,
        annotations=ann.corral_annotations(meta.get("annotations")),
    )


class ClusterView:
    """Nodes, topologies and pods from the watches, plus the reservation cache."""

    def __init__(self, cache: ReservationCache) -> None:
        self.cache = cache
        self.batch_allocatable: dict[str, int] = {}
        self.node_names: set[str] = set()
        self.topos: dict[str, NodeTopo] = {}
        self.topo_errors: dict[str, str] = {}
        self.pods: dict[str, PodRecord] = {}
        self._bound: dict[str, dict[str, PodRecord]] = {}

    # --- watch handlers ---------------------------------------------------------------
    def on_node(self, change: Change) -> None:
        """A Node changed: its batch-cpu allocatable."""
        if change.type is ChangeType.SYNCED:
            return
        name = change.key
        if change.type is ChangeType.DELETED:
            self.node_names.discard(name)
            self.batch_allocatable.pop(name, None)
            return
        self.node_names.add(name)
        alloc = (change.obj.get("status") or {}).get("allocatable") or {}
        try:
            self.batch_allocatable[name] = whole_units(alloc.get(ann.BATCH_CPU, 0))
        except InputError:
            self.batch_allocatable[name] = 0

    def on_nrt(self, change: Change) -> None:
        """An NRT object changed: re-read its zones, reconcile the node's reservations."""
        if change.type is ChangeType.SYNCED:
            return
        name = change.key
        if change.type is ChangeType.DELETED:
            self.topos.pop(name, None)
            return
        try:
            self.topos[name] = node_topo(nrt_from_json(change.obj))
            self.topo_errors.pop(name, None)
        except (InputError, ValueError) as err:
            self.topos.pop(name, None)
            self.topo_errors[name] = str(err)
            log.warning("extender.nrt_unreadable", extra={"node": name, "why": str(err)})
            return
        self._resync(name)

    def on_pod(self, change: Change) -> None:
        """A pod changed: where it is bound, what it requests."""
        if change.type is ChangeType.SYNCED:
            return
        key = change.key
        before = self.pods.pop(key, None)
        if before is not None and before.node:
            self._bound.get(before.node, {}).pop(key, None)
        if change.type is ChangeType.DELETED or is_terminal(change.obj):
            gone = self.cache.release(key)
            for node in {
                n for n in (before.node if before else "", gone.node if gone else "") if n
            }:
                self._resync(node)
            return
        record = pod_record(change.obj)
        self.pods[key] = record
        if record.node:
            self._bound.setdefault(record.node, {})[key] = record
            self._resync(record.node)

    # --- reads ------------------------------------------------------------------------
    def topo(self, node: str) -> NodeTopo | None:
        """The node's topology minus its reservations (None: none published)."""
        topo = self.topos.get(node)
        return None if topo is None else self.cache.effective(topo)

    def bound_on(self, node: str) -> tuple[PodRecord, ...]:
        """The pods known bound to ``node``."""
        return tuple(self._bound.get(node, {}).values())

    def batch_left(self, node: str) -> int:
        """Milli-CPUs of batch-cpu on ``node`` not requested by the pods bound or reserved
        there."""
        used = sum(p.request.batch_cpu_millis for p in self.bound_on(node) if p.request is not None)
        known = self._bound.get(node, {})
        used += sum(r.batch_cpu_millis for r in self.cache.on_node(node) if r.key not in known)
        return self.batch_allocatable.get(node, 0) - used

    def mark_bound(self, record: PodRecord) -> None:
        """Note a pod this extender just bound (before its watch event arrives)."""
        self.pods[record.key] = record
        self._bound.setdefault(record.node, {})[record.key] = record

    def _resync(self, node: str) -> None:
        topo = self.topos.get(node)
        if topo is None or not self.cache.on_node(node):
            return
        bound = [(p.namespace, p.name) for p in self.bound_on(node)]
        dropped = self.cache.resync(node, topo.fingerprint, bound)
        if dropped:
            log.debug("extender.resynced", extra={"node": node, "dropped": dropped})
