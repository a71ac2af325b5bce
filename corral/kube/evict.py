"""Evict BE pods when the node's BE capacity stays below what its BE pods request.

Each tick compares ``corral.io/batch-cpu`` / ``batch-memory`` capacity with the sum the
node's BE pods request. When it has been short for ``evict_after_s`` without a break, the
lowest-priority BE pod (then the youngest, then the largest request) is evicted through the
Eviction API, so PodDisruptionBudgets hold, with an Event saying why; at most one eviction
per ``evict_interval_s``. LC pods are never candidates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral.kube import annotations as ann
from corral.kube.client import ApiError, ConnectionFailedError, eviction_path
from corral.kube.config import KubeSettings
from corral.kube.events import Involved
from corral.kube.podmap import PodWorkload
from corral.placement.workload import Qos

if TYPE_CHECKING:
    from corral.kube.node import NodeAgent

log = logging.getLogger(__name__)

TICK_S = 2.0


@dataclass(frozen=True, slots=True)
class Shortfall:
    """BE requests above BE capacity (zero or positive)."""

    cpu_millis: int
    memory: int

    @property
    def short(self) -> bool:
        """True when either resource is short."""
        return self.cpu_millis > 0 or self.memory > 0


def shortfall(pods: list[PodWorkload], batch_cpu: int, batch_memory: int) -> Shortfall:
    """How far the BE pods' batch requests exceed the capacity."""
    be = [p for p in pods if p.workload.qos is Qos.BE]
    cpu = sum(p.requests.batch_cpu_millis for p in be)
    memory = sum(p.requests.batch_memory for p in be)
    return Shortfall(max(0, cpu - batch_cpu), max(0, memory - batch_memory))


def victim(pods: list[PodWorkload], created: dict[str, str]) -> PodWorkload | None:
    """The BE pod to evict first: lowest priority, then youngest, then largest request;
    None when there is no BE pod requesting batch resources."""
    be = [
        p
        for p in pods
        if p.workload.qos is Qos.BE and (p.requests.batch_cpu_millis or p.requests.batch_memory)
    ]
    if not be:
        return None
    return min(
        be,
        key=lambda p: (
            p.priority,
            _neg(created.get(p.key, "")),
            -p.requests.batch_cpu_millis,
            p.key,
        ),
    )


def _neg(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


class BeEvictor:
    """The eviction loop of one node agent."""

    def __init__(self, agent: NodeAgent, settings: KubeSettings) -> None:
        self.agent = agent
        self.settings = settings
        self.evictions = 0
        self.refused = 0
        self._short_since: float | None = None
        self._last_eviction = -float("inf")
        self._evicted: set[str] = set()
        self._api_version = "policy/v1"

    async def run(self) -> None:
        """Check every `TICK_S` until cancelled."""
        while True:
            await asyncio.sleep(TICK_S)
            try:
                await self.tick(time.monotonic())
            except (ApiError, ConnectionFailedError) as err:
                log.warning("kube.evict_failed", extra={"error": str(err)})

    async def tick(self, now: float) -> bool:
        """One check; True when it evicted a pod."""
        pods = [p for p in self.agent.mapped_pods() if p.key not in self._evicted]
        capacity = self.agent.capacity()
        short = shortfall(pods, capacity.batch_cpu, capacity.batch_memory)
        if not short.short:
            self._short_since = None
            return False
        if self._short_since is None:
            self._short_since = now
        if now - self._short_since < self.settings.evict_after_s:
            return False
        if now - self._last_eviction < self.settings.evict_interval_s:
            return False
        created = {
            p.key: str(
                ((self.agent.pod_object(p.key) or {}).get("metadata") or {}).get(
                    "creationTimestamp"
                )
                or ""
            )
            for p in pods
        }
        chosen = victim(pods, created)
        if chosen is None:
            return False
        why = (
            f"BE capacity on node {self.agent.node} has been short of what its BE pods "
            f"request for {now - self._short_since:.0f} s (short by {short.cpu_millis}m "
            f"{ann.BATCH_CPU}, {short.memory} bytes {ann.BATCH_MEMORY}): evicting the "
            f"lowest-priority BE pod"
        )
        self._last_eviction = now
        if await self._evict(chosen, why):
            self._evicted.add(chosen.key)
            self.evictions += 1
            return True
        return False

    async def _evict(self, pod: PodWorkload, why: str) -> bool:
        obj = self.agent.pod_object(pod.key) or {
            "metadata": {"namespace": pod.namespace, "name": pod.name}
        }
        body: dict[str, Any] = {
            "apiVersion": self._api_version,
            "kind": "Eviction",
            "metadata": {"name": pod.name, "namespace": pod.namespace},
        }
        try:
            await self.agent.client.create(eviction_path(pod.namespace, pod.name), body)
        except ApiError as err:
            if (
                err.status in (400, 404)
                and self._api_version == "policy/v1"
                and "not found" not in err.message.lower()
            ):
                self._api_version = "policy/v1beta1"  # before Kubernetes 1.22
                return await self._evict(pod, why)
            if err.status == 429:  # a PodDisruptionBudget says no, for now
                self.refused += 1
                self.agent.events.record(
                    Involved.of(obj),
                    ann.REASON_EVICTED,
                    f"{why}; refused: {err.message}",
                    type="Warning",
                )
                return False
            raise
        self.agent.events.record(Involved.of(obj), ann.REASON_EVICTED, why, type="Warning")
        return True
