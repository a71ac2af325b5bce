"""Load ceilings: what the controller learns from a BE step that broke the SLO.

Heracles keeps BE away from the SLO with fixed thresholds (grow only with 10% slack,
disable above 85% load). On a small host the load at which a given BE allocation starts
to hurt LC is often far lower, and a controller that only reacts re-learns it with a
violation every time it grows BE again after a cool-down. A `Ceiling` remembers it:
"``knob`` at ``level`` (or above) broke the SLO at LC load ``load``". While it lives
(``memory_s``), growth of that knob into that level is blocked whenever the LC load is
within ``margin`` of (or above) the load where it broke; at lower load it is allowed, so
BE still uses what a quiet LC leaves; when the load rises to a ceiling while BE holds
that level, the controller steps BE down before the SLO breaks rather than after. A
ceiling is learned only from harm BE could have caused: a disable on negative slack while
BE was running (each knob above its floor gets a ceiling; BE at its floor gets one on the
pseudo-knob `RUN`, which keeps BE disabled near that load, when ``floor`` is on), or a
growth step rolled back because slack fell below the no-grow mark. With attribution on
(the default, `corral.control.attribution`) the disable counts only once the violation
cleared with BE out: a violation that persisted without BE learns nothing, and the
ceilings are those of BE's levels when it broke; a rolled-back step back towards the
baseline (`corral.control.baseline`) learns nothing either. Unknown load is blocked by
every live ceiling (nothing says it is safe).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.errors import InputError

RUN = "run"
"""The pseudo-knob "BE runs at all" (level 1): its ceiling is a learned high-water mark."""


@dataclass(frozen=True, slots=True)
class CeilingSettings:
    """How long and how tightly learned ceilings hold."""

    enabled: bool = True
    """Learn ceilings at all (off: Heracles' fixed thresholds only)."""
    margin: float = 0.05
    """Growth into a level is blocked at loads above its breaking load minus this
    (fraction of peak): the load signal lags one period behind a rising load."""
    memory_s: float = 600.0
    """Seconds a learned ceiling lasts (40 of Heracles' 15 s periods): the host and the
    BE mix change, so a ceiling is re-learned rather than kept for ever."""
    floor: bool = False
    """Also learn the `RUN` ceiling when BE at its floor was running during a violation (a
    learned high-water mark that keeps BE off near that load). Off by default: on a noisy
    host LC alone misses its SLO now and then (the benchmark's ``lc-alone`` policy shows
    how often), and a floor ceiling learned from such a window switches BE off for
    ``memory_s``; Heracles' fixed high-water mark still applies."""

    def __post_init__(self) -> None:
        if not 0 <= self.margin < 1:
            raise InputError("ceilings.margin", f"{self.margin} is outside [0, 1)", "e.g. 0.05")
        if self.memory_s <= 0:
            raise InputError("ceilings.memory_s", f"{self.memory_s} is not positive", "e.g. 600")


@dataclass(frozen=True, slots=True)
class Ceiling:
    """``knob`` at ``level`` or above broke the SLO at LC load ``load``; valid to ``until``."""

    knob: str
    level: int
    load: float | None
    until: float


def learn(
    settings: CeilingSettings,
    ceilings: tuple[Ceiling, ...],
    levels: Mapping[str, int],
    *,
    load: float | None,
    now: float,
) -> tuple[Ceiling, ...]:
    """``ceilings`` (expired ones dropped) plus one for each knob level in ``levels``.

    A knob that already has a live ceiling at the same level keeps the lower load of the
    two and the later expiry; an unknown load replaces a known one (it blocks at any load).
    """
    live = {(c.knob, c.level): c for c in ceilings if now < c.until}
    if not settings.enabled:
        return tuple(live.values())
    until = now + settings.memory_s
    for knob, level in levels.items():
        old = live.get((knob, level))
        merged: float | None
        if old is None:
            merged = load
        elif load is None or old.load is None:
            merged = None
        else:
            merged = min(old.load, load)
        live[(knob, level)] = Ceiling(knob, level, merged, until)
    return tuple(sorted(live.values(), key=lambda c: (c.knob, c.level)))


def blocking(
    settings: CeilingSettings,
    ceilings: tuple[Ceiling, ...],
    knob: str,
    level: int,
    *,
    load: float | None,
    now: float,
) -> Ceiling | None:
    """The live ceiling that forbids growing ``knob`` to ``level`` at ``load``, if any."""
    if not settings.enabled:
        return None
    for c in ceilings:
        if c.knob != knob or c.level > level or now >= c.until:
            continue
        if c.load is None or load is None or load >= c.load - settings.margin:
            return c
    return None
