"""One entry point for every allocator, so callers (CLI, enforcement, agent) need not know
which one runs."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from corral.placement.assignment import Placement
from corral.placement.greedy import place_greedy
from corral.placement.kubelet import Strategy
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


class Allocator(StrEnum):
    """Which allocator places a workload list."""

    GREEDY = "greedy"


def allocate(
    topology: Topology,
    workloads: Sequence[Workload],
    *,
    allocator: Allocator = Allocator.GREEDY,
    online: CpuSet | None = None,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
) -> Placement:
    """Place ``workloads`` with the chosen allocator (see each allocator's promises)."""
    return place_greedy(
        topology, workloads, online=online, strategy=strategy, full_cores=full_cores
    )
