"""The agent's `Enforcer` over corral's real cgroup writers (`corral.enforce`).

Also decides, at start, whether the agent may write cgroups at all: when it is not root or
the cpuset hierarchy is not writable, the agent runs a dry run and says why.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from corral.agent.enforcer import ApplyReport, Drift, DryRunEnforcer, Enforcer
from corral.enforce.desired import DesiredState, EnforceSettings, desired_states
from corral.enforce.detect import CgroupLayout, detect_cgroups
from corral.enforce.enforcer import Enforcer as CgroupWriter
from corral.enforce.report import ApplyReport as WriterReport
from corral.errors import CorralError
from corral.placement.assignment import Placement
from corral.placement.workload import Workload
from corral.topology.model import Topology


def why_dry_run(layout: CgroupLayout, *, euid: int) -> str | None:
    """Why the agent may not write cgroups here (None when it may)."""
    cpuset = layout.hierarchy_of("cpuset")
    if cpuset is None:
        return f"no cpuset controller is mounted under {layout.root}"
    if not cpuset.writable:
        who = "not root" if euid != 0 else "read-only"
        return f"{cpuset.path} is not writable ({who})"
    return None


class CgroupEnforcer:
    """Applies placements through `corral.enforce.Enforcer` on the real hierarchy."""

    def __init__(
        self,
        topology: Topology,
        *,
        cgroup_root: Path,
        proc_root: Path,
        parent: str = "corral",
        layout: CgroupLayout | None = None,
    ) -> None:
        self._topology = topology
        self._settings = EnforceSettings(parent=parent)
        self._writer = CgroupWriter(
            cgroup_root=cgroup_root, proc_root=proc_root, settings=self._settings, layout=layout
        )
        self._located: dict[str, str] = {}

    @property
    def dry_run(self) -> bool:
        """False: this one writes."""
        return False

    def describe(self) -> str:
        """Where it writes, and what this host cannot enforce."""
        layout = self._writer.layout
        homes = ", ".join(f"{c}={h.path}" for c, h in sorted(layout.managed().items()))
        limits = "; ".join(layout.limitations())
        return f"cgroups {layout.mode} ({homes})" + (f"; limitations: {limits}" if limits else "")

    def cgroup_of(self, workload: Workload) -> str | None:
        """Its located cgroup, else the one corral creates for it."""
        if workload.id in self._located:
            return self._located[workload.id]
        if workload.cgroup is None and workload.container_id is None:
            return self._settings.created_path(workload)
        return None

    def _states(
        self, workloads: Sequence[Workload], placement: Placement
    ) -> tuple[tuple[DesiredState, ...], list[str]]:
        errors: list[str] = []
        usable: list[Workload] = []
        for workload in workloads:
            if workload.id not in placement.assignments:
                continue
            if workload.cgroup is not None or workload.container_id is not None:
                try:
                    self._located.update(self._writer.locate([workload]))
                except CorralError as err:
                    # Its container may not have started yet: the next reconcile retries.
                    self._located.pop(workload.id, None)
                    errors.append(f"{workload.id}: {err}")
                    continue
            usable.append(workload)
        states = desired_states(
            self._topology,
            usable,
            placement,
            settings=self._settings,
            locations={w.id: self._located[w.id] for w in usable if w.id in self._located},
        )
        return states, errors

    def _report(self, report: WriterReport, errors: list[str]) -> ApplyReport:
        return ApplyReport(
            written=len(report.writes),
            unchanged=report.unchanged,
            errors=tuple(errors) + tuple(str(f) for f in report.failures),
            lines=tuple(f"{w.path} <- {w.new}" for w in report.writes),
        )

    def apply(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Write every placed workload's desired state (idempotent, ordered)."""
        states, errors = self._states(workloads, placement)
        try:
            return self._report(self._writer.apply(states), errors)
        except CorralError as err:
            return ApplyReport(errors=(*errors, f"apply refused: {err}"))

    def repair(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Write back what drifted."""
        states, errors = self._states(workloads, placement)
        try:
            return self._report(self._writer.repair(states), errors)
        except CorralError as err:
            return ApplyReport(errors=(*errors, f"repair refused: {err}"))

    def drift(self, workloads: Sequence[Workload], placement: Placement) -> list[Drift]:
        """Every managed file that differs from the desired state."""
        states, _ = self._states(workloads, placement)
        report = self._writer.drift(states)
        return [
            Drift(d.name, d.path, d.expected, "" if d.actual is None else d.actual)
            for d in report.differences
        ]

    def release(self, workloads: Sequence[Workload]) -> ApplyReport:
        """Remove the cgroups corral created for removed workloads (runtime-owned cgroups
        are left to their runtimes)."""
        errors: list[str] = []
        for workload in workloads:
            self._located.pop(workload.id, None)
            if workload.cgroup is not None or workload.container_id is not None:
                continue
            try:
                self._writer.remove(self._settings.created_path(workload))
            except CorralError as err:
                errors.append(f"{workload.id}: {err}")
        return ApplyReport(errors=tuple(errors))


def make_enforcer(
    topology: Topology,
    *,
    dry_run: bool,
    cgroup_root: Path,
    proc_root: Path,
    parent: str,
) -> Enforcer:
    """The real enforcer when allowed and possible, else a dry run that says why."""
    if dry_run:
        return DryRunEnforcer(topology, cgroup_parent=parent, reason="--dry-run")
    layout = detect_cgroups(cgroup_root)
    reason = why_dry_run(layout, euid=os.geteuid())
    if reason is not None:
        return DryRunEnforcer(topology, cgroup_parent=parent, reason=reason)
    return CgroupEnforcer(
        topology, cgroup_root=cgroup_root, proc_root=proc_root, parent=parent, layout=layout
    )
