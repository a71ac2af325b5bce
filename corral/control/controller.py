"""The colocation controller as a pure step: ``(state, observation, now) -> (state, actions)``.

It composes the top controller (`top`), the BE knob ladders with trial steps that are
rolled back when they do not help (`knobs`, `cores`, `weight`, `cache`), senpai's memory
probe (`memory`) and the freeze/evict escalation (`evict`). No I/O and no clock: the
runtime reads the signals, passes ``now`` and applies the actions.

Cadence: the top controller decides every ``top.period_s``; the sub-controllers judge a
pending step or take a new one every ``sub_period_s``; senpai ticks every ``sub_period_s``.
One knob moves at a time, so each step's effect can be judged on its own.

No signal: when a latency source is slow, failed or had too few samples
(``Observation.lost``), the step holds BE exactly where it is - no growth, no shrink, no
rollback or verdict on a pending trial (it waits), no freeze, thaw or eviction, no learned
ceiling, and the period cannot start a disable - and the top controller's mode is
``hold`` with the reason ``no signal: <source>: <why>``. A cool-down already running keeps
its end time and resumes when the signal returns. senpai's memory step goes on: its
signal is the BE box's own PSI, not the LC latency. Heracles has no rule for a lost
signal; holding is the default because a dead source more often means the LC's exporter
(or the LC itself) is down than that BE hurts it, and acting on a guess either way turns a
monitoring outage into a BE outage or into an SLO risk. An operator who prefers the safe
side sets ``no_signal_floor_after``: after that many top periods without a signal BE is
taken to its floor (still never frozen or evicted on a lost signal).

Three rules of issue 16 on top of Heracles' structure, each with its own module and a
switch to turn it off (``enabled: false`` gives back Heracles' plain rule):

* **Start from the baseline** (`corral.control.baseline`): BE starts and rests at the
  cheapest isolation measured harmless (``cpu.idle`` on every CPU LC does not hold); the
  knobs take it below only when slack says so (shrink trials, a disable). A knob below
  its baseline is given back - straight to the baseline level, one knob per sub period,
  not as a trial - in ``grow`` or ``hold`` once slack is out of shrink territory and no
  kept shrink of that knob holds it (``trial.hold_s``); a disable that ends puts BE back
  at the baseline. Growth trials above the baseline only with ``baseline.grow_above``.
  Learned ceilings cap all of it.
* **Attribution** (`corral.control.attribution`): a violation while BE runs takes BE out
  (floor, then freeze) and opens an episode; only if the violation clears without BE and
  returns when BE is let back in is it counted (strike, cool-down, ceilings, band blame).
  If it persists without BE (or does not return with BE), BE gets its levels back and
  every frozen workload is thawed at once, with the reason ``not BE's fault: ...``, and a
  holdoff keeps the same noise from being blamed again. After a confirmed blame BE is on
  probation (no violation let pass untested) until it has run a calm spell.
  While an episode is open, violations do not extend any cool-down and nothing is
  evicted; frozen workloads are thawed in every mode but ``disable``, and when a disable
  ends BE goes straight back to the baseline (under its learned ceilings).
* **Learned high water** (`corral.control.bands`): Heracles' 85% rule is a prior, relaxed
  per band of load where BE ran without harm and restored where a violation was BE's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from corral.control.actions import (
    Action,
    Evict,
    Freeze,
    SetCache,
    SetCpus,
    SetMemoryHigh,
    SetQuota,
    SetWeight,
    Thaw,
)
from corral.control.attribution import (
    AttributionSettings,
    AttributionState,
    Blame,
    Episode,
    is_noise,
    next_holdoff,
    tolerate,
    window,
)
from corral.control.bands import Band, BandSettings, blame, describe, observe, open_at
from corral.control.baseline import BaselineSettings
from corral.control.cache import CacheSettings, masks
from corral.control.ceilings import RUN, Ceiling, CeilingSettings, blocking, learn
from corral.control.cores import CoresSettings, max_be_cores, split
from corral.control.crashloop import CrashLoopSettings
from corral.control.evict import (
    BeWorkload,
    EvictDecision,
    EvictSettings,
    EvictState,
    evict_step,
    release_all,
    running,
)
from corral.control.knobs import (
    Direction,
    Hold,
    Knob,
    KnobSpec,
    Trial,
    TrialSettings,
    Verdict,
    held,
    judge,
    live_holds,
    reference_slack,
)
from corral.control.memory import SenpaiSettings, SenpaiState, senpai_step
from corral.control.signals import Observation
from corral.control.slo import Slo
from corral.control.top import Mode, TopSettings, TopState, charge, on_probation, top_step
from corral.control.weight import WeightSettings
from corral.errors import InputError
from corral.topology.cpuset import CpuSet

GROW_ORDER = (Knob.QUOTA, Knob.CORES, Knob.WAYS, Knob.MB, Knob.WEIGHT)
"""Growth gives back the last resort first (quota), then capacity, then weight."""
SHRINK_ORDER = (Knob.WEIGHT, Knob.CORES, Knob.MB, Knob.WAYS, Knob.QUOTA)
"""Shrinking takes first what costs BE least and helps LC most here (weight), quota last."""
FLOORED = (Knob.CORES, Knob.WEIGHT, Knob.WAYS, Knob.MB)
"""The knobs a disable takes to their floor (the quota is a last resort of shrinking)."""


@dataclass(frozen=True, slots=True)
class ControllerSettings:
    """Every threshold of the controller; the defaults are Heracles' and senpai's."""

    slo: Slo = field(default_factory=Slo)
    top: TopSettings = field(default_factory=TopSettings)
    trial: TrialSettings = field(default_factory=TrialSettings)
    cores: CoresSettings = field(default_factory=CoresSettings)
    weight: WeightSettings = field(default_factory=WeightSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    memory: SenpaiSettings = field(default_factory=SenpaiSettings)
    evict: EvictSettings = field(default_factory=EvictSettings)
    crash_loop: CrashLoopSettings = field(default_factory=CrashLoopSettings)
    """Holds a BE workload caught in an OOM-kill loop (applied by the runtime, which reads
    the kill counts; `corral.control.crashloop`)."""
    ceilings: CeilingSettings = field(default_factory=CeilingSettings)
    baseline: BaselineSettings = field(default_factory=BaselineSettings)
    attribution: AttributionSettings = field(default_factory=AttributionSettings)
    bands: BandSettings = field(default_factory=BandSettings)
    sub_period_s: float = 2.0
    """Seconds between sub-controller steps (Heracles: 2 s)."""
    peak_rps: float | None = None
    """LC peak throughput (requests/s) meeting the SLO alone; load = rps / peak."""
    peak_cpu: float | None = None
    """LC CPU use (cores) at peak; the load signal when there is no request rate."""
    ignore_noisy: bool = True
    """Treat the latency of a window flagged noisy (the host stalled the VM) as unknown: it
    says nothing about what BE did, and reacting to it would disable BE for a cool-down."""
    no_signal_floor_after: int | None = None
    """Top periods without a latency signal after which BE is taken to its floor (not
    frozen). None (default): hold BE where it is for as long as the signal is lost (see
    the module docstring for why)."""

    def __post_init__(self) -> None:
        if self.baseline.weight not in self.weight.ladder:
            raise InputError(
                "baseline.weight",
                f"{self.baseline.weight!r} is not in weight.ladder {list(self.weight.ladder)}",
                "use one of the ladder's rungs, e.g. idle",
            )
        if self.sub_period_s <= 0:
            raise InputError("sub_period_s", f"{self.sub_period_s} is not positive", "e.g. 2")
        if self.no_signal_floor_after is not None and self.no_signal_floor_after < 0:
            raise InputError(
                "no_signal_floor_after",
                f"{self.no_signal_floor_after} is negative",
                "give a number of top periods, or null to hold",
            )
        for name in ("peak_rps", "peak_cpu"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise InputError(name, f"{value} is not positive", "measure the LC peak")


@dataclass(frozen=True, slots=True)
class Levels:
    """Where each BE knob stands on its ladder."""

    cores: int
    weight: int
    quota: int
    ways: int
    mb: int

    def get(self, knob: Knob) -> int:
        """The level of ``knob``."""
        return int(getattr(self, Knob(knob).value))

    def with_level(self, knob: Knob, level: int) -> Levels:
        """A copy with ``knob`` at ``level``."""
        return replace(self, **{Knob(knob).value: level})


@dataclass(frozen=True, slots=True)
class ControllerState:
    """Everything the controller remembers between steps."""

    levels: Levels
    top: TopState = field(default_factory=TopState)
    pending: Trial | None = None
    holds: tuple[Hold, ...] = ()
    memory: SenpaiState = field(default_factory=SenpaiState)
    evict: EvictState = field(default_factory=EvictState)
    ceilings: tuple[Ceiling, ...] = ()
    last_top: float | None = None
    last_sub: float | None = None
    applied: bool = False
    last_verdict: str = ""
    no_signal_periods: int = 0
    """Top periods in a row without a latency signal."""
    attribution: AttributionState = field(default_factory=AttributionState)
    bands: tuple[Band, ...] = ()
    recent_slack: tuple[float, ...] = ()
    """Slack of the last sub periods at the current levels (a shrink's reference)."""


@dataclass(frozen=True, slots=True)
class _Judged:
    """What a top period decided, threaded through its steps."""

    levels: Levels
    pending: Trial | None
    top: TopState
    evict: EvictState
    ceilings: tuple[Ceiling, ...]
    bands: tuple[Band, ...]
    attribution: AttributionState
    reason: str
    released: tuple[EvictDecision, ...] = ()
    noise: bool = False
    """The window's violation was taken for host noise (a holdoff): it judges no trial."""


@dataclass(frozen=True, slots=True)
class Controller:
    """The controller for one machine: settings plus its physical cores (CPU sets)."""

    settings: ControllerSettings
    cores: tuple[CpuSet, ...]

    def __post_init__(self) -> None:
        if not self.cores:
            raise InputError("topology", "has no cores", "load the host's topology")

    def specs(self) -> dict[Knob, KnobSpec]:
        """The knob ladders on this machine (knobs the host lacks have floor == top)."""
        s = self.settings
        ways_top = s.cache.max_be_ways
        ways_floor = s.cache.min_ways if s.cache.total_ways else 0
        mb_top = max(0, len(s.cache.mb_ladder) - 1)
        cores_top = max_be_cores(s.cores, self.cores)
        return {
            Knob.CORES: KnobSpec(Knob.CORES, s.cores.min_cores, cores_top, s.cores.shrink_step),
            Knob.WEIGHT: KnobSpec(Knob.WEIGHT, 0, len(s.weight.ladder) - 1),
            Knob.QUOTA: KnobSpec(Knob.QUOTA, 0, len(s.weight.quota_ladder)),
            Knob.WAYS: KnobSpec(Knob.WAYS, ways_floor, max(ways_floor, ways_top)),
            Knob.MB: KnobSpec(Knob.MB, 0, mb_top),
        }

    def initial(self) -> ControllerState:
        """BE starts at the baseline (`baseline`); with ``baseline.enabled`` off it starts
        small (floor cores, the most protective weight, no quota, floor cache) and grows
        from there while slack allows."""
        return ControllerState(levels=self.baseline())

    def baseline(self) -> Levels:
        """Where BE rests on this machine: ``cpu.idle`` (the baseline weight) on every CPU
        BE may get, no quota, unrestricted cache; the floor with the baseline off."""
        specs = self.specs()
        b = self.settings.baseline
        if not b.enabled:
            return Levels(
                cores=specs[Knob.CORES].floor,
                weight=0,
                quota=specs[Knob.QUOTA].top,
                ways=specs[Knob.WAYS].floor,
                mb=specs[Knob.MB].floor,
            )
        cores = specs[Knob.CORES]
        return Levels(
            cores=cores.top if b.cores is None else cores.clamp(b.cores),
            weight=self.settings.weight.ladder.index(b.weight),
            quota=specs[Knob.QUOTA].top,
            ways=specs[Knob.WAYS].top,
            mb=specs[Knob.MB].top,
        )

    def grow_cap(self, knob: Knob, specs: dict[Knob, KnobSpec]) -> int:
        """The highest level growth may take ``knob`` to: the baseline's, or the top of
        its ladder with the baseline off or ``baseline.grow_above``."""
        b = self.settings.baseline
        if not b.enabled or b.grow_above:
            return specs[knob].top
        return max(specs[knob].floor, min(specs[knob].top, self.baseline().get(knob)))

    def load_fraction(self, obs: Observation) -> float | None:
        """LC load as a fraction of its peak (requests/s first, then CPU), or None."""
        s = self.settings
        if obs.load is not None:
            return obs.load
        if obs.load_rps is not None and s.peak_rps:
            return obs.load_rps / s.peak_rps
        if obs.lc_cpu is not None and s.peak_cpu:
            return obs.lc_cpu / s.peak_cpu
        return None

    def at_floor(self, levels: Levels) -> bool:
        """True when every BE knob but the quota is at its floor."""
        specs = self.specs()
        return all(levels.get(k) == specs[k].floor for k in FLOORED)

    def floored(self, levels: Levels) -> Levels:
        """``levels`` with every knob but the quota at its floor."""
        specs = self.specs()
        for knob in FLOORED:
            levels = levels.with_level(knob, specs[knob].floor)
        return levels

    def step(
        self,
        state: ControllerState,
        obs: Observation,
        now: float,
        *,
        workloads: Sequence[BeWorkload] = (),
    ) -> tuple[ControllerState, tuple[Action, ...]]:
        """One control step; see the module docstring for the cadence, for what a lost
        signal does and for how a violation is attributed."""
        if obs.lost:
            return self._step_without_signal(state, obs, now)
        s = self.settings
        specs = self.specs()
        noisy = obs.noisy and s.ignore_noisy
        latency = None if noisy else obs.latency_ms
        if noisy:
            slack = None
        elif obs.slack is not None:
            slack = obs.slack
        else:
            slack = None if latency is None else s.slo.slack(latency)
        load = self.load_fraction(obs)
        bes = tuple(workloads)
        levels = state.levels
        pending = state.pending
        holds = live_holds(state.holds, now)
        top = state.top
        evict = state.evict
        ceilings = tuple(c for c in state.ceilings if now < c.until)  # expired: forgotten
        bands = state.bands
        attribution = state.attribution
        verdict = ""
        reason = ""
        freezes: tuple[Action, ...] = ()
        released: tuple[EvictDecision, ...] = ()
        noise = False
        top_due = state.last_top is None or now - state.last_top >= s.top.period_s
        sub_due = state.last_sub is None or now - state.last_sub >= s.sub_period_s
        if top_due:
            judged = _Judged(levels, pending, top, evict, ceilings, bands, attribution, "")
            judged = self._top(state, judged, slack=slack, load=load, workloads=bes, now=now)
            levels, pending, top, evict, ceilings, bands, attribution, reason = (
                judged.levels,
                judged.pending,
                judged.top,
                judged.evict,
                judged.ceilings,
                judged.bands,
                judged.attribution,
                judged.reason,
            )
            released = judged.released
            noise = judged.noise
            ended = state.top.mode is Mode.DISABLE and top.mode is not Mode.DISABLE
            if ended and s.baseline.enabled and not reason:
                # The disable is over: BE goes back to where it rests, under its ceilings.
                levels, pending = self.baseline(), None
                reason = f"BE back to its baseline: {top.reason}"
            if top.mode is not Mode.DISABLE:
                top, levels, pending, capped = self._under_ceilings(
                    top, levels, pending, ceilings, load=load, now=now, specs=specs
                )
                reason = "; ".join(r for r in (reason, capped) if r)
        if top.mode is Mode.DISABLE:
            if pending is not None:
                verdict = f"cancelled {pending.direction} {pending.knob}: BE disabled"
                pending = None
            levels, reason = self.floored(levels), f"BE disabled: {top.reason}"
        elif sub_due and state.last_sub is not None and not reason:  # first step: set-up only
            if pending is not None:
                outcome = judge(
                    s.trial,
                    pending,
                    slack=slack,
                    noisy=noisy or noise,
                    no_grow_slack=s.top.no_grow_slack,
                    now=now,
                    load=load,
                )
                if outcome is Verdict.KEEP:
                    verdict = f"kept {pending.direction} {pending.knob}"
                    if pending.direction is Direction.SHRINK and s.baseline.enabled:
                        # It helped: no release of that knob for a while.
                        holds = (*holds, Hold(pending.knob, Direction.GROW, now + s.trial.hold_s))
                    pending = None
                elif outcome is Verdict.ROLLBACK:
                    verdict = (
                        f"rolled back {pending.direction} {pending.knob} "
                        f"(slack {pending.slack_before:.2f} -> {slack:.2f}"
                        + (
                            f", reference {pending.reference:.2f})"
                            if pending.reference is not None
                            else ")"
                        )
                    )
                    levels = levels.with_level(pending.knob, pending.before)
                    holds = (*holds, Hold(pending.knob, pending.direction, now + s.trial.hold_s))
                    if (
                        pending.direction is Direction.GROW
                        and slack is not None
                        and slack < s.top.no_grow_slack
                        and pending.after > self._resting(pending.knob, specs)
                    ):
                        ceilings = learn(
                            s.ceilings, ceilings, {pending.knob: pending.after}, load=load, now=now
                        )
                    reason = verdict
                    pending = None
            elif release := self._release(
                top.mode, levels, holds=holds, ceilings=ceilings, slack=slack, load=load, now=now
            ):
                knob, level = release
                reason = f"release {knob} {levels.get(knob)} -> {level}: {top.reason}"
                levels = levels.with_level(knob, level)
            elif slack is not None and top.mode in (Mode.GROW, Mode.SHRINK):
                pending = self._next_trial(
                    top.mode,
                    levels=levels,
                    holds=holds,
                    ceilings=ceilings,
                    slack=slack,
                    load=load,
                    now=now,
                    specs=specs,
                    reference=reference_slack(s.trial, state.recent_slack, slack),
                )
                if pending is not None:
                    levels = levels.with_level(pending.knob, pending.after)
                    reason = f"{pending.direction} {pending.knob}: {top.reason}"
        if top_due:
            under_test = attribution.episode is not None
            evict, decisions = evict_step(
                replace(s.evict, evict=False) if under_test else s.evict,
                evict,
                mode=top.mode,
                at_floor=self.at_floor(levels),
                workloads=bes,
                now=now,
                thaw_unless_disabled=s.attribution.enabled,
            )
            freezes = tuple(
                _evict_action(d.verb, d.workload, d.reason) for d in (*released, *decisions)
            )
        # The probe squeezes BE's memory only while BE runs and slack is short: a frozen or
        # disabled BE touches no memory, and the reclaim a lower limit starts would cost the
        # host CPU at the moment LC is short of it.
        short = top.mode is Mode.SHRINK and not evict.frozen
        memory, memory_actions = self._memory_step(state, obs, now, due=sub_due, short=short)
        actions = (
            *self._render(
                None if not state.applied else state.levels,
                levels,
                reason or ("initial" if state.last_top is None else "re-applied after a refusal"),
            ),
            *memory_actions,
            *freezes,
        )
        new_state = ControllerState(
            levels=levels,
            top=top,
            pending=pending,
            holds=holds,
            memory=memory,
            evict=evict,
            ceilings=ceilings,
            last_top=now if top_due else state.last_top,
            last_sub=now if sub_due else state.last_sub,
            applied=True,
            last_verdict=verdict or state.last_verdict,
            no_signal_periods=0,
            attribution=attribution,
            bands=bands,
            recent_slack=self._recent_slack(state, levels, slack, counted=sub_due and not noise),
        )
        return new_state, actions

    def _recent_slack(
        self, state: ControllerState, levels: Levels, slack: float | None, *, counted: bool
    ) -> tuple[float, ...]:
        """The reference history: cleared when the levels change, else this sub period's
        slack appended (noisy windows and host-noise violations are not counted)."""
        if levels != state.levels:
            return ()
        if not counted or slack is None:
            return state.recent_slack
        return (*state.recent_slack, slack)[-self.settings.trial.reference_windows :]

    def _release(
        self,
        mode: Mode,
        levels: Levels,
        *,
        holds: tuple[Hold, ...],
        ceilings: tuple[Ceiling, ...],
        slack: float | None,
        load: float | None,
        now: float,
    ) -> tuple[Knob, int] | None:
        """The next knob to give back to BE and its level: with the baseline on, in
        ``grow`` or ``hold`` with slack out of shrink territory, the first knob (in
        `GROW_ORDER`) below its baseline level and not held, straight to the highest level
        up to the baseline that no live ceiling blocks at ``load``. Not a trial: the
        baseline is what BE rests at, and harm there is a violation that attribution
        judges."""
        s = self.settings
        if not s.baseline.enabled or mode not in (Mode.GROW, Mode.HOLD):
            return None
        if slack is None or slack < s.top.shrink_slack:
            return None
        specs = self.specs()
        for knob in GROW_ORDER:
            level = levels.get(knob)
            target = self._resting(knob, specs)
            if level >= target or held(holds, knob, Direction.GROW, now):
                continue
            while target > level and blocking(
                s.ceilings, ceilings, knob, target, load=load, now=now
            ):
                target -= 1
            if target > level:
                return knob, target
        return None

    def _resting(self, knob: Knob, specs: dict[Knob, KnobSpec]) -> int:
        """The level of ``knob`` BE returns to without needing growth to prove itself: the
        baseline's (the floor with the baseline off)."""
        if not self.settings.baseline.enabled:
            return specs[knob].floor
        return self.baseline().get(knob)

    def be_out(self, state: ControllerState, workloads: Sequence[BeWorkload]) -> bool:
        """True when BE was wholly out during the last window: at its floor with every
        workload frozen (or, with no workload known to freeze, at its floor)."""
        return self.at_floor(state.levels) and not running(state.evict, tuple(workloads))

    def _top(
        self,
        state: ControllerState,
        j: _Judged,
        *,
        slack: float | None,
        load: float | None,
        workloads: tuple[BeWorkload, ...],
        now: float,
    ) -> _Judged:
        """The top period: bands learn from the window, the top controller decides, and a
        violation is attributed (or, with attribution off, charged to BE at once)."""
        s = self.settings
        was_disabled = state.top.mode is Mode.DISABLE
        out = self.be_out(state, workloads)
        be_ran = state.last_top is not None and not was_disabled and not state.evict.frozen
        bands = observe(
            s.bands,
            j.bands,
            load=load,
            slack=slack,
            be_running=be_ran,
            kept_out_by_load=was_disabled and state.top.load_high and j.attribution.episode is None,
            now=now,
        )
        relaxed = open_at(s.bands, bands, load, now)
        j = replace(j, bands=bands)
        violated = slack is not None and slack < 0
        if not s.attribution.enabled:
            top = top_step(s.top, j.top, slack=slack, load=load, now=now, relaxed=relaxed)
            if violated and not was_disabled:
                ceilings = self._learn(j.ceilings, state.levels, load=load, now=now)
                bands = blame(s.bands, bands, load=load, now=now)
                j = replace(j, ceilings=ceilings, bands=bands)
            return replace(j, top=top)
        attribution = j.attribution
        episode = attribution.episode
        judged_here = episode is not None or violated
        top = top_step(
            s.top,
            j.top,
            slack=None if judged_here else slack,
            load=load,
            now=now,
            relaxed=relaxed,
        )
        top = replace(top, slack=slack)
        if episode is None:
            if not violated or slack is None:
                return replace(j, top=top)
            if was_disabled:
                # BE was already off: the LC's or the host's doing, and no cool-down grows.
                if top.mode is Mode.DISABLE:
                    top = replace(top, reason=f"slack {slack:.2f} < 0 with BE disabled")
                return replace(j, top=top)
            if is_noise(s.attribution, attribution.holdoff, slack=slack, now=now):
                noise = attribution.holdoff.noise if attribution.holdoff else slack
                note = (
                    f"slack {slack:.2f} < 0, no worse than {noise:.2f} seen without BE: "
                    "not BE's fault (holdoff)"
                )
                if top.mode is not Mode.DISABLE:
                    top = replace(top, mode=Mode.HOLD, reason=note)
                return replace(j, top=top, noise=True)
            probation = on_probation(s.top, j.top, now=now)
            passed, attribution = (
                (False, attribution) if probation else tolerate(s.attribution, attribution, now=now)
            )
            if passed:
                note = (
                    f"slack {slack:.2f} < 0: violation {len(attribution.tolerated)} of "
                    f"{s.attribution.tolerate} let pass in {s.attribution.tolerate_window_s:g} s"
                )
                if top.mode is not Mode.DISABLE:
                    top = replace(top, mode=Mode.HOLD, reason=note)
                return replace(j, top=top, attribution=attribution, noise=True)
            episode = Episode(
                started=now,
                slack=slack,
                load=load,
                levels=tuple((k.value, state.levels.get(k)) for k in Knob),
            )
            why = (
                f"slack {slack:.2f} < 0 at load {_fraction(load)}: BE out to see if it is to blame"
            )
            return replace(
                j,
                top=replace(top, mode=Mode.DISABLE, reason=why),
                attribution=replace(attribution, episode=episode),
            )
        since = (episode.out_since or state.last_top) if out else None
        episode, outcome = window(
            s.attribution,
            episode,
            slack=slack,
            load=load,
            out_since=since,
            sub_period_s=s.sub_period_s,
            now=now,
        )
        if outcome is None and episode.back_since is not None:
            return self._confirming(j, top, episode, now=now)
        if outcome is None:
            why = (
                f"testing whether BE is to blame for slack {episode.slack:.2f} "
                f"(load {_fraction(episode.load)}): {episode.judged} window(s) without BE"
            )
            return replace(
                j,
                top=replace(top, mode=Mode.DISABLE, reason=why),
                attribution=replace(attribution, episode=episode),
            )
        return self._verdict(j, top, episode, outcome, now=now)

    def _confirming(self, j: _Judged, top: TopState, episode: Episode, *, now: float) -> _Judged:
        """The violation cleared without BE: BE back at its levels (every frozen workload
        thawed) to see whether it returns; mode ``hold`` meanwhile."""
        a = j.attribution
        if top.mode is Mode.DISABLE:  # the load or a cool-down keeps BE off: cannot confirm
            return self._verdict(j, top, episode, Blame.UNKNOWN, now=now)
        why = (
            f"slack {episode.slack:.2f} cleared without BE "
            f"({episode.judged} windows): BE back to see if it returns"
        )
        j = replace(j, top=replace(top, mode=Mode.HOLD, reason=why))
        j = replace(j, attribution=replace(a, episode=episode))
        if episode.back_since != now:
            return j
        evict, released = release_all(j.evict, reason=why)
        return replace(
            j,
            levels=Levels(**dict(episode.levels)),
            pending=None,
            evict=evict,
            reason=why,
            released=released,
        )

    def _verdict(
        self, j: _Judged, top: TopState, episode: Episode, outcome: Blame, *, now: float
    ) -> _Judged:
        """Close ``episode`` with ``outcome`` (see `corral.control.attribution`)."""
        s = self.settings
        a = j.attribution
        worst = "no" if episode.worst is None else f"{episode.worst:.2f}"
        before = Levels(**dict(episode.levels))
        if outcome is Blame.BE:
            text = (
                f"BE's fault: slack {episode.slack:.2f} with BE at load "
                f"{_fraction(episode.load)}, worst {worst} in {episode.judged} windows without, "
                "back when BE returned"
            )
            charged = charge(s.top, top, slack=episode.slack, now=now)
            return replace(
                j,
                top=replace(charged, reason=f"{text} ({charged.reason})"),
                ceilings=self._learn(j.ceilings, before, load=episode.load, now=now),
                bands=blame(s.bands, j.bands, load=episode.load, now=now),
                attribution=replace(a, episode=None, last=text, be_episodes=a.be_episodes + 1),
            )
        if outcome is Blame.UNKNOWN and episode.back_since is not None:
            text = (
                f"cannot tell: slack {episode.slack:.2f} at load {_fraction(episode.load)}, "
                f"clear at load {_fraction(episode.lowest_load)} without BE and in "
                f"{episode.back_judged} windows with BE back; BE stays"
            )
            return replace(
                j,
                levels=before,
                pending=None,
                top=replace(top, mode=Mode.HOLD, reason=text),
                attribution=replace(
                    a, episode=None, last=text, unknown_episodes=a.unknown_episodes + 1
                ),
                reason=text,
            )
        if outcome is Blame.UNKNOWN:
            text = (
                f"cannot tell: slack {episode.slack:.2f} at load {_fraction(episode.load)}, "
                f"load {_fraction(episode.lowest_load)} without BE; a plain cool-down"
            )
            until = max(top.disabled_until, now + s.top.cooldown_s)
            return replace(
                j,
                top=replace(top, mode=Mode.DISABLE, reason=text, disabled_until=until),
                attribution=replace(
                    a, episode=None, last=text, unknown_episodes=a.unknown_episodes + 1
                ),
            )
        if episode.worst is not None and episode.worst < 0:
            noise = episode.worst
            text = (
                f"not BE's fault: slack {noise:.2f} with BE out (load "
                f"{_fraction(episode.lowest_load)}) after {episode.slack:.2f} with it; BE restored"
            )
        else:
            noise = episode.slack
            text = (
                f"not BE's fault: slack {noise:.2f} did not return in {episode.back_judged} "
                "windows with BE back"
            )
        holdoff = next_holdoff(s.attribution, a.holdoff, noise=noise, now=now)
        attribution = replace(
            a, episode=None, holdoff=holdoff, last=text, host_episodes=a.host_episodes + 1
        )
        if top.mode is Mode.DISABLE:  # the load keeps BE off anyway: nothing to restore
            return replace(
                j, top=replace(top, reason=f"{text}; {top.reason}"), attribution=attribution
            )
        evict, released = release_all(j.evict, reason=text)
        return replace(
            j,
            levels=before,
            pending=None,
            top=replace(top, mode=Mode.HOLD, reason=text),
            evict=evict,
            attribution=attribution,
            reason=text,
            released=released,
        )

    def _learn(
        self, ceilings: tuple[Ceiling, ...], levels: Levels, *, load: float | None, now: float
    ) -> tuple[Ceiling, ...]:
        """Ceilings for a violation that was BE's: each knob above its floor at ``levels``
        (or `RUN` for BE at its floor, when ``ceilings.floor``)."""
        s = self.settings
        specs = self.specs()
        raised: dict[str, int] = {
            k: levels.get(k) for k in FLOORED if levels.get(k) > specs[k].floor
        }
        if not raised and s.ceilings.floor:
            raised = {RUN: 1}
        return learn(s.ceilings, ceilings, raised, load=load, now=now)

    def _step_without_signal(
        self, state: ControllerState, obs: Observation, now: float
    ) -> tuple[ControllerState, tuple[Action, ...]]:
        """Hold BE where it is (see the module docstring); after ``no_signal_floor_after``
        top periods without a signal, take it to its floor."""
        s = self.settings
        top_due = state.last_top is None or now - state.last_top >= s.top.period_s
        sub_due = state.last_sub is None or now - state.last_sub >= s.sub_period_s
        periods = state.no_signal_periods + (1 if top_due else 0)
        why = f"no signal: {obs.no_signal_reason()}"
        levels, pending, reason = state.levels, state.pending, ""
        limit = s.no_signal_floor_after
        if limit is not None and periods > limit and not self.at_floor(levels):
            levels, pending = self.floored(levels), None
            reason = f"BE to its floor after {periods} periods with {why}"
        top = replace(state.top, mode=Mode.HOLD, reason=why, slack=None, load=None)
        short = state.top.mode is Mode.SHRINK and not state.evict.frozen
        memory, memory_actions = self._memory_step(state, obs, now, due=sub_due, short=short)
        actions = (
            *self._render(
                None if not state.applied else state.levels,
                levels,
                reason or ("initial" if state.last_top is None else "re-applied after a refusal"),
            ),
            *memory_actions,
        )
        new_state = replace(
            state,
            levels=levels,
            top=top,
            pending=pending,
            holds=live_holds(state.holds, now),
            memory=memory,
            last_top=now if top_due else state.last_top,
            last_sub=now if sub_due else state.last_sub,
            applied=True,
            no_signal_periods=periods,
        )
        return new_state, actions

    def _memory_step(
        self, state: ControllerState, obs: Observation, now: float, *, due: bool, short: bool
    ) -> tuple[SenpaiState, tuple[Action, ...]]:
        """senpai's step on the BE box's own memory signals (every sub period); with the
        baseline on, only while slack is ``short`` and BE runs (see `BaselineSettings`)."""
        if not due:
            return state.memory, ()
        s = self.settings
        gated = s.memory.enabled and s.baseline.enabled and not s.baseline.probe_memory_always
        if gated and not short:
            # Slack allows the baseline: BE gets the whole box back (``max_bytes``; with
            # None the last limit stays) and the probe restarts from BE's use when needed.
            if state.memory.high is None:
                return state.memory, ()
            release = s.memory.max_bytes
            if release is None or release == state.memory.high:
                return SenpaiState(), ()
            why = "senpai released: slack allows BE its baseline"
            return SenpaiState(), (SetMemoryHigh(release, why),)
        memory = senpai_step(
            self.settings.memory,
            state.memory,
            psi_some_us=obs.psi_some_us,
            usage_bytes=obs.be_memory_bytes,
            now=now,
        )
        if memory.high is None or memory.high == state.memory.high:
            return memory, ()
        why = f"senpai: {memory.pressure_us or 0:.0f} us of pressure this tick"
        return memory, (SetMemoryHigh(memory.high, why),)

    def _under_ceilings(
        self,
        top: TopState,
        levels: Levels,
        pending: Trial | None,
        ceilings: tuple[Ceiling, ...],
        *,
        load: float | None,
        now: float,
        specs: dict[Knob, KnobSpec],
    ) -> tuple[TopState, Levels, Trial | None, str]:
        """Step BE down before the load reaches a level's learned ceiling (`ceilings`):
        disable it near a `RUN` ceiling, else lower each knob to its highest level that is
        not blocked at ``load`` (cancelling a trial of that knob)."""
        cfg = self.settings.ceilings
        run = blocking(cfg, ceilings, RUN, 1, load=load, now=now)
        if run is not None:
            at = "unknown load" if run.load is None else f"load {run.load:.0%}"
            reason = f"load {_fraction(load)} near {at}, where BE at its floor broke the SLO"
            return replace(top, mode=Mode.DISABLE, reason=reason), levels, pending, ""
        notes = []
        for knob in FLOORED:
            level = cap = levels.get(knob)
            while cap > specs[knob].floor and blocking(
                cfg, ceilings, knob, cap, load=load, now=now
            ):
                cap -= 1
            if cap < level:
                levels = levels.with_level(knob, cap)
                notes.append(f"{knob} {level} -> {cap}")
                if pending is not None and pending.knob == knob:
                    pending = None
        if not notes:
            return top, levels, pending, ""
        reason = f"{', '.join(notes)}: load {_fraction(load)} near a learned ceiling"
        return top, levels, pending, reason

    def _next_trial(
        self,
        mode: Mode,
        *,
        levels: Levels,
        holds: tuple[Hold, ...],
        ceilings: tuple[Ceiling, ...],
        slack: float,
        load: float | None,
        now: float,
        specs: dict[Knob, KnobSpec],
        reference: float | None = None,
    ) -> Trial | None:
        if mode is Mode.GROW:
            for knob in GROW_ORDER:
                level = levels.get(knob)
                if level >= self.grow_cap(knob, specs) or held(holds, knob, Direction.GROW, now):
                    continue
                if knob is Knob.WEIGHT and slack < self.settings.weight.grow_slack:
                    continue
                if blocking(self.settings.ceilings, ceilings, knob, level + 1, load=load, now=now):
                    continue
                return Trial(knob, Direction.GROW, level, level + 1, slack, now, load)
            return None
        for knob in SHRINK_ORDER:
            spec = specs[knob]
            level = levels.get(knob)
            if level <= spec.floor or held(holds, knob, Direction.SHRINK, now):
                continue
            return Trial(
                knob,
                Direction.SHRINK,
                level,
                spec.clamp(level - spec.shrink_step),
                slack,
                now,
                load,
                reference,
            )
        return None

    def render(self, levels: Levels, reason: str) -> tuple[Action, ...]:
        """Every CPU and cache knob of ``levels`` as actions (to write a whole BE state
        again, e.g. after another writer touched the BE box)."""
        return self._render(None, levels, reason)

    def be_cpus(self, levels: Levels) -> CpuSet:
        """The CPUs the BE box gets at ``levels``."""
        return split(self.settings.cores, self.cores, levels.cores)[0]

    def _render(self, old: Levels | None, new: Levels, reason: str) -> tuple[Action, ...]:
        s = self.settings
        out: list[Action] = []

        def changed(*knobs: Knob) -> bool:
            return old is None or any(old.get(k) != new.get(k) for k in knobs)

        be, lc = split(s.cores, self.cores, new.cores)
        if changed(Knob.CORES):
            out.append(SetCpus(be, lc, reason))
        if changed(Knob.WEIGHT):
            w = s.weight.weight(new.weight)
            out.append(SetWeight(w.idle, w.shares, reason))
        if changed(Knob.QUOTA, Knob.CORES):
            quota = s.weight.quota_cpus(new.quota, len(be))
            previous = None if old is None else s.weight.quota_cpus(old.quota, len(be))
            if old is None or quota != previous or changed(Knob.QUOTA):
                out.append(SetQuota(quota, reason))
        if (s.cache.total_ways or s.cache.mb_ladder) and changed(Knob.WAYS, Knob.MB):
            lc_mask, be_mask = (
                masks(s.cache.total_ways, new.ways) if s.cache.total_ways else (None, None)
            )
            mb = s.cache.mb_ladder[new.mb] if s.cache.mb_ladder else None
            out.append(SetCache(lc_mask, be_mask, mb, reason))
        return tuple(out)

    def status(self, state: ControllerState) -> dict[str, Any]:
        """A JSON-able view of the controller's state (for /status)."""
        s = self.settings
        be, lc = split(s.cores, self.cores, state.levels.cores)
        weight = s.weight.weight(state.levels.weight)
        baseline = self.baseline()
        now = state.last_top if state.last_top is not None else 0.0
        return {
            "mode": str(state.top.mode),
            "reason": state.top.reason,
            "slack": state.top.slack,
            "load": state.top.load,
            "slo": {"percentile": s.slo.percentile, "target_ms": s.slo.target_ms},
            "be": {
                "cores": state.levels.cores,
                "cpus": str(be),
                "lc_cpus": str(lc),
                "weight": str(weight),
                "quota_cpus": s.weight.quota_cpus(state.levels.quota, len(be)),
                "ways": state.levels.ways,
                "memory_high": state.memory.high,
            },
            "levels": {f.name: getattr(state.levels, f.name) for f in fields(state.levels)},
            "pending": None
            if state.pending is None
            else {
                "knob": str(state.pending.knob),
                "direction": str(state.pending.direction),
                "since": state.pending.started,
            },
            "holds": [
                {"knob": str(h.knob), "direction": str(h.direction), "until": h.until}
                for h in state.holds
            ],
            "ceilings": [
                {"knob": str(c.knob), "level": c.level, "load": c.load, "until": c.until}
                for c in state.ceilings
            ],
            "frozen": [wid for wid, _ in state.evict.frozen],
            "evicted": list(state.evict.evicted),
            "last_verdict": state.last_verdict,
            "no_signal_periods": state.no_signal_periods,
            "baseline": None
            if not s.baseline.enabled
            else {f.name: getattr(baseline, f.name) for f in fields(baseline)},
            "attribution": self._attribution_status(state),
            "bands": describe(s.bands, state.bands, now) if s.bands.enabled else None,
        }

    def _attribution_status(self, state: ControllerState) -> dict[str, Any] | None:
        a = state.attribution
        if not self.settings.attribution.enabled:
            return None
        e = a.episode
        h = a.holdoff
        return {
            "episode": None
            if e is None
            else {
                "since": e.started,
                "slack": e.slack,
                "load": e.load,
                "be_out_since": e.out_since,
                "windows_without_be": e.judged,
                "worst_slack_without_be": e.worst,
            },
            "holdoff": None if h is None else {"until": h.until, "noise_slack": h.noise},
            "last": a.last,
            "episodes": {
                "be": a.be_episodes,
                "host": a.host_episodes,
                "unknown": a.unknown_episodes,
            },
            "violations_let_pass": a.tolerated_total,
        }


def _fraction(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.0%}"


def _evict_action(verb: str, workload: str, reason: str) -> Action:
    if verb == "freeze":
        return Freeze(workload, reason)
    if verb == "thaw":
        return Thaw(workload, reason)
    return Evict(workload, reason)
