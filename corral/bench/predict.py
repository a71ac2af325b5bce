"""Prediction speed: many workloads' forecasts in one call, against the baselines' cost.

Histories are cut from a real trace (random series and end points with a day of history),
so the timing covers what the agent does: bin the raw samples, compute the features, run
the trees. The baseline measured in the same run is the cost of the heuristic predictors
(last value, max/P95 of the last hour, EWMA) on the same windows.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from corral.errors import InputError
from corral.predict.baselines import baseline_predictions
from corral.predict.forecast import Source, forecast_usage, history_windows, predict_windows
from corral.predict.history import UsageHistory
from corral.predict.model import UsageModel
from corral.predict.series import Trace

#: The issue's target for one call over 10,000 series (s).
TARGET_S = 1.0
#: The step `run_predict_bench` reports: timed calls done.
TIMED_STEP = "timed calls"


@dataclass(frozen=True)
class PredictBenchResult:
    """Median wall times (s) over the repeats, for ``series`` workloads in one call."""

    series: int
    samples_per_series: int
    repeats: int
    forecast_s: float
    """`forecast_usage` end to end: raw samples -> bins -> features -> trees."""
    binning_s: float
    features_and_trees_s: float
    baselines_s: float
    """All heuristic baselines on the same windows (the reference cost)."""
    model_forecasts: int

    @property
    def meets_target(self) -> bool:
        """Whether one call stays under `TARGET_S`."""
        return self.forecast_s < TARGET_S

    def as_dict(self) -> dict[str, object]:
        """JSON-ready figures, with the per-series cost and the ratio to the baselines."""
        data: dict[str, object] = asdict(self)
        data["per_series_us"] = self.forecast_s / self.series * 1e6
        data["model_vs_baselines"] = self.features_and_trees_s / max(self.baselines_s, 1e-9)
        data["target_s"] = TARGET_S
        data["meets_target"] = self.meets_target
        return data


def sample_histories(
    trace: Trace, *, series: int, history_s: float, now_s: float, seed: int = 0
) -> tuple[list[UsageHistory], dict[str, float]]:
    """``series`` histories cut from random places of ``trace``, each ending at ``now_s``.

    Raises `InputError` when no series of the trace is longer than ``history_s``.
    """
    samples = max(1, round(history_s / trace.step_s))
    lengths = np.diff(trace.offsets)
    eligible = np.flatnonzero(lengths > samples)
    if eligible.size == 0:
        raise InputError(
            trace.report.source, f"no series holds {history_s:g} s of history", "use a longer trace"
        )
    rng = np.random.default_rng(seed)
    picks = rng.choice(eligible, size=series)
    histories: list[UsageHistory] = []
    requests: dict[str, float] = {}
    ages = (np.arange(samples, dtype=np.float64)[::-1]) * trace.step_s
    for k, s in enumerate(picks):
        end = int(rng.integers(trace.offsets[s] + samples, trace.offsets[s + 1] + 1))
        usage = trace.usage[end - samples : end]
        keep = ~np.isnan(usage)
        capacity = float(trace.capacity[end - 1])
        histories.append(
            UsageHistory.of(now_s - ages[keep], usage[keep], np.full(int(keep.sum()), capacity))
        )
        requests[f"w{k}"] = capacity
    return histories, requests


def run_predict_bench(
    model: UsageModel,
    trace: Trace,
    *,
    series: int = 10_000,
    repeats: int = 5,
    seed: int = 0,
    clock: Callable[[], float] = time.perf_counter,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PredictBenchResult:
    """Time forecasts for ``series`` workloads in one call (median of ``repeats``).

    ``on_progress(step, done, total)`` is told ``timed calls`` done of ``repeats``.
    """
    if series < 1 or repeats < 1:
        raise InputError("--series", "series and repeats must be at least 1")
    if not np.isclose(model.spec.step_s, trace.step_s):
        raise InputError(
            "--trace",
            f"samples every {trace.step_s:g} s, the model expects {model.spec.step_s:g} s",
            "use a trace on the model's step",
        )
    now = 1_700_000_000.0
    history_s = model.spec.lookback * model.spec.step_s
    histories, requests = sample_histories(
        trace, series=series, history_s=history_s, now_s=now, seed=seed
    )
    by_id = dict(zip(requests, histories, strict=True))
    capacity = np.array(list(requests.values()))
    stamps = np.full(series, now)
    timings: dict[str, list[float]] = {"forecast": [], "bins": [], "model": [], "base": []}
    forecasts = {}
    if on_progress is not None:
        on_progress(TIMED_STEP, 0, repeats)
    for done in range(1, repeats + 1):
        start = clock()
        forecasts = forecast_usage(model, by_id, requests, now_s=now)
        timings["forecast"].append(clock() - start)
        start = clock()
        windows, _ = history_windows(model.spec, histories, now)
        timings["bins"].append(clock() - start)
        start = clock()
        predict_windows(model, windows, capacity, stamps)
        timings["model"].append(clock() - start)
        start = clock()
        baseline_predictions(model.spec, windows, capacity, model.quantile)
        timings["base"].append(clock() - start)
        if on_progress is not None:
            on_progress(TIMED_STEP, done, repeats)
    return PredictBenchResult(
        series=series,
        samples_per_series=model.spec.lookback,
        repeats=repeats,
        forecast_s=statistics.median(timings["forecast"]),
        binning_s=statistics.median(timings["bins"]),
        features_and_trees_s=statistics.median(timings["model"]),
        baselines_s=statistics.median(timings["base"]),
        model_forecasts=sum(f.source is Source.MODEL for f in forecasts.values()),
    )
