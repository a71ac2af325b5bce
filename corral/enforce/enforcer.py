"""The Enforcer: write desired states into cgroups, read them back, repair drift.

One object per host, created with the cgroup root so tests point it at a tree::

    enforcer = Enforcer(cgroup_root="/sys/fs/cgroup")
    locations = enforcer.locate(workloads)           # cgroup: / container_id: entries
    states = desired_states(topology, workloads, placement, locations=locations)
    report = enforcer.apply(states)                  # idempotent; ApplyReport
    drift = enforcer.drift(states)                   # DriftReport
    enforcer.repair(states)                          # apply again: writes only what drifted

`apply` proceeds in phases, each safe to interrupt:

1. validate every state (CPUs and memory nodes inside the host's root cpuset): bad input
   raises `InputError` before anything is touched;
2. snapshot the cpusets and plan their writes (`corral.enforce.order`); a plan that cannot
   be executed safely raises `EnforcementError` before anything is touched;
3. create the directories of corral-owned cgroups (parents first) in every managed
   hierarchy and in a separate CPU-accounting hierarchy (v1 ``cpuacct`` mounted on its own,
   as on this project's VM: `CgroupLayout.separate_accounting`), and on v2 enable the
   controllers in every ancestor's ``cgroup.subtree_control``;
4. execute the memory-node plan, then the CPU plan; the first refused write stops that
   plan (later writes depend on it), leaving a valid tree that the next apply finishes;
5. write the cpu and memory files of every cgroup, parents first, skipping files that
   already hold their value; each refusal is recorded with file and errno, and the rest go on;
6. join the hierarchies: a process found in a corral-owned cgroup in one hierarchy corral
   creates it in (someone wrote its pid into ``cpuset/<cgroup>/cgroup.procs`` only, or the
   cgroup was removed and recreated in one hierarchy) is moved into the same cgroup of the
   others, the separate accounting hierarchy included, so its limits apply and its CPU
   time is counted (`join_accounting`). Runtime-owned cgroups are left to their runtime.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from corral.enforce.cgroupfs import (
    CgroupFsError,
    cgroup_dir,
    child_dirs,
    file_path,
    list_pids,
    make_dir,
    read_file,
    write_file,
)
from corral.enforce.desired import DesiredState, EnforceSettings, Kind
from corral.enforce.detect import CgroupLayout, Hierarchy, Version, detect_cgroups
from corral.enforce.files import FileSetting, canonical, cpu_files, cpuset_files, memory_files
from corral.enforce.hygiene import DyingReport, RemoveReport, dying_cgroups, remove_cgroup
from corral.enforce.locate import explicit_path, locate_container
from corral.enforce.marker import OwnerMark, check_owner, write_mark
from corral.enforce.order import PlanError, SetNode, SetWrite, plan_set_writes
from corral.enforce.report import ApplyReport, Difference, DriftReport, Failure, Write
from corral.errors import EnforcementError, InputError
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet

log = logging.getLogger(__name__)

_SET_FILES = {"cpus": "cpuset.cpus", "mems": "cpuset.mems"}


class Enforcer:
    """Writes `DesiredState` values into the cgroup hierarchies under ``cgroup_root``."""

    def __init__(
        self,
        *,
        cgroup_root: Path | str = "/sys/fs/cgroup",
        proc_root: Path | str = "/proc",
        settings: EnforceSettings | None = None,
        layout: CgroupLayout | None = None,
    ) -> None:
        self.cgroup_root = Path(cgroup_root)
        self.proc_root = Path(proc_root)
        self.settings = settings or EnforceSettings()
        self.layout = layout or detect_cgroups(self.cgroup_root)
        self._v1_files: dict[tuple[Path, str], bool] = {}

    # --- locating ---------------------------------------------------------------------
    def locate(self, workloads: Iterable[Workload]) -> dict[str, str]:
        """Cgroup paths of workloads that name one (``cgroup``) or a container id.

        Raises `InputError` naming the workload when a path does not exist or an id is
        not found or ambiguous.
        """
        search = self._search_hierarchy()
        found: dict[str, str] = {}
        for workload in workloads:
            where = f"workloads.{workload.id}"
            if workload.cgroup is not None:
                path = explicit_path(workload.cgroup, field=f"{where}.cgroup")
                if search is not None and not (search.path / path).is_dir():
                    raise InputError(
                        f"{where}.cgroup",
                        f"{path} does not exist under {search.path}",
                        "create it first or drop 'cgroup:' to let corral create one",
                    )
                found[workload.id] = path
            elif workload.container_id is not None:
                if search is None:
                    raise InputError(f"{where}.container_id", "no cgroup hierarchy to search")
                found[workload.id] = locate_container(
                    search.path, workload.container_id, field=f"{where}.container_id"
                )
        return found

    def _search_hierarchy(self) -> Hierarchy | None:
        for controller in ("cpuset", "memory", "cpu"):
            home = self.layout.hierarchy_of(controller)
            if home is not None:
                return home
        return None

    # --- apply ------------------------------------------------------------------------
    def apply(self, states: Sequence[DesiredState], *, dry_run: bool = False) -> ApplyReport:
        """Bring every cgroup of ``states`` to its desired state; see the module doc.

        Returns an `ApplyReport`; a dry run plans and reports without writing.
        """
        ordered = self._validated(states)
        homes = self.layout.managed()
        skipped = [
            f"{c}: controller not mounted" for c in ("cpuset", "cpu", "memory") if c not in homes
        ]
        set_plans = self._plan_sets(ordered, homes.get("cpuset"))
        writes: list[Write] = []
        failures: list[Failure] = []
        created: list[str] = []
        unchanged = 0
        missing = self._prepare_dirs(ordered, homes, dry_run, created, failures)
        ready = [s for s in ordered if s.cgroup not in missing]
        if not dry_run and any(h.version is Version.V2 for h in homes.values()):
            failures.extend(self._enable_controllers(ready, homes))
        cpuset_home = homes.get("cpuset")
        if cpuset_home is not None:
            written: dict[str, str] = {}  # a file may be written twice (release, grant)
            for key, (plan, kept) in set_plans.items():
                unchanged += kept
                for step in (w for w in plan if w.cgroup not in missing):
                    path = file_path(cpuset_home.path, step.cgroup, _SET_FILES[key])
                    old = written[path] if path in written else _read_canonical(path, key)
                    written[path] = str(step.value)
                    if not dry_run:
                        try:
                            write_file(path, str(step.value))
                        except CgroupFsError as err:
                            failures.append(err.failure)
                            log.warning("enforce.write_refused", extra={"failure": str(err)})
                            break  # later steps assume this one happened
                    writes.append(Write(path, old, str(step.value), str(step.step)))
        for state in ready:
            for setting, home in self._other_settings(state, homes):
                path = file_path(home.path, state.cgroup, setting.file)
                current = _read_raw(path, failures)
                if current is not None and canonical(setting.file, current) == setting.expected:
                    unchanged += 1
                    continue
                old = None if current is None else canonical(setting.file, current)
                if not dry_run:
                    try:
                        write_file(path, setting.value)
                    except CgroupFsError as err:
                        failures.append(err.failure)
                        log.warning("enforce.write_refused", extra={"failure": str(err)})
                        continue
                writes.append(Write(path, old, setting.value))
        self._join(ready, dry_run, writes, failures)
        report = ApplyReport(
            created=tuple(created),
            writes=tuple(writes),
            unchanged=unchanged,
            failures=tuple(failures),
            skipped=tuple(skipped),
            dry_run=dry_run,
        )
        log.info(
            "enforce.applied",
            extra={
                "writes": len(writes),
                "unchanged": unchanged,
                "failures": len(failures),
                "dry_run": dry_run,
            },
        )
        return report

    def repair(self, states: Sequence[DesiredState]) -> ApplyReport:
        """Write back whatever drifted (apply is idempotent: unchanged files are skipped)."""
        return self.apply(states)

    def _validated(self, states: Sequence[DesiredState]) -> list[DesiredState]:
        seen: dict[str, str] = {}
        for state in states:
            if state.cgroup in seen:
                raise InputError(
                    f"workloads.{state.name}",
                    f"cgroup {state.cgroup} is also used by {seen[state.cgroup]}",
                    "give every workload its own cgroup or container",
                )
            seen[state.cgroup] = state.name
        cpuset = self.layout.hierarchy_of("cpuset")
        if cpuset is not None:
            host_cpus, host_mems = self._root_sets(cpuset)
            for state in states:
                if state.cpus is not None and host_cpus is not None and not state.cpus <= host_cpus:
                    raise InputError(
                        f"workloads.{state.name}",
                        f"CPUs {state.cpus} are not all on this host (root cpuset {host_cpus})",
                        "place with --topology sysfs, or a topology of this host",
                    )
                if (
                    state.mems is not None
                    and host_mems is not None
                    and not set(state.mems) <= set(host_mems)
                ):
                    raise InputError(
                        f"workloads.{state.name}",
                        f"memory nodes {state.mems_text()} are not all on this host "
                        f"(root cpuset.mems {host_mems})",
                        "place with --topology sysfs, or a topology of this host",
                    )
        return sorted(states, key=lambda s: (s.cgroup.count("/"), s.cgroup))

    def _root_sets(self, cpuset: Hierarchy) -> tuple[CpuSet | None, CpuSet | None]:
        names = (
            ("cpuset.effective_cpus", "cpuset.effective_mems")
            if cpuset.version is Version.V1
            else ("cpuset.cpus.effective", "cpuset.mems.effective")
        )
        out: list[CpuSet | None] = []
        for name, fallback in zip(names, ("cpuset.cpus", "cpuset.mems"), strict=True):
            text = read_file(cpuset.path / name)
            if text is None:
                text = read_file(cpuset.path / fallback)
            out.append(None if text is None or not text.strip() else CpuSet.parse(text))
        return out[0], out[1]

    # --- cpusets ----------------------------------------------------------------------
    def _plan_sets(
        self, states: Sequence[DesiredState], cpuset: Hierarchy | None
    ) -> dict[str, tuple[tuple[SetWrite, ...], int]]:
        """Per kind ("mems", "cpus"): the ordered writes and how many targets already hold."""
        if cpuset is None:
            return {}
        plans: dict[str, tuple[tuple[SetWrite, ...], int]] = {}
        for key in ("mems", "cpus"):
            nodes = self._set_nodes(states, cpuset, key)
            try:
                plan = plan_set_writes(nodes)
            except PlanError as err:
                raise EnforcementError(f"cpuset.{key}: {err}") from err
            kept = sum(1 for n in nodes.values() if n.target is not None and n.current == n.target)
            plans[key] = (plan, kept)
        return plans

    def _set_nodes(
        self, states: Sequence[DesiredState], cpuset: Hierarchy, key: str
    ) -> dict[str, SetNode]:
        file = _SET_FILES[key]
        nodes: dict[str, SetNode] = {}

        def current(cgroup: str) -> CpuSet:
            text = read_file(file_path(cpuset.path, cgroup, file))
            return CpuSet() if text is None else CpuSet.parse(text)

        def tasks(cgroup: str) -> bool:
            return bool(list_pids(cgroup_dir(cpuset.path, cgroup)))

        for state in states:
            target = (
                state.cpus
                if key == "cpus"
                else (None if state.mems is None else CpuSet(state.mems))
            )
            if target is None or file in state.foreign_files:
                continue
            now = current(state.cgroup)
            nodes[state.cgroup] = SetNode(
                current=now,
                target=target,
                exclusive=state.exclusive and key == "cpus",
                # Tasks only matter to a cgroup whose set changes (it may not be emptied).
                has_tasks=now != target and tasks(state.cgroup),
            )
        for state in states:
            parts = state.cgroup.split("/")
            for depth in range(1, len(parts)):
                ancestor = "/".join(parts[:depth])
                if ancestor not in nodes:
                    nodes[ancestor] = SetNode(current=current(ancestor), target=None)
        # Children corral no longer wants under its own parents still count for the kernel:
        # keep them inside the parent's new set so the parent can shrink.
        owned = [s for s in states if s.kind in {Kind.PARENT, Kind.BE_BOX} and s.cgroup in nodes]
        held = CpuSet().union(
            *(n.target for n in nodes.values() if n.exclusive and n.target is not None)
        )
        for parent in owned:
            self._add_stale(nodes, parent.cgroup, cpuset, file, held)
        return nodes

    def _add_stale(
        self,
        nodes: dict[str, SetNode],
        parent: str,
        cpuset: Hierarchy,
        file: str,
        held: CpuSet,
    ) -> None:
        """Add unwanted children of ``parent``: they keep what they can of their set inside
        the parent's new one, minus CPUs now held exclusively; one without tasks may end up
        empty, one with tasks moves to the parent's non-exclusive CPUs."""
        parent_target = nodes[parent].target
        if parent_target is None:
            return
        for name in child_dirs(cgroup_dir(cpuset.path, parent)):
            child = f"{parent}/{name}"
            if child in nodes:
                continue
            text = read_file(file_path(cpuset.path, child, file))
            now = CpuSet() if text is None else CpuSet.parse(text)
            busy = bool(list_pids(cgroup_dir(cpuset.path, child)))
            target = (now & parent_target) - held
            if not target and busy:
                target = (parent_target - held) or (now & parent_target) or parent_target
            nodes[child] = SetNode(current=now, target=target, has_tasks=busy)
            self._add_stale(nodes, child, cpuset, file, held)

    # --- directories ------------------------------------------------------------------
    def _prepare_dirs(
        self,
        states: Sequence[DesiredState],
        homes: Mapping[str, Hierarchy],
        dry_run: bool,
        created: list[str],
        failures: list[Failure],
    ) -> set[str]:
        """Create owned cgroups (parents first); return the cgroups that are unusable.

        A cgroup that cannot be made in the separate accounting hierarchy is reported but
        still enforced: only its usage goes unsampled (and the sampler says so)."""
        missing: set[str] = set()
        for hierarchy in sorted({h.path for h in homes.values()}):
            for state in states:
                if state.cgroup in missing:
                    continue
                directory = cgroup_dir(hierarchy, state.cgroup)
                if os.path.isdir(directory):
                    continue
                if not state.create:
                    failures.append(
                        Failure(str(directory), "", 2, "cgroup of a located workload is gone")
                    )
                    missing.add(state.cgroup)
                    continue
                if not self._make_path(hierarchy, state.cgroup, dry_run, created, failures):
                    missing.add(state.cgroup)
        accounting = self.layout.separate_accounting()
        if accounting is not None:
            for state in states:
                if state.create and state.cgroup not in missing:
                    self._make_path(accounting.path, state.cgroup, dry_run, created, failures)
        return missing

    @staticmethod
    def _make_path(
        hierarchy: Path, cgroup: str, dry_run: bool, created: list[str], failures: list[Failure]
    ) -> bool:
        """Create ``cgroup`` and its missing ancestors in ``hierarchy``; False on refusal."""
        parts = cgroup.split("/")
        for depth in range(1, len(parts) + 1):
            step = cgroup_dir(hierarchy, "/".join(parts[:depth]))
            if step.is_dir() or str(step) in created:
                continue
            if dry_run:
                created.append(str(step))
                continue
            try:
                if make_dir(step):
                    created.append(str(step))
            except CgroupFsError as err:
                failures.append(err.failure)
                return False
        return True

    def _enable_controllers(
        self, states: Sequence[DesiredState], homes: Mapping[str, Hierarchy]
    ) -> list[Failure]:
        """On v2, make every ancestor delegate the managed controllers to its children."""
        failures: list[Failure] = []
        unified = self.layout.unified
        if unified is None:
            return failures
        wanted = sorted(c for c, h in homes.items() if h.version is Version.V2)
        done: set[str] = set()
        for state in states:
            parts = state.cgroup.split("/")
            for depth in range(len(parts)):
                ancestor = "/".join(parts[:depth])
                if ancestor in done:
                    continue
                done.add(ancestor)
                control = cgroup_dir(unified.path, ancestor) / "cgroup.subtree_control"
                present = {c.lstrip("+") for c in (read_file(control) or "").split()}
                missing = [c for c in wanted if c not in present]
                if not missing:
                    continue
                try:
                    write_file(control, " ".join(f"+{c}" for c in missing))
                except CgroupFsError as err:
                    failures.append(err.failure)
        return failures

    # --- cpu and memory files ---------------------------------------------------------
    def _other_settings(
        self, state: DesiredState, homes: Mapping[str, Hierarchy]
    ) -> list[tuple[FileSetting, Hierarchy]]:
        """The cpu and memory files of ``state``, in write order, with their hierarchy."""
        out: list[tuple[FileSetting, Hierarchy]] = []
        cpu = homes.get("cpu")
        if cpu is not None:
            has_idle = self._has_file(cpu, state.cgroup, "cpu.idle")
            for setting in cpu_files(
                state, cpu.version, has_idle=has_idle, conversion=self.settings.conversion
            ):
                out.append((setting, cpu))
        memory = homes.get("memory")
        if memory is not None:
            out.extend((setting, memory) for setting in memory_files(state, memory.version))
        return [(s, h) for s, h in out if s.file not in state.foreign_files]

    def _has_file(self, home: Hierarchy, cgroup: str, name: str) -> bool:
        """Whether the cgroup offers ``name``; for a cgroup not created yet (dry run), its
        nearest existing ancestor answers (v1 roots carry the cpu files, v2 roots do not).

        On v1 every cgroup of a hierarchy has the same files as its root, so the root
        answers for all (one stat per apply instead of one per cgroup)."""
        if home.version is Version.V1:
            key = (home.path, name)
            if key not in self._v1_files:
                self._v1_files[key] = (home.path / name).exists()
            return self._v1_files[key]
        parts = cgroup.split("/")
        for depth in range(len(parts), -1, -1):
            directory = cgroup_dir(home.path, "/".join(parts[:depth]))
            if directory.is_dir():
                return (directory / name).exists()
        return False

    # --- read-back --------------------------------------------------------------------
    def drift(self, states: Sequence[DesiredState]) -> DriftReport:
        """Read back every managed file and list those that differ from ``states``."""
        homes = self.layout.managed()
        checked = 0
        differences: list[Difference] = []
        failures: list[Failure] = []
        for state in sorted(states, key=lambda s: (s.cgroup.count("/"), s.cgroup)):
            settings: list[tuple[FileSetting, Hierarchy]] = []
            cpuset = homes.get("cpuset")
            if cpuset is not None:
                settings.extend(
                    (s, cpuset) for s in cpuset_files(state) if s.file not in state.foreign_files
                )
            settings.extend(self._other_settings(state, homes))
            absent: set[Path] = set()
            for setting, home in settings:
                if home.path in absent:
                    continue
                checked += 1
                path = file_path(home.path, state.cgroup, setting.file)
                raw = _read_raw(path, failures)
                if raw is None and not os.path.isdir(cgroup_dir(home.path, state.cgroup)):
                    absent.add(home.path)
                    directory = str(cgroup_dir(home.path, state.cgroup))
                    differences.append(Difference(state.name, directory, "exists", None))
                    continue
                actual = None if raw is None else canonical(setting.file, raw)
                if actual != setting.expected:
                    differences.append(Difference(state.name, path, setting.expected, actual))
            if state.create and not absent and len(self.layout.owned()) > 1:
                checked += 1
                differences.extend(self._membership_drift(state, failures))
        log.info("enforce.drift", extra={"checked": checked, "differences": len(differences)})
        return DriftReport(
            checked=checked, differences=tuple(differences), failures=tuple(failures)
        )

    def _membership_drift(self, state: DesiredState, failures: list[Failure]) -> list[Difference]:
        """A corral-owned cgroup missing from the separate accounting hierarchy, or
        processes of it absent from it in one of the hierarchies corral creates it in
        (both repaired by `apply`)."""
        out: list[Difference] = []
        accounting = self.layout.separate_accounting()
        if accounting is not None:
            directory = cgroup_dir(accounting.path, state.cgroup)
            if not directory.is_dir():
                out.append(Difference(state.name, str(directory), "exists", None))
        homes = self.layout.owned()
        present = {h.path: _pids(cgroup_dir(h.path, state.cgroup), failures) for h in homes}
        members = set().union(*present.values())
        for home in homes:
            directory = cgroup_dir(home.path, state.cgroup)
            missing = sorted(members - set(present[home.path]))
            if missing and directory.is_dir():
                out.append(
                    Difference(
                        state.name,
                        file_path(home.path, state.cgroup, "cgroup.procs"),
                        "holds pids " + " ".join(map(str, missing)),
                        " ".join(map(str, present[home.path])) or "no pids",
                    )
                )
        return out

    # --- ownership -----------------------------------------------------------------------
    def _parent_dir(self) -> Path | None:
        home = self.layout.hierarchy_of("cpuset") or self._search_hierarchy()
        return None if home is None else cgroup_dir(home.path, self.settings.parent)

    def check_owner(self, me: OwnerMark) -> OwnerMark | None:
        """Refuse (`TreeOwnedError`) when another live process owns corral's parent; returns
        the mark of a dead previous owner, if any."""
        directory = self._parent_dir()
        if directory is None or not directory.is_dir():
            return None
        return check_owner(directory, me, self.proc_root)

    def claim(self, me: OwnerMark) -> OwnerMark | None:
        """Make corral's parent (in the cpuset hierarchy) carry ``me`` as its owner, creating
        it if needed; refuses a tree another live process owns (`TreeOwnedError`) and
        returns the stale mark it took over."""
        directory = self._parent_dir()
        if directory is None:
            return None
        try:
            make_dir(directory)
        except CgroupFsError as err:
            raise EnforcementError(f"{directory}: cannot create: {err}") from err
        stale = check_owner(directory, me, self.proc_root)
        write_mark(directory, me)
        return stale

    # --- processes and removal ----------------------------------------------------------
    def attach(self, cgroup: str, pid: int) -> None:
        """Move process ``pid`` into ``cgroup`` in every managed hierarchy (cpuset first,
        since v1 refuses tasks in a cpuset without CPUs), then in a separate accounting
        hierarchy so its CPU time is counted. Raises `CgroupFsError`."""
        homes = self.layout.managed()
        order = [homes[c] for c in ("cpuset", "memory", "cpu") if c in homes]
        accounting = self.layout.separate_accounting()
        if accounting is not None:
            order.append(accounting)
        done: set[Path] = set()
        for home in order:
            if home.path in done:
                continue
            done.add(home.path)
            write_file(cgroup_dir(home.path, cgroup) / "cgroup.procs", str(pid))

    def join_accounting(
        self, states: Sequence[DesiredState], *, dry_run: bool = False
    ) -> ApplyReport:
        """Put every process of a corral-owned cgroup into that cgroup in every hierarchy
        corral creates it in (see step 6 of the module doc): a process written into one
        hierarchy only (its cpuset, say), a separate accounting hierarchy the process never
        joined, or a cgroup recreated in one hierarchy after it was removed there.

        Returns the moves as writes (``step="join"``) and the refusals; a process that
        exits before it is moved is not a failure."""
        writes: list[Write] = []
        failures: list[Failure] = []
        self._join(states, dry_run, writes, failures)
        return ApplyReport(writes=tuple(writes), failures=tuple(failures), dry_run=dry_run)

    def members(self, cgroup: str) -> frozenset[int]:
        """Every process of ``cgroup``, over all the hierarchies corral creates it in."""
        failures: list[Failure] = []
        pids: set[int] = set()
        for home in self.layout.owned():
            pids.update(_pids(cgroup_dir(home.path, cgroup), failures))
        return frozenset(pids)

    def _join(
        self,
        states: Sequence[DesiredState],
        dry_run: bool,
        writes: list[Write],
        failures: list[Failure],
    ) -> None:
        homes = self.layout.owned()
        if len(homes) < 2:
            return  # one hierarchy (pure v2): a process is in the cgroup or not
        for state in states:
            if not state.create:
                continue  # a runtime's cgroup: its runtime decides where its processes go
            present = {h.path: _pids(cgroup_dir(h.path, state.cgroup), failures) for h in homes}
            members = set().union(*present.values())
            for home in homes:
                if not cgroup_dir(home.path, state.cgroup).is_dir():
                    continue  # nothing to move into; the next apply creates it
                for pid in sorted(members - set(present[home.path])):
                    procs = file_path(home.path, state.cgroup, "cgroup.procs")
                    if not dry_run:
                        try:
                            write_file(procs, str(pid))
                        except CgroupFsError as err:
                            if err.failure.errno != errno.ESRCH:  # ESRCH: it exited meanwhile
                                failures.append(err.failure)
                                log.warning("enforce.join_refused", extra={"failure": str(err)})
                            continue
                    writes.append(Write(procs, None, str(pid), "join"))

    def stale(self, states: Sequence[DesiredState]) -> tuple[str, ...]:
        """Cgroups under corral's parent (and its BE box) that no state wants any more."""
        wanted = {s.cgroup for s in states}
        home = self._search_hierarchy()
        if home is None:
            return ()
        out: list[str] = []
        for parent in (self.settings.parent, self.settings.be_box_path):
            for name in child_dirs(cgroup_dir(home.path, parent)):
                child = f"{parent}/{name}"
                if child not in wanted and child != self.settings.be_box_path:
                    out.append(child)
        return tuple(out)

    def remove(self, cgroup: str, *, reclaim_first: bool = True) -> RemoveReport:
        """Reclaim page cache, then remove a corral-owned cgroup from every hierarchy.

        Refuses (`InputError`) cgroups outside corral's parent: those belong to a runtime.
        """
        path = explicit_path(cgroup)
        if not path.startswith(self.settings.parent + "/"):
            raise InputError(
                "cgroup",
                f"{path} is not under corral's parent {self.settings.parent}",
                "corral only removes cgroups it created",
            )
        return remove_cgroup(self.layout, path, reclaim_first=reclaim_first)

    def prune(self, states: Sequence[DesiredState]) -> tuple[RemoveReport, ...]:
        """Remove every stale cgroup that holds no task (those with tasks are left alone)."""
        reports: list[RemoveReport] = []
        for cgroup in self.stale(states):
            try:
                reports.append(self.remove(cgroup))
            except EnforcementError as err:
                log.info("enforce.prune_skipped", extra={"cgroup": cgroup, "reason": str(err)})
        return tuple(reports)

    def dying(self) -> DyingReport:
        """Dying memory cgroups on the host (see `corral.enforce.hygiene.DyingReport`)."""
        return dying_cgroups(self.layout, self.proc_root)


def _pids(directory: Path, failures: list[Failure]) -> tuple[int, ...]:
    """The pids of a cgroup directory (none when it vanished); a refused read is recorded
    in ``failures`` and counts as no pids."""
    try:
        return list_pids(directory)
    except CgroupFsError as err:
        failures.append(err.failure)
        return ()


def _read_raw(path: Path | str, failures: list[Failure]) -> str | None:
    try:
        return read_file(path)
    except CgroupFsError as err:
        failures.append(err.failure)
        return None


def _read_canonical(path: str, key: str) -> str | None:
    text = read_file(path)
    return None if text is None else canonical(_SET_FILES[key], text)
