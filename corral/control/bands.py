"""Load bands: Heracles' high-water rule as a prior that measurements relax.

Heracles disables BE above 85% of the LC's peak load (`corral.control.top`). The figure
was tuned on Google's hosts; on a host where BE runs at ``cpu.idle`` it mostly costs BE
(issue 16: BE went to 0 at every peak while a static ``cpu.idle`` group ran there without
a violation). So the controller keeps the rule as a prior and learns, per band of load
(``width`` of peak, e.g. 85-90%), whether BE may run there:

* ``prior``   - nothing measured: above the high-water mark BE is disabled (Heracles).
* ``trying``  - BE already ran there once without harm (the load rose into the band
  while BE ran), or LC alone had room there (slack at least ``explore_slack`` while the
  high-water rule kept BE out): BE is let in to be measured; a violation while it runs
  is judged by attribution (`corral.control.attribution`) like any other.
* ``relaxed`` - BE ran there for ``proof_periods`` top periods (not necessarily in a row)
  with slack at least ``proof_slack``: the high-water rule no longer applies to the band.
* ``blamed``  - a violation there was found to be BE's: the prior is back for
  ``memory_s``, after which the band may be tried again, needing twice the proof per blame.

Bands below the high-water mark keep their counts too (a blame there resets them), but
the prior already lets BE run at those loads; learned ceilings
(`corral.control.ceilings`) handle harm below it. The state is one small record per
band ever seen, shown in the controller's ``status()`` under ``bands``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from corral.errors import InputError

_EPSILON = 1e-9


class BandStatus(StrEnum):
    """What the controller believes about BE at one band of load."""

    PRIOR = "prior"
    TRYING = "trying"
    RELAXED = "relaxed"
    BLAMED = "blamed"


@dataclass(frozen=True, slots=True)
class BandSettings:
    """How bands are cut and what proves one harmless."""

    enabled: bool = True
    """Learn per-band exceptions to the high-water rule (off: Heracles' fixed rule)."""
    width: float = 0.05
    """Width of a band as a fraction of peak load (5%: the gap between Heracles' marks)."""
    proof_periods: int = 8
    """Top periods with BE running and slack at least ``proof_slack`` that relax a band
    (2 minutes at Heracles' 15 s period); doubled for each blame the band received."""
    proof_slack: float = 0.0
    """Slack a period needs to count as harmless (0: the SLO was met)."""
    explore_slack: float = 0.1
    """Slack of LC alone (BE kept out by the high-water rule) above which BE is tried at
    that band: the margin Heracles asks before BE may grow (``top.no_grow_slack``); a
    violation while BE is tried is judged by attribution like any other."""
    memory_s: float = 600.0
    """Seconds a blame keeps the prior back at its band before BE may be tried again."""

    def __post_init__(self) -> None:
        if not 0 < self.width <= 0.5:
            raise InputError("bands.width", f"{self.width} is not in (0, 0.5]", "e.g. 0.05")
        if self.proof_periods < 1:
            raise InputError("bands.proof_periods", "must be at least 1", "e.g. 8")
        if not -1 < self.proof_slack < 1:
            raise InputError("bands.proof_slack", f"{self.proof_slack} not in (-1, 1)", "e.g. 0")
        if not 0 <= self.explore_slack <= 1:
            raise InputError(
                "bands.explore_slack", f"{self.explore_slack} is not in [0, 1]", "e.g. 0.1"
            )
        if self.memory_s <= 0:
            raise InputError("bands.memory_s", f"{self.memory_s} is not positive", "e.g. 600")

    def index(self, load: float) -> int:
        """The band holding ``load`` (band i covers ``[i * width, (i + 1) * width)``)."""
        return max(0, math.floor(load / self.width + _EPSILON))


@dataclass(frozen=True, slots=True)
class Band:
    """What was measured at one band of load."""

    index: int
    harmless: int = 0
    """Top periods BE ran here with slack at least ``proof_slack`` since the last blame."""
    trying: bool = False
    blames: int = 0
    blamed_until: float = float("-inf")

    def needed(self, settings: BandSettings) -> int:
        """Harmless periods that relax this band (doubled per blame)."""
        return int(settings.proof_periods * 2 ** min(self.blames, 16))

    def status(self, settings: BandSettings, now: float) -> BandStatus:
        """The band's status at ``now``."""
        if now < self.blamed_until:
            return BandStatus.BLAMED
        if self.harmless >= self.needed(settings):
            return BandStatus.RELAXED
        if self.trying:
            return BandStatus.TRYING
        return BandStatus.PRIOR


def _get(bands: tuple[Band, ...], index: int) -> Band:
    return next((b for b in bands if b.index == index), Band(index))


def _put(bands: tuple[Band, ...], band: Band) -> tuple[Band, ...]:
    rest = [b for b in bands if b.index != band.index]
    return tuple(sorted([*rest, band], key=lambda b: b.index))


def open_at(
    settings: BandSettings, bands: tuple[Band, ...], load: float | None, now: float
) -> bool:
    """True when BE may run at ``load`` whatever the high-water prior says: its band is
    relaxed or being tried (never with bands off or an unknown load)."""
    if not settings.enabled or load is None:
        return False
    status = _get(bands, settings.index(load)).status(settings, now)
    return status in (BandStatus.RELAXED, BandStatus.TRYING)


def observe(
    settings: BandSettings,
    bands: tuple[Band, ...],
    *,
    load: float | None,
    slack: float | None,
    be_running: bool,
    kept_out_by_load: bool,
    now: float,
) -> tuple[Band, ...]:
    """``bands`` after one judged top period: a harmless period with BE running counts
    towards relaxing its band; LC alone with room at a band the prior keeps BE out of
    starts a trial there. Unknown load or slack changes nothing."""
    if not settings.enabled or load is None or slack is None:
        return bands
    band = _get(bands, settings.index(load))
    if band.status(settings, now) is BandStatus.BLAMED:
        return bands
    if be_running and slack >= settings.proof_slack:
        # BE ran here without harm: counted, and tried from now on if it was not yet.
        harmless = min(band.harmless + 1, band.needed(settings))  # bounded: small state
        return _put(bands, replace(band, harmless=harmless, trying=True))
    if kept_out_by_load and not band.trying and slack >= settings.explore_slack:
        return _put(bands, replace(band, trying=True))
    return bands


def blame(
    settings: BandSettings, bands: tuple[Band, ...], *, load: float | None, now: float
) -> tuple[Band, ...]:
    """``bands`` after a violation at ``load`` found to be BE's: the band's proof starts
    again (twice as long) and the prior holds there for ``memory_s``."""
    if not settings.enabled or load is None:
        return bands
    band = _get(bands, settings.index(load))
    return _put(
        bands,
        replace(
            band,
            harmless=0,
            trying=False,
            blames=band.blames + 1,
            blamed_until=now + settings.memory_s,
        ),
    )


def describe(settings: BandSettings, bands: tuple[Band, ...], now: float) -> list[dict[str, Any]]:
    """One JSON-able entry per band measured so far (for ``status()``)."""
    return [
        {
            "load": f"{b.index * settings.width:.0%}-{(b.index + 1) * settings.width:.0%}",
            "status": str(b.status(settings, now)),
            "harmless_periods": b.harmless,
            "needed": b.needed(settings),
            "blames": b.blames,
            "blamed_until": None if math.isinf(b.blamed_until) else b.blamed_until,
        }
        for b in bands
    ]
