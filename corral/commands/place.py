"""``corral place``: one kubelet-style request, or a whole workload list."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from corral.commands.common import clear_errors, console, fail, print_json, topology_from
from corral.commands.render import cpu_map
from corral.errors import InputError, PlacementError
from corral.placement.greedy import place_greedy
from corral.placement.kubelet import Strategy, take_cpus
from corral.placement.workload import load_workloads
from corral.topology.cpuset import CpuSet


def place(  # noqa: PLR0917 - typer maps parameters to options
    topology: Annotated[
        str, typer.Option("--topology", "-t", help="'sysfs', a preset name or a topology file.")
    ] = "sysfs",
    request: Annotated[
        int | None,
        typer.Option(
            "--request", "-n", help="Place one request of N CPUs (kubelet static policy)."
        ),
    ] = None,
    workloads: Annotated[
        Path | None,
        typer.Option("--workloads", "-w", help="Place every workload of this YAML/JSON file."),
    ] = None,
    available: Annotated[
        str | None,
        typer.Option("--available", help="CPUs that may be used, e.g. '2-15' (default: all)."),
    ] = None,
    strategy: Annotated[
        Strategy,
        typer.Option(
            help="kubelet CPU order: packed (default), spread or distributed across NUMA nodes.",
        ),
    ] = Strategy.PACKED,
    full_cores: Annotated[
        bool,
        typer.Option("--full-cores", help="Only whole physical cores (kubelet's full-pcpus-only)."),
    ] = False,
    allocator: Annotated[
        str, typer.Option(help="Allocator for --workloads: greedy (kubelet order).")
    ] = "greedy",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Compute cpusets: one request (--request) or a whole workload list (--workloads)."""
    if (request is None) == (workloads is None):
        fail("give exactly one of --request N or --workloads FILE")
    with clear_errors():
        topo = topology_from(topology)
        try:
            avail = topo.all_cpus if available is None else CpuSet.parse(available)
        except ValueError as err:
            raise InputError("--available", str(err), "write a CPU list like 0-3,8") from err
        if request is not None:
            try:
                cpus = take_cpus(topo, avail, request, strategy=strategy, full_cores=full_cores)
            except PlacementError as err:
                print(str(err), file=sys.stderr)
                raise typer.Exit(1) from err
            if as_json:
                print_json({"cpuset": str(cpus)})
            else:
                console().print(str(cpus))
            return
        assert workloads is not None
        if allocator != "greedy":
            raise InputError("--allocator", f"unknown allocator {allocator!r}", "use greedy")
        items = load_workloads(workloads)
        started = time.perf_counter()
        placement = place_greedy(
            topo, items, online=avail, strategy=strategy, full_cores=full_cores
        )
        solve_ms = (time.perf_counter() - started) * 1000
    if as_json:
        print_json({**placement.to_json(), "solve_ms": round(solve_ms, 3)})
    else:
        out = console()
        picture, legend = cpu_map(topo, placement, {w.id: w for w in items})
        out.print(f"[bold]{topo.name}[/]: {topo.describe()}; greedy placement in {solve_ms:.2f} ms")
        out.print(picture)
        out.print(legend)
        for refusal in placement.refusals.values():
            out.print(f"[red]refused[/] {refusal.workload_id}: {refusal.reason}")
        for warning in placement.warnings:
            out.print(f"[yellow]warning[/]: {warning}")
    if placement.refusals:
        raise typer.Exit(1)
