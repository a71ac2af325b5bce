"""Time-split evaluation of the model against the baselines on the same windows."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from corral.errors import InputError
from corral.predict.baselines import BASELINES
from corral.predict.dataset import build_examples, select_anchors
from corral.predict.metrics import Score, score
from corral.predict.model import UsageModel, train_model
from corral.predict.series import FloatArray, Trace
from corral.predict.settings import TrainSettings

#: Series size buckets by capacity (cores): (upper bound inclusive, label).
SIZE_BUCKETS: tuple[tuple[float, str], ...] = (
    (1.0, "<=1"),
    (2.0, "1-2"),
    (4.0, "2-4"),
    (8.0, "4-8"),
    (math.inf, ">8"),
)
#: With one trace, the last quarter of its time span is the test period.
TEST_SHARE = 0.25
#: The step `evaluate` reports after training: test windows featured and predicted.
TEST_STEP = "test windows"


@dataclass(frozen=True)
class Evaluation:
    """Scores of the model and each baseline, overall and by series size."""

    quantile: float
    horizon_s: float
    model: Score
    baselines: dict[str, Score]
    by_size: dict[str, dict[str, Score]]
    split: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any]
    reports: list[dict[str, object]] = field(default_factory=list)

    @property
    def best_baseline(self) -> str:
        """The baseline with the lowest pinball loss."""
        return min(self.baselines, key=lambda name: self.baselines[name].pinball)

    @property
    def improvement(self) -> float:
        """How much lower the model's pinball loss is than the best baseline's (a share)."""
        best = self.baselines[self.best_baseline].pinball
        return 1.0 - self.model.pinball / best if best > 0 else float("nan")

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: ``{"model": {...}, "baselines": {name: {...}}, "by_size": ...}``."""
        return {
            "quantile": self.quantile,
            "horizon_s": self.horizon_s,
            "model": self.model.as_dict(),
            "baselines": {name: s.as_dict() for name, s in self.baselines.items()},
            "best_baseline": self.best_baseline,
            "pinball_improvement": self.improvement,
            "by_size": {
                bucket: {
                    "model": scores["model"].as_dict(),
                    "baselines": {n: s.as_dict() for n, s in scores.items() if n != "model"},
                }
                for bucket, scores in self.by_size.items()
            },
            "split": self.split,
            "training": self.training,
            "calibration": self.calibration,
            "load_reports": self.reports,
        }


def _check_test_follows(train: Trace, test: Trace, train_end: float) -> None:
    if not np.isclose(train.step_s, test.step_s, rtol=0.02):
        raise InputError(
            "--test",
            f"samples every {test.step_s:g} s, the training trace every {train.step_s:g} s",
            "resample both with --step-s",
        )
    shared = set(train.ids) & set(test.ids)
    if not shared:
        return
    index = {sid: k for k, sid in enumerate(test.ids)}
    for sid in sorted(shared):
        start = float(test.start_s[index[sid]])
        if start < train_end:
            raise InputError(
                "--test",
                f"series {sid} starts at {start:.0f} s, before the training period ends "
                f"({train_end:.0f} s): the test period must follow the training period",
                "give a test file that starts after the training file ends",
            )


def evaluate(
    train: Trace,
    test: Trace | None = None,
    settings: TrainSettings | None = None,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> tuple[Evaluation, UsageModel]:
    """Train on the training period and score model and baselines on the test period.

    With one trace the last `TEST_SHARE` of its time span is the test period (features may
    look back into the training period, targets of training rows never reach the test).
    ``on_progress(step, done, total)`` gets `train_model`'s steps, then ``test windows``.
    """
    settings = settings or TrainSettings()
    times = train.timestamps
    first, last = float(np.min(times)), float(np.max(times)) + train.step_s
    if test is None:
        cut = first + (1.0 - TEST_SHARE) * (last - first)
        model = train_model(train, settings, until_s=cut, on_progress=on_progress)
        target = train
        test_from: float | None = cut
    else:
        _check_test_follows(train, test, last)
        model = train_model(train, settings, on_progress=on_progress)
        target = test
        test_from = None
    spec = model.spec
    min_history = max(1, round(settings.min_history_s / spec.step_s))
    anchors = select_anchors(target, spec, from_s=test_from, min_history=min_history)
    if anchors.size == 0:
        raise InputError(
            "--test", "no test windows: the test period has no observed horizon", "give more data"
        )

    def test_rows(done: int, total: int) -> None:
        if on_progress is not None:
            on_progress(TEST_STEP, done, total)

    examples = build_examples(
        target, spec, anchors, settings.quantile, with_baselines=True, on_progress=test_rows
    )
    predicted = model.predict(examples.features, examples.capacity)
    q = settings.quantile
    baselines = {name: score(examples.actual, examples.baselines[name], q) for name in BASELINES}
    by_size: dict[str, dict[str, Score]] = {}
    lower = 0.0
    for upper, label in SIZE_BUCKETS:
        mask = (examples.capacity > lower) & (examples.capacity <= upper)
        lower = upper
        if not mask.any():
            continue
        scores = {"model": score(examples.actual[mask], predicted[mask], q)}
        for name in BASELINES:
            values: FloatArray = examples.baselines[name]
            scores[name] = score(examples.actual[mask], values[mask], q)
        by_size[label] = scores
    test_times = examples.timestamp_s
    split = {
        "train": train.report.source,
        "test": target.report.source,
        "test_from_s": float(np.min(test_times)),
        "test_until_s": float(np.max(test_times)),
        "test_windows": len(examples),
        "test_series": int(np.unique(examples.series).size),
        "horizon_samples": spec.horizon,
        "step_s": spec.step_s,
    }
    reports = [train.report.as_dict()] + ([test.report.as_dict()] if test is not None else [])
    evaluation = Evaluation(
        quantile=q,
        horizon_s=settings.horizon_s,
        model=score(examples.actual, predicted, q),
        baselines=baselines,
        by_size=by_size,
        split=split,
        training={k: v for k, v in model.info.items() if k != "settings"},
        calibration={
            "snap": model.calibration.snap,
            "scale": model.calibration.scale,
            "rows": model.calibration.rows,
            "coverage_before": model.calibration.coverage_before,
            "coverage_after": model.calibration.coverage_after,
        },
        reports=reports,
    )
    return evaluation, model
