"""``corral predict``: train, evaluate and inspect the usage model."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from corral.commands.common import clear_errors, console, print_json
from corral.commands.progress import OnProgress, progress_reporter
from corral.errors import InputError
from corral.predict.formats import TraceFormat
from corral.predict.settings import TrainSettings

if TYPE_CHECKING:
    from rich.table import Table

    from corral.predict.series import Trace

log = logging.getLogger(__name__)

predict_app = typer.Typer(
    help="Predict each workload's CPU quantile (default P95 over the next 10 minutes).",
    no_args_is_help=True,
)

FormatOption = Annotated[
    TraceFormat,
    typer.Option("--format", "-f", help="Trace format: corral, bitbrains, google or sqlite."),
]
HorizonOption = Annotated[
    float, typer.Option("--horizon-s", help="Horizon of the predicted quantile, in seconds.")
]
QuantileOption = Annotated[float, typer.Option("--quantile", "-q", help="Quantile to predict.")]
StepOption = Annotated[
    float | None,
    typer.Option("--step-s", help="Resample to this step (s); default: the trace's own step."),
]
RowsOption = Annotated[
    int,
    typer.Option("--max-train-rows", help="Subsample training windows above this many."),
]
GoogleCapacityOption = Annotated[
    float,
    typer.Option(
        "--google-capacity-cores", help="Google traces have no capacity: cpu_pct is of this."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for programs.")]


def _load(
    path: Path,
    fmt: TraceFormat,
    step_s: float | None,
    google_cores: float,
    on_progress: OnProgress,
    *,
    option: str = "--train",
    step: str = "loading the trace",
) -> Trace:
    """Load a trace (numpy and pandas load here, not when the CLI starts), shown as a step.

    A missing file is refused naming ``option``.
    """
    if not path.exists():
        raise InputError(option, f"{path}: no such file", "check the path")
    on_progress(step, 0, 1)
    from corral.predict.traces import load_trace  # noqa: PLC0415 - numpy, pandas: heavy

    trace = load_trace(path, fmt, step_s=step_s, google_capacity_cores=google_cores)
    on_progress(step, 1, 1)
    return trace


def train(  # noqa: PLR0917 - typer maps parameters to options
    train_file: Annotated[Path, typer.Option("--train", help="Trace to train on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the model file.")],
    fmt: FormatOption = TraceFormat.CORRAL,
    horizon_s: HorizonOption = 600.0,
    quantile: QuantileOption = 0.95,
    step_s: StepOption = None,
    max_train_rows: RowsOption = TrainSettings.max_train_rows,
    google_capacity_cores: GoogleCapacityOption = 1.0,
    as_json: JsonOption = False,
) -> None:
    """Train a quantile model on a whole trace and write it to --out."""
    with clear_errors():
        settings = TrainSettings(
            quantile=quantile, horizon_s=horizon_s, max_train_rows=max_train_rows
        )
        with progress_reporter(as_json=as_json) as on_progress:
            trace = _load(train_file, fmt, step_s, google_capacity_cores, on_progress)
            from corral.predict.model import save_model, train_model  # noqa: PLC0415 - lightgbm

            model = train_model(trace, settings, on_progress=on_progress)
        save_model(model, out)
        summary = {
            "model": str(out),
            "quantile": model.quantile,
            "horizon_s": model.spec.horizon_s,
            "step_s": model.spec.step_s,
            "train_rows": model.info["train_rows"],
            "calibration": {
                "snap": model.calibration.snap,
                "scale": model.calibration.scale,
                "coverage_before": model.calibration.coverage_before,
                "coverage_after": model.calibration.coverage_after,
            },
            "seconds": model.info["seconds"],
            "load_report": trace.report.as_dict(),
        }
        if as_json:
            print_json(summary)
            return
        out_console = console()
        for line in trace.report.lines():
            out_console.print(line)
        out_console.print(
            f"trained on {summary['train_rows']} windows in {summary['seconds']} s; "
            f"calibration snap {model.calibration.snap:g}, scale {model.calibration.scale:g} "
            f"(held-out coverage {model.calibration.coverage_before:.3f} -> "
            f"{model.calibration.coverage_after:.3f}); wrote {out}"
        )


def _score_table(title: str, scores: dict[str, object]) -> Table:
    from rich.table import Table  # noqa: PLC0415 - only when printing

    table = Table(title=title)
    for column in ("predictor", "pinball (cores)", "coverage", "over-provision (cores)", "windows"):
        table.add_column(column, justify="left" if column == "predictor" else "right")
    for name, value in scores.items():
        data = value.as_dict()  # type: ignore[attr-defined]
        table.add_row(
            name,
            f"{data['pinball']:.5f}",
            f"{data['coverage']:.3f}",
            f"{data['overprovision']:.4f}",
            str(data["windows"]),
        )
    return table


def evaluate_command(  # noqa: PLR0917 - typer maps parameters to options
    train_file: Annotated[Path, typer.Option("--train", help="Trace to train on.")],
    test_file: Annotated[
        Path | None,
        typer.Option("--test", help="Trace to test on (default: the last quarter of --train)."),
    ] = None,
    fmt: FormatOption = TraceFormat.CORRAL,
    test_format: Annotated[
        TraceFormat | None,
        typer.Option("--test-format", help="Format of --test (default: --format)."),
    ] = None,
    horizon_s: HorizonOption = 600.0,
    quantile: QuantileOption = 0.95,
    step_s: StepOption = None,
    max_train_rows: RowsOption = TrainSettings.max_train_rows,
    google_capacity_cores: GoogleCapacityOption = 1.0,
    save: Annotated[
        Path | None, typer.Option("--save-model", help="Also write the trained model here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Train on the training period, then score model and baselines on the test period."""
    with clear_errors():
        started = time.perf_counter()
        settings = TrainSettings(
            quantile=quantile, horizon_s=horizon_s, max_train_rows=max_train_rows
        )
        with progress_reporter(as_json=as_json) as on_progress:
            train_trace = _load(train_file, fmt, step_s, google_capacity_cores, on_progress)
            test_trace = (
                None
                if test_file is None
                else _load(
                    test_file,
                    test_format or fmt,
                    step_s,
                    google_capacity_cores,
                    on_progress,
                    option="--test",
                    step="loading the test trace",
                )
            )
            from corral.predict.evaluate import evaluate  # noqa: PLC0415 - lightgbm, numpy

            evaluation, model = evaluate(train_trace, test_trace, settings, on_progress=on_progress)
        if save is not None:
            from corral.predict.model import save_model  # noqa: PLC0415 - lightgbm

            save_model(model, save)
        seconds = time.perf_counter() - started
        if as_json:
            data = evaluation.as_dict()
            data["seconds"] = round(seconds, 1)
            print_json(data)
            return
        out = console()
        for report in [train_trace.report] + ([test_trace.report] if test_trace else []):
            for line in report.lines():
                out.print(line)
        split = evaluation.split
        out.print(
            f"test: {split['test_windows']} windows of {split['test_series']} series, "
            f"quantile {quantile:g}, horizon {horizon_s:g} s ({split['horizon_samples']} samples)"
        )
        overall: dict[str, object] = {"model": evaluation.model, **evaluation.baselines}
        out.print(_score_table("overall", overall))
        for bucket, scores in evaluation.by_size.items():
            out.print(_score_table(f"capacity {bucket} cores", dict(scores)))
        out.print(
            f"model pinball {evaluation.improvement:+.1%} below the best baseline "
            f"({evaluation.best_baseline}); coverage {evaluation.model.coverage:.3f}; "
            f"trained on {evaluation.training['train_rows']} windows; {seconds:.0f} s in all"
        )


def show(
    model_file: Annotated[Path, typer.Argument(help="A model file from 'corral predict train'.")],
    as_json: JsonOption = False,
) -> None:
    """Print a model's settings, schema, calibration and most important features."""
    with clear_errors():
        from rich.table import Table  # noqa: PLC0415 - only when printing

        from corral.predict.model import load_model  # noqa: PLC0415 - lightgbm

        model = load_model(model_file)
        gains = model.booster.feature_importance(importance_type="gain")
        names = model.spec.names()
        total = float(gains.sum()) or 1.0
        ranked = sorted(zip(names, gains, strict=True), key=lambda item: -item[1])
        data = {
            "quantile": model.quantile,
            "spec": model.spec.as_dict(),
            "features": list(names),
            "min_history_s": model.min_history_s,
            "base_feature": model.base_feature,
            "calibration": {
                "snap": model.calibration.snap,
                "scale": model.calibration.scale,
                "coverage_before": model.calibration.coverage_before,
                "coverage_after": model.calibration.coverage_after,
            },
            "trees": model.booster.num_trees(),
            "importance": {name: float(gain) / total for name, gain in ranked},
            "info": model.info,
        }
        if as_json:
            print_json(data)
            return
        out = console()
        out.print(
            f"P{model.quantile * 100:g} over {model.spec.horizon_s:g} s, step "
            f"{model.spec.step_s:g} s, {len(names)} features, {data['trees']} trees; "
            f"trained on {model.info.get('source', '?')} ({model.info.get('train_rows', '?')} "
            f"windows); fallback to the request under {model.min_history_s:g} s of history; "
            f"trees learn the residual over {model.base_feature or 'nothing'}"
        )
        out.print(
            f"calibration: snap >= {model.calibration.snap:g} of capacity, scale "
            f"{model.calibration.scale:g}; held-out coverage "
            f"{model.calibration.coverage_before:.3f} -> {model.calibration.coverage_after:.3f}"
        )
        table = Table(title="feature importance (gain share)")
        table.add_column("feature")
        table.add_column("share", justify="right")
        for name, gain in ranked[:15]:
            table.add_row(name, f"{float(gain) / total:.3f}")
        out.print(table)


predict_app.command("train")(train)
predict_app.command("eval")(evaluate_command)
predict_app.command("show")(show)
