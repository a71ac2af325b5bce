"""senpai's law for the BE box's memory limit, as a pure step.

Reproduced from senpai's ``Senpai.tick()`` and ``Cgroup.scale_limit``/``import_limit``
(Meta, github.com/facebookincubator/senpai, ``senpai.py`` at commit
c51e8e21de5c459406a015c1860d5f6c5ff6a426, "Initial import", 2019-08-20). The law, in
senpai's own defaults (``--pressure 10000 --interval 6 --max-probe 0.01 --max-backoff 1.0
--coeff-probe 10 --coeff-backoff 20 --min-size 100M --max-size 100G``):

* every tick the growth of the cgroup's memory PSI ``some`` total (microseconds of stall)
  is added to an **integral**; the integral is reset to 0 whenever the limit is adjusted;
* **backoff** - if ``integral > pressure`` (checked every tick, grace period or not):
  ``err = integral / pressure``, ``adj = min((err / coeff_backoff)**2 * max_backoff,
  max_backoff)``, and the limit grows by ``adj`` *of the current limit*. At 2x the target
  that is ``(2/20)**2 = 1%``; the adjustment reaches ``max_backoff`` (doubling) only at
  ``coeff_backoff`` = 20 times the target. After a backoff the grace period restarts;
* **grace** - after an adjustment, no probe for ``interval`` (6) ticks;
* **probe** - once the grace period is over (and the integral stayed under the target):
  ``err = pressure / max(integral, 1)``, ``adj = min((err / coeff_probe)**2 * max_probe,
  max_probe)``, and the limit shrinks by ``adj`` of the current limit: 1% when there was
  no pressure at all, ``(2/10)**2 * 1% = 0.04%`` at half the target;
* **limits** - the new limit is ``int(limit + limit * adj)``, clamped to
  ``[min_size, max_size]`` and rounded down to a 4 KiB page. senpai starts from
  ``memory.current`` (its first write), and if the limit it reads back differs from the
  one it wrote (another writer, a race) it starts again from ``memory.current``.

Differences, each deliberate: senpai counts its grace period in 1-second ticks; here it is
``interval_s`` seconds of the caller's clock (the controller ticks every ``sub_period_s``),
so the cadence is the same at 1-second ticks and probes stay ``interval_s`` apart at
others; its very first probe comes one tick after ``interval_s`` (its grace counter starts
one tick early), here exactly ``interval_s`` after the first reading. ``max_bytes`` None
means the box's own hard limit (senpai: 100 GiB). The caller may pass ``limit_bytes``, the
limit read back from the kernel, for senpai's reset on a foreign write.

senpai's README says it needs cgroup2 ``memory.high`` (reclaim without OOM kills). On a
cgroup v1 host the actuator (`corral.control.cgroupv1`) maps the limit onto
``memory.limit_in_bytes`` behind a guard; see its docstring for the OOM risk.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.errors import InputError

MIB = 1 << 20
PAGE = 4096


@dataclass(frozen=True, slots=True)
class SenpaiSettings:
    """senpai's parameters, with its defaults (``senpai.py`` argparse)."""

    enabled: bool = False
    """Probe at all (needs a PSI source for the BE box)."""
    pressure_us: float = 10_000.0
    """Target: microseconds of memory stall accumulated between two adjustments
    (senpai ``--pressure``: 10 ms)."""
    interval_s: float = 6.0
    """Grace period after an adjustment before the next probe (senpai ``--interval``: 6
    ticks of 1 s)."""
    max_probe: float = 0.01
    """Largest downward step, a fraction of the current limit (senpai: 1%)."""
    max_backoff: float = 1.0
    """Largest upward step, a fraction of the current limit (senpai: 1.0, doubling)."""
    coeff_probe: float = 10.0
    """The probe reaches ``max_probe`` when pressure is 1/coeff_probe of the target."""
    coeff_backoff: float = 20.0
    """The backoff reaches ``max_backoff`` when pressure is coeff_backoff times the target."""
    min_bytes: int = 100 * MIB
    """Never below this (senpai ``--min-size``: 100 MiB)."""
    max_bytes: int | None = None
    """Never above this: the BE box's hard limit; None: unbounded (senpai: 100 GiB)."""

    def __post_init__(self) -> None:
        if self.pressure_us <= 0 or self.interval_s < 0:
            raise InputError(
                "memory.pressure_us", "target must be positive, interval not negative", ""
            )
        for name in ("max_probe", "max_backoff", "coeff_probe", "coeff_backoff"):
            if getattr(self, name) <= 0:
                raise InputError(f"memory.{name}", "must be positive", "use senpai's default")
        if self.max_probe >= 1:
            raise InputError("memory.max_probe", "must be below 1", "senpai uses 0.01")
        if self.max_bytes is not None and self.max_bytes < self.min_bytes:
            raise InputError(
                "memory.max_bytes", f"{self.max_bytes} is below min_bytes {self.min_bytes}", ""
            )


@dataclass(frozen=True, slots=True)
class SenpaiState:
    """What senpai remembers: the last PSI total, the integral, the grace, the limit."""

    last_psi_us: int | None = None
    """The PSI ``some`` total at the last tick (None: no baseline yet)."""
    integral_us: int = 0
    """Stall accumulated since the last adjustment."""
    grace_until: float | None = None
    """No probe before this time (set after every adjustment)."""
    high: int | None = None
    """The limit senpai set last (None: not set yet)."""
    pressure_us: float | None = None
    """The integral as this tick saw it, before any reset (for logs and /status)."""
    last_adjust: float = 0.0
    """The adjustment of the last tick (+ backoff, - probe, 0 none), for logs."""


def backoff_factor(settings: SenpaiSettings, integral_us: float) -> float:
    """senpai's backoff adjustment (a fraction of the limit) for ``integral_us`` of stall."""
    err = integral_us / settings.pressure_us
    adj = (err / settings.coeff_backoff) ** 2
    return min(adj * settings.max_backoff, settings.max_backoff)


def probe_factor(settings: SenpaiSettings, integral_us: float) -> float:
    """senpai's probe adjustment (a fraction of the limit, positive) for ``integral_us``."""
    err = settings.pressure_us / max(integral_us, 1)
    adj = (err / settings.coeff_probe) ** 2
    return min(adj * settings.max_probe, settings.max_probe)


def clamp_limit(settings: SenpaiSettings, limit: int) -> int:
    """``limit`` within ``[min_bytes, max_bytes]``, rounded down to a page (senpai's
    ``import_limit``)."""
    limit = max(settings.min_bytes, limit)
    if settings.max_bytes is not None:
        limit = min(settings.max_bytes, limit)
    return limit & ~(PAGE - 1)


def senpai_step(
    settings: SenpaiSettings,
    state: SenpaiState,
    *,
    psi_some_us: int | None,
    usage_bytes: int | None,
    now: float,
    limit_bytes: int | None = None,
) -> SenpaiState:
    """One senpai tick (see the module docstring); the limit to write is ``state.high``.

    Without a PSI or usage reading nothing changes. The first reading sets the baseline and
    the limit to the current use (clamped), as senpai's start does. ``limit_bytes``, when
    given, is the limit read back: if it differs from ``state.high`` the limit restarts
    from ``usage_bytes``.
    """
    if not settings.enabled or psi_some_us is None or usage_bytes is None:
        return state
    if state.last_psi_us is None or state.high is None:
        return SenpaiState(
            last_psi_us=psi_some_us,
            grace_until=now + settings.interval_s,
            high=clamp_limit(settings, usage_bytes),
            pressure_us=0.0,
        )
    # A PSI total never decreases; a smaller one is a new cgroup: count nothing.
    delta = max(0, psi_some_us - state.last_psi_us)
    integral = state.integral_us + delta
    base = state.high
    if limit_bytes is not None and limit_bytes != state.high:
        base = usage_bytes  # senpai's "Resetting limit to memory.current."
    grace_until = state.grace_until if state.grace_until is not None else now
    if integral > settings.pressure_us:
        adj = backoff_factor(settings, integral)
    elif now < grace_until:
        return replace(
            state,
            last_psi_us=psi_some_us,
            integral_us=integral,
            pressure_us=float(integral),
            last_adjust=0.0,
            high=clamp_limit(settings, base) if base != state.high else state.high,
        )
    else:
        adj = -probe_factor(settings, integral)
    return SenpaiState(
        last_psi_us=psi_some_us,
        integral_us=0,
        grace_until=now + settings.interval_s,
        high=clamp_limit(settings, int(base + base * adj)),
        pressure_us=float(integral),
        last_adjust=adj,
    )
