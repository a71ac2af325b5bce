"""BalancedAllocation: prefer the zone where the pod uses CPU and memory in equal shares."""

from __future__ import annotations

from collections.abc import Mapping

from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.score.common import MAX_NODE_SCORE, Weights, chosen_zones_score
from corral.kube.extender.topo import NodeTopo


def _variance(values: list[float]) -> float:
    """Sample variance (n - 1), as gonum's stat.Variance with no weights."""
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def zone_score(want: Mapping[str, int], avail: Mapping[str, int], weights: Weights) -> int:
    """``(1 - variance of requested/available) * 100``; 0 when a fraction exceeds 1
    (weights do not enter, as upstream)."""
    fractions = []
    for name, req in want.items():
        room = avail.get(name, 0)
        fraction = 1.0 if room == 0 else req / room
        if fraction > 1:
            return 0
        fractions.append(fraction)
    return int((1 - _variance(fractions)) * MAX_NODE_SCORE)


def score(node: NodeTopo, pod: PodRequest, weights: Weights) -> int:
    """The node's 0-100 score."""
    return chosen_zones_score(node, pod, zone_score, weights)
