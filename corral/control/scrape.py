"""LC latency and load from a Prometheus text endpoint.

Configured with the metric's base name. A histogram (``<name>_bucket{le=...}``) is turned
into the SLO percentile over the interval between two scrapes (bucket deltas, then
Prometheus' ``histogram_quantile`` interpolation); a summary (``<name>{quantile="0.99"}``)
is read as is. Load is the ``<name>_count`` increase per second. Values are converted to
milliseconds with ``unit_ms`` (1000 for a metric in seconds, Prometheus' convention).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from corral.control.signals import Observation, bucket_delta, quantile_from_buckets
from corral.errors import CorralError, InputError


@dataclass(frozen=True, slots=True)
class Parsed:
    """What one scrape said about the metric."""

    buckets: tuple[tuple[float, float], ...] = ()
    quantiles: tuple[tuple[float, float], ...] = ()
    count: float | None = None


def parse_metric(text: str, name: str) -> Parsed:
    """Buckets (summed over label sets), summary quantiles and count of metric ``name``."""
    buckets: dict[float, float] = {}
    quantiles: dict[float, float] = {}
    count: float | None = None
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as err:
        raise CorralError(f"prometheus text: cannot parse: {err}") from err
    for family in families:
        for sample in family.samples:
            if sample.name == f"{name}_bucket" and "le" in sample.labels:
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
            elif sample.name == name and "quantile" in sample.labels:
                quantiles[float(sample.labels["quantile"])] = sample.value
            elif sample.name == f"{name}_count":
                count = (count or 0.0) + sample.value
    return Parsed(tuple(sorted(buckets.items())), tuple(sorted(quantiles.items())), count)


@dataclass
class ScrapeSource:
    """Scrapes ``fetch()`` (the endpoint's text) and keeps the previous scrape for deltas."""

    fetch: Callable[[], str]
    metric: str
    percentile: float = 99.0
    unit_ms: float = 1000.0
    _previous: Parsed | None = field(default=None, init=False)
    _previous_t: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.metric:
            raise InputError("latency.metric", "is empty", "name the histogram or summary")

    def read(self, now: float) -> Observation:
        """This scrape's observation (an endpoint that cannot be reached gives none)."""
        try:
            parsed = parse_metric(self.fetch(), self.metric)
        except (OSError, CorralError):
            return Observation()
        previous, previous_t = self._previous, self._previous_t
        self._previous, self._previous_t = parsed, now
        latency: float | None = None
        if parsed.buckets:
            window = (
                bucket_delta(parsed.buckets, previous.buckets)
                if previous is not None and previous.buckets
                else list(parsed.buckets)
            )
            value = quantile_from_buckets(window, self.percentile / 100.0)
            latency = None if value is None else value * self.unit_ms
        elif parsed.quantiles:
            wanted = self.percentile / 100.0
            closest = min(parsed.quantiles, key=lambda qv: abs(qv[0] - wanted))
            if abs(closest[0] - wanted) < 1e-9 and closest[1] == closest[1]:  # NaN: no data
                latency = closest[1] * self.unit_ms
        rps: float | None = None
        if (
            parsed.count is not None
            and previous is not None
            and previous.count is not None
            and previous_t is not None
            and now > previous_t
            and parsed.count >= previous.count
        ):
            rps = (parsed.count - previous.count) / (now - previous_t)
        return Observation(latency_ms=latency, load_rps=rps)
