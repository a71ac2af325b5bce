"""Who owns which BE knob when the controller runs inside the node agent.

Two writers touch the BE box: the agent (placement, then enforcement and reconcile of every
workload's cgroup) and the colocation controller (BE cores, weight, quota, memory.high,
freezer). The rule that keeps them from fighting:

* **Placement bounds, the controller divides.** The agent's placement decides the BE pool:
  the shared pool (CPUs no exclusive workload holds). The controller only ever gives BE
  whole cores of that pool (`be_pool_cores`), so it can never put BE on an exclusive
  workload's CPUs; when a decision changes the pool, the controller is re-bounded.
* **Enforcement writes what the controller chose.** The agent enforces its placement with
  the CPUs of every BE workload in the box replaced by the controller's current BE CPUs
  (`confine_be`), so applying a decision or repairing drift never widens BE again, and the
  reconcile repairs a BE cpuset *towards* the controller's choice.
* **The BE box's own CPU and memory-pressure knobs are the controller's.** Its
  ``cpuset.cpus``, ``cpu.idle``, ``cpu.shares``/``cpu.weight``, CFS quota and
  ``memory.high``/soft limit (`CONTROLLED_FILES`) are not drift for the agent's reconcile
  (`controlled_by_controller`); after each enforcement write the controller re-applies them
  at once, so an apply that rewrote the agent's defaults there is undone within the same
  step. Everything else (the box's hard memory limit, each workload's weight, LC and
  system cgroups) stays the agent's.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import PurePosixPath

from corral.control.cores import core_sets
from corral.placement.assignment import Assignment, Placement
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

CONTROLLED_FILES = frozenset(
    {
        "cpuset.cpus",
        "cpu.idle",
        "cpu.shares",
        "cpu.weight",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.max",
        "memory.high",
        "memory.soft_limit_in_bytes",
    }
)
"""Interface files of the BE box itself that the controller writes."""


def be_pool(topology: Topology, placement: Placement) -> CpuSet:
    """The CPUs BE may use at most: the placement's shared pool, else every CPU no
    exclusive workload holds, else every CPU (the BE box's own fallback order)."""
    pool = placement.pools.get("shared", CpuSet())
    if not pool:
        pool = topology.all_cpus - placement.pools.get("exclusive", CpuSet())
    return pool or topology.all_cpus


def be_pool_cores(topology: Topology, placement: Placement) -> tuple[CpuSet, ...]:
    """The physical cores (as CPU sets, in CPU order) the controller may give BE: the cores
    lying wholly inside `be_pool`; the pool's part of each core when no whole core is
    left (a sibling held exclusively), so the result is never empty."""
    pool = be_pool(topology, placement)
    cores = core_sets(topology)
    whole = tuple(c for c in cores if c <= pool)
    if whole:
        return whole
    return tuple(c & pool for c in cores if c & pool) or cores


def confine_be(placement: Placement, be_ids: Collection[str], be_cpus: CpuSet) -> Placement:
    """``placement`` with each placed workload of ``be_ids`` (the BE workloads in the box)
    given ``be_cpus``: what the agent enforces while the controller runs."""
    if not be_cpus:
        return placement
    assignments = dict(placement.assignments)
    for wid in be_ids:
        current = assignments.get(wid)
        if current is not None and current.cpuset != be_cpus:
            assignments[wid] = Assignment(
                wid, be_cpus, f"{current.reason}; BE cores set by control"
            )
    return Placement(
        assignments=assignments,
        pools=placement.pools,
        refusals=placement.refusals,
        warnings=placement.warnings,
    )


def controlled_by_controller(path: str, be_cgroup: str) -> bool:
    """True when ``path`` (an interface file under some hierarchy) is one of the BE box's
    `CONTROLLED_FILES`, i.e. the controller's to write and not drift for the agent."""
    file = PurePosixPath(path)
    box = PurePosixPath(be_cgroup.strip("/"))
    return file.name in CONTROLLED_FILES and file.parent.parts[-len(box.parts) :] == box.parts
