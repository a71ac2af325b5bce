"""Who owns which BE knob when the controller runs inside the node agent: one owner per file.

Two writers touch the BE box: the agent (placement, then enforcement and reconcile of every
workload's cgroup) and the colocation controller (BE cores, weight, quota, memory.high,
freezer). Each interface file has exactly one of them as its owner:

* **Placement bounds, the controller divides.** The agent's placement decides the BE pool:
  the shared pool (CPUs no exclusive workload holds). The controller only ever gives BE
  whole cores of that pool (`be_pool_cores`), so it can never put BE on an exclusive
  workload's CPUs; when a decision changes the pool, the controller is re-bounded, and BE
  gives up CPUs before the enforcer grants them to anyone (both write through the agent's
  one ordered effect executor).
* **The controller owns** the BE box's `CONTROLLED_FILES` (``cpuset.cpus``, ``cpu.idle``,
  ``cpu.shares``/``cpu.weight``, the CFS quota, ``memory.high``; on v1 with senpai on, the
  box's ``memory.limit_in_bytes``, senpai's limit there) and the
  ``cpuset.cpus`` of the BE workloads inside the box, plus their freezer state. The
  enforcer's desired state marks them foreign (`EnforceSettings.controlled_be_files`):
  it never writes them, never reports them as drift, and the controller repairs them
  itself when the agent reconciles.
* **The enforcer owns** everything else: the box's ``cpuset.mems`` and (senpai off) its
  hard memory limit,
  each workload's weight, memory limits and ``cpuset.mems``, and the LC and system
  cgroups.
"""

from __future__ import annotations

from corral.control.cores import core_sets
from corral.placement.assignment import Placement
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
    }
)
"""Interface files of the BE box itself that the controller writes (never the enforcer)."""


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
