"""The service-level objective of a latency-critical workload and the slack against it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class Slo:
    """A tail-latency objective: the ``percentile`` of request latency over ``window_s``
    seconds must stay at or below ``target_ms``.

    The default is the benchmark's: p99 at most 1 ms over 1 s windows. p99 rather than
    p99.9 because on a shared VM host events (steal, descheduling) dominate the far tail.
    """

    percentile: float = 99.0
    target_ms: float = 1.0
    window_s: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.percentile < 100.0:
            raise InputError(
                "slo.percentile", f"{self.percentile} is not in (0, 100)", "use e.g. 99"
            )
        if not (self.target_ms > 0.0 and math.isfinite(self.target_ms)):
            raise InputError("slo.target_ms", f"{self.target_ms} is not positive", "e.g. 1.0")
        if not (self.window_s > 0.0 and math.isfinite(self.window_s)):
            raise InputError("slo.window_s", f"{self.window_s} is not positive", "e.g. 1.0")

    def slack(self, measured_ms: float) -> float:
        """Heracles' slack: ``(target - measured) / target``; negative means violated."""
        return (self.target_ms - measured_ms) / self.target_ms

    def violated(self, measured_ms: float) -> bool:
        """True when ``measured_ms`` is above the target."""
        return measured_ms > self.target_ms


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank ``pct`` percentile of ``values`` (``ValueError`` when empty).

    Nearest rank (no interpolation) matches what load generators such as the benchmark's
    C client report, so the controller and the benchmark agree on what p99 means.
    """
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    return ordered[nearest_rank(len(ordered), pct) - 1]


def nearest_rank(count: int, pct: float) -> int:
    """The 1-based rank of the nearest-rank ``pct`` percentile among ``count`` values
    (``ValueError`` when there are none)."""
    if count < 1:
        raise ValueError("percentile of no values")
    return min(count, max(1, math.ceil(pct / 100.0 * count)))
