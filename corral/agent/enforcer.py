"""What the agent needs from enforcement, and the dry-run implementation.

The agent hands the enforcer every workload it manages and the placement that gives each
its CPUs, and asks it to apply that desired state, to report drift (files that no
longer hold what was written), to repair, and to let go of removed workloads. An adapter to
the real cgroup writers lives in `corral.agent.cgroups`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from corral.enforce.marker import OwnerMark
from corral.placement.assignment import Placement
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


@dataclass(frozen=True, slots=True)
class Drift:
    """A managed file whose content is not what the agent wants."""

    workload_id: str
    file: str
    want: str
    got: str


@dataclass(frozen=True, slots=True)
class ApplyReport:
    """What one apply did: files written, files already right, and failures (each naming
    the workload, the file and the errno)."""

    written: int = 0
    unchanged: int = 0
    errors: tuple[str, ...] = ()
    lines: tuple[str, ...] = field(default=(), repr=False)
    covered: frozenset[str] = frozenset()
    """The workloads this report speaks for (every workload the apply was given)."""
    refused: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Of ``covered``, those with a refused write or an unlocated cgroup: their errors."""


class Enforcer(Protocol):
    """Puts the desired state into the kernel. Calls may block (file I/O): the agent runs
    them off its event loop, one at a time."""

    @property
    def dry_run(self) -> bool:
        """True when nothing is written to the kernel."""
        ...

    def describe(self) -> str:
        """One line for /status: what is enforced where (or why not)."""
        ...

    def apply(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Make every placed workload's files hold its desired state (idempotent)."""
        ...

    def drift(self, workloads: Sequence[Workload], placement: Placement) -> list[Drift]:
        """Read back every managed file and list those that differ."""
        ...

    def repair(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Rewrite the files that drifted."""
        ...

    def release(self, workloads: Sequence[Workload]) -> ApplyReport:
        """Stop managing these removed workloads: take back what corral created for them."""
        ...

    def cgroup_of(self, workload: Workload) -> str | None:
        """The workload's cgroup path relative to a hierarchy root, or None if unknown."""
        ...

    def claim(self, mark: OwnerMark) -> None:
        """Take ownership of the cgroup tree (refuse one another live process owns)."""
        ...

    def members(self, workload: Workload) -> frozenset[int]:
        """The processes in the workload's cgroup now (empty when unknown or none)."""
        ...


class DryRunEnforcer:
    """Writes nothing; records what it would write, so drift and tests can read it back.

    ``files`` maps workload id -> file name -> content.
    """

    def __init__(
        self, topology: Topology, *, cgroup_parent: str = "corral", reason: str = "dry run"
    ) -> None:
        self._topology = topology
        self._parent = cgroup_parent.strip("/")
        self._reason = reason
        self.files: dict[str, dict[str, str]] = {}
        self.writes: list[str] = []

    @property
    def dry_run(self) -> bool:
        """Always True."""
        return True

    def describe(self) -> str:
        """Says that nothing is written, and why."""
        return f"dry run ({self._reason}): cgroup writes are recorded, not made"

    def cgroup_of(self, workload: Workload) -> str | None:
        """The explicit cgroup, else ``<parent>/<id>``."""
        if workload.cgroup:
            return workload.cgroup.strip("/")
        return f"{self._parent}/{workload.id}"

    def claim(self, mark: OwnerMark) -> None:
        """Nothing to own: a dry run writes no cgroup."""

    def members(self, workload: Workload) -> frozenset[int]:
        """None known: a dry run reads no cgroup."""
        return frozenset()

    def _wanted(
        self, workloads: Sequence[Workload], placement: Placement
    ) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for workload in workloads:
            assignment = placement.assignments.get(workload.id)
            if assignment is None:
                continue
            mems = CpuSet(self._topology.numa_nodes_of(assignment.cpuset))
            out[workload.id] = {"cpuset.cpus": str(assignment.cpuset), "cpuset.mems": str(mems)}
        return out

    def apply(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Record each file that would change."""
        written = unchanged = 0
        lines: list[str] = []
        by_id = {w.id: w for w in workloads}
        for workload_id, files in self._wanted(workloads, placement).items():
            current = self.files.setdefault(workload_id, {})
            for name, value in files.items():
                if current.get(name) == value:
                    unchanged += 1
                    continue
                current[name] = value
                written += 1
                line = f"{self.cgroup_of(by_id[workload_id])}/{name} <- {value}"
                lines.append(line)
                self.writes.append(line)
        del self.writes[:-1000]
        return ApplyReport(written=written, unchanged=unchanged, lines=tuple(lines))

    def repair(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """The same as apply: the record is rewritten where it differs."""
        return self.apply(workloads, placement)

    def drift(self, workloads: Sequence[Workload], placement: Placement) -> list[Drift]:
        """Differences between what was recorded and what is wanted."""
        out: list[Drift] = []
        for workload_id, files in self._wanted(workloads, placement).items():
            current = self.files.get(workload_id, {})
            for name, value in files.items():
                if current.get(name) != value:
                    out.append(Drift(workload_id, name, value, current.get(name, "")))
        return out

    def release(self, workloads: Sequence[Workload]) -> ApplyReport:
        """Forget the recorded files."""
        for workload in workloads:
            self.files.pop(workload.id, None)
        return ApplyReport()
