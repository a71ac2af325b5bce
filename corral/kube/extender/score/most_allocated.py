"""MostAllocated: prefer the node whose zone the pod fills the most (bin packing)."""

from __future__ import annotations

from collections.abc import Mapping

from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.score.common import (
    MAX_NODE_SCORE,
    Weights,
    chosen_zones_score,
    weighted_mean,
)
from corral.kube.extender.topo import NodeTopo


def zone_score(want: Mapping[str, int], avail: Mapping[str, int], weights: Weights) -> int:
    """Per resource ``requested * 100 / available`` (0 when it does not fit), weighted mean."""
    scores = {}
    for name, req in want.items():
        room = avail.get(name, 0)
        scores[name] = 0 if room == 0 or req > room else req * MAX_NODE_SCORE // room
    return weighted_mean(scores, weights)


def score(node: NodeTopo, pod: PodRequest, weights: Weights) -> int:
    """The node's 0-100 score."""
    return chosen_zones_score(node, pod, zone_score, weights)
