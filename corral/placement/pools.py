"""Shared pools: given where exclusive workloads sit, place numa, shared and immovable ones.

Both allocators (greedy and optimal) choose exclusive CPUs their own way and then call
`place_pooled` so that the pool rules are the same everywhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from corral.placement.assignment import Assignment, Placement, Refusal
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


def immovable_cpus(workloads: Sequence[Workload]) -> CpuSet:
    """All CPUs fixed by immovable workloads."""
    fixed = [w.cpuset for w in workloads if w.policy is Policy.IMMOVABLE and w.cpuset]
    return CpuSet().union(*fixed)


def check_immovable(
    topology: Topology, online: CpuSet, workloads: Sequence[Workload]
) -> tuple[dict[str, Assignment], dict[str, Refusal]]:
    """Immovable workloads keep their fixed CPUs if all of them are online."""
    assignments: dict[str, Assignment] = {}
    refusals: dict[str, Refusal] = {}
    for w in workloads:
        if w.policy is not Policy.IMMOVABLE or w.cpuset is None:
            continue
        missing = w.cpuset - online
        if missing:
            refusals[w.id] = Refusal(
                w.id, f"immovable CPUs {missing} are not online on this host (online: {online})"
            )
        else:
            assignments[w.id] = Assignment(w.id, w.cpuset, "immovable: its fixed CPUs")
    return assignments, refusals


def exclusive_order(workloads: Sequence[Workload]) -> list[Workload]:
    """Exclusive workloads in the deterministic order they are placed: largest, then id."""
    return sorted(
        (w for w in workloads if w.policy is Policy.EXCLUSIVE), key=lambda w: (-w.cpus, w.id)
    )


def place_pooled(
    topology: Topology,
    online: CpuSet,
    workloads: Sequence[Workload],
    *,
    exclusive: Mapping[str, Assignment],
    refusals: Mapping[str, Refusal],
    immovable: Mapping[str, Assignment],
) -> Placement:
    """Complete a placement: numa workloads get the shared pool of the NUMA node with the
    most free capacity that holds their request (largest first, then id; ties to the lower
    node), shared workloads get the whole shared pool left by exclusive workloads.
    """
    taken = CpuSet().union(*(a.cpuset for a in exclusive.values()))
    shared = online - taken
    assignments: dict[str, Assignment] = dict(immovable)
    assignments.update(exclusive)
    all_refusals = dict(refusals)
    warnings: list[str] = []
    pools: dict[str, CpuSet] = {"exclusive": taken, "shared": shared}
    capacity: dict[int, float] = {}
    for numa in topology.numa_nodes:
        pool = shared & topology.cpus_in_numa(numa)
        pools[f"numa-{numa}"] = pool
        capacity[numa] = float(len(pool))
    numa_workloads = sorted(
        (w for w in workloads if w.policy is Policy.NUMA), key=lambda w: (-w.cpus, w.id)
    )
    for w in numa_workloads:
        fits = [n for n in topology.numa_nodes if capacity[n] + 1e-9 >= w.cpus]
        if not fits:
            best = max(capacity.values(), default=0.0)
            all_refusals[w.id] = Refusal(
                w.id,
                f"no NUMA node's shared pool holds {w.cpus:g} CPUs (the most free is {best:g})",
            )
            continue
        node = max(fits, key=lambda n: (capacity[n], -n))
        free_before = capacity[node]
        capacity[node] -= w.cpus
        assignments[w.id] = Assignment(
            w.id,
            pools[f"numa-{node}"],
            f"numa: node {node}'s shared pool ({free_before:g} of "
            f"{len(pools[f'numa-{node}'])} CPUs unclaimed before it)",
        )
    shared_workloads = sorted(
        (w for w in workloads if w.policy is Policy.SHARED), key=lambda w: w.id
    )
    for w in shared_workloads:
        if not shared:
            all_refusals[w.id] = Refusal(
                w.id, "the shared pool is empty: exclusive workloads hold every online CPU"
            )
        elif w.cpus > len(shared) + 1e-9:
            all_refusals[w.id] = Refusal(
                w.id, f"asks for {w.cpus:g} CPUs but the shared pool has only {len(shared)}"
            )
        else:
            assignments[w.id] = Assignment(w.id, shared, "shared: the default shared pool")
    demand = sum(
        w.cpus
        for w in workloads
        if w.policy in (Policy.SHARED, Policy.NUMA) and w.id in assignments
    )
    if shared and demand > len(shared) + 1e-9:
        warnings.append(
            f"shared and numa workloads request {demand:g} CPUs from a shared pool of "
            f"{len(shared)}: the pool is overcommitted"
        )
    return Placement(
        assignments=assignments, pools=pools, refusals=all_refusals, warnings=tuple(warnings)
    )
