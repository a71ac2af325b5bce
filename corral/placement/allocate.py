"""One entry point for every allocator, so callers (CLI, enforcement, agent) need not know
which one runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum

from corral.placement.assignment import Placement
from corral.placement.cost import CostWeights
from corral.placement.greedy import place_greedy
from corral.placement.kubelet import Strategy
from corral.placement.optimal import (
    DEFAULT_BUDGET_MS,
    DEFAULT_GAP,
    place_greedy_keeping,
    place_optimal,
)
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


class Allocator(StrEnum):
    """Which allocator places a workload list."""

    GREEDY = "greedy"
    OPTIMAL = "optimal"


def allocate(
    topology: Topology,
    workloads: Sequence[Workload],
    *,
    allocator: Allocator = Allocator.GREEDY,
    online: CpuSet | None = None,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
    budget_ms: float = DEFAULT_BUDGET_MS,
    gap: float = DEFAULT_GAP,
    previous: Mapping[str, CpuSet] | None = None,
    weights: CostWeights | None = None,
) -> Placement:
    """Place ``workloads`` with the chosen allocator (see each allocator's promises).

    Greedy ignores ``budget_ms``, ``gap`` and ``weights``; with ``previous`` it keeps the
    CPUs exclusive workloads held (kubelet's behaviour). Optimal minimises the cost model
    (`corral.placement.optimal.place_optimal`; use it directly for the cost and bound).
    """
    if allocator is Allocator.OPTIMAL:
        return place_optimal(
            topology,
            workloads,
            online=online,
            strategy=strategy,
            full_cores=full_cores,
            budget_ms=budget_ms,
            gap=gap,
            previous=previous,
            weights=weights,
        ).placement
    if previous:
        return place_greedy_keeping(
            topology,
            workloads,
            previous,
            online=online,
            strategy=strategy,
            full_cores=full_cores,
        )
    return place_greedy(
        topology, workloads, online=online, strategy=strategy, full_cores=full_cores
    )
