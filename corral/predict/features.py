"""Features of a usage history, computed for many series at once from a window matrix.

One code path serves training (millions of anchors, in chunks) and prediction (thousands of
live workloads): both build a matrix whose rows are the last `FeatureSpec.lookback` samples
before each anchor (the newest in the last column, NaN where missing) and call
`compute_features`. Usage is expressed as a share of the anchor's capacity, so one model
serves a 1-core VM and a 32-core one; capacity is itself a feature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from corral.errors import InputError
from corral.predict.series import FloatArray, IntArray

#: Bump when the meaning of a feature changes; saved models record it.
FEATURES_VERSION = 1

_DAY_S = 86_400.0
_WEEK_S = 7 * _DAY_S
_STATS = ("mean", "median", "max", "p95")


@dataclass(frozen=True)
class FeatureSpec:
    """What the features look at. Durations are in seconds and become samples via the step."""

    step_s: float = 300.0
    """Sampling step of the histories (s); the model only accepts histories on this step."""
    horizon_s: float = 600.0
    """How far ahead the predicted quantile reaches (s); 10 minutes as at Netflix."""
    windows_s: tuple[float, ...] = (900.0, 1800.0, 3600.0, 10_800.0, 21_600.0, 86_400.0)
    """Trailing windows for mean, median, max and P95: 15 min to a day."""
    lags: int = 5
    """How many of the most recent samples are features themselves."""
    ewma_half_life_s: float = 3600.0
    """Half-life of the exponentially weighted mean and deviation (s)."""

    def __post_init__(self) -> None:
        if not self.step_s > 0:
            raise InputError("step_s", f"must be positive, got {self.step_s:g}")
        if self.horizon_s < self.step_s:
            raise InputError(
                "--horizon-s",
                f"{self.horizon_s:g} s is shorter than the trace step of {self.step_s:g} s",
                "use a horizon of at least one step",
            )
        if self.lags < 1 or not self.windows_s:
            raise InputError("lags", "need at least one lag and one window")

    def samples(self, seconds: float) -> int:
        """Whole samples covering ``seconds`` (at least one)."""
        return max(1, round(seconds / self.step_s))

    @property
    def horizon(self) -> int:
        """Samples in the predicted horizon."""
        return self.samples(self.horizon_s)

    @property
    def day(self) -> int:
        """Samples in a day."""
        return self.samples(_DAY_S)

    @property
    def lookback(self) -> int:
        """Columns of the window matrix: a day plus the anchor, or the longest window."""
        longest = max(self.samples(w) for w in self.windows_s)
        return max(self.day + 1, longest, self.lags)

    def names(self) -> tuple[str, ...]:
        """Feature names, in column order (the model's schema)."""
        out = [f"lag_{k}" for k in range(self.lags)]
        for window in self.windows_s:
            out.extend(f"{stat}_{window:g}s" for stat in _STATS)
        out += [
            "std_3600s",
            "std_86400s",
            "ewma",
            "ewm_std",
            "day_ago",
            "day_ago_horizon_max",
            "observed_share",
            "hour_of_day",
            "day_of_week",
            "capacity_cores",
        ]
        return tuple(out)

    def as_dict(self) -> dict[str, object]:
        """The spec as a JSON-ready mapping."""
        return {
            "step_s": self.step_s,
            "horizon_s": self.horizon_s,
            "windows_s": list(self.windows_s),
            "lags": self.lags,
            "ewma_half_life_s": self.ewma_half_life_s,
        }


def masked_quantile(values: FloatArray, q: float) -> FloatArray:
    """Quantile ``q`` of each row ignoring NaN (linear interpolation, as `np.nanquantile`).

    Rows with no values give NaN. Vectorised: NaN sorts last, so each row's valid values
    form a sorted prefix whose length is the row's count.
    """
    ordered = np.sort(values, axis=1)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    return _sorted_quantile(ordered, count, q)


def _sorted_quantile(ordered: FloatArray, count: IntArray, q: float) -> FloatArray:
    """Quantile ``q`` of rows sorted with NaN last, ``count`` valid values each."""
    top = np.maximum(count - 1, 0)
    position = q * top
    lo = np.floor(position).astype(np.int64)
    hi = np.minimum(lo + 1, top)
    low = np.take_along_axis(ordered, lo[:, None], axis=1)[:, 0]
    high = np.take_along_axis(ordered, hi[:, None], axis=1)[:, 0]
    out = low + (position - lo) * (high - low)
    return np.where(count > 0, out, np.nan)


def masked_mean_std(
    values: FloatArray, weights: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Weighted mean and standard deviation of each row ignoring NaN (NaN for empty rows)."""
    present = ~np.isnan(values)
    filled = np.where(present, values, 0.0)
    w = present * (1.0 if weights is None else weights[None, :])
    total = w.sum(axis=1)
    safe = np.where(total > 0, total, 1.0)
    mean = (filled * w).sum(axis=1) / safe
    var = (np.square(filled - mean[:, None]) * w).sum(axis=1) / safe
    empty = total <= 0
    return np.where(empty, np.nan, mean), np.where(empty, np.nan, np.sqrt(var))


def ewma_weights(spec: FeatureSpec) -> FloatArray:
    """EWMA weight of each window column (oldest first, the anchor weighs 1)."""
    lag = np.arange(spec.lookback - 1, -1, -1, dtype=np.float64)
    return np.power(0.5, lag * spec.step_s / spec.ewma_half_life_s)


def window_stats(values: FloatArray) -> dict[str, FloatArray]:
    """Mean, median, max and P95 of each row, ignoring NaN (one sort per row)."""
    ordered = np.sort(values, axis=1)
    count = np.count_nonzero(~np.isnan(values), axis=1)
    safe = np.maximum(count, 1)
    total = np.where(np.isnan(ordered), 0.0, ordered).sum(axis=1)
    peak = np.take_along_axis(ordered, (safe - 1)[:, None], axis=1)[:, 0]
    empty = count == 0
    return {
        "mean": np.where(empty, np.nan, total / safe),
        "median": _sorted_quantile(ordered, count, 0.5),
        "max": np.where(empty, np.nan, peak),
        "p95": _sorted_quantile(ordered, count, 0.95),
    }


def compute_features(
    spec: FeatureSpec,
    windows: FloatArray,
    capacity_cores: FloatArray,
    timestamp_s: FloatArray,
) -> FloatArray:
    """Feature matrix (rows x `FeatureSpec.names`) from usage windows in cores.

    ``windows`` has `FeatureSpec.lookback` columns, the anchor's sample last, NaN where a
    sample is missing; ``capacity_cores`` and ``timestamp_s`` are the anchors'. Usage
    features are shares of capacity; missing stays NaN (the trees route it).
    """
    rows, columns = windows.shape
    if columns != spec.lookback:
        raise InputError(
            "windows", f"has {columns} columns, the spec needs {spec.lookback}", "use spec.lookback"
        )
    share = windows / capacity_cores[:, None]
    out = np.empty((rows, len(spec.names())), dtype=np.float64)
    col = 0
    for k in range(spec.lags):
        out[:, col] = share[:, columns - 1 - k]
        col += 1
    for window in spec.windows_s:
        stats = window_stats(share[:, columns - spec.samples(window) :])
        for stat in _STATS:
            out[:, col] = stats[stat]
            col += 1
    for seconds in (3600.0, _DAY_S):
        _, std = masked_mean_std(share[:, columns - spec.samples(seconds) :])
        out[:, col] = std
        col += 1
    ewm, ewm_std = masked_mean_std(share, ewma_weights(spec))
    out[:, col] = ewm
    out[:, col + 1] = ewm_std
    col += 2
    day_ago = columns - 1 - spec.day
    out[:, col] = share[:, day_ago]
    horizon = share[:, day_ago + 1 : day_ago + 1 + spec.horizon]
    out[:, col + 1] = window_stats(horizon)["max"]
    out[:, col + 2] = np.count_nonzero(~np.isnan(share[:, -spec.day :]), axis=1) / spec.day
    col += 3
    out[:, col] = np.mod(timestamp_s, _DAY_S) / 3600.0
    # 1970-01-01 was a Thursday: shift so that Monday is 0.
    out[:, col + 1] = np.floor(np.mod(timestamp_s + 3 * _DAY_S, _WEEK_S) / _DAY_S)
    out[:, col + 2] = capacity_cores
    return out


def observed_count(windows: FloatArray, samples: int) -> IntArray:
    """Observed samples among the last ``samples`` columns of each row."""
    counts: IntArray = np.count_nonzero(~np.isnan(windows[:, -samples:]), axis=1).astype(np.int64)
    return counts


def min_history_samples(spec: FeatureSpec, min_history_s: float) -> int:
    """Observed samples needed before the model is trusted over the request."""
    return max(1, math.ceil(min_history_s / spec.step_s))
