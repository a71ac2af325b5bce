"""What the controller observes each period, and quantiles from Prometheus histograms."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Observation:
    """One period's signals. Any field may be None when its source had nothing to say.

    ``latency_ms`` is the SLO percentile measured over the SLO window; ``load_rps`` and
    ``lc_cpu`` (cores) describe the LC load; ``psi_some_us`` is the BE box's cumulative
    memory PSI ``some`` total in microseconds and ``be_memory_bytes`` its current usage.
    ``noisy`` flags a window where the source saw the host itself stall (steal, timer lag):
    the controller does not judge a step on such a window.
    """

    latency_ms: float | None = None
    load_rps: float | None = None
    lc_cpu: float | None = None
    psi_some_us: int | None = None
    be_memory_bytes: int | None = None
    samples: int = 0
    noisy: bool = False
    slack: float | None = None
    """Set by a source that already judged several LC workloads against their own SLOs
    (the worst slack); the controller then uses it instead of ``latency_ms``."""
    load: float | None = None
    """LC load as a fraction of peak, when the source knows the peak (the highest of
    several LC workloads); otherwise the controller divides ``load_rps`` by its own."""


def quantile_from_buckets(buckets: Sequence[tuple[float, float]], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a cumulative histogram, as Prometheus'
    ``histogram_quantile`` computes it: linear interpolation inside the bucket holding the
    rank, the lower bound of the first bucket taken as 0; a rank in the ``+Inf`` bucket
    returns the largest finite bound. None when the histogram holds no observations.

    ``buckets`` are ``(upper_bound, cumulative_count)`` pairs in any order.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not in [0, 1]")
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank and count > lower_count:
            if math.isinf(bound):
                return lower_bound
            fraction = (rank - lower_count) / (count - lower_count)
            return lower_bound + (bound - lower_bound) * fraction
        lower_bound, lower_count = bound, count
    return lower_bound


def bucket_delta(
    now: Sequence[tuple[float, float]], before: Sequence[tuple[float, float]]
) -> list[tuple[float, float]]:
    """Cumulative bucket counts accumulated between two scrapes (a counter reset - any
    count going down - returns ``now`` as is, as Prometheus' ``rate`` does)."""
    old = dict(before)
    delta = [(bound, count - old.get(bound, 0.0)) for bound, count in now]
    if any(d < 0 for _, d in delta):
        return list(now)
    return delta
