"""The usage model: LightGBM quantile regression of a workload's near-future CPU, in cores.

It predicts the chosen quantile (default 0.95) of usage over the next horizon (default
600 s) as a share of capacity (the trees learn it as a residual over the last 30 minutes'
peak, `TrainSettings.base_feature`), then multiplies by capacity, so the result is in cores and
never above capacity. A calibration fitted on the last slice of the *training* period (never
the test period) snaps near-saturated predictions to capacity and scales the rest so that
coverage on that slice is close to the quantile.

A saved model is one JSON file: format, version, feature schema, settings, calibration and
the LightGBM text model. Loading refuses a file whose schema this corral does not compute.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from corral.errors import InputError
from corral.predict.dataset import Examples, build_examples, select_anchors
from corral.predict.features import FEATURES_VERSION, FeatureSpec
from corral.predict.metrics import pinball_loss
from corral.predict.series import FloatArray, Trace
from corral.predict.settings import TrainSettings as TrainSettings  # noqa: PLC0414 - re-exported: older imports name this module

log = logging.getLogger(__name__)

MODEL_FORMAT = "corral-usage-model"
MODEL_VERSION = 2


@dataclass(frozen=True)
class Calibration:
    """Post-processing of the raw share: ``share >= snap`` becomes 1, else ``share * scale``."""

    snap: float = 1.0
    scale: float = 1.0
    rows: int = 0
    coverage_before: float = float("nan")
    coverage_after: float = float("nan")

    def apply(self, share: FloatArray) -> FloatArray:
        """Calibrated share of capacity, within ``[0, 1]``."""
        return np.where(share >= self.snap, 1.0, np.clip(share * self.scale, 0.0, 1.0))


_SNAPS = (1.0, 0.995, 0.99, 0.98, 0.97, 0.95)
_SCALES = tuple(float(s) for s in np.round(np.arange(0.85, 1.41, 0.01), 2))


def fit_calibration(
    raw_share: FloatArray, actual: FloatArray, capacity: FloatArray, quantile: float
) -> Calibration:
    """Pick snap and scale on held-out training rows.

    Among the settings whose coverage is within 1.5 points of ``quantile`` the lowest
    pinball loss wins; when none is, the one with the closest coverage.
    """
    if actual.size == 0:
        return Calibration()
    before = float(np.mean(actual <= np.clip(raw_share, 0, 1) * capacity))
    best: tuple[float, float, float, float] | None = None
    closest: tuple[float, float, float] | None = None
    for snap in _SNAPS:
        for scale in _SCALES:
            pred = Calibration(snap=snap, scale=scale).apply(raw_share) * capacity
            coverage = float(np.mean(actual <= pred))
            distance = abs(coverage - quantile)
            if closest is None or distance < closest[0]:
                closest = (distance, snap, scale)
            if distance <= 0.015:
                loss = pinball_loss(actual, pred, quantile)
                if best is None or loss < best[0]:
                    best = (loss, snap, scale, coverage)
    if best is not None:
        snap, scale = best[1], best[2]
    elif closest is not None:
        snap, scale = closest[1], closest[2]
    else:  # _SNAPS and _SCALES are never empty; kept so a bad edit fails loudly
        raise ValueError("calibration grid is empty")
    after = float(
        np.mean(actual <= Calibration(snap=snap, scale=scale).apply(raw_share) * capacity)
    )
    return Calibration(
        snap=snap, scale=scale, rows=int(actual.size), coverage_before=before, coverage_after=after
    )


@dataclass(frozen=True, eq=False)
class UsageModel:
    """A trained model with its feature spec; `predict` gives cores, clipped to capacity."""

    spec: FeatureSpec
    quantile: float
    booster: lgb.Booster
    calibration: Calibration
    min_history_s: float = 3600.0
    base_feature: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    def raw_share(self, features: FloatArray) -> FloatArray:
        """Uncalibrated share of capacity for each feature row."""
        return _raw_share(self.booster, self.spec, self.base_feature, features)

    def predict_share(self, features: FloatArray) -> FloatArray:
        """Calibrated share of capacity for each feature row."""
        if features.shape[0] == 0:
            return np.empty(0)
        return self.calibration.apply(self.raw_share(features))

    def predict(self, features: FloatArray, capacity_cores: FloatArray) -> FloatArray:
        """Predicted quantile of usage over the horizon, in cores, within ``[0, capacity]``."""
        return self.predict_share(features) * capacity_cores


def _base(spec: FeatureSpec, base_feature: str, features: FloatArray) -> FloatArray:
    if not base_feature:
        return np.zeros(features.shape[0])
    column = features[:, spec.names().index(base_feature)]
    return np.where(np.isnan(column), 0.0, column)


def _raw_share(
    booster: lgb.Booster, spec: FeatureSpec, base_feature: str, features: FloatArray
) -> FloatArray:
    raw = np.asarray(booster.predict(features, num_threads=1), dtype=np.float64)
    return raw + _base(spec, base_feature, features)


def _subsample(anchors: np.ndarray, limit: int, seed: int) -> np.ndarray:
    if anchors.size <= limit:
        return anchors
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(anchors, size=limit, replace=False))


#: Phases `train_model` reports to its ``on_progress(step, done, total)``, in order.
TRAIN_STEPS = ("training windows", "boosting rounds", "calibration windows")


def _step(
    on_progress: Callable[[str, int, int], None] | None, step: str
) -> Callable[[int, int], None] | None:
    """``on_progress`` bound to one step name (None stays None)."""
    if on_progress is None:
        return None
    report = on_progress

    def bound(done: int, total: int) -> None:
        report(step, done, total)

    return bound


def train_model(
    trace: Trace,
    settings: TrainSettings | None = None,
    *,
    until_s: float | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> UsageModel:
    """Train on the samples of ``trace`` before ``until_s`` (all of it by default).

    The last `TrainSettings.calibration_share` of that period is held out for calibration;
    no target reaches past ``until_s``. Raises `InputError` when too little data remains.
    ``on_progress(step, done, total)`` is told each `TRAIN_STEPS` phase's progress: windows
    featured, then boosting rounds, then calibration windows.
    """
    settings = settings or TrainSettings()
    started = time.perf_counter()
    spec = FeatureSpec(step_s=trace.step_s, horizon_s=settings.horizon_s)
    if settings.base_feature and settings.base_feature not in spec.names():
        raise InputError(
            "base_feature",
            f"{settings.base_feature!r} is not a feature",
            f"use one of {', '.join(spec.names())} or an empty string",
        )
    times = trace.timestamps
    first = float(np.min(times))
    end = float(np.max(times)) + trace.step_s if until_s is None else until_s
    cal_from = end - settings.calibration_share * (end - first)
    min_history = max(1, round(settings.min_history_s / spec.step_s))
    fit_anchors = select_anchors(
        trace, spec, until_s=cal_from, target_until_s=cal_from, min_history=min_history
    )
    cal_anchors = select_anchors(
        trace, spec, from_s=cal_from, until_s=end, target_until_s=end, min_history=min_history
    )
    if fit_anchors.size < 100:
        raise InputError(
            trace.report.source,
            f"only {fit_anchors.size} usable training windows (need 100)",
            "give a longer trace: each series needs its history and horizon observed",
        )
    fit_anchors = _subsample(fit_anchors, settings.max_train_rows, settings.seed)
    cal_anchors = _subsample(cal_anchors, settings.max_calibration_rows, settings.seed + 1)
    fit = build_examples(
        trace, spec, fit_anchors, settings.quantile, on_progress=_step(on_progress, TRAIN_STEPS[0])
    )
    booster = _fit_booster(spec, fit, settings, on_round=_step(on_progress, TRAIN_STEPS[1]))
    cal = build_examples(
        trace, spec, cal_anchors, settings.quantile, on_progress=_step(on_progress, TRAIN_STEPS[2])
    )
    raw = (
        _raw_share(booster, spec, settings.base_feature, cal.features) if len(cal) else np.empty(0)
    )
    calibration = fit_calibration(raw, cal.actual, cal.capacity, settings.quantile)
    info = {
        "source": trace.report.source,
        "format": trace.report.format,
        "series": len(trace.ids),
        "train_rows": len(fit),
        "calibration_rows": len(cal),
        "trained_until_s": end,
        "calibration_from_s": cal_from,
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 2),
    }
    log.info("predict.model_trained", extra={"rows": len(fit), "seconds": info["seconds"]})
    return UsageModel(
        spec=spec,
        quantile=settings.quantile,
        booster=booster,
        calibration=calibration,
        min_history_s=settings.min_history_s,
        base_feature=settings.base_feature,
        info=info,
    )


def _fit_booster(
    spec: FeatureSpec,
    fit: Examples,
    settings: TrainSettings,
    *,
    on_round: Callable[[int, int], None] | None = None,
) -> lgb.Booster:
    params = {
        "objective": "quantile",
        "alpha": settings.quantile,
        "learning_rate": settings.learning_rate,
        "num_leaves": settings.num_leaves,
        "min_data_in_leaf": min(settings.min_data_in_leaf, max(1, len(fit) // 10)),
        "num_threads": settings.threads,
        "seed": settings.seed,
        "deterministic": True,
        "verbose": -1,
    }
    data = lgb.Dataset(
        fit.features,
        label=fit.actual / fit.capacity,
        init_score=_base(spec, settings.base_feature, fit.features),
        feature_name=list(spec.names()),
        free_raw_data=True,
    )
    callbacks = []
    if on_round is not None:
        report = on_round
        rounds = settings.rounds
        report(0, rounds)

        def after_round(env: Any) -> None:  # lightgbm.callback.CallbackEnv
            report(env.iteration + 1, rounds)

        callbacks.append(after_round)
    return lgb.train(params, data, num_boost_round=settings.rounds, callbacks=callbacks)


def save_model(model: UsageModel, path: Path) -> None:
    """Write the model as one JSON file (atomically: a temporary file, then a rename)."""
    document = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "features_version": FEATURES_VERSION,
        "feature_names": list(model.spec.names()),
        "spec": model.spec.as_dict(),
        "quantile": model.quantile,
        "min_history_s": model.min_history_s,
        "base_feature": model.base_feature,
        "calibration": asdict(model.calibration),
        "info": model.info,
        "lightgbm": model.booster.model_to_string(),
    }
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(document), encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        raise InputError(str(path), f"cannot write the model: {err.strerror}") from err


def load_model(path: Path) -> UsageModel:
    """Read a model written by `save_model`; refuses other formats, versions and schemas."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(
            str(path), "no such model file", "train one: corral predict train"
        ) from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(str(path), f"not a corral model file: {err}") from err
    if not isinstance(document, dict) or document.get("format") != MODEL_FORMAT:
        raise InputError(str(path), f"not a {MODEL_FORMAT} file", "train one: corral predict train")
    if document.get("version") != MODEL_VERSION:
        raise InputError(
            f"{path}: version",
            f"model file version {document.get('version')!r}, this corral reads {MODEL_VERSION}",
            "retrain it with this corral: corral predict train",
        )
    try:
        spec = FeatureSpec(
            step_s=float(document["spec"]["step_s"]),
            horizon_s=float(document["spec"]["horizon_s"]),
            windows_s=tuple(float(w) for w in document["spec"]["windows_s"]),
            lags=int(document["spec"]["lags"]),
            ewma_half_life_s=float(document["spec"]["ewma_half_life_s"]),
        )
        saved_names = [str(n) for n in document["feature_names"]]
        features_version = document["features_version"]
        calibration = Calibration(**document["calibration"])
        quantile = float(document["quantile"])
        min_history_s = float(document["min_history_s"])
        base_feature = str(document["base_feature"])
        text = str(document["lightgbm"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(str(path), f"incomplete model file ({err})", "retrain it") from err
    expected = list(spec.names())
    if features_version != FEATURES_VERSION or saved_names != expected:
        differ = sorted(set(saved_names) ^ set(expected))
        detail = f"; differing features: {', '.join(differ[:6])}" if differ else ""
        raise InputError(
            f"{path}: feature schema",
            f"model uses feature schema v{features_version} with {len(saved_names)} features, "
            f"this corral computes v{FEATURES_VERSION} with {len(expected)}{detail}",
            "retrain it with this corral: corral predict train",
        )
    try:
        booster = lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as err:
        raise InputError(
            str(path), f"the LightGBM model does not load: {err}", "retrain it"
        ) from err
    if base_feature and base_feature not in expected:
        raise InputError(
            f"{path}: feature schema",
            f"the model's base feature {base_feature!r} is not computed by this corral",
            "retrain it with this corral: corral predict train",
        )
    if booster.num_feature() != len(expected):
        raise InputError(
            f"{path}: feature schema",
            f"the trees use {booster.num_feature()} features, the schema lists {len(expected)}",
            "retrain it",
        )
    return UsageModel(
        spec=spec,
        quantile=quantile,
        booster=booster,
        calibration=calibration,
        min_history_s=min_history_s,
        base_feature=base_feature,
        info=dict(document.get("info") or {}),
    )
