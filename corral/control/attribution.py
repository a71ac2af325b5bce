"""Attribution: BE is judged by what taking it away changes.

Heracles disables BE on every SLO violation and cools down; on a noisy host LC alone
misses its SLO now and then, and a controller that blames BE for each such window keeps
BE frozen while the violations go on without it (issue 16). Heracles' own rule for its
sub-controllers is to roll back a step that did not help; freezing BE is such a step.

So a violation while BE runs opens an `Episode`: BE goes to its floor and is frozen as
before (the freeze escalation of `corral.control.evict`), nothing is counted yet, and
the LC latency is watched once BE is out. The window measured while BE was being taken
out straddles the change, so the first ``settle_periods`` sub-controller periods after BE
is out are skipped; the next ``judge_periods`` windows that are not noisy decide:

* a violation among them - it persists without BE: **not BE's fault** (`Blame.HOST`). BE
  gets back the levels it had, every workload the episode froze is thawed, and nothing
  is held against BE: no ceiling, no strike (cool-down growth), no eviction. A holdoff
  follows: for ``holdoff_s`` a violation while BE runs that is no worse than the worst
  slack seen without BE (within ``noise_margin``) is the same noise and is not blamed
  again; a worse one opens a new episode. A holdoff that ends and is followed by another
  "not BE's fault" episode doubles, up to ``max_holdoff_s``.
* all clear, at a load no lower than the violation's minus ``load_tolerance`` (or at an
  unknown load) - the violation cleared when BE left. One violation followed by clear
  windows is also what a one-off stall looks like, so BE is let back in at its levels
  to confirm (A/B/A, as Heracles rolls a step back to see): if the violation returns
  within ``judge_periods`` windows (after ``settle_periods``) it is **BE's fault**
  (`Blame.BE`) and the controller does what Heracles does on a violation: a strike and a
  cool-down, the learned ceilings of `corral.control.ceilings`, the band blamed
  (`corral.control.bands`). BE is then on probation (`corral.control.top.on_probation`)
  until it has run ``top.max_cooldown_s`` after its cool-down without another: meanwhile
  no violation is let pass (``tolerate``), so a harmful BE's return is tested at its
  first violation. The confirmation stays: blaming at once every violation that clears
  without BE would turn one false confirmation on a noisy host into a run of strikes (in
  simulation, with BE-independent violations in 10-15% of windows, it doubled the windows
  BE spent out). If it does not return it was **not BE's fault** either (a
  one-off), with a holdoff as above (the noise level being the violation's own slack).
* all clear but the load fell - the windows cannot tell BE from the lighter load, so
  BE is let back in to confirm at the load there is now, as above: the violation
  returning is BE's fault; clear windows end the episode as `Blame.UNKNOWN` with BE back
  and nothing learned (no holdoff either: nothing showed the host's noise). Keeping BE
  out for a cool-down instead cost the benchmark's descending ramp every window after a
  one-off stall near its peak.

An episode that reaches no verdict within ``give_up_periods`` top periods (every window
noisy, say), or whose confirmation the load rule forbids, ends as `Blame.UNKNOWN` with one
plain cool-down. A lost signal pauses it (the controller holds BE).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from corral.errors import InputError


class Blame(StrEnum):
    """Whose doing an episode's violation was."""

    BE = "be"
    HOST = "host"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class AttributionSettings:
    """How a violation is attributed (see the module docstring)."""

    enabled: bool = True
    """Judge each violation by taking BE out (off: Heracles' rule, every violation while
    BE runs counts against it)."""
    settle_periods: int = 1
    """Sub-controller periods after BE is out before windows count: the first window
    after a freeze still holds requests queued behind BE."""
    judge_periods: int = 3
    """Windows (not noisy) without BE that decide: one violation among them clears BE,
    all clear blames it. More windows clear BE more often on a noisy host."""
    load_tolerance: float = 0.05
    """How far (fraction of peak) the load may fall while BE is out and an all-clear still
    blames BE; a larger fall makes the episode inconclusive."""
    holdoff_s: float = 60.0
    """Seconds after a "not BE's fault" episode during which violations no worse than the
    noise seen without BE are not blamed on BE again."""
    max_holdoff_s: float = 600.0
    """Longest holdoff (it doubles for each "not BE's fault" episode right after one)."""
    noise_margin: float = 0.0
    """Slack (fraction of the SLO) by which a violation must be worse than the noise seen
    without BE to be tested again during a holdoff."""
    give_up_periods: int = 20
    """Top periods after which an episode without a verdict ends as inconclusive."""
    tolerate: int = 0
    """Violations while BE runs that are let pass (BE held where it is, nothing tested)
    within ``tolerate_window_s`` before the next one takes BE out to test it. 0
    (default): every violation tests BE, as Heracles reacts to each. An SLO judged over
    many windows (met in, say, 95% of them) can afford a lone violated window; testing BE
    for each costs BE a window or two of work, which on a noisy host is most of what BE
    loses."""
    tolerate_window_s: float = 60.0
    """The span over which ``tolerate`` violations are let pass."""

    def __post_init__(self) -> None:
        for name in ("settle_periods", "judge_periods", "give_up_periods"):
            value = getattr(self, name)
            if value < (0 if name == "settle_periods" else 1):
                raise InputError(f"attribution.{name}", f"{value} is too small", "e.g. 3")
        if not 0 <= self.load_tolerance < 1:
            raise InputError(
                "attribution.load_tolerance", f"{self.load_tolerance} not in [0, 1)", "e.g. 0.05"
            )
        if self.holdoff_s < 0:
            raise InputError("attribution.holdoff_s", f"{self.holdoff_s} is negative", "e.g. 60")
        if self.max_holdoff_s < self.holdoff_s:
            raise InputError(
                "attribution.max_holdoff_s",
                f"{self.max_holdoff_s} is below holdoff_s={self.holdoff_s}",
                "e.g. ten times holdoff_s",
            )
        if self.noise_margin < 0:
            raise InputError("attribution.noise_margin", "is negative", "e.g. 0")
        if self.tolerate < 0:
            raise InputError("attribution.tolerate", f"{self.tolerate} is negative", "e.g. 0")
        if self.tolerate_window_s <= 0:
            raise InputError(
                "attribution.tolerate_window_s",
                f"{self.tolerate_window_s} is not positive",
                "e.g. 60",
            )


@dataclass(frozen=True, slots=True)
class Episode:
    """A violation under test: BE is taken out and the windows without it decide."""

    started: float
    slack: float
    """The slack of the violation that opened it."""
    load: float | None
    """The LC load at that violation."""
    levels: tuple[tuple[str, int], ...]
    """BE's knob levels when it broke (restored when it was not BE's fault)."""
    out_since: float | None = None
    """When BE was last seen wholly out (at its floor, every workload frozen)."""
    periods: int = 0
    judged: int = 0
    worst: float | None = None
    """The worst slack among the judged windows."""
    lowest_load: float | None = None
    unknown_load: bool = False
    back_since: float | None = None
    """When BE was let back in to confirm the blame (the windows without BE were clear)."""
    back_judged: int = 0
    inconclusive: bool = False
    """The windows without BE were clear but at a lighter load: a clear confirmation
    then ends as `Blame.UNKNOWN`, not as the host's noise."""


@dataclass(frozen=True, slots=True)
class Holdoff:
    """Until ``until``, a violation no worse than ``noise`` (seen without BE) is noise."""

    until: float
    noise: float
    length_s: float


@dataclass(frozen=True, slots=True)
class AttributionState:
    """The open episode, the holdoff, and the last verdicts (for status)."""

    episode: Episode | None = None
    holdoff: Holdoff | None = None
    last: str = ""
    """The last verdict, in words."""
    be_episodes: int = 0
    host_episodes: int = 0
    unknown_episodes: int = 0
    tolerated: tuple[float, ...] = ()
    """When the violations let pass (``tolerate``) within the last window happened."""
    tolerated_total: int = 0


def window(
    settings: AttributionSettings,
    episode: Episode,
    *,
    slack: float | None,
    load: float | None,
    out_since: float | None,
    sub_period_s: float,
    now: float,
) -> tuple[Episode, Blame | None]:
    """``episode`` after one top period, and the verdict if reached. ``slack`` is None for
    a noisy window or one without samples; ``out_since`` is when BE was last put wholly
    out (at its floor, every workload frozen) for this window, None while it is not."""
    episode = replace(episode, periods=episode.periods + 1)
    if episode.back_since is not None:
        return _confirm(settings, episode, slack=slack, sub_period_s=sub_period_s, now=now)
    if out_since is None:
        episode = replace(episode, out_since=None)
    elif episode.out_since is None:
        episode = replace(episode, out_since=out_since)
    settled = (
        episode.out_since is not None
        and now - episode.out_since >= settings.settle_periods * sub_period_s - 1e-9
        and (settings.settle_periods == 0 or now > episode.out_since)
    )
    if settled and slack is not None:
        worst = slack if episode.worst is None else min(episode.worst, slack)
        lowest = (
            load if episode.lowest_load is None or load is None else min(episode.lowest_load, load)
        )
        episode = replace(
            episode,
            judged=episode.judged + 1,
            worst=worst,
            lowest_load=lowest,
            unknown_load=episode.unknown_load or load is None,
        )
        if slack < 0:
            return episode, Blame.HOST
        if episode.judged >= settings.judge_periods:
            inconclusive = not comparable(settings, episode)
            # let BE back in to confirm, at whatever load there is now
            return replace(episode, back_since=now, inconclusive=inconclusive), None
    if episode.periods >= settings.give_up_periods:
        return episode, Blame.UNKNOWN
    return episode, None


def _confirm(
    settings: AttributionSettings,
    episode: Episode,
    *,
    slack: float | None,
    sub_period_s: float,
    now: float,
) -> tuple[Episode, Blame | None]:
    """The confirming half: BE is back at its levels; the violation returning blames it,
    ``judge_periods`` clear windows clear it."""
    since = episode.back_since
    if since is None:  # not confirming yet: nothing to judge here
        return episode, None
    settled = now - since >= settings.settle_periods * sub_period_s - 1e-9 and now > since
    if not settled or slack is None:
        if episode.periods >= settings.give_up_periods:
            return episode, Blame.HOST
        return episode, None
    episode = replace(episode, back_judged=episode.back_judged + 1)
    if slack < 0:
        return episode, Blame.BE
    if episode.back_judged >= settings.judge_periods:
        return episode, Blame.UNKNOWN if episode.inconclusive else Blame.HOST
    return episode, None


def comparable(settings: AttributionSettings, episode: Episode) -> bool:
    """True when the judged windows saw a load no lower than the violation's (minus the
    tolerance), or a load is unknown (nothing says it fell)."""
    if episode.load is None or episode.lowest_load is None or episode.unknown_load:
        return True
    return episode.lowest_load >= episode.load - settings.load_tolerance


def next_holdoff(
    settings: AttributionSettings, previous: Holdoff | None, *, noise: float, now: float
) -> Holdoff:
    """The holdoff after a "not BE's fault" verdict with ``noise`` the worst slack seen
    without BE: doubled when it follows the previous one within ``max_holdoff_s``."""
    length = settings.holdoff_s
    if previous is not None and now - previous.until <= settings.max_holdoff_s:
        length = min(settings.max_holdoff_s, max(settings.holdoff_s, previous.length_s * 2))
        if now < previous.until:
            noise = min(noise, previous.noise)
    return Holdoff(now + length, noise, length)


def is_noise(
    settings: AttributionSettings, holdoff: Holdoff | None, *, slack: float, now: float
) -> bool:
    """True when a violation of ``slack`` while BE runs is no worse than the noise a live
    holdoff saw without BE."""
    return (
        holdoff is not None
        and now < holdoff.until
        and slack >= holdoff.noise - settings.noise_margin
    )


def tolerate(
    settings: AttributionSettings, state: AttributionState, *, now: float
) -> tuple[bool, AttributionState]:
    """Whether a violation at ``now`` while BE runs is let pass (``settings.tolerate``),
    and the state that remembers it. A violation beyond the allowance is not let pass
    and clears the memory (the episode it opens judges them all)."""
    recent = tuple(t for t in state.tolerated if now - t < settings.tolerate_window_s)
    if len(recent) < settings.tolerate:
        return True, replace(
            state, tolerated=(*recent, now), tolerated_total=state.tolerated_total + 1
        )
    return False, replace(state, tolerated=())
