"""``corral doctor``: what corral can and cannot do on this host, and how to fix it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.commands.common import clear_errors, console, print_json

if TYPE_CHECKING:
    from rich.table import Table

    from corral.doctor.findings import Report

EXIT_CAN_ENFORCE = 0
EXIT_CANNOT_ENFORCE = 1
_STYLE = {"ok": "green", "warn": "yellow", "missing": "magenta", "error": "bold red"}


def doctor(
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print {can_enforce, mode, blockers, findings} as JSON."),
    ] = False,
    root: Annotated[
        Path,
        typer.Option(
            "--root",
            help="Where the host's / is seen (a directory tree in tests).",
            show_default=True,
        ),
    ] = Path("/"),
    cgroup_parent: Annotated[
        str,
        typer.Option("--cgroup-parent", help="The agent's cgroup_parent: where to probe writes."),
    ] = "corral",
) -> None:
    """Check this host: cgroups, PSI, RDT, SMT, NUMA, kubelet, tools, clock; each finding
    with its fix.

    Exit 0 when corral can enforce cpusets and CPU isolation here, 1 when it cannot (the
    blockers are listed), 2 on bad input. It creates and removes one probe cgroup in each
    hierarchy where corral would create its parent.
    """
    from corral.doctor.run import diagnose  # noqa: PLC0415  keeps `corral --help` fast

    with clear_errors():
        report = diagnose(root, cgroup_parent=cgroup_parent)
    if as_json:
        print_json(report.to_document())
    else:
        out = console()
        out.print(f"corral doctor: cgroups {report.mode}, root {root}")
        for table in findings_tables(report):
            out.print(table)
        out.print(verdict(report))
    raise typer.Exit(EXIT_CAN_ENFORCE if report.can_enforce else EXIT_CANNOT_ENFORCE)


def findings_tables(report: Report) -> list[Table]:
    """The findings as rich tables, one per area: check, status, and what it means with
    its fix underneath (paths fold rather than being cut, so they stay copyable)."""
    from rich import box  # noqa: PLC0415  rich's tables only when printed
    from rich.table import Table  # noqa: PLC0415

    tables = []
    for area, findings in report.by_area():
        table = Table(
            title=f"[bold]{area}[/]", title_justify="left", box=box.SIMPLE, show_header=False
        )
        table.add_column("check", no_wrap=True, min_width=18)
        table.add_column("status", no_wrap=True, min_width=7)
        table.add_column("finding", overflow="fold")
        for finding in findings:
            status = str(finding.status)
            text = finding.summary + (f"\n[dim]fix:[/] {finding.fix}" if finding.fix else "")
            table.add_row(finding.check.split(".", 1)[-1], f"[{_STYLE[status]}]{status}[/]", text)
        tables.append(table)
    return tables


def verdict(report: Report) -> str:
    """One line: whether corral can enforce here, and what blocks it when not."""
    if report.can_enforce:
        return "[green]corral can enforce cpusets and CPU isolation on this host[/]"
    return "[bold red]corral cannot enforce here:[/] " + "; ".join(report.blockers)
