"""What every scoring strategy shares: the per-zone request, resource weights, and the
mapping of upstream's 0-100 scores to the extender protocol's 0-10."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from corral.kube.extender.fit import Refusal, numa_fit
from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.topo import NodeTopo, ZoneState

MAX_NODE_SCORE = 100
"""Upstream's framework.MaxNodeScore: the strategies compute on this scale."""
MAX_EXTENDER_PRIORITY = 10
"""The extender protocol's highest score (k8s.io/kube-scheduler/extender/v1)."""


@dataclass(frozen=True, slots=True)
class Weights:
    """Resource weights of the allocation strategies (upstream default: cpu 1, memory 1;
    a weight below 1 counts as 1)."""

    by_resource: Mapping[str, int] = field(default_factory=lambda: {"cpu": 1, "memory": 1})

    def of(self, name: str) -> int:
        """The weight of resource ``name``."""
        return max(1, int(self.by_resource.get(name, 1)))


ZoneScore = Callable[[Mapping[str, int], Mapping[str, int], Weights], int]
"""(requested, available, weights) -> a zone's 0-100 score."""


def to_extender(score: int) -> int:
    """A 0-100 score as 0-10 (rounded half up)."""
    return max(0, min(MAX_EXTENDER_PRIORITY, (score * MAX_EXTENDER_PRIORITY + 50) // 100))


def requested(pod: PodRequest) -> dict[str, int]:
    """The pod's request in the units zones use (milli-CPUs, bytes)."""
    return {"cpu": pod.cpu_millis, "memory": pod.memory_bytes}


def available(zone: ZoneState) -> dict[str, int]:
    """A zone's available resources."""
    return {"cpu": zone.cpu_available, "memory": zone.memory_available}


def weighted_mean(scores: Mapping[str, int], weights: Weights) -> int:
    """Σ(score·weight)/Σweight, integer as upstream."""
    total = sum(weights.of(n) for n in scores)
    return sum(s * weights.of(n) for n, s in scores.items()) // total if total else 0


def chosen_zones_score(
    node: NodeTopo, pod: PodRequest, zone_score: ZoneScore, weights: Weights
) -> int:
    """The score of the zones corral would give the pod on ``node`` (`numa_fit`; their
    available resources summed), 0 when none fits. Upstream takes the smallest non-zero
    score over all zones because kubelet picks the zone later; corral picks the zone
    itself at bind, so it scores the zone it will use."""
    placement = numa_fit(node, pod)
    if isinstance(placement, Refusal):
        return 0
    chosen = [z for z in node.zones if z.id in placement.zones]
    room = {
        "cpu": sum(z.cpu_available for z in chosen),
        "memory": sum(z.memory_available for z in chosen),
    }
    return zone_score(requested(pod), room, weights)
