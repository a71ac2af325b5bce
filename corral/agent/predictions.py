"""Each workload's predicted P95 CPU, from the usage history the agent keeps in SQLite.

The sampler stores one 60 s mean per workload in the ``usage`` table; every
`PredictorSettings.refresh_s` (and whenever a workload the cache does not know is placed)
the agent reads the last day of it and predicts:

- with a model file (``predictor.model``, from ``corral predict train``): the model's
  quantile (default P95 over the next 10 minutes), once a workload has the model's minimum
  history (default an hour);
- without one: the peak 60 s mean of the last hour (the strongest baseline on the
  Bitbrains trace: see ``corral predict eval``), once a workload has
  `PredictorSettings.min_history_s` of history;
- otherwise the request: the workload then goes to the cost model unchanged.

A prediction is clipped to ``[0, request]`` and handed to placement as the workload's
``predicted_cpus`` (what the cost model weighs: `Workload.expected_use`); a spec that sets
``predicted_cpus`` itself keeps it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from corral.errors import InputError
from corral.placement.workload import Workload

if TYPE_CHECKING:  # the predict layer pulls in LightGBM and pandas: imported when used
    from corral.predict.history import UsageHistory
    from corral.predict.model import UsageModel

log = logging.getLogger(__name__)

#: Where a prediction came from: the model, the recent peak (no model) or the request.
MODEL = "model"
RECENT_PEAK = "recent-peak"
REQUEST = "request"


class PredictorSettings(BaseModel):
    """The ``predictor`` section of the agent config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Path | None = Field(
        default=None,
        description="Model file from `corral predict train`. Absent: each workload's peak "
        "60 s mean of the last `window_s`.",
    )
    refresh_s: float = Field(
        default=60.0,
        gt=0,
        description="Re-read the history and re-predict at most this often, s (the sampler "
        "stores one mean a minute, so sooner sees nothing new).",
    )
    min_history_s: float = Field(
        default=3600.0,
        gt=0,
        description="Without a model: history needed before the recent peak replaces the "
        "request, s (a model file carries its own).",
    )
    window_s: float = Field(
        default=3600.0,
        gt=0,
        description="Without a model: the window whose peak is the prediction, s (an hour, "
        "the max_1h baseline).",
    )
    enabled: bool = Field(
        default=True, description="false: never predict; placement weighs the requests."
    )


@dataclass(frozen=True)
class Prediction:
    """One workload's predicted P95 in cores, where it came from and why."""

    cores: float
    source: str
    reason: str = ""

    @property
    def predicted(self) -> bool:
        """True when it came from the history (not the request)."""
        return self.source != REQUEST

    def to_json(self) -> dict[str, Any]:
        """JSON for /status."""
        return {"cores": round(self.cores, 4), "source": self.source, "reason": self.reason}


def open_model(settings: PredictorSettings) -> UsageModel | None:
    """The configured model (None without one); `InputError` names ``predictor.model``."""
    if settings.model is None or not settings.enabled:
        return None
    from corral.predict.model import load_model  # noqa: PLC0415 - heavy, only with a model

    try:
        return load_model(settings.model)
    except InputError as err:
        raise InputError(f"predictor.model ({err.field})", err.problem, err.fix) from None


def recent_peak(
    histories: Mapping[str, UsageHistory],
    requests: Mapping[str, float],
    *,
    now_s: float,
    window_s: float,
    min_history_s: float,
) -> dict[str, Prediction]:
    """The no-model prediction: each workload's peak sample in ``(now - window_s, now]``.

    A workload whose oldest sample is younger than ``min_history_s``, or with no sample in
    the window, gets its request. Pure: histories and time come in.
    """
    out: dict[str, Prediction] = {}
    for wid, request in requests.items():
        history = histories.get(wid)
        if history is None or history.timestamps_s.size == 0:
            out[wid] = Prediction(request, REQUEST, "no history")
            continue
        t = history.timestamps_s
        age = now_s - float(np.min(t))
        if age < min_history_s:
            out[wid] = Prediction(
                request,
                REQUEST,
                f"history too short: {age:.0f} of {min_history_s:g} s",
            )
            continue
        recent = history.usage_cores[(t > now_s - window_s) & (t <= now_s)]
        if recent.size == 0:
            out[wid] = Prediction(request, REQUEST, "no sample in the window")
            continue
        peak = float(np.clip(np.max(recent), 0.0, request))
        out[wid] = Prediction(peak, RECENT_PEAK, f"peak of {recent.size} samples")
    return out


def predict_workloads(
    model: UsageModel | None,
    settings: PredictorSettings,
    histories: Mapping[str, UsageHistory],
    requests: Mapping[str, float],
    *,
    now_s: float,
) -> dict[str, Prediction]:
    """Each workload's prediction (see the module docstring). Pure."""
    if not settings.enabled:
        return {w: Prediction(r, REQUEST, "predictor disabled") for w, r in requests.items()}
    if model is None:
        return recent_peak(
            histories,
            requests,
            now_s=now_s,
            window_s=settings.window_s,
            min_history_s=settings.min_history_s,
        )
    from corral.predict.forecast import forecast_usage  # noqa: PLC0415 - heavy

    forecasts = forecast_usage(model, histories, requests, now_s=now_s)
    return {
        wid: Prediction(float(min(f.cores, requests[wid])), str(f.source), f.reason)
        for wid, f in forecasts.items()
    }


def with_predictions(
    workloads: Sequence[Workload], predicted: Mapping[str, float]
) -> list[Workload]:
    """``workloads`` with ``predicted_cpus`` filled in from ``predicted`` where the spec
    leaves it unset (a spec's own value wins)."""
    return [
        w.model_copy(update={"predicted_cpus": predicted[w.id]})
        if w.predicted_cpus is None and w.id in predicted
        else w
        for w in workloads
    ]


@dataclass
class AgentPredictor:
    """The agent's cache of predictions; reads the ``usage`` table at ``state_path``.

    `predicted` is called by the decision loop (in a worker thread); `status` by the API.
    """

    settings: PredictorSettings
    state_path: Path
    model: UsageModel | None = None
    clock_s: float | None = None
    """When the cache was filled (None: never)."""
    _cache: dict[str, Prediction] = field(default_factory=dict)
    _requests: dict[str, float] = field(default_factory=dict)
    _errors: int = 0
    _last_error: str = ""
    _refresh_ms: float = 0.0

    @classmethod
    def open(cls, settings: PredictorSettings, state_path: Path) -> AgentPredictor:
        """Load the configured model; `InputError` when the file is missing or mismatched."""
        return cls(settings=settings, state_path=state_path, model=open_model(settings))

    def lookback_s(self) -> float:
        """How much history a refresh reads, s."""
        if self.model is None:
            # Enough to see a sample older than min_history_s, and the whole peak window.
            return self.settings.window_s + self.settings.min_history_s
        return self.model.spec.lookback * self.model.spec.step_s

    def predicted(self, workloads: Sequence[Workload], now_s: float) -> dict[str, float]:
        """Predicted cores of the workloads that have one (not their request), refreshed
        when older than ``refresh_s`` or when a workload or request changed. Never raises
        for a history it cannot read: it logs, counts and falls back to the requests."""
        requests = {w.id: float(w.cpus) for w in workloads}
        stale = self.clock_s is None or now_s - self.clock_s >= self.settings.refresh_s
        if stale or requests != self._requests:
            self._refresh(requests, now_s)
        return {wid: p.cores for wid, p in self._cache.items() if p.predicted}

    def _refresh(self, requests: dict[str, float], now_s: float) -> None:
        started = time.perf_counter()
        histories: dict[str, UsageHistory] = {}
        if self.settings.enabled and requests:
            from corral.predict.history import read_usage_histories  # noqa: PLC0415 - pandas

            try:
                histories = read_usage_histories(
                    self.state_path,
                    since_s=now_s - self.lookback_s(),
                    workload_ids=sorted(requests),
                )
            except InputError as err:
                self._errors += 1
                self._last_error = str(err)
                log.warning("agent.predictions_unreadable", extra={"error": str(err)})
        self._cache = predict_workloads(self.model, self.settings, histories, requests, now_s=now_s)
        self._requests = requests
        self.clock_s = now_s
        self._refresh_ms = (time.perf_counter() - started) * 1000

    def status(self) -> dict[str, Any]:
        """The ``predictions`` section of /status."""
        model = self.model
        return {
            "enabled": self.settings.enabled,
            "model": None if self.settings.model is None else str(self.settings.model),
            "quantile": None if model is None else model.quantile,
            "horizon_s": None if model is None else model.spec.horizon_s,
            "fallback": None
            if model is not None
            else f"peak of the last {self.settings.window_s:g} s",
            "refreshed_at_s": self.clock_s,
            "refresh_ms": round(self._refresh_ms, 3),
            "read_errors": self._errors,
            "last_error": self._last_error,
            "workloads": {wid: p.to_json() for wid, p in sorted(self._cache.items())},
        }
