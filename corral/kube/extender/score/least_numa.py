"""LeastNUMANodes: prefer the node that can hold the pod on the fewest NUMA zones, with a
half-step bonus when those zones are the closest possible set of that size."""

from __future__ import annotations

from itertools import combinations

from corral.kube.extender.fit import MAX_COMBINATION_ZONES
from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.score.common import MAX_NODE_SCORE
from corral.kube.extender.topo import NodeTopo, ZoneState

DEFAULT_MAX_NUMA_NODES = 8
"""Upstream's topologyManagerMaxNUMANodes default."""
MISSING_DISTANCE = 255


def _avg_distance(group: tuple[ZoneState, ...]) -> float:
    if len(group) < 2:
        return 10.0
    pairs = [(a, b) for a in group for b in group if a.id != b.id]
    return sum(a.distances.get(b.id, MISSING_DISTANCE) for a, b in pairs) / len(pairs)


def _fits(group: tuple[ZoneState, ...], pod: PodRequest, tpc: int) -> bool:
    if pod.exclusive:
        cores = sum(z.cpu_available // (1000 * tpc) for z in group)
        cpu_ok = cores >= -(-pod.cpu_millis // (1000 * tpc))
    else:
        cpu_ok = sum(z.cpu_available for z in group) >= pod.cpu_millis
    return cpu_ok and sum(z.memory_available for z in group) >= pod.memory_bytes


def score(node: NodeTopo, pod: PodRequest, max_numa_nodes: int = DEFAULT_MAX_NUMA_NODES) -> int:
    """``100 - k * (100 / max_numa_nodes)`` for the fewest zones k that fit, plus half a step
    when the fitting set has the smallest average distance of any k zones; 0 when none."""
    step = MAX_NODE_SCORE // max(1, max_numa_nodes)
    zones = node.zones[:MAX_COMBINATION_ZONES]
    for k in range(1, len(zones) + 1):
        groups = list(combinations(zones, k))
        fitting = [g for g in groups if _fits(g, pod, node.threads_per_core)]
        if not fitting:
            continue
        best = min(_avg_distance(g) for g in fitting)
        closest = min(_avg_distance(g) for g in groups)
        bonus = step // 2 if best <= closest else 0
        return max(0, MAX_NODE_SCORE - k * step + bonus)
    return 0
