"""What the agent calls: each workload's predicted quantile of CPU from its usage history.

Pure functions (no I/O, the time is passed in). Histories with any spacing are averaged
into the model's step, aligned so the newest bin ends at ``now_s``; a workload with less
than the model's minimum history, or no model at all, gets its request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from corral.errors import InputError
from corral.predict.features import FeatureSpec, compute_features, min_history_samples
from corral.predict.history import UsageHistory
from corral.predict.model import UsageModel
from corral.predict.series import FloatArray, IntArray


class Source(StrEnum):
    """Where a forecast came from."""

    MODEL = "model"
    REQUEST = "request"


@dataclass(frozen=True)
class Forecast:
    """A workload's predicted quantile of CPU over the model's horizon, in cores."""

    cores: float
    source: Source
    reason: str = ""


def history_windows(
    spec: FeatureSpec, histories: Sequence[UsageHistory], now_s: float
) -> tuple[FloatArray, IntArray]:
    """Window matrix (rows x lookback) and the number of observed bins per history.

    Bin ``k`` (column ``lookback-1-k``) is the mean of the samples in
    ``(now - (k+1)·step, now - k·step]`` (bin 0 also holds ``now``); bins without samples
    are NaN. Vectorised over all histories at once.
    """
    width = spec.lookback
    n = len(histories)
    lengths = np.fromiter((h.timestamps_s.size for h in histories), dtype=np.int64, count=n)
    if lengths.sum() == 0:
        return np.full((n, width), np.nan), np.zeros(n, dtype=np.int64)
    t = np.concatenate([h.timestamps_s for h in histories])
    usage = np.concatenate([h.usage_cores for h in histories])
    row = np.repeat(np.arange(n, dtype=np.int64), lengths)
    age = now_s - t
    slot = np.floor(np.maximum(age, 0.0) / spec.step_s).astype(np.int64)
    keep = (age >= 0) & (slot < width) & np.isfinite(usage)
    flat = row[keep] * width + (width - 1 - slot[keep])
    sums = np.bincount(flat, weights=usage[keep], minlength=n * width)
    counts = np.bincount(flat, minlength=n * width)
    with np.errstate(invalid="ignore", divide="ignore"):
        windows = (sums / counts).reshape(n, width)
    windows[counts.reshape(n, width) == 0] = np.nan
    observed = np.count_nonzero(~np.isnan(windows), axis=1).astype(np.int64)
    return windows, observed


def predict_windows(
    model: UsageModel, windows: FloatArray, capacity_cores: FloatArray, timestamp_s: FloatArray
) -> FloatArray:
    """The model's prediction (cores) for each row of a window matrix (see `history_windows`)."""
    features = compute_features(model.spec, windows, capacity_cores, timestamp_s)
    return model.predict(features, capacity_cores)


def forecast_usage(
    model: UsageModel | None,
    histories: Mapping[str, UsageHistory],
    requests: Mapping[str, float],
    *,
    now_s: float,
) -> dict[str, Forecast]:
    """Predicted quantile of CPU (cores) for every workload in ``requests``.

    ``requests`` maps each workload id to its request in cores (the fallback, and the
    capacity the prediction is clipped to). Workloads whose history has fewer observed bins
    than the model's minimum history (or when ``model`` is None) get their request.
    """
    for workload_id, request in requests.items():
        if not (np.isfinite(request) and request > 0):
            raise InputError(
                f"requests[{workload_id}]", f"must be a positive number of cores, got {request}"
            )
    ids = list(requests)
    out: dict[str, Forecast] = {}
    if model is None:
        return {i: Forecast(float(requests[i]), Source.REQUEST, "no model") for i in ids}
    with_history = [i for i in ids if i in histories]
    windows, observed = history_windows(model.spec, [histories[i] for i in with_history], now_s)
    needed = min_history_samples(model.spec, model.min_history_s)
    enough = observed >= needed
    capacity = np.array([float(requests[i]) for i in with_history], dtype=np.float64)
    predicted = np.empty(len(with_history))
    if enough.any():
        predicted[enough] = predict_windows(
            model, windows[enough], capacity[enough], np.full(int(enough.sum()), now_s)
        )
    for k, workload_id in enumerate(with_history):
        if enough[k]:
            out[workload_id] = Forecast(float(predicted[k]), Source.MODEL)
        else:
            out[workload_id] = Forecast(
                float(capacity[k]),
                Source.REQUEST,
                f"history too short: {observed[k]} of {needed} samples of {model.spec.step_s:g} s",
            )
    for workload_id in ids:
        if workload_id not in out:
            out[workload_id] = Forecast(float(requests[workload_id]), Source.REQUEST, "no history")
    return out


def predict_p95(
    model: UsageModel | None, history: UsageHistory | None, request_cores: float, *, now_s: float
) -> Forecast:
    """One workload's forecast: the model's quantile, or its request when history is short."""
    histories = {"workload": history} if history is not None else {}
    return forecast_usage(model, histories, {"workload": request_cores}, now_s=now_s)["workload"]
