"""One entry point for every allocator, so callers (CLI, enforcement, agent) need not know
which one runs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING

from corral.placement.kubelet import Strategy

if TYPE_CHECKING:  # the allocators are imported where used: the CLI imports `Allocator` only
    from corral.placement.assignment import Placement
    from corral.placement.cost import CostWeights
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
    budget_ms: float | None = None,
    gap: float | None = None,
    previous: Mapping[str, CpuSet] | None = None,
    weights: CostWeights | None = None,
) -> Placement:
    """Place ``workloads`` with the chosen allocator (see each allocator's promises).

    Greedy ignores ``budget_ms``, ``gap`` and ``weights``; with ``previous`` it keeps the
    CPUs exclusive workloads held (kubelet's behaviour). Optimal minimises the cost model
    (`corral.placement.optimal.place_optimal`; use it directly for the cost and bound);
    ``budget_ms`` and ``gap`` default to its ``DEFAULT_BUDGET_MS`` and ``DEFAULT_GAP``.
    """
    if allocator is Allocator.OPTIMAL:
        # numpy, scipy and highspy load only when the optimiser runs (CLI start-up time).
        from corral.placement.optimal import (  # noqa: PLC0415
            DEFAULT_BUDGET_MS,
            DEFAULT_GAP,
            place_optimal,
        )

        return place_optimal(
            topology,
            workloads,
            online=online,
            strategy=strategy,
            full_cores=full_cores,
            budget_ms=DEFAULT_BUDGET_MS if budget_ms is None else budget_ms,
            gap=DEFAULT_GAP if gap is None else gap,
            previous=previous,
            weights=weights,
        ).placement
    if previous:
        from corral.placement.optimal import place_greedy_keeping  # noqa: PLC0415 - numpy

        return place_greedy_keeping(
            topology,
            workloads,
            previous,
            online=online,
            strategy=strategy,
            full_cores=full_cores,
        )
    from corral.placement.greedy import place_greedy  # noqa: PLC0415 - pydantic models

    return place_greedy(
        topology, workloads, online=online, strategy=strategy, full_cores=full_cores
    )
