"""CPU weight and quota arithmetic, as kubelet and runc do it.

Units: CPU requests in cores; v1 ``cpu.shares`` in [2, 262144] (default 1024 = one core's
worth); v2 ``cpu.weight`` in [1, 10000] (default 100); quota and period in microseconds.

Shares from cores (kubelet ``MilliCPUToShares``)::

    shares = clamp(milli_cpu * 1024 // 1000, 2, 262144)

Quota from cores (kubelet ``MilliCPUToQuota``)::

    quota_us = max(milli_cpu * period_us // 1000, 1000)

Shares to weight, two conversions exist and both are offered:

* ``linear`` (runc up to 1.3.1, crun, kubelet's ``CpuSharesToCpuWeight``)::

      weight = 1 + (shares - 2) * 9999 // 262142
      shares = 2 + (weight - 1) * 262142 // 9999          (the inverse)

  It maps the v1 default 1024 to weight 39, so a converted container weighs less than an
  unconverted v2 service at the default 100.

* ``quadratic`` (runc 1.3.2 and later; the default here): with ``l = log2(shares)``::

      weight = ceil(10 ** ((l*l + 125*l) / 612 - 7/34))

  which maps 2 -> 1, 1024 -> 100 and 262144 -> 10000 exactly, so defaults stay defaults.
  Its inverse solves the quadratic for ``l``: ``l = (-125 + sqrt(125**2 + 2448 * (log10(weight)
  + 7/34))) / 2`` and ``shares = round(2 ** l)``.
"""

from __future__ import annotations

import math
from enum import StrEnum

MIN_SHARES = 2
MAX_SHARES = 262_144
MIN_WEIGHT = 1
MAX_WEIGHT = 10_000
DEFAULT_PERIOD_US = 100_000
MIN_QUOTA_US = 1_000
MIN_PERIOD_US = 1_000
MAX_PERIOD_US = 1_000_000


class Conversion(StrEnum):
    """Which shares<->weight mapping to use when the host speaks the other scale."""

    LINEAR = "linear"
    QUADRATIC = "quadratic"


def milli_cpu(cores: float) -> int:
    """A request in cores as kubelet's milli-CPU integer (rounded to the nearest milli-CPU)."""
    return round(cores * 1000)


def shares_from_cores(cores: float) -> int:
    """v1 ``cpu.shares`` for a request of ``cores`` (kubelet's MilliCPUToShares)."""
    shares = milli_cpu(cores) * 1024 // 1000
    return max(MIN_SHARES, min(MAX_SHARES, shares))


def quota_from_cores(cores: float, period_us: int = DEFAULT_PERIOD_US) -> int:
    """CFS quota in microseconds per ``period_us`` for a limit of ``cores`` (MilliCPUToQuota)."""
    return max(MIN_QUOTA_US, milli_cpu(cores) * period_us // 1000)


def shares_to_weight(shares: int, conversion: Conversion = Conversion.QUADRATIC) -> int:
    """The v2 ``cpu.weight`` for v1 ``cpu.shares`` (clamped into both ranges)."""
    shares = max(MIN_SHARES, min(MAX_SHARES, shares))
    if conversion is Conversion.LINEAR:
        return 1 + (shares - 2) * 9999 // 262_142
    if shares <= MIN_SHARES:
        return MIN_WEIGHT
    if shares >= MAX_SHARES:
        return MAX_WEIGHT
    level = math.log2(shares)
    exponent = (level * level + 125 * level) / 612.0 - 7.0 / 34.0
    return max(MIN_WEIGHT, min(MAX_WEIGHT, math.ceil(10**exponent)))


def weight_to_shares(weight: int, conversion: Conversion = Conversion.QUADRATIC) -> int:
    """The v1 ``cpu.shares`` for a v2 ``cpu.weight`` (the inverse of `shares_to_weight`)."""
    weight = max(MIN_WEIGHT, min(MAX_WEIGHT, weight))
    if conversion is Conversion.LINEAR:
        return 2 + (weight - 1) * 262_142 // 9999
    if weight <= MIN_WEIGHT:
        return MIN_SHARES
    if weight >= MAX_WEIGHT:
        return MAX_SHARES
    target = math.log10(weight) + 7.0 / 34.0
    level = (-125 + math.sqrt(125 * 125 + 4 * 612 * target)) / 2
    return max(MIN_SHARES, min(MAX_SHARES, round(2**level)))
