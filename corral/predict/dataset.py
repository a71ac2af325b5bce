"""Training and evaluation examples from a trace: anchors, their features and what followed.

An *anchor* is an observed sample; its *actual* is the chosen quantile of the usage over the
next `FeatureSpec.horizon` samples (all of which must be observed), in cores. Features only
see samples up to and including the anchor.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from corral.predict.baselines import baseline_predictions
from corral.predict.features import FeatureSpec, compute_features, masked_quantile
from corral.predict.series import FloatArray, IntArray, Trace

#: Anchors processed per chunk: bounds the window matrix (rows x lookback) in memory.
CHUNK = 40_000


@dataclass(frozen=True, eq=False)
class Examples:
    """Rows of features with the realised quantile, per anchor."""

    features: FloatArray
    actual: FloatArray
    capacity: FloatArray
    series: IntArray
    timestamp_s: FloatArray
    baselines: dict[str, FloatArray]

    def __len__(self) -> int:
        return int(self.actual.size)


def select_anchors(
    trace: Trace,
    spec: FeatureSpec,
    *,
    from_s: float | None = None,
    until_s: float | None = None,
    target_until_s: float | None = None,
    min_history: int = 1,
) -> IntArray:
    """Flat indices of anchors usable as examples.

    An anchor is observed, has at least ``min_history`` samples of its series up to and
    including it, lies in ``[from_s, until_s)``, and its next `FeatureSpec.horizon` samples
    are all observed and end before ``target_until_s`` (so a training target never reaches
    into the test period).
    """
    horizon = spec.horizon
    observed = ~np.isnan(trace.usage)
    cum = np.concatenate(([0], np.cumsum(observed)))
    size = trace.usage.size
    index = np.arange(size, dtype=np.int64)
    series = trace.series_of
    end = trace.offsets[series + 1]
    local = index - trace.offsets[series]
    times = trace.timestamps
    ok = observed & (index + horizon < end) & (local + 1 >= min_history)
    future_end = np.minimum(index + horizon, size - 1)
    ok &= (cum[future_end + 1] - cum[index + 1]) == horizon
    if from_s is not None:
        ok &= times >= from_s
    if until_s is not None:
        ok &= times < until_s
    if target_until_s is not None:
        ok &= times + horizon * trace.step_s < target_until_s
    return index[ok]


def future_quantile(
    trace: Trace, spec: FeatureSpec, anchors: IntArray, quantile: float
) -> FloatArray:
    """The ``quantile`` of usage over the ``horizon`` samples after each anchor, in cores."""
    future = trace.windows(anchors + spec.horizon, before=spec.horizon)
    return masked_quantile(future, quantile)


def build_examples(
    trace: Trace,
    spec: FeatureSpec,
    anchors: IntArray,
    quantile: float,
    *,
    with_baselines: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> Examples:
    """Features, actuals and (optionally) baseline predictions for ``anchors``, in chunks.

    ``on_progress(rows_done, rows)`` is called before the first chunk and after each one.
    """
    parts: list[FloatArray] = []
    actual: list[FloatArray] = []
    base: dict[str, list[FloatArray]] = {}
    capacity = trace.capacity[anchors]
    times = trace.timestamps[anchors]
    if on_progress is not None:
        on_progress(0, int(anchors.size))
    for start in range(0, anchors.size, CHUNK):
        chunk = anchors[start : start + CHUNK]
        windows = trace.windows(chunk, before=spec.lookback)
        cap = capacity[start : start + CHUNK]
        parts.append(compute_features(spec, windows, cap, times[start : start + CHUNK]))
        actual.append(future_quantile(trace, spec, chunk, quantile))
        if with_baselines:
            for name, values in baseline_predictions(spec, windows, cap, quantile).items():
                base.setdefault(name, []).append(values)
        if on_progress is not None:
            on_progress(start + chunk.size, int(anchors.size))
    width = len(spec.names())
    return Examples(
        features=np.concatenate(parts) if parts else np.empty((0, width)),
        actual=np.concatenate(actual) if actual else np.empty(0),
        capacity=capacity,
        series=trace.series_of[anchors],
        timestamp_s=times,
        baselines={name: np.concatenate(v) for name, v in base.items()},
    )
