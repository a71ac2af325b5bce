"""The agent's `Enforcer` over corral's real cgroup writers (`corral.enforce`).

Also decides, at start, whether the agent may write cgroups at all: when it is not root or
the cpuset hierarchy is not writable, the agent runs a dry run and says why.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from corral.agent.enforcer import ApplyReport, Drift, DryRunEnforcer, Enforcer
from corral.enforce.desired import DesiredState, EnforceSettings, Kind, desired_states
from corral.enforce.detect import CgroupLayout, detect_cgroups
from corral.enforce.enforcer import Enforcer as CgroupWriter
from corral.enforce.marker import OwnerMark
from corral.enforce.report import ApplyReport as WriterReport
from corral.errors import CorralError, InputError
from corral.placement.assignment import Placement
from corral.placement.workload import Workload
from corral.topology.model import Topology

log = logging.getLogger(__name__)


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
        controlled_be_files: frozenset[str] = frozenset(),
    ) -> None:
        self._topology = topology
        self._settings = EnforceSettings(parent=parent, controlled_be_files=controlled_be_files)
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

    def claim(self, mark: OwnerMark) -> None:
        """Mark corral's parent cgroup as this agent's before anything is written: refuses
        (`TreeOwnedError`) a tree another live agent or ``corral apply`` holds, and says
        when it takes over the tree of a previous owner that is gone."""
        stale = self._writer.claim(mark)
        if stale is not None:
            log.warning("agent.took_over_tree", extra={"previous": stale.describe()})

    def cgroup_of(self, workload: Workload) -> str | None:
        """Its located cgroup, else the one corral creates for it."""
        if workload.id in self._located:
            return self._located[workload.id]
        if workload.cgroup is None and workload.container_id is None:
            return self._settings.created_path(workload)
        return None

    def _states(
        self, workloads: Sequence[Workload], placement: Placement
    ) -> tuple[tuple[DesiredState, ...], list[tuple[str, str]]]:
        errors: list[tuple[str, str]] = []
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
                    errors.append((workload.id, str(err)))
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

    def _report(
        self,
        states: Sequence[DesiredState],
        report: WriterReport | None,
        errors: list[tuple[str, str]],
        refused: str | None = None,
    ) -> ApplyReport:
        """The agent's report: totals, and each workload's own refusals (a failed write
        belongs to the workload whose cgroup holds the file; ``refused`` is an error of the
        whole apply, which then speaks for every workload)."""
        leaves = [s for s in states if s.kind is Kind.WORKLOAD]
        by_workload: dict[str, list[str]] = {}
        for wid, message in errors:
            by_workload.setdefault(wid, []).append(message)
        failures = () if report is None else report.failures
        for failure in failures:
            owner = _owner_of(failure.path, leaves)
            if owner is not None:
                by_workload.setdefault(owner, []).append(str(failure))
        if refused is not None:
            for state in leaves:
                by_workload.setdefault(state.name, []).append(refused)
        lines = [f"{w.path} <- {w.new}" for w in report.writes] if report else []
        return ApplyReport(
            written=0 if report is None else len(report.writes),
            unchanged=0 if report is None else report.unchanged,
            errors=tuple(f"{w}: {m}" for w, m in errors)
            + tuple(str(f) for f in failures)
            + ((refused,) if refused else ()),
            lines=tuple(lines),
            covered=frozenset(s.name for s in leaves) | {w for w, _ in errors},
            refused={w: tuple(m) for w, m in by_workload.items()},
        )

    def apply(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Write every placed workload's desired state (idempotent, ordered)."""
        states, errors = self._states(workloads, placement)
        try:
            return self._report(states, self._writer.apply(states), errors)
        except CorralError as err:
            return self._report(states, None, errors, refused=f"apply refused: {err}")

    def repair(self, workloads: Sequence[Workload], placement: Placement) -> ApplyReport:
        """Write back what drifted."""
        states, errors = self._states(workloads, placement)
        try:
            return self._report(states, self._writer.repair(states), errors)
        except CorralError as err:
            return self._report(states, None, errors, refused=f"repair refused: {err}")

    def drift(self, workloads: Sequence[Workload], placement: Placement) -> list[Drift]:
        """Every managed file that differs from the desired state, and every explicit or
        container cgroup that can no longer be found (gone under the agent)."""
        states, errors = self._states(workloads, placement)
        report = self._writer.drift(states)
        missing = [Drift(wid, f"cgroup of {wid}", "exists", message) for wid, message in errors]
        return missing + [
            Drift(d.name, d.path, d.expected, "" if d.actual is None else d.actual)
            for d in report.differences
        ]

    def members(self, workload: Workload) -> frozenset[int]:
        """The processes in the workload's cgroup (over every hierarchy); empty if unknown."""
        cgroup = self.cgroup_of(workload)
        return frozenset() if cgroup is None else self._writer.members(cgroup)

    def release(self, workloads: Sequence[Workload]) -> ApplyReport:
        """Remove the cgroups corral created for removed workloads (runtime-owned cgroups
        are left to their runtimes)."""
        errors: list[tuple[str, str]] = []
        for workload in workloads:
            self._located.pop(workload.id, None)
            if workload.cgroup is not None or workload.container_id is not None:
                continue
            try:
                self._writer.remove(self._settings.created_path(workload))
            except CorralError as err:
                errors.append((workload.id, str(err)))
        return ApplyReport(
            errors=tuple(f"{w}: {m}" for w, m in errors),
            refused={w: (m,) for w, m in errors},
        )


def make_enforcer(
    topology: Topology,
    *,
    dry_run: bool | None,
    cgroup_root: Path,
    proc_root: Path,
    parent: str,
    controlled_be_files: frozenset[str] = frozenset(),
) -> Enforcer:
    """The enforcer ``dry_run`` asks for: True a dry run; False (``--enforce``) the real
    enforcer, or `InputError` with the reason when this host does not allow it; None the
    real enforcer when possible, else a dry run that says why. ``controlled_be_files``
    are the BE box files a colocation controller owns (the enforcer leaves them alone)."""
    if dry_run:
        return DryRunEnforcer(topology, cgroup_parent=parent, reason="--dry-run")
    layout = detect_cgroups(cgroup_root)
    reason = why_dry_run(layout, euid=os.geteuid())
    if reason is not None:
        if dry_run is False:
            raise InputError(
                "enforce",
                f"cannot enforce: {reason}",
                f"run as root with the cgroup hierarchies mounted under {cgroup_root} "
                "(--cgroup-root), or drop --enforce to fall back to a dry run",
            )
        return DryRunEnforcer(topology, cgroup_parent=parent, reason=reason)
    return CgroupEnforcer(
        topology,
        cgroup_root=cgroup_root,
        proc_root=proc_root,
        parent=parent,
        layout=layout,
        controlled_be_files=controlled_be_files,
    )


def _owner_of(path: str, leaves: Sequence[DesiredState]) -> str | None:
    """The workload whose cgroup directory holds ``path`` (the deepest match)."""
    best: DesiredState | None = None
    for state in leaves:
        marker = f"/{state.cgroup}"
        inside = path.endswith(marker) or f"{marker}/" in path
        if inside and (best is None or len(state.cgroup) > len(best.cgroup)):
            best = state
    return None if best is None else best.name
