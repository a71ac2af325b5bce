"""``corral apply`` (place and enforce in one step) and ``corral drift`` (read back, repair)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from corral.commands.common import clear_errors, console, print_json, topology_from
from corral.enforce.desired import DesiredState, EnforceSettings, desired_states
from corral.enforce.enforcer import Enforcer
from corral.enforce.marker import mark_for
from corral.enforce.report import ApplyReport, DriftReport
from corral.errors import InputError
from corral.placement.allocate import Allocator, allocate
from corral.placement.assignment import Placement
from corral.placement.workload import load_workloads, parse_bytes

WorkloadsOpt = Annotated[
    Path,
    typer.Option(
        "--workloads",
        "-w",
        help="Workload YAML/JSON; entries may name 'cgroup:' or 'container_id:'.",
    ),
]
TopologyOpt = Annotated[
    str,
    typer.Option("--topology", "-t", help="'sysfs' (this host, default), a preset or a file."),
]
AllocatorOpt = Annotated[Allocator, typer.Option(help="Which allocator places the workloads.")]
RootOpt = Annotated[
    Path, typer.Option("--cgroup-root", help="Where the cgroup hierarchies are mounted.")
]
ParentOpt = Annotated[
    str, typer.Option("--parent", help="corral's own parent cgroup (relative to each root).")
]
BeMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--be-memory-max",
        help="Memory cap of the whole BE box (e.g. 8Gi); default: the sum of BE limits.",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


@dataclass(frozen=True)
class _Prepared:
    enforcer: Enforcer
    placement: Placement
    states: tuple[DesiredState, ...]


def _prepare(
    *,
    workloads: Path,
    topology: str,
    allocator: Allocator,
    cgroup_root: Path,
    parent: str,
    be_memory_max: str | None,
) -> _Prepared:
    try:
        be_max = None if be_memory_max is None else parse_bytes(be_memory_max)
    except ValueError as err:
        raise InputError("--be-memory-max", str(err), "write bytes or e.g. 8Gi") from err
    settings = EnforceSettings(parent=parent, be_memory_max=be_max)
    topo = topology_from(topology)
    items = load_workloads(workloads)
    placement = allocate(topo, items, allocator=allocator)
    enforcer = Enforcer(cgroup_root=cgroup_root, settings=settings)
    locations = enforcer.locate(items)
    states = desired_states(topo, items, placement, settings=settings, locations=locations)
    return _Prepared(enforcer, placement, states)


def apply(  # noqa: PLR0917 - typer maps parameters to options
    workloads: WorkloadsOpt,
    topology: TopologyOpt = "sysfs",
    allocator: AllocatorOpt = Allocator.GREEDY,
    cgroup_root: RootOpt = Path("/sys/fs/cgroup"),
    parent: ParentOpt = "corral",
    be_memory_max: BeMemoryOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Plan and print the writes without making them.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Place the workloads and enforce the placement in their cgroups; print what was written.

    Exit code 0 when everything was placed and written, 1 when a workload was refused or a
    write failed (the report names the file and errno), 2 for bad input.
    """
    with clear_errors():
        prepared = _prepare(
            workloads=workloads,
            topology=topology,
            allocator=allocator,
            cgroup_root=cgroup_root,
            parent=parent,
            be_memory_max=be_memory_max,
        )
        if not dry_run:
            prepared.enforcer.check_owner(mark_for("apply", ""))
        report = prepared.enforcer.apply(prepared.states, dry_run=dry_run)
    layout = prepared.enforcer.layout
    refusals = prepared.placement.refusals
    if as_json:
        print_json(
            {
                "layout": layout.describe(),
                "placement": prepared.placement.to_json(),
                "states": [s.to_json() for s in prepared.states],
                "report": report.to_json(),
            }
        )
    else:
        out = console()
        out.print(f"cgroups: {layout.mode} under {layout.root}")
        for note in layout.limitations():
            out.print(f"[yellow]cannot[/]: {note}")
        for refusal in refusals.values():
            out.print(f"[red]refused[/] {refusal.workload_id}: {refusal.reason}")
        _print_apply(report, layout.root)
    if refusals or not report.ok:
        raise typer.Exit(1)


def drift(  # noqa: PLR0917 - typer maps parameters to options
    workloads: WorkloadsOpt,
    topology: TopologyOpt = "sysfs",
    allocator: AllocatorOpt = Allocator.GREEDY,
    cgroup_root: RootOpt = Path("/sys/fs/cgroup"),
    parent: ParentOpt = "corral",
    be_memory_max: BeMemoryOpt = None,
    repair: Annotated[
        bool, typer.Option("--repair", help="Write back every file that drifted.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read back every file corral manages for these workloads and show the differences.

    The desired state is recomputed from the workload file with the same allocator (the
    greedy allocator is deterministic). Exit code 1 when something drifted and was not
    repaired.
    """
    with clear_errors():
        prepared = _prepare(
            workloads=workloads,
            topology=topology,
            allocator=allocator,
            cgroup_root=cgroup_root,
            parent=parent,
            be_memory_max=be_memory_max,
        )
        found = prepared.enforcer.drift(prepared.states)
        repaired = prepared.enforcer.repair(prepared.states) if repair and not found.clean else None
        after = prepared.enforcer.drift(prepared.states) if repaired is not None else None
    if as_json:
        print_json(
            {
                "drift": found.to_json(),
                "repair": None if repaired is None else repaired.to_json(),
                "after": None if after is None else after.to_json(),
            }
        )
    else:
        _print_drift(found, prepared.enforcer.layout.root)
        if repaired is not None:
            console().print("[bold]repair[/]")
            _print_apply(repaired, prepared.enforcer.layout.root)
    still = found if after is None else after
    if not still.clean:
        raise typer.Exit(1)


def _short(path: str, root: Path) -> str:
    """A path relative to the cgroup root, which every row shares."""
    return path.removeprefix(str(root)).lstrip("/") or path


def _print_apply(report: ApplyReport, root: Path) -> None:
    out = console()
    verb = "would write" if report.dry_run else "wrote"
    if report.created:
        made = "would create" if report.dry_run else "created"
        out.print(f"{made}: " + ", ".join(_short(p, root) for p in report.created))
    if report.writes:
        table = Table("file", "was", "now", "step", title=f"under {root}")
        for write in report.writes:
            table.add_row(
                _short(write.path, root),
                "-" if write.old is None else write.old,
                write.new,
                write.step,
            )
        out.print(table)
    for reason in report.skipped:
        out.print(f"[yellow]skipped[/] {reason}")
    for failure in report.failures:
        out.print(f"[red]failed[/] {failure}")
    out.print(
        f"{verb} {len(report.writes)} file(s), {report.unchanged} already right, "
        f"{len(report.failures)} failure(s)"
    )


def _print_drift(report: DriftReport, root: Path) -> None:
    out = console()
    if report.differences:
        table = Table("workload", "file", "expected", "actual", title=f"under {root}")
        for diff in report.differences:
            table.add_row(
                diff.name,
                _short(diff.path, root),
                diff.expected,
                "(missing)" if diff.actual is None else diff.actual,
            )
        out.print(table)
    for failure in report.failures:
        out.print(f"[red]unreadable[/] {failure}")
    out.print(
        f"checked {report.checked} file(s): {len(report.differences)} differ, "
        f"{len(report.failures)} unreadable"
    )
