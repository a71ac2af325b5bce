"""The quantile model: beats the baselines on a daily cycle, saves and loads, refuses mismatches."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from corral.errors import InputError
from corral.predict.evaluate import evaluate
from corral.predict.forecast import Source, forecast_usage, predict_p95
from corral.predict.history import UsageHistory
from corral.predict.model import (
    TrainSettings,
    UsageModel,
    fit_calibration,
    load_model,
    save_model,
    train_model,
)
from corral.predict.series import Trace, build_trace

START = 1_375_315_200.0  # 2013-08-01 00:00 UTC
FAST = TrainSettings(rounds=60, num_leaves=15, min_data_in_leaf=20, max_train_rows=6000)


def daily_cycle_frame(*, days: int = 8, series: int = 4, seed: int = 0) -> pd.DataFrame:
    """Busy by day, idle by night, with noise: usage in cores on 300 s steps."""
    rng = np.random.default_rng(seed)
    t = START + 300.0 * np.arange(days * 288)
    frames = []
    for k in range(series):
        capacity = float(2**k)
        phase = 2 * np.pi * (t / 86_400.0 + k / series)
        share = 0.35 + 0.3 * np.sin(phase) + rng.normal(0, 0.08, t.size)
        frames.append(
            pd.DataFrame(
                {
                    "id": f"vm{k}",
                    "timestamp_s": t,
                    "usage_cores": np.clip(share, 0, 1) * capacity,
                    "capacity_cores": capacity,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


@pytest.fixture(scope="module")
def daily_trace() -> Trace:
    return build_trace(daily_cycle_frame(), source="synthetic", fmt="corral")


@pytest.fixture(scope="module")
def model(daily_trace: Trace) -> UsageModel:
    return train_model(daily_trace, FAST)


def test_model_beats_the_last_value_on_a_daily_cycle(daily_trace: Trace) -> None:
    evaluation, _ = evaluate(daily_trace, None, FAST)
    last = evaluation.baselines["last_value"]
    assert evaluation.model.pinball < 0.8 * last.pinball
    assert evaluation.model.pinball < evaluation.baselines["request"].pinball
    assert 0.85 <= evaluation.model.coverage <= 1.0
    assert last.coverage < 0.75
    # The test period is the last quarter and follows the training period.
    assert evaluation.split["test_from_s"] >= evaluation.training["trained_until_s"]
    assert set(evaluation.by_size) == {"<=1", "1-2", "2-4", "4-8"}
    data = evaluation.as_dict()
    assert set(data["model"]) >= {"pinball", "coverage", "overprovision"}
    assert set(data["baselines"]) == {"last_value", "max_1h", "p95_1h", "ewma_kstd", "request"}


def test_predictions_are_in_cores_and_never_above_capacity(
    model: UsageModel, daily_trace: Trace
) -> None:
    from corral.predict.dataset import build_examples, select_anchors

    anchors = select_anchors(daily_trace, model.spec, min_history=12)
    examples = build_examples(daily_trace, model.spec, anchors, model.quantile)
    predicted = model.predict(examples.features, examples.capacity)
    assert np.all(predicted >= 0)
    assert np.all(predicted <= examples.capacity)
    assert predicted[examples.capacity == 8.0].mean() > predicted[examples.capacity == 1.0].mean()


def test_a_saved_model_loads_and_predicts_the_same(
    model: UsageModel, daily_trace: Trace, tmp_path: Path
) -> None:
    path = tmp_path / "model.json"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.spec == model.spec
    assert loaded.quantile == model.quantile
    assert loaded.calibration == model.calibration
    rng = np.random.default_rng(1)
    features = rng.uniform(0, 1, size=(50, len(model.spec.names())))
    capacity = np.full(50, 4.0)
    np.testing.assert_array_equal(
        loaded.predict(features, capacity), model.predict(features, capacity)
    )


def _edit(path: Path, change: dict[str, object]) -> None:
    document = json.loads(path.read_text())
    document.update(change)
    path.write_text(json.dumps(document))


def test_a_model_with_another_feature_schema_is_refused(model: UsageModel, tmp_path: Path) -> None:
    path = tmp_path / "model.json"
    save_model(model, path)
    names = list(model.spec.names())
    _edit(path, {"feature_names": [*names[:-1], "cpu_pressure"]})
    with pytest.raises(InputError, match=r"feature schema.*cpu_pressure.*retrain"):
        load_model(path)
    save_model(model, path)
    _edit(path, {"features_version": 0})
    with pytest.raises(InputError, match="feature schema v0"):
        load_model(path)
    save_model(model, path)
    _edit(path, {"version": 99})
    with pytest.raises(InputError, match="version 99"):
        load_model(path)
    save_model(model, path)
    _edit(path, {"base_feature": "max_7200s"})
    with pytest.raises(InputError, match="base feature 'max_7200s'"):
        load_model(path)
    path.write_text('{"hello": 1}')
    with pytest.raises(InputError, match="not a corral-usage-model file"):
        load_model(path)
    with pytest.raises(InputError, match="no such model file"):
        load_model(tmp_path / "missing.json")


def test_short_history_falls_back_to_the_request(model: UsageModel) -> None:
    now = START + 10 * 86_400.0
    ten_minutes = UsageHistory.of([now - 300, now], [0.5, 0.6], 2.0)
    short = predict_p95(model, ten_minutes, 2.0, now_s=now)
    assert short.source is Source.REQUEST
    assert short.cores == 2.0
    assert "history too short" in short.reason
    no_history = predict_p95(model, None, 3.0, now_s=now)
    no_model = predict_p95(None, ten_minutes, 3.0, now_s=now)
    assert (no_history.source, no_history.cores) == (Source.REQUEST, 3.0)
    assert (no_model.source, no_model.cores, no_model.reason) == (Source.REQUEST, 3.0, "no model")


def test_enough_history_gives_a_model_forecast_within_the_request(
    model: UsageModel,
) -> None:
    now = START + 10 * 86_400.0
    t = now - 300.0 * np.arange(288)[::-1]
    quiet = UsageHistory.of(t, np.full(t.size, 0.2), 4.0)
    busy = UsageHistory.of(t, np.full(t.size, 3.5), 4.0)
    out = forecast_usage(
        model, {"quiet": quiet, "busy": busy}, {"quiet": 4.0, "busy": 4.0, "new": 1.5}, now_s=now
    )
    assert out["quiet"].source is Source.MODEL
    assert 0.0 <= out["quiet"].cores < out["busy"].cores <= 4.0
    assert out["new"].source is Source.REQUEST
    assert out["new"].cores == 1.5
    with pytest.raises(InputError, match=r"requests\[bad\]"):
        forecast_usage(model, {}, {"bad": 0.0}, now_s=now)


def test_the_trees_learn_a_residual_over_the_base_feature(
    model: UsageModel, daily_trace: Trace
) -> None:
    from corral.predict.dataset import build_examples, select_anchors

    assert model.base_feature == "max_1800s"
    examples = build_examples(
        daily_trace, model.spec, select_anchors(daily_trace, model.spec)[:200], 0.95
    )
    base = examples.features[:, model.spec.names().index("max_1800s")]
    trees = model.booster.predict(examples.features)
    np.testing.assert_allclose(model.raw_share(examples.features), trees + base)
    with pytest.raises(InputError, match="not a feature"):
        train_model(daily_trace, TrainSettings(base_feature="max_1y"))


def test_calibration_brings_held_out_coverage_to_the_quantile() -> None:
    rng = np.random.default_rng(0)
    actual = rng.uniform(0, 0.8, 5000)
    raw_share = np.full(5000, 0.6)  # an under-covering predictor (75%)
    capacity = np.ones(5000)
    calibration = fit_calibration(raw_share, actual, capacity, 0.95)
    assert calibration.coverage_before == pytest.approx(0.75, abs=0.02)
    assert calibration.coverage_after == pytest.approx(0.95, abs=0.015)
    assert calibration.scale > 1.0


def test_a_test_trace_that_overlaps_training_is_refused(daily_trace: Trace) -> None:
    with pytest.raises(InputError, match="must follow the training period"):
        evaluate(daily_trace, daily_trace, FAST)


def test_a_later_test_trace_is_scored_on_its_own(daily_trace: Trace) -> None:
    later = daily_cycle_frame(days=3, seed=5)
    later["timestamp_s"] += 8 * 86_400.0
    test = build_trace(later, source="later", fmt="corral")
    evaluation, _ = evaluate(daily_trace, test, FAST)
    assert evaluation.split["test"] == "later"
    assert evaluation.split["test_from_s"] >= START + 8 * 86_400.0
    assert evaluation.model.pinball < evaluation.baselines["last_value"].pinball


def test_too_little_data_to_train_is_a_clear_error() -> None:
    frame = daily_cycle_frame(days=1, series=1).iloc[:20]
    trace = build_trace(frame, source="tiny", fmt="corral")
    with pytest.raises(InputError, match="usable training windows"):
        train_model(trace, FAST)
