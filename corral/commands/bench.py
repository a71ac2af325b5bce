"""``corral bench ...``: benchmarks that print figures measured in the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from corral.commands.bench_cluster import bench_cluster
from corral.commands.common import clear_errors, console, print_json
from corral.commands.progress import progress_reporter
from corral.errors import InputError
from corral.placement.cost import TERMS

if TYPE_CHECKING:
    from corral.bench.placement import PlacementBenchConfig

#: What ``--plot`` can write, by the file's suffix (matplotlib's writers).
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

bench_app = typer.Typer(
    help="Benchmarks: each prints its figures next to a baseline measured in the same run.",
    no_args_is_help=True,
)
bench_app.command("cluster")(bench_cluster)


@bench_app.command("placement")
def bench_placement(  # noqa: PLR0917 - typer maps parameters to options
    quick: Annotated[
        bool, typer.Option("--quick", help="Three presets, two mixes each (under a minute).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Also write the JSON to this file.")
    ] = None,
    budget_ms: Annotated[
        float | None, typer.Option("--budget-ms", min=0.1, help="Optimiser time budget.")
    ] = None,
    instances: Annotated[
        int | None, typer.Option(min=1, help="Workload mixes per preset and fill.")
    ] = None,
    preset: Annotated[
        list[str] | None, typer.Option("--preset", help="Only these presets (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the workload mixes.")] = 0,
    plot: Annotated[
        Path | None,
        typer.Option(
            "--plot",
            help="Draw the results (instance family, and greedy against optimal from scratch "
            "unless --family-only) into this file: .png, .svg or .pdf.",
        ),
    ] = None,
    family_only: Annotated[
        bool,
        typer.Option("--family-only", help="Only the instance family (issue 15's shapes)."),
    ] = False,
) -> None:
    """Greedy (kubelet order) against the optimal allocator on the topology presets:
    cost terms, cross-NUMA workloads, shared cores, decision times, gaps, churn per
    event of an arrival/departure sequence, a coalesced burst, and the two MIP back-ends."""
    from corral.bench.placement import (  # noqa: PLC0415 - numpy, highspy, scipy: heavy
        PlacementBenchConfig,
        plot_placement,
        run_placement_bench,
    )

    config = PlacementBenchConfig.quick() if quick else PlacementBenchConfig()
    changes: dict[str, Any] = {"seed": seed}
    if budget_ms is not None:
        changes["budget_ms"] = budget_ms
    if instances is not None:
        changes["instances"] = instances
    if preset:
        changes["presets"] = tuple(preset)
    if family_only:
        changes["only_family"] = True
    config = _replace(config, changes)
    with clear_errors():
        from corral.topology.presets import PRESETS  # noqa: PLC0415 - only to check names

        for name in config.presets:
            if name not in PRESETS:
                raise InputError(
                    "--preset", f"unknown preset {name!r}", f"use one of: {', '.join(PRESETS)}"
                )
        _check_writable("--output", output)
        _check_writable("--plot", plot, suffixes=PLOT_SUFFIXES)
        with progress_reporter(as_json=as_json) as on_progress:
            result = run_placement_bench(config, on_progress=on_progress)
        doc = result.to_json()
        if output is not None:
            _write("--output", output, json.dumps(doc, indent=2) + "\n")
        if plot is not None:
            plot_placement(doc, plot)
    if as_json:
        print_json(doc)
        return
    out = Console(highlight=False, width=max(console().width, 160))
    for table in placement_tables(doc):
        out.print(table)


def _check_writable(option: str, path: Path | None, *, suffixes: tuple[str, ...] = ()) -> None:
    """Refuse, before a long run, a file that could not be written where the user said."""
    if path is None:
        return
    if path.is_dir():
        raise InputError(option, f"{path} is a directory", "give a file name")
    if suffixes and path.suffix.lower() not in suffixes:
        raise InputError(
            option,
            f"{path}: unknown file type {path.suffix or '(none)'!r}",
            f"end the name with {', '.join(suffixes)}",
        )
    if not path.parent.is_dir():
        raise InputError(
            option, f"{path.parent}: no such directory", "create it or give another path"
        )


def _write(option: str, path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as err:
        raise InputError(option, f"{path}: cannot write: {err.strerror}") from err


def _replace(config: PlacementBenchConfig, changes: dict[str, Any]) -> PlacementBenchConfig:
    from dataclasses import replace  # noqa: PLC0415

    return replace(config, **changes)


def placement_tables(doc: dict[str, Any]) -> list[Table]:
    """Rich tables for the placement benchmark's JSON document."""
    family = _family_table(doc)
    if not doc["static"]:
        return [family]
    return [family, *_preset_tables(doc)]


def _family_table(doc: dict[str, Any]) -> Table:
    cfg = doc["config"]
    table = Table(
        title=f"instance family (2 sockets, siblings 2l/2l+1) at budget {cfg['budget_ms']:g} "
        "ms: totals over the instances; corral (greedy); xsock = cross-socket workloads "
        "(unavoidable), shared = cores shared between workloads (lower bound)"
    )
    for column in (
        "threads",
        "inst",
        "wl",
        "proven",
        "xsock",
        "shared",
        "siblings",
        "ms p50",
        "ms p99",
        "ms max",
        "worse than greedy",
    ):
        table.add_column(column, justify="right")
    for row in doc["family"]:
        g = row["greedy"]
        table.add_row(
            str(row["threads"]),
            str(row["instances"]),
            f"{row['workloads_mean']:.0f}",
            f"{100 * row['proven_share']:.0f}%",
            f"{row['cross_socket']} ({row['cross_socket_unavoidable']}) [{g['cross_socket']}]",
            f"{row['shared_cores']} ({row['shared_cores_bound']}) [{g['shared_cores']}]",
            f"{row['sibling_cores']} [{g['sibling_cores']}]",
            _num(row["ms_p50"]),
            _num(row["ms_p99"]),
            _num(row["ms_max"]),
            str(row["worse_than_greedy"]),
        )
    return table


def _preset_tables(doc: dict[str, Any]) -> list[Table]:
    cfg = doc["config"]
    static = Table(
        title=f"placement from scratch (budget {cfg['budget_ms']:g} ms, gap {cfg['gap']:g}): "
        "times p50/p99 in ms (solver: the MIP's share), mean cost, totals of cross-NUMA "
        "workloads, shared cores and refusals; 'worse' = instances where optimal has more "
        "cross-NUMA workloads / shared cores than greedy"
    )
    for column in (
        "preset",
        "threads",
        "fill",
        "wl",
        "alloc",
        "ms p50",
        "ms p99",
        "solver p50",
        "cost",
        "xNUMA",
        "shared",
        "refused",
        "gap% p50",
        "gap% max",
        "proven",
        "worse",
    ):
        static.add_column(column, justify="left" if column in ("preset", "alloc") else "right")
    terms = Table(title="mean weighted cost terms (greedy / optimal)")
    for column in ("preset", "fill", *TERMS):
        terms.add_column(column, justify="left" if column == "preset" else "right")
    for row in doc["static"]:
        for alloc in ("greedy", "optimal"):
            agg = row[alloc]
            opt = alloc == "optimal"
            static.add_row(
                row["preset"] if not opt else "",
                str(row["threads"]) if not opt else "",
                f"{row['fill']:.0%}" if not opt else "",
                f"{row['workloads']:.0f}" if not opt else "",
                alloc,
                _num(agg["ms_p50"]),
                _num(agg["ms_p99"]),
                _num(agg["solver_ms_p50"]) if opt else "",
                f"{agg['cost']:.4f}",
                str(agg["cross_numa"]),
                str(agg["shared_cores"]),
                str(agg["refused"]),
                _num(agg["gap_pct_p50"]) if opt else "",
                _num(agg["gap_pct_max"]) if opt else "",
                f"{agg['proven']}/{agg['instances']}" if opt else "",
                f"{row['optimal_more_cross_numa']}/{row['optimal_more_shared_cores']}"
                if opt
                else "",
            )
        terms.add_row(
            row["preset"],
            f"{row['fill']:.0%}",
            *(f"{row['greedy']['terms'][t]:.3f} / {row['optimal']['terms'][t]:.3f}" for t in TERMS),
        )
    churn = Table(title="arrival/departure sequence (one decision per event)")
    for column in (
        "preset",
        "alloc",
        "events",
        "moved/event",
        "requested/event",
        "moved/requested",
        "max moved",
        "ms p50",
        "ms p99",
        "mean cost",
        "spread/shared/sib",
        "from scratch",
        "worse",
        "refused",
    ):
        churn.add_column(column, justify="left" if column in ("preset", "alloc") else "right")
    for row in doc["churn"]:
        churn.add_row(
            row["preset"],
            row["allocator"],
            str(row["events"]),
            f"{row['moved_cpus_per_event']:.2f}",
            f"{row['requested_cpus_per_event']:.2f}",
            _num(row["moved_over_requested"]),
            str(row["max_moved_in_one_event"]),
            _num(row["ms_p50"]),
            _num(row["ms_p99"]),
            _num(row["mean_cost"]),
            _vector(row["mean_priorities"]),
            _vector(row["mean_priorities_from_scratch"]),
            str(row["events_worse_than_from_scratch"]),
            str(row["refused_adds"]),
        )
    burst = doc["burst"]
    burst_table = Table(title=f"burst of {burst['adds']} adds on {burst['preset']} (optimal)")
    for column in ("decision", "total ms", "cost", "CPUs moved"):
        burst_table.add_column(column)
    burst_table.add_row(
        "one batch",
        _num(burst["batch_ms"]),
        _num(burst["batch_cost"]),
        str(burst["batch_moved_cpus"]),
    )
    burst_table.add_row(
        "one per add", _num(burst["one_by_one_ms"]), "", str(burst["one_by_one_moved_cpus"])
    )
    solvers = doc["solvers"]
    solver_table = Table(title=f"MIP back-ends on {solvers['preset']} at 80% fill")
    for column in ("solver", "ms p50", "mean cost", "proven"):
        solver_table.add_column(column)
    for label in ("highspy", "scipy"):
        s = solvers[label]
        solver_table.add_row(
            label, _num(s["ms_p50"]), _num(s["mean_cost"]), _num(s["proven_fraction"])
        )
    return [static, terms, churn, burst_table, solver_table]


def _vector(value: dict[str, float] | None) -> str:
    return "-" if value is None else "/".join(f"{v:.2f}" for v in value.values())


def _num(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
