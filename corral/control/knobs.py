"""BE knobs as ladders, and trial steps that are kept only if they helped.

Every BE resource the sub-controllers move (cores, CPU weight, quota, LLC ways, memory
bandwidth) is a ladder of levels: the floor is the least BE can have, the top the most.
A step moves one knob and opens a `Trial`; once the step has had ``settle_s`` to show its
effect on a window that was not noisy, it is judged:

* a growth step is kept if slack stayed above the no-growth line and fell by no more than
  ``grow_tolerance``; otherwise it is rolled back and that knob may not grow for ``hold_s``;
* a shrink step is kept if slack rose by at least ``shrink_min_gain`` above its
  *reference* (or is now comfortable where the reference was not); otherwise it is
  rolled back - taking that resource from BE did not help LC, so BE gets it back - and
  that knob is skipped by shrinking for ``hold_s``, which
  moves the controller on to the next knob (and finally to freezing). A gain seen while
  the LC load fell by more than ``load_tolerance`` is not credited to the step (the
  lighter load explains it): the step is rolled back.

The reference of a shrink is the median slack of the last ``reference_windows`` windows at
the old levels, the one that triggered it included, not that window alone: a shrink is
taken on an unusually short window, and on a noisy host the next window is better whatever
the step did (regression to the mean), so judged against the trigger alone nearly every
shrink looks like it helped and is kept, costing BE the resource for ``hold_s``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from corral.errors import InputError


class Knob(StrEnum):
    """The BE resources the sub-controllers move, each a ladder (`KnobSpec`). The values
    are the names shown in /status, events and logs."""

    CORES = "cores"
    WEIGHT = "weight"
    QUOTA = "quota"
    WAYS = "ways"
    MB = "mb"


class Direction(StrEnum):
    """Which way a step moved a knob."""

    GROW = "grow"
    SHRINK = "shrink"


@dataclass(frozen=True, slots=True)
class KnobSpec:
    """One ladder: levels ``floor..top``; shrinking moves ``shrink_step`` levels at once."""

    name: Knob
    floor: int
    top: int
    shrink_step: int = 1

    def __post_init__(self) -> None:
        if self.floor > self.top:
            raise InputError(
                f"knobs.{self.name}", f"floor {self.floor} above top {self.top}", "lower it"
            )
        if self.shrink_step < 1:
            raise InputError(f"knobs.{self.name}.shrink_step", "must be at least 1", "use 1")

    def clamp(self, level: int) -> int:
        """``level`` kept inside the ladder."""
        return max(self.floor, min(self.top, level))


@dataclass(frozen=True, slots=True)
class TrialSettings:
    """How steps are judged."""

    settle_s: float = 2.0
    """Seconds after a step before it is judged (Heracles' sub-controllers run every 2 s);
    at least one latency window must pass, or the step is judged on old data."""
    grow_tolerance: float = 0.05
    """How much slack a growth step may cost and still be kept (fraction of the SLO)."""
    shrink_min_gain: float = 0.02
    """How much slack a shrink step must win to be kept (fraction of the SLO)."""
    hold_s: float = 30.0
    """Seconds a knob is left alone in the direction of a rolled-back step."""
    load_tolerance: float = 0.05
    """How far (fraction of peak) the LC load may fall during a shrink step and its gain
    still count as the step's."""
    reference_windows: int = 5
    """Windows at the old levels (the trigger included) whose median slack a shrink must
    beat; 1 judges against the triggering window alone."""

    def __post_init__(self) -> None:
        if self.reference_windows < 1:
            raise InputError(
                "trial.reference_windows", f"{self.reference_windows} is below 1", "e.g. 5"
            )


@dataclass(frozen=True, slots=True)
class Trial:
    """A step waiting to be judged."""

    knob: Knob
    direction: Direction
    before: int
    after: int
    slack_before: float
    started: float
    load_before: float | None = None
    """The LC load (fraction of peak) when the step was taken, if known."""
    reference: float | None = None
    """The slack a shrink must beat (`reference_slack`); None: ``slack_before``."""


@dataclass(frozen=True, slots=True)
class Hold:
    """``knob`` may not move in ``direction`` before ``until``."""

    knob: Knob
    direction: Direction
    until: float


class Verdict(StrEnum):
    """The judgement of a trial."""

    WAIT = "wait"
    KEEP = "keep"
    ROLLBACK = "rollback"


def judge(
    settings: TrialSettings,
    trial: Trial,
    *,
    slack: float | None,
    noisy: bool,
    no_grow_slack: float,
    now: float,
    load: float | None = None,
) -> Verdict:
    """Whether ``trial`` helped, judged on this period's slack and ``load`` (WAIT while it
    settles, on a noisy window, or without a latency sample)."""
    if slack is None or noisy:
        return Verdict.WAIT
    if trial.direction is Direction.GROW and slack < no_grow_slack:
        return Verdict.ROLLBACK  # no need to wait: the growth already cost the margin
    if now - trial.started < settings.settle_s:
        return Verdict.WAIT
    if trial.direction is Direction.GROW:
        kept = slack >= no_grow_slack and slack >= trial.slack_before - settings.grow_tolerance
    else:
        reference = trial.slack_before if trial.reference is None else trial.reference
        kept = slack >= reference + settings.shrink_min_gain or (slack >= no_grow_slack > reference)
        fell = (
            load is not None
            and trial.load_before is not None
            and load < trial.load_before - settings.load_tolerance
        )
        kept = kept and not fell
    return Verdict.KEEP if kept else Verdict.ROLLBACK


def reference_slack(settings: TrialSettings, recent: tuple[float, ...], slack: float) -> float:
    """The median of the last ``reference_windows`` slacks, ``slack`` (the trigger) last."""
    window = sorted((*recent, slack)[-settings.reference_windows :])
    mid = len(window) // 2
    return window[mid] if len(window) % 2 else (window[mid - 1] + window[mid]) / 2


def held(holds: tuple[Hold, ...], knob: Knob, direction: Direction, now: float) -> bool:
    """True when ``knob`` may not move in ``direction`` at ``now``."""
    return any(h.knob == knob and h.direction is direction and now < h.until for h in holds)


def live_holds(holds: tuple[Hold, ...], now: float) -> tuple[Hold, ...]:
    """The holds that have not expired."""
    return tuple(h for h in holds if now < h.until)
