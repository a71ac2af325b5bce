"""Scores of quantile predictions: pinball loss, coverage and over-provisioning (cores)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corral.predict.series import FloatArray


def pinball_loss(actual: FloatArray, predicted: FloatArray, quantile: float) -> float:
    """Mean pinball (quantile) loss: ``q·(a-p)`` when under, ``(1-q)·(p-a)`` when over."""
    if actual.size == 0:
        return float("nan")
    diff = actual - predicted
    return float(np.mean(np.maximum(quantile * diff, (quantile - 1.0) * diff)))


@dataclass(frozen=True)
class Score:
    """How one predictor did on a set of windows."""

    pinball: float
    """Mean pinball loss at the quantile, in cores."""
    coverage: float
    """Share of windows where the actual quantile was at most the prediction."""
    overprovision: float
    """Mean of prediction minus actual, in cores (negative when under-predicting)."""
    windows: int

    def as_dict(self) -> dict[str, float | int]:
        """The score as a JSON-ready mapping."""
        return {
            "pinball": self.pinball,
            "coverage": self.coverage,
            "overprovision": self.overprovision,
            "windows": self.windows,
        }


def score(actual: FloatArray, predicted: FloatArray, quantile: float) -> Score:
    """Score predictions against actuals (same length, cores)."""
    if actual.size == 0:
        return Score(float("nan"), float("nan"), float("nan"), 0)
    return Score(
        pinball=pinball_loss(actual, predicted, quantile),
        coverage=float(np.mean(actual <= predicted)),
        overprovision=float(np.mean(predicted - actual)),
        windows=int(actual.size),
    )
