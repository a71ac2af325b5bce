"""What the API shows of a workload: its stored spec and status, its CPUs, its usage and
whether the kernel holds its placement."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from corral.agent.state import StoredWorkload
from corral.placement.assignment import Assignment


class EnforcementState(StrEnum):
    """Whether the kernel holds a workload's placement."""

    ENFORCED = "enforced"  # every file of its cgroup holds what was decided
    REFUSED = "refused"  # a write was refused (or its cgroup not found): see the errors
    PENDING = "pending"  # not applied yet (queued, or refused by placement)
    DRY_RUN = "dry-run"  # nothing is written on this host


@dataclass(frozen=True, slots=True)
class Enforcement:
    """A workload's enforcement state and, when refused, each refused write (file, errno)."""

    state: EnforcementState
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The ``enforcement`` field of GET /workloads."""
        return {"state": self.state.value, "errors": list(self.errors)}


NOT_APPLIED = Enforcement(EnforcementState.PENDING)


@dataclass(frozen=True, slots=True)
class WorkloadView:
    """A workload as the API shows it."""

    stored: StoredWorkload
    assignment: Assignment | None
    usage_cores: float | None
    enforcement: Enforcement = NOT_APPLIED

    def to_json(self) -> dict[str, Any]:
        """JSON for GET /workloads."""
        w = self.stored.workload
        usage = self.usage_cores
        return {
            "id": w.id,
            "spec": w.model_dump(mode="json", exclude_none=True),
            "status": self.stored.status.value,
            "reason": self.stored.reason,
            "cpuset": None if self.assignment is None else str(self.assignment.cpuset),
            "assignment_reason": None if self.assignment is None else self.assignment.reason,
            "revision": self.stored.revision,
            "created_s": self.stored.created_s,
            "updated_s": self.stored.updated_s,
            "usage_cores": None if usage is None else round(usage, 4),
            "utilisation": None if usage is None else round(usage / w.cpus, 4),
            "enforcement": self.enforcement.to_json(),
        }


@dataclass(frozen=True, slots=True)
class PutResult:
    """What a PUT did: created or updated, and whether it waited for placement."""

    created: bool
    queued: bool
    view: WorkloadView
