"""Prioritize: the NodeResourceTopologyMatch scoring strategies (one module each), mapped
to the extender's 0-10, plus BE (most batch-cpu left) and GPU binpack.

Managed pods (``exclusive``/``numa``) are scored by the configured strategy; BE pods by
their batch-cpu left; other GPU pods by device binpack; every other pod gets 0 everywhere
(no opinion)."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from corral.kube.extender.podspec import PodRequest
from corral.kube.extender.score import (
    balanced_allocation,
    batch,
    gpu_binpack,
    least_allocated,
    least_numa,
    most_allocated,
)
from corral.kube.extender.score.common import Weights, to_extender
from corral.kube.extender.topo import NodeTopo
from corral.placement.workload import Qos


class Strategy(StrEnum):
    """Upstream's scoringStrategy.type values."""

    LEAST_ALLOCATED = "LeastAllocated"
    MOST_ALLOCATED = "MostAllocated"
    BALANCED_ALLOCATION = "BalancedAllocation"
    LEAST_NUMA_NODES = "LeastNUMANodes"


def strategy_score(node: NodeTopo, pod: PodRequest, strategy: Strategy, weights: Weights) -> int:
    """The node's 0-100 score for a managed pod under ``strategy``."""
    if strategy is Strategy.LEAST_ALLOCATED:
        return least_allocated.score(node, pod, weights)
    if strategy is Strategy.MOST_ALLOCATED:
        return most_allocated.score(node, pod, weights)
    if strategy is Strategy.BALANCED_ALLOCATION:
        return balanced_allocation.score(node, pod, weights)
    return least_numa.score(node, pod)


def prioritize(
    pod: PodRequest,
    nodes: Mapping[str, NodeTopo | None],
    batch_left: Mapping[str, int],
    *,
    strategy: Strategy,
    weights: Weights,
) -> dict[str, int]:
    """0-10 per node name for ``pod``. ``nodes`` maps each candidate to its topology with
    reservations taken out (None: none published); ``batch_left`` its batch-cpu left."""
    if pod.managed:
        return {
            name: 0 if topo is None else to_extender(strategy_score(topo, pod, strategy, weights))
            for name, topo in nodes.items()
        }
    if pod.qos is Qos.BE:
        return batch.scores({name: batch_left.get(name, 0) for name in nodes})
    if pod.gpu_mem_mib > 0:
        return {
            name: 0 if topo is None else gpu_binpack.score(topo, pod.gpu_mem_mib)
            for name, topo in nodes.items()
        }
    return dict.fromkeys(nodes, 0)
