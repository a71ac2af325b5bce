"""Baseline predictors the model must beat, computed from the same windows as its features."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from corral.predict.features import FeatureSpec, ewma_weights, masked_mean_std, window_stats
from corral.predict.series import FloatArray

BASELINES = ("last_value", "max_1h", "p95_1h", "ewma_kstd", "request")


def ewma_k(quantile: float) -> float:
    """k of EWMA + k·std: the normal quantile at ``quantile`` (1.645 for 0.95)."""
    return NormalDist().inv_cdf(quantile)


def baseline_predictions(
    spec: FeatureSpec, windows: FloatArray, capacity_cores: FloatArray, quantile: float
) -> dict[str, FloatArray]:
    """Each baseline's prediction in cores, clipped to ``[0, capacity]``.

    - ``last_value``: the latest sample; ``max_1h`` / ``p95_1h``: of the last hour;
    - ``ewma_kstd``: EWMA (`FeatureSpec.ewma_half_life_s`) plus k exponentially weighted
      standard deviations, k the normal quantile at ``quantile``;
    - ``request``: the capacity itself, what a scheduler reserves today.
    A baseline with no data in its window falls back to the request.
    """
    hour = window_stats(windows[:, -spec.samples(3600.0) :])
    mean, std = masked_mean_std(windows, ewma_weights(spec))
    raw = {
        "last_value": windows[:, -1],
        "max_1h": hour["max"],
        "p95_1h": hour["p95"],
        "ewma_kstd": mean + ewma_k(quantile) * std,
        "request": capacity_cores,
    }
    return {
        name: np.clip(np.where(np.isnan(value), capacity_cores, value), 0.0, capacity_cores)
        for name, value in raw.items()
    }
