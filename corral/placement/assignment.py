"""Assignment and Placement: the outcome of placing a list of workloads."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from corral.topology.cpuset import CpuSet


@dataclass(frozen=True, slots=True)
class Assignment:
    """The CPUs one workload may run on, and which rule chose them."""

    workload_id: str
    cpuset: CpuSet
    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """A workload that could not be placed, and why."""

    workload_id: str
    reason: str


@dataclass(frozen=True)
class Placement:
    """Assignments for every placed workload, the pools they were drawn from, refusals.

    ``pools`` maps pool names to CPUs: ``exclusive`` (all exclusively held CPUs),
    ``shared`` (the default shared pool) and ``numa-N`` (node N's part of the shared pool).
    """

    assignments: Mapping[str, Assignment]
    pools: Mapping[str, CpuSet]
    refusals: Mapping[str, Refusal] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def cpuset_of(self, workload_id: str) -> CpuSet:
        """The CPUs of a placed workload; `KeyError` if it was not placed."""
        return self.assignments[workload_id].cpuset

    def as_cpusets(self) -> dict[str, CpuSet]:
        """Workload id -> CpuSet for every placed workload."""
        return {wid: a.cpuset for wid, a in self.assignments.items()}

    def to_json(self) -> dict[str, Any]:
        """The JSON form the CLI prints: assignments, pools, refusals, reasons, warnings."""
        return {
            "assignments": {wid: str(a.cpuset) for wid, a in sorted(self.assignments.items())},
            "pools": {name: str(cpus) for name, cpus in self.pools.items()},
            "reasons": {wid: a.reason for wid, a in sorted(self.assignments.items())},
            "refusals": {wid: r.reason for wid, r in sorted(self.refusals.items())},
            "warnings": list(self.warnings),
        }
