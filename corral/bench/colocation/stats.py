"""The colocation benchmark's statistics, as pure functions: the SLO calibrated from LC
alone, violations attributable to BE, and confidence intervals over repetitions.

* **Calibrated SLO**: LC alone runs the load pattern first; the SLO is the 95th percentile
  of its per-window p99 (quiet windows), times a margin, rounded up to two significant
  figures in microseconds. LC alone then meets it in at least 95% of its windows by
  construction, so a policy's violations measure the policy, not the host.
* **Attributable to BE**: a window of a policy is counted against BE when it violated the
  SLO and the LC-alone run of the same repetition met it in the same window of the
  pattern (same index: same phase and load).
* **Confidence intervals**: a two-sided 95% Student t-interval of the mean over
  repetitions; with one repetition there is none (``low``/``high`` are None). Two policies
  are compared by the t-interval of their per-repetition differences (paired: the same
  repetition ran both next to each other); a difference whose interval contains 0 is
  *within noise*.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.errors import CorralError

# Two-sided 95% Student t quantiles (0.975) for 1..30 degrees of freedom; 1.96 beyond.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class CalibrationError(CorralError):
    """LC alone could not be measured well enough to pick an SLO."""


@dataclass(frozen=True, slots=True)
class SloCalibration:
    """The SLO picked from LC alone and what it rests on."""

    target_us: int
    """The SLO: p99 at most this many microseconds per window."""
    quantile_p99_us: float
    """The ``quantile``-th percentile of LC alone's per-window p99, before the margin."""
    quantile: float
    margin: float
    windows: int
    """Windows LC alone ran."""
    measured: int
    """Of them quiet and with a p99 (the ones the SLO was picked from)."""
    met: int
    """Of the measured windows, those within ``target_us``."""

    def to_json(self) -> dict[str, Any]:
        """The calibration as JSON."""
        return {
            "source": "calibrated",
            "target_us": self.target_us,
            "quantile_p99_us": round(self.quantile_p99_us, 1),
            "quantile": self.quantile,
            "margin": self.margin,
            "windows": self.windows,
            "measured": self.measured,
            "met": self.met,
            "met_fraction": round(self.met / self.measured, 4) if self.measured else None,
        }


def round_up_2sf(value: float) -> int:
    """``value`` rounded up to two significant figures (at least 1): 1234 -> 1300."""
    if value <= 1:
        return 1
    scale = 10 ** max(0, math.floor(math.log10(value)) - 1)
    return int(math.ceil(value / scale - 1e-9) * scale)


def calibrate_slo(
    p99_us: Sequence[float | None],
    *,
    quantile: float = 95.0,
    margin: float = 1.2,
    min_measured_fraction: float = 0.5,
) -> SloCalibration:
    """The SLO LC alone meets in at least ``quantile`` percent of its measured windows.

    ``p99_us`` holds one entry per window of LC alone: its p99 in microseconds, or None
    when the window has no figure (noisy, or nothing completed). The target is the
    nearest-rank ``quantile`` of the figures times ``margin``, rounded up to two significant
    figures. Raises `CalibrationError` when fewer than ``min_measured_fraction`` of the
    windows (or fewer than 3) have a figure: memcached could not be measured. A busy host
    only raises the SLO; it never makes the calibration fail.
    """
    if not 0 < quantile < 100 or margin < 1:
        raise ValueError("quantile must be in (0, 100) and margin at least 1")
    values = sorted(v for v in p99_us if v is not None and v > 0)
    needed = max(3, math.ceil(min_measured_fraction * len(p99_us)))
    if len(values) < needed:
        raise CalibrationError(
            f"cannot calibrate the SLO: LC alone gave a p99 in {len(values)} of "
            f"{len(p99_us)} windows (need {needed}); memcached could not be measured "
            "(is it starved or not answering?). Pass --slo-us to skip the calibration."
        )
    rank = max(1, math.ceil(quantile / 100 * len(values)))
    at_quantile = values[rank - 1]
    target = round_up_2sf(at_quantile * margin)
    return SloCalibration(
        target_us=target,
        quantile_p99_us=at_quantile,
        quantile=quantile,
        margin=margin,
        windows=len(p99_us),
        measured=len(values),
        met=sum(v <= target for v in values),
    )


def be_attributable(violated: Sequence[bool], alone_met: Sequence[bool]) -> int:
    """Violations of a policy that BE is to blame for: windows ``i`` where the policy
    ``violated[i]`` and LC alone in the same repetition met the SLO (``alone_met[i]``:
    quiet and within the SLO). Windows past the end of ``alone_met`` are not counted."""
    return sum(v and i < len(alone_met) and alone_met[i] for i, v in enumerate(violated))


@dataclass(frozen=True, slots=True)
class Interval:
    """A mean over ``n`` repetitions with its 95% t-interval (None with one repetition)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def available(self) -> bool:
        """True when there were at least two repetitions."""
        return self.low is not None

    def contains_zero(self) -> bool | None:
        """True when 0 lies in the interval; None when there is no interval."""
        if self.low is None or self.high is None:
            return None
        return self.low <= 0 <= self.high

    def to_json(self, digits: int = 4) -> dict[str, Any]:
        """``{"mean", "ci95": [low, high] or None, "n"}``."""
        return {
            "mean": round(self.mean, digits),
            "ci95": None
            if self.low is None or self.high is None
            else [round(self.low, digits), round(self.high, digits)],
            "n": self.n,
        }

    def text(self, digits: int = 2) -> str:
        """``1.23 ± 0.04``, or ``1.23 (no CI)`` with one repetition."""
        if self.low is None or self.high is None:
            return f"{self.mean:.{digits}f} (no CI)"
        return f"{self.mean:.{digits}f} ± {(self.high - self.low) / 2:.{digits}f}"


def t_interval(values: Sequence[float]) -> Interval:
    """The mean of ``values`` and its two-sided 95% Student t-interval (``ValueError``
    when empty; no interval with one value)."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    n = len(values)
    if n < 2:
        return Interval(mean, None, None, n)
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    half = t * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> Interval:
    """The t-interval of ``a[i] - b[i]`` over repetitions ``i`` (same length)."""
    if len(a) != len(b):
        raise ValueError("paired values need the same repetitions")
    return t_interval([x - y for x, y in zip(a, b, strict=True)])
