"""LC latency and load from a Prometheus text endpoint.

Configured with the metric's base name. A histogram (``<name>_bucket{le=...}``) is turned
into the SLO percentile over the interval between two scrapes (bucket deltas, then
Prometheus' ``histogram_quantile`` interpolation); a summary (``<name>{quantile="0.99"}``)
is read as is. Load is the ``<name>_count`` increase per second. Values are converted to
milliseconds with ``unit_ms`` (1000 for a metric in seconds, Prometheus' convention).

`HttpFetch` does the HTTP side without blocking the event loop: one `httpx.AsyncClient` per
source, reused between scrapes, with the source's own timeout; the runtime starts and
stops it with the control loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from corral.control.signals import (
    Observation,
    Signal,
    SignalStatus,
    bucket_delta,
    no_signal,
    quantile_from_buckets,
)
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


Fetch = Callable[[], Awaitable[str]]
"""Returns the endpoint's text; raises `TimeoutError` when it did not answer in time and
`CorralError` or `OSError` when it could not be read."""


class HttpFetch:
    """GETs ``url`` with one `httpx.AsyncClient`, reused from `start` to `stop`.

    Each GET has ``timeout_s`` as a whole (connect, send, wait and read together: httpx's
    own timeouts are per phase, so a server that trickles bytes is cut off too). Called
    before `start` (or after `stop`) it uses a client of its own for that one GET. Errors
    are translated here, at the HTTP boundary: a timeout raises `TimeoutError` ("no
    answer within 1.0 s"), anything else httpx raises (refused, reset, an HTTP error
    status) raises `CorralError` naming the URL.
    """

    def __init__(
        self, url: str, timeout_s: float = 1.0, *, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        if not timeout_s > 0:
            raise InputError("latency.timeout_s", f"{timeout_s} is not positive", "e.g. 1")
        self.url = url
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s), transport=self._transport)

    async def start(self) -> None:
        """Open the client (idempotent)."""
        if self._client is None:
            self._client = self._new_client()

    async def stop(self) -> None:
        """Close the client and its connections."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __call__(self) -> str:
        """The endpoint's text (see the class docstring for the errors)."""
        if self._client is not None:
            return await self._get(self._client)
        async with self._new_client() as client:
            return await self._get(client)

    async def _get(self, client: httpx.AsyncClient) -> str:
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await client.get(self.url)
                response.raise_for_status()
        except (TimeoutError, httpx.TimeoutException) as err:
            raise TimeoutError(f"no answer within {self.timeout_s:.1f} s") from err
        except httpx.HTTPError as err:
            raise CorralError(f"scraping {self.url}: {err or type(err).__name__}") from err
        return response.text


@dataclass
class ScrapeSource:
    """Scrapes ``fetch()`` (the endpoint's text) and keeps the previous scrape for deltas.

    A scrape that times out is ``slow``, one that fails or does not hold the metric is
    ``failed``, and an interval with fewer than ``min_samples`` requests is ``no_data``;
    none of them moves the previous scrape, so the next good one measures the whole gap.
    """

    fetch: Fetch
    metric: str
    percentile: float = 99.0
    unit_ms: float = 1000.0
    min_samples: int = 1
    """Requests the interval must hold to be judged (1: any request; a p99 of a handful of
    requests is their maximum, so raise it for a service with bursts of idle)."""
    name: str = "prometheus"
    _previous: Parsed | None = field(default=None, init=False)
    _previous_t: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.metric:
            raise InputError("latency.metric", "is empty", "name the histogram or summary")
        if self.min_samples < 1:
            raise InputError("latency.min_samples", f"{self.min_samples} is below 1", "e.g. 1")

    async def read(self, now: float) -> Observation:
        """This scrape's observation, with its signal status (never raises for an endpoint
        that is slow, down or wrong)."""
        try:
            text = await self.fetch()
            # An exporter's page can be large: parse it off the loop.
            parsed = await asyncio.to_thread(parse_metric, text, self.metric)
        except TimeoutError as err:
            return no_signal(self.name, SignalStatus.SLOW, str(err) or "timed out")
        except (OSError, CorralError) as err:
            return no_signal(self.name, SignalStatus.FAILED, str(err) or type(err).__name__)
        if not parsed.buckets and not parsed.quantiles and parsed.count is None:
            return no_signal(
                self.name, SignalStatus.FAILED, f"no metric {self.metric} in the scrape"
            )
        previous, previous_t = self._previous, self._previous_t
        self._previous, self._previous_t = parsed, now
        rps = _rate(parsed, previous, previous_t, now)
        latency, samples, lost = self._latency(parsed, previous)
        if lost is not None:
            return Observation(load_rps=rps, samples=samples, signals=(lost,))
        signal = Signal(self.name, latency_ms=latency)
        return Observation(latency_ms=latency, load_rps=rps, samples=samples, signals=(signal,))

    def _latency(
        self, parsed: Parsed, previous: Parsed | None
    ) -> tuple[float | None, int, Signal | None]:
        """(latency ms, samples, the lost signal when there is no latency)."""
        if parsed.buckets:
            window = (
                bucket_delta(parsed.buckets, previous.buckets)
                if previous is not None and previous.buckets
                else list(parsed.buckets)
            )
            samples = int(max((count for _, count in window), default=0.0))
            value = quantile_from_buckets(window, self.percentile / 100.0)
            if samples < self.min_samples or value is None:
                why = f"{samples} requests since the last scrape (min_samples {self.min_samples})"
                return None, samples, Signal(self.name, SignalStatus.NO_DATA, why)
            return value * self.unit_ms, samples, None
        if parsed.quantiles:
            wanted = self.percentile / 100.0
            closest = min(parsed.quantiles, key=lambda qv: abs(qv[0] - wanted))
            if abs(closest[0] - wanted) >= 1e-9:
                why = f"the summary {self.metric} has no quantile {wanted:g}"
                return None, 0, Signal(self.name, SignalStatus.FAILED, why)
            if closest[1] != closest[1]:  # NaN: the summary saw no requests
                why = f"the summary's {wanted:g} quantile is NaN (no requests)"
                return None, 0, Signal(self.name, SignalStatus.NO_DATA, why)
            return closest[1] * self.unit_ms, 0, None
        why = f"{self.metric} has neither buckets nor quantiles"
        return None, 0, Signal(self.name, SignalStatus.FAILED, why)


def _rate(
    parsed: Parsed, previous: Parsed | None, previous_t: float | None, now: float
) -> float | None:
    """Requests/s between two scrapes from the ``_count`` counter (None across a reset)."""
    if (
        parsed.count is None
        or previous is None
        or previous.count is None
        or previous_t is None
        or now <= previous_t
        or parsed.count < previous.count
    ):
        return None
    return (parsed.count - previous.count) / (now - previous_t)
