"""``corral predict train|eval|show`` and ``corral bench predict`` from the command line."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from corral.bench.predict import run_predict_bench
from corral.cli import app
from corral.predict.model import load_model, train_model
from corral.predict.series import build_trace
from tests.test_predict_model import FAST, daily_cycle_frame


@pytest.fixture(scope="module")
def trace_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("traces") / "daily.csv"
    daily_cycle_frame(days=6, series=3).to_csv(path, index=False)
    return path


def _run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_eval_prints_model_and_baseline_scores_as_json(trace_csv: Path) -> None:
    code, out, err = _run(
        "predict", "eval", "--train", str(trace_csv), "--max-train-rows", "2000", "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert set(data["model"]) >= {"pinball", "coverage", "overprovision"}
    assert set(data["baselines"]) == {"last_value", "max_1h", "p95_1h", "ewma_kstd", "request"}
    assert data["baselines"]["request"]["coverage"] == 1.0
    assert data["model"]["pinball"] < data["baselines"]["last_value"]["pinball"]
    assert data["horizon_s"] == 600.0 and data["quantile"] == 0.95
    assert data["load_reports"][0]["series"] == 3


def test_eval_table_names_every_predictor(trace_csv: Path) -> None:
    code, out, err = _run("predict", "eval", "--train", str(trace_csv), "--max-train-rows", "2000")
    assert code == 0, err
    for name in ("model", "last_value", "max_1h", "p95_1h", "ewma_kstd", "request", "below"):
        assert name in out


def test_train_writes_a_model_that_show_describes(trace_csv: Path, tmp_path: Path) -> None:
    model = tmp_path / "m.json"
    code, out, err = _run(
        "predict", "train", "--train", str(trace_csv), "--out", str(model),
        "--max-train-rows", "2000", "--horizon-s", "900", "--quantile", "0.9",
    )  # fmt: skip
    assert code == 0, err
    assert load_model(model).spec.horizon_s == 900.0
    code, out, err = _run("predict", "show", str(model), "--json")
    assert code == 0, err
    shown = json.loads(out)
    assert shown["quantile"] == 0.9
    assert "lag_0" in shown["features"]
    code, out, _ = _run("predict", "show", str(model))
    assert code == 0 and "feature importance" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--train", "/nonexistent/trace.csv"), "no such file"),
        (("--quantile", "1.5"), "--quantile: must be between 0 and 1"),
        (("--horizon-s", "10"), "--horizon-s"),
        (("--format", "google"), "not a readable tar archive"),
    ],
)
def test_bad_input_is_one_clear_error_line(
    trace_csv: Path, args: tuple[str, ...], message: str
) -> None:
    full = ["predict", "eval", "--train", str(trace_csv), *args]
    code, _, err = _run(*full)
    assert code == 2
    assert "error: " in err and message in err
    assert "Traceback" not in err


def test_bench_predict_times_one_call_against_the_baselines(tmp_path: Path) -> None:
    trace = build_trace(daily_cycle_frame(days=4, series=2), source="daily", fmt="corral")
    model = train_model(trace, FAST)
    ticks = itertools.count()
    result = run_predict_bench(model, trace, series=50, repeats=3, clock=lambda: float(next(ticks)))
    # Every timed step took one tick of the fake clock.
    assert result.forecast_s == result.features_and_trees_s == result.baselines_s == 1.0
    assert result.model_forecasts == 50
    assert result.as_dict()["meets_target"] is False
