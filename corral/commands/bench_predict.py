"""``corral bench predict``: forecasts for 10,000 workloads in one call, against the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.commands.common import clear_errors, console, print_json
from corral.commands.progress import OnProgress, progress_reporter
from corral.errors import InputError
from corral.predict.formats import TraceFormat
from corral.predict.sample import SAMPLE_TRACE_FORMAT, SAMPLE_TRACE_LABEL, sample_trace

if TYPE_CHECKING:
    from corral.predict.model import UsageModel
    from corral.predict.series import Trace

#: The quick model trained when no --model is given.
QUICK_ROWS = 20_000
QUICK_ROUNDS = 200


def _trace_to_use(trace: Path | None, fmt: TraceFormat | None) -> tuple[Path, TraceFormat, str]:
    """The trace file, its format and how to name it: --trace, else the embedded sample."""
    if trace is None:
        if fmt is not None and fmt is not SAMPLE_TRACE_FORMAT:
            raise InputError(
                "--format",
                f"applies to --trace; the {SAMPLE_TRACE_LABEL} is {SAMPLE_TRACE_FORMAT.value}",
                "give --trace with --format, or leave both out",
            )
        return sample_trace(), SAMPLE_TRACE_FORMAT, SAMPLE_TRACE_LABEL
    if not trace.is_file():
        raise InputError(
            "--trace",
            f"{trace}: no such file",
            f"give an existing trace file, or leave --trace out to use the {SAMPLE_TRACE_LABEL}",
        )
    return trace, fmt or TraceFormat.BITBRAINS, str(trace)


def _load(path: Path, fmt: TraceFormat, on_progress: OnProgress) -> Trace:
    on_progress("loading the trace", 0, 1)
    from corral.predict.traces import load_trace  # noqa: PLC0415 - numpy, pandas: heavy

    data = load_trace(path, fmt)
    on_progress("loading the trace", 1, 1)
    return data


def _model(model_file: Path | None, data: Trace, on_progress: OnProgress) -> tuple[UsageModel, str]:
    from corral.predict.model import TrainSettings, load_model, train_model  # noqa: PLC0415

    if model_file is not None:
        return load_model(model_file), str(model_file)
    settings = TrainSettings(max_train_rows=QUICK_ROWS, rounds=QUICK_ROUNDS)
    model = train_model(data, settings, on_progress=on_progress)
    return model, f"trained on the trace ({QUICK_ROWS:,} windows, {QUICK_ROUNDS} rounds)"


def bench_predict(  # noqa: PLR0917 - typer maps parameters to options
    trace: Annotated[
        Path | None,
        typer.Option(
            "--trace",
            help=f"Trace the histories are cut from [default: the {SAMPLE_TRACE_LABEL}].",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        TraceFormat | None,
        typer.Option("--format", "-f", help="Format of --trace [default: bitbrains]."),
    ] = None,
    model_file: Annotated[
        Path | None,
        typer.Option("--model", help="Model file (default: train a quick one on the trace)."),
    ] = None,
    series: Annotated[int, typer.Option(min=1, help="Workloads per call.")] = 10_000,
    repeats: Annotated[int, typer.Option(min=1, help="Calls timed; the median is shown.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for programs.")] = False,
) -> None:
    """Time one forecast call for N workloads (raw samples to cores) and the baselines' cost."""
    with clear_errors():
        path, kind, trace_label = _trace_to_use(trace, fmt)
        with progress_reporter(as_json=as_json) as on_progress:
            data = _load(path, kind, on_progress)
            model, origin = _model(model_file, data, on_progress)
            from corral.bench.predict import run_predict_bench  # noqa: PLC0415 - numpy

            result = run_predict_bench(
                model, data, series=series, repeats=repeats, on_progress=on_progress
            )
    figures = result.as_dict()
    figures["model"] = origin
    figures["trace"] = trace_label
    if as_json:
        print_json(figures)
        return
    from rich.table import Table  # noqa: PLC0415 - only when printing

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
        f"{figures['model_vs_baselines']:.1f}x the baselines' cost; target < "
        f"{figures['target_s']:g} s: {'met' if result.meets_target else 'NOT met'}; "
        f"{result.model_forecasts} of {series} from the model; model: {origin}; "
        f"trace: {trace_label}"
    )
