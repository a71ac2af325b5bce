"""The greedy allocator: kubelet's static CPU manager applied to a whole workload list."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corral.errors import PlacementError
from corral.placement.assignment import Assignment, Placement, Refusal
from corral.placement.kubelet import Strategy, take_cpus
from corral.placement.pools import check_immovable, exclusive_order, immovable_cpus, place_pooled
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


def place_greedy(
    topology: Topology,
    workloads: Sequence[Workload],
    *,
    online: CpuSet | None = None,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
    previous: Mapping[str, CpuSet] | None = None,
) -> Placement:
    """Place every workload: immovable keep their CPUs; exclusive ones take CPUs in kubelet
    order (largest request first, then id) from the online CPUs not fixed by immovable
    workloads; numa and shared ones share what is left (`place_pooled`).

    With ``previous`` (kubelet's incremental behaviour), an exclusive workload first keeps
    its previous CPUs when they still fit (same count, online, not fixed by immovable
    workloads, not taken, whole cores under ``full_cores``); the others then take CPUs in
    kubelet order from what is left.

    A workload that cannot be placed is refused with kubelet's reason; the others are
    still placed.
    """
    online_cpus = topology.all_cpus if online is None else online & topology.all_cpus
    immovable, refusals = check_immovable(topology, online_cpus, workloads)
    available = online_cpus - immovable_cpus(workloads)
    exclusive: dict[str, Assignment] = {}
    order = exclusive_order(workloads)
    kept = previous or {}
    for w in order:
        before = kept.get(w.id)
        if (
            before is not None
            and len(before) == w.whole_cpus
            and before.issubset(available)
            and (not full_cores or topology.whole_cores_within(before) == before)
        ):
            exclusive[w.id] = Assignment(w.id, before, "exclusive: keeps its previous CPUs")
            available -= before
    for w in order:
        if w.id in exclusive:
            continue
        try:
            cpus = take_cpus(
                topology, available, w.whole_cpus, strategy=strategy, full_cores=full_cores
            )
        except PlacementError as err:
            refusals[w.id] = Refusal(w.id, str(err))
            continue
        available -= cpus
        exclusive[w.id] = Assignment(
            w.id,
            cpus,
            f"exclusive: kubelet {strategy} order" + (" with full cores" if full_cores else ""),
        )
    return place_pooled(
        topology,
        online_cpus,
        workloads,
        exclusive=exclusive,
        refusals=refusals,
        immovable=immovable,
    )
