"""``corral bench predict``: forecasts for 10,000 workloads in one call, against the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from corral.bench.predict import TARGET_S, run_predict_bench
from corral.commands.common import clear_errors, console, print_json
from corral.predict.model import TrainSettings, load_model, train_model
from corral.predict.traces import TraceFormat, load_trace

DEFAULT_TRACE = Path("../shared/traces/bitbrains_rnd_2013-08_100vms.csv.gz")


def bench_predict(  # noqa: PLR0917 - typer maps parameters to options
    trace: Annotated[
        Path, typer.Option("--trace", help="Trace the histories are cut from.")
    ] = DEFAULT_TRACE,
    fmt: Annotated[
        TraceFormat, typer.Option("--format", "-f", help="Format of --trace.")
    ] = TraceFormat.BITBRAINS,
    model_file: Annotated[
        Path | None,
        typer.Option("--model", help="Model file (default: train a quick one on --trace)."),
    ] = None,
    series: Annotated[int, typer.Option(min=1, help="Workloads per call.")] = 10_000,
    repeats: Annotated[int, typer.Option(min=1, help="Calls timed; the median is shown.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Time one forecast call for N workloads (raw samples to cores) and the baselines' cost."""
    with clear_errors():
        data = load_trace(trace, fmt)
        if model_file is not None:
            model = load_model(model_file)
            origin = str(model_file)
        else:
            model = train_model(data, TrainSettings(max_train_rows=20_000, rounds=200))
            origin = "trained on --trace (20,000 windows, 200 rounds)"
        result = run_predict_bench(model, data, series=series, repeats=repeats)
    figures = result.as_dict()
    figures["model"] = origin
    if as_json:
        print_json(figures)
        return
    table = Table(title=f"{series} workloads in one call (median of {repeats})")
    table.add_column("step")
    table.add_column("seconds", justify="right")
    table.add_row("forecast_usage end to end", f"{result.forecast_s:.3f}")
    table.add_row("  bin raw samples", f"{result.binning_s:.3f}")
    table.add_row("  features + trees", f"{result.features_and_trees_s:.3f}")
    table.add_row("baselines on the same windows", f"{result.baselines_s:.3f}")
    out = console()
    out.print(table)
    out.print(
        f"{figures['per_series_us']:.1f} us per workload; model "
        f"{figures['model_vs_baselines']:.1f}x the baselines' cost; target < {TARGET_S:g} s: "
        f"{'met' if result.meets_target else 'NOT met'}; {result.model_forecasts} of {series} "
        f"from the model; model: {origin}"
    )
