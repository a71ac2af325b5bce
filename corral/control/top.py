"""Heracles' top controller: from slack and load, what BE may do this period.

Every ``period_s`` (Heracles: 15 s) slack = (SLO - measured) / SLO decides a mode:

* ``disable`` - slack < 0, or LC load above the high-water mark (85% of peak, stays on
  until load is back below the low-water mark, 80%): BE goes to its floor, then is frozen;
  after a disable BE stays disabled for ``cooldown_s``, doubled (``cooldown_backoff``) for
  each further slack violation within ``max_cooldown_s`` of the last, up to that bound. A
  violation while BE is already disabled is not BE's doing: it extends the disable by
  ``cooldown_s`` but is not counted.
* ``shrink``  - slack < 5%: take BE resources away by steps (2 cores at a time).
* ``hold``    - slack < 10%: BE may not grow.
* ``grow``    - otherwise: sub-controllers may try one growth step.

The high-water mark is a prior, not a law: the controller passes ``relaxed=True`` for a load
whose band it has measured harmless with BE running (`corral.control.bands`); there the
high-water rule does not disable BE and the cool-down a high-water disable started ends
(``load_until``, kept apart from the violation cool-down ``disabled_until``). With
attribution (`corral.control.attribution`) the controller judges a violation itself: it
passes ``slack=None`` for a window it is judging and calls `charge` once a violation is
found to be BE's, which counts the strike and starts the cool-down as a violation here
would.

No latency sample (an idle service) never grows BE: it holds. A period whose latency
source gave no signal (slow, failed, too few samples) does not reach `top_step` at all:
the controller holds BE with the reason ``no signal: <source>: <why>``
(`corral.control.controller`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from corral.errors import InputError


class Mode(StrEnum):
    """What the top controller allows BE this period."""

    GROW = "grow"
    HOLD = "hold"
    SHRINK = "shrink"
    DISABLE = "disable"


@dataclass(frozen=True, slots=True)
class TopSettings:
    """Thresholds of the top controller (Heracles' defaults)."""

    period_s: float = 15.0
    """Seconds between top-level decisions (Heracles: 15 s; the benchmark uses 1 s)."""
    high_water: float = 0.85
    """LC load, as a fraction of its peak, above which BE is disabled (Heracles: 85%)."""
    low_water: float = 0.80
    """LC load below which BE is allowed again after a high-water disable (80%): the gap
    is hysteresis, so load hovering near 85% does not toggle BE each period."""
    no_grow_slack: float = 0.10
    """Slack below which BE may not grow (10%): growing this close to the SLO risks it."""
    shrink_slack: float = 0.05
    """Slack below which BE is shrunk by steps (5%)."""
    cooldown_s: float = 60.0
    """Seconds BE stays disabled after a disable, so one good window right after a
    violation does not bring BE straight back (Heracles' cool-down)."""
    cooldown_backoff: float = 2.0
    """Factor the cool-down grows by for each slack violation that comes within
    ``max_cooldown_s`` of BE running after the previous one's cool-down: BE that keeps
    hurting LC comes back ever more slowly."""
    max_cooldown_s: float = 600.0
    """Longest cool-down; a violation after BE has run this long since its last cool-down
    ended starts again at ``cooldown_s``."""

    def __post_init__(self) -> None:
        if self.period_s <= 0:
            raise InputError("top.period_s", f"{self.period_s} is not positive", "e.g. 15")
        if not 0 < self.low_water <= self.high_water:
            raise InputError(
                "top.low_water",
                f"{self.low_water} must be in (0, high_water={self.high_water}]",
                "e.g. low_water 0.80 with high_water 0.85",
            )
        if not self.shrink_slack <= self.no_grow_slack:
            raise InputError(
                "top.shrink_slack",
                f"{self.shrink_slack} is above no_grow_slack={self.no_grow_slack}",
                "shrinking must start at a smaller slack than blocking growth",
            )
        if self.cooldown_s < 0:
            raise InputError("top.cooldown_s", f"{self.cooldown_s} is negative", "e.g. 60")
        if self.cooldown_backoff < 1:
            raise InputError(
                "top.cooldown_backoff", f"{self.cooldown_backoff} is below 1", "1 turns it off"
            )
        if self.max_cooldown_s < self.cooldown_s:
            raise InputError(
                "top.max_cooldown_s",
                f"{self.max_cooldown_s} is below cooldown_s={self.cooldown_s}",
                "e.g. ten times cooldown_s",
            )


@dataclass(frozen=True, slots=True)
class TopState:
    """The top controller's memory between periods and its last decision."""

    mode: Mode = Mode.HOLD
    reason: str = "starting"
    slack: float | None = None
    load: float | None = None
    load_high: bool = False
    disabled_until: float = float("-inf")
    strikes: int = 0
    """BE's slack violations in a row, each within ``max_cooldown_s`` of BE running after
    the cool-down of the one before."""
    last_violation: float = float("-inf")
    load_until: float = float("-inf")
    """End of the cool-down after a high-water disable (ended early when the load's band is
    relaxed)."""


def on_probation(settings: TopSettings, state: TopState, *, now: float) -> bool:
    """True while BE has a strike and has not yet run ``max_cooldown_s`` since the cool-down
    of its last violation ended: the next violation is another strike."""
    # The calm spell counts from when BE came back: measured from the violation, a cool-down
    # of max_cooldown_s would reset the back-off each time BE returned from one.
    calm_since = max(state.last_violation, state.disabled_until)
    return state.strikes > 0 and now - calm_since <= settings.max_cooldown_s


def charge(settings: TopSettings, state: TopState, *, slack: float, now: float) -> TopState:
    """``state`` after a violation found to be BE's: one more strike (or the first after a
    calm spell) and a cool-down of ``cooldown_s`` times the back-off per strike."""
    strikes = state.strikes + 1 if on_probation(settings, state, now=now) else 1
    cooldown = min(
        settings.max_cooldown_s,
        settings.cooldown_s * settings.cooldown_backoff ** (strikes - 1),
    )
    return replace(
        state,
        mode=Mode.DISABLE,
        reason=f"slack {slack:.2f} < 0 (cool-down {cooldown:.0f} s)",
        disabled_until=max(state.disabled_until, now + cooldown),
        strikes=strikes,
        last_violation=now,
    )


def top_step(
    settings: TopSettings,
    state: TopState,
    *,
    slack: float | None,
    load: float | None,
    now: float,
    relaxed: bool = False,
) -> TopState:
    """The next top-level mode from this period's slack and load (fraction of peak).

    ``relaxed``: the load's band was measured harmless with BE running, so the high-water
    rule does not apply to it (see the module docstring)."""
    load_high = state.load_high
    load_until = state.load_until
    if load is not None:
        if load > settings.high_water and not relaxed:
            load_high = True
        elif load < settings.low_water or relaxed:
            load_high = False
    if relaxed:
        load_until = float("-inf")
    base = replace(state, slack=slack, load=load, load_high=load_high, load_until=load_until)
    if slack is not None and slack < 0:
        if state.mode is Mode.DISABLE:
            # BE was already off: this violation is the LC's or the host's, not BE's, so it
            # keeps BE off for a plain cool-down but does not count as a strike.
            return replace(
                base,
                mode=Mode.DISABLE,
                reason=f"slack {slack:.2f} < 0 with BE disabled",
                disabled_until=max(state.disabled_until, now + settings.cooldown_s),
            )
        return charge(settings, base, slack=slack, now=now)
    if load_high:
        return replace(
            base,
            mode=Mode.DISABLE,
            reason=f"load {_pct(load)} above high water {settings.high_water:.0%}"
            if load is not None and load > settings.high_water
            else f"load {_pct(load)} not yet below low water {settings.low_water:.0%}",
            load_until=now + settings.cooldown_s,
        )
    until = max(state.disabled_until, load_until)
    if now < until:
        return replace(base, mode=Mode.DISABLE, reason=f"cooling down for {until - now:.1f} s")
    if slack is None:
        return replace(base, mode=Mode.HOLD, reason="no latency samples")
    if slack < settings.shrink_slack:
        return replace(
            base, mode=Mode.SHRINK, reason=f"slack {slack:.2f} < {settings.shrink_slack:.2f}"
        )
    if slack < settings.no_grow_slack:
        return replace(
            base, mode=Mode.HOLD, reason=f"slack {slack:.2f} < {settings.no_grow_slack:.2f}"
        )
    return replace(base, mode=Mode.GROW, reason=f"slack {slack:.2f}")


def _pct(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.0%}"
