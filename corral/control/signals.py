"""What the controller observes each period, and quantiles from Prometheus histograms.

Every latency source says, with its observation, whether it could be read at all: a
`Signal` per source with a `SignalStatus`. A source that did not answer in time is
``slow``, one that answered with an error (refused, HTTP error, unparsable text, a missing
or stale file, every probe failed) is ``failed``, one that answered without enough samples
to judge is ``no_data``. Anything but ``ok`` means "no signal": the controller then holds
BE where it is instead of reading the missing number as a breach or as room to grow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class SignalStatus(StrEnum):
    """Whether a latency source could be read this period."""

    OK = "ok"
    SLOW = "slow"
    """No answer within the source's timeout."""
    FAILED = "failed"
    """The source answered with an error or could not be reached."""
    NO_DATA = "no_data"
    """The source answered, with too few samples to judge the SLO percentile."""


@dataclass(frozen=True, slots=True)
class Signal:
    """What one source said about itself this period.

    ``reason`` says why it is not ``ok`` (e.g. ``no answer within 1.0 s``); ``latency_ms``
    is the latency it measured (None when it measured none); ``read_s`` how long the read
    took (None when the reader did not time it)."""

    source: str
    status: SignalStatus = SignalStatus.OK
    reason: str = ""
    latency_ms: float | None = None
    read_s: float | None = None

    @property
    def ok(self) -> bool:
        """True when the source could be read and had enough samples."""
        return self.status is SignalStatus.OK

    def describe(self) -> str:
        """``<source>: <reason>`` (the status when there is no reason)."""
        return f"{self.source}: {self.reason or self.status}"


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
    signals: tuple[Signal, ...] = ()
    """One entry per latency source behind this observation (several for several LC
    workloads). An observation without any (built by hand, e.g. in a benchmark) counts
    as a good signal."""

    @property
    def lost(self) -> tuple[Signal, ...]:
        """The sources that gave no signal this period (status other than ``ok``)."""
        return tuple(s for s in self.signals if not s.ok)

    @property
    def status(self) -> SignalStatus:
        """``ok`` when every source could be read, else the first lost source's status."""
        lost = self.lost
        return lost[0].status if lost else SignalStatus.OK

    def no_signal_reason(self) -> str:
        """Which sources gave no signal and why, e.g. ``api: no answer within 1.0 s``
        (empty when every source could be read)."""
        return "; ".join(s.describe() for s in self.lost)


def no_signal(
    source: str, status: SignalStatus, reason: str, *, noisy: bool = False, samples: int = 0
) -> Observation:
    """An observation from ``source`` that carries no usable latency, saying why."""
    if status is SignalStatus.OK:
        raise ValueError("no_signal() needs a status other than ok")
    return Observation(samples=samples, noisy=noisy, signals=(Signal(source, status, reason),))


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
