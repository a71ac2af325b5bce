"""senpai's law for the BE box's ``memory.high``: probe down until the box feels pressure.

Each tick the BE box's memory PSI ``some`` total (microseconds of stall) accumulated since
the last tick is compared with the target, 10 ms per 6 s scaled to the tick's length:

* below target, lower the limit below current use by ``((target-p)/target)^2 * 10``,
  at most 1% per tick (probe gently: the cost of going too far is stalls);
* above target, raise it by ``((p-target)/target)^2 * 20``, at most doubling (back off
  hard: BE is hurting).

The limit is clamped to ``[min_bytes, max_bytes]`` (``max_bytes`` is the BE box's hard
limit). This is senpai's `tick()` (Meta, github.com/facebookincubator/senpai) without I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.errors import InputError

MIB = 1 << 20


@dataclass(frozen=True, slots=True)
class SenpaiSettings:
    """senpai's parameters (its defaults)."""

    enabled: bool = False
    """Probe at all (needs a PSI source for the BE box)."""
    pressure_us: float = 10_000.0
    """Target stall per ``pressure_window_s`` (senpai: 10 ms)."""
    pressure_window_s: float = 6.0
    """The window the target refers to (senpai: 6 s)."""
    max_probe: float = 0.01
    """Largest downward step per tick, a fraction of use (1%)."""
    max_backoff: float = 1.0
    """Largest upward step per tick, a fraction of use (1.0: at most doubling)."""
    coeff_probe: float = 10.0
    coeff_backoff: float = 20.0
    min_bytes: int = 64 * MIB
    """Never below this: a box squeezed to nothing thrashes instead of working."""
    max_bytes: int | None = None
    """The BE box's hard limit; None: unbounded."""

    def __post_init__(self) -> None:
        if self.pressure_us <= 0 or self.pressure_window_s <= 0:
            raise InputError("memory.pressure_us", "target and window must be positive", "")
        if self.max_bytes is not None and self.max_bytes < self.min_bytes:
            raise InputError(
                "memory.max_bytes", f"{self.max_bytes} is below min_bytes {self.min_bytes}", ""
            )


@dataclass(frozen=True, slots=True)
class SenpaiState:
    """The last PSI reading and the limit set."""

    last_psi_us: int | None = None
    last_t: float | None = None
    high: int | None = None
    pressure_us: float | None = None


def senpai_step(
    settings: SenpaiSettings,
    state: SenpaiState,
    *,
    psi_some_us: int | None,
    usage_bytes: int | None,
    now: float,
) -> SenpaiState:
    """The next ``memory.high`` (in ``state.high``; unchanged without a reading)."""
    if not settings.enabled or psi_some_us is None or usage_bytes is None:
        return state
    if state.last_psi_us is None or state.last_t is None or now <= state.last_t:
        return replace(state, last_psi_us=psi_some_us, last_t=now)
    delta = max(0, psi_some_us - state.last_psi_us)
    target = settings.pressure_us * (now - state.last_t) / settings.pressure_window_s
    if delta < target:
        error = (target - delta) / target
        factor = 1.0 - min(error * error * settings.coeff_probe, settings.max_probe)
    else:
        error = (delta - target) / target
        factor = 1.0 + min(error * error * settings.coeff_backoff, settings.max_backoff)
    high = int(usage_bytes * factor)
    high = max(settings.min_bytes, high)
    if settings.max_bytes is not None:
        high = min(settings.max_bytes, high)
    return SenpaiState(last_psi_us=psi_some_us, last_t=now, high=high, pressure_us=delta)
