"""``corral bench enforce``: time enforcing 100 workloads on the real cgroup hierarchy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from corral.commands.common import clear_errors, console, print_json, topology_from


def bench_enforce(
    workloads: Annotated[int, typer.Option(min=1, help="How many workloads to enforce.")] = 100,
    repeats: Annotated[
        int, typer.Option(min=1, help="Repetitions of the re-apply, drift and baseline.")
    ] = 5,
    cgroup_root: Annotated[
        Path, typer.Option("--cgroup-root", help="Where the cgroup hierarchies are mounted.")
    ] = Path("/sys/fs/cgroup"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Time the first apply and a no-change re-apply of N workloads' cgroup state, against
    a blind rewrite of every file measured in the same run (needs root; cleans up)."""
    from corral.bench.enforce import run_enforce_bench  # noqa: PLC0415 - start-up time

    with clear_errors():
        result = run_enforce_bench(
            topology_from("sysfs"),
            cgroup_root=cgroup_root,
            workloads=workloads,
            repeats=repeats,
        )
    if as_json:
        print_json(result.to_json())
    else:
        out = console()
        for line in result.lines():
            out.print(line)
