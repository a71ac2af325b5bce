"""``corral place``: one kubelet-style request, or a whole workload list."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from corral.commands.common import (
    clear_errors,
    console,
    error_document,
    fail,
    print_json,
    topology_from,
)
from corral.errors import InputError, PlacementError
from corral.placement.allocate import Allocator
from corral.placement.kubelet import Strategy, take_cpus
from corral.topology.cpuset import CpuSet

if TYPE_CHECKING:
    from rich.table import Table

    from corral.placement.cost import CostBreakdown, CostWeights
    from corral.placement.optimal import OptimalResult

# corral.placement.optimal's DEFAULT_BUDGET_MS and DEFAULT_GAP, not imported from there so
# that `corral place --request` never loads numpy, scipy and highspy (tests/test_cli_startup
# checks they agree).
DEFAULT_BUDGET_MS = 50.0
DEFAULT_GAP = 1e-3


def load_previous(path: Path) -> dict[str, CpuSet]:
    """Previous CPUs per workload from JSON: ``corral place --json`` output (its
    ``assignments``) or a plain ``{workload: "cpu list"}`` mapping."""
    try:
        doc = json.loads(path.read_text())
    except OSError as err:
        raise InputError("--previous", f"cannot read {path}: {err.strerror or err}") from err
    except json.JSONDecodeError as err:
        raise InputError("--previous", f"{path} is not JSON: {err}") from err
    if isinstance(doc, dict) and isinstance(doc.get("assignments"), dict):
        doc = doc["assignments"]
    if not isinstance(doc, dict):
        raise InputError(
            "--previous",
            "must be a JSON object of workload -> CPU list",
            'e.g. {"web": "0-3"} or the output of corral place --json',
        )
    previous: dict[str, CpuSet] = {}
    for wid, cpus in doc.items():
        if not isinstance(cpus, str):
            raise InputError(f"--previous {wid}", f"must be a CPU list string, got {cpus!r}")
        try:
            previous[str(wid)] = CpuSet.parse(cpus)
        except ValueError as err:
            raise InputError(f"--previous {wid}", str(err), "write a CPU list like 0-3,8") from err
    return previous


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
        Allocator,
        typer.Option(
            help="Allocator for --workloads: greedy (kubelet order) or optimal (MIP on the "
            "cost model, never worse than greedy)."
        ),
    ] = Allocator.GREEDY,
    budget_ms: Annotated[
        float,
        typer.Option("--budget-ms", min=0.1, help="Time budget of the optimal allocator."),
    ] = DEFAULT_BUDGET_MS,
    gap: Annotated[
        float,
        typer.Option(min=0.0, max=0.99, help="Relative MIP gap at which the solver stops."),
    ] = DEFAULT_GAP,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="JSON of the CPUs workloads hold now (corral place --json output): "
            "greedy keeps them, optimal charges moving them (churn).",
        ),
    ] = None,
    weight: Annotated[
        list[str] | None,
        typer.Option(
            "--weight",
            metavar="TERM=VALUE",
            help="Override a cost weight, term=value (repeatable): numa_spread, "
            "socket_spread, shared_cores, siblings, imbalance, churn, imbalance_tolerance.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Compute cpusets: one request (--request) or a whole workload list (--workloads).

    Exit code 0 when everything was placed, 1 when a request or workload was refused (the
    reason on stderr, or under ``refusals``), 2 for bad input."""
    if (request is None) == (workloads is None):
        fail(
            "give exactly one of them",
            field="--request N | --workloads FILE",
            fix="e.g. --request 4, or --workloads examples/workloads.yaml",
        )
    if request is not None and request < 1:
        fail(
            f"{request} CPUs is not a request",
            field="--request",
            fix="ask for at least one CPU, e.g. --request 4",
        )
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
                if as_json:
                    doc = error_document(str(err), field="--request", kind="PlacementError")
                    print_json(doc)
                print(str(err), file=sys.stderr)
                raise typer.Exit(1) from err
            if as_json:
                print_json({"cpuset": str(cpus)})
            else:
                console().print(str(cpus))
            return
        if workloads is None:  # excluded by the check above
            fail("give exactly one of --request N or --workloads FILE")
        # The workload path needs pydantic models, the cost model and (optimal) the MIP.
        from corral.placement.cost import CostWeights, explain_placement  # noqa: PLC0415
        from corral.placement.optimal import (  # noqa: PLC0415
            place_greedy_keeping,
            place_optimal,
        )
        from corral.placement.workload import load_workloads  # noqa: PLC0415

        weights = CostWeights.parse_overrides(weight or [])
        items = load_workloads(workloads)
        before = load_previous(previous) if previous is not None else {}
        by_id = {w.id: w for w in items}
        started = time.perf_counter()
        result: OptimalResult | None = None
        if allocator is Allocator.OPTIMAL:
            result = place_optimal(
                topo,
                items,
                online=avail,
                weights=weights,
                budget_ms=budget_ms,
                gap=gap,
                previous=before,
                strategy=strategy,
                full_cores=full_cores,
            )
            placement, cost = result.placement, result.cost
            solve_ms = result.solve_ms
        else:
            placement = place_greedy_keeping(
                topo, items, before, online=avail, strategy=strategy, full_cores=full_cores
            )
            solve_ms = (time.perf_counter() - started) * 1000
            host = topo.restricted_to(avail & topo.all_cpus)
            cost = explain_placement(
                host, by_id, placement, weights=weights, previous=before, full_cores=full_cores
            )
    if as_json:
        extra: dict[str, Any] = (
            result.to_json()
            if result is not None
            else {
                "cost": cost.weighted(),
                "cost_total": round(cost.total, 6),
                "optimal": False,
                "gap": None,
                "bound": None,
                "fell_back": False,
            }
        )
        extra["solve_ms"] = round(solve_ms, 3)
        extra["cost_detail"] = cost.to_json()
        print_json({**placement.to_json(), **extra})
    else:
        from corral.commands.render import cpu_map  # noqa: PLC0415 - only for people

        out = console()
        picture, legend = cpu_map(topo, placement, by_id)
        out.print(
            f"[bold]{topo.name}[/]: {topo.describe()}; {allocator} placement in {solve_ms:.2f} ms"
        )
        out.print(picture)
        out.print(legend)
        out.print(_cost_table(cost, weights))
        if result is not None:
            out.print(_optimal_line(result))
        for refusal in placement.refusals.values():
            out.print(f"[red]refused[/] {refusal.workload_id}: {refusal.reason}")
        for warning in placement.warnings:
            out.print(f"[yellow]warning[/]: {warning}")
    if placement.refusals:
        raise typer.Exit(1)


def _cost_table(cost: CostBreakdown, weights: CostWeights) -> Table:
    from rich.table import Table  # noqa: PLC0415 - only for people

    table = Table(title=f"cost {cost.total:.4f} (lower is better)")
    for column in ("term", "raw", "normalised", "weight", "weighted"):
        table.add_column(column, justify="left" if column == "term" else "right")
    for name, term in cost.terms.items():
        table.add_row(
            name,
            f"{term.raw:.3f}",
            f"{term.normalised:.4f}",
            f"{getattr(weights, name):g}",
            f"{term.weighted:.4f}",
        )
    table.caption = (
        f"cross-NUMA workloads {cost.cross_numa_workloads}, cross-socket "
        f"{cost.cross_socket_workloads}, shared cores {cost.shared_cores}, sibling cores "
        f"{cost.sibling_cores}, CPUs moved {cost.moved_cpus}, pool busy {cost.pool_busyness:.2f}"
    )
    return table


def _optimal_line(result: OptimalResult) -> str:
    if result.fell_back:
        return f"[yellow]fell back to greedy[/]: {result.fallback_reason}"
    proof = "proven optimal" if result.optimal else "not proven optimal"
    gap = "n/a" if result.gap is None else f"{100 * result.gap:.2f}%"
    bound = "n/a" if result.bound is None else f"{result.bound:.4f}"
    return (
        f"{proof} (solver: {result.solver_status}); kept the {result.source} placement; "
        f"greedy cost {result.greedy_cost.total:.4f}, bound {bound}, gap {gap}"
    )
