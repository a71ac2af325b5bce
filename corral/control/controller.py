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
from corral.control.cache import CacheSettings, masks
from corral.control.ceilings import RUN, Ceiling, CeilingSettings, blocking, learn
from corral.control.cores import CoresSettings, max_be_cores, split
from corral.control.evict import BeWorkload, EvictSettings, EvictState, evict_step
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
)
from corral.control.memory import SenpaiSettings, SenpaiState, senpai_step
from corral.control.signals import Observation
from corral.control.slo import Slo
from corral.control.top import Mode, TopSettings, TopState, top_step
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
    ceilings: CeilingSettings = field(default_factory=CeilingSettings)
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
        """BE starts small: floor cores, the most protective weight, no quota, floor
        cache; it grows from there while slack allows."""
        specs = self.specs()
        return ControllerState(
            levels=Levels(
                cores=specs[Knob.CORES].floor,
                weight=0,
                quota=specs[Knob.QUOTA].top,
                ways=specs[Knob.WAYS].floor,
                mb=specs[Knob.MB].floor,
            )
        )

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
        """One control step; see the module docstring for the cadence and for what a lost
        signal does."""
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
        levels = state.levels
        pending = state.pending
        holds = live_holds(state.holds, now)
        top = state.top
        evict = state.evict
        ceilings = state.ceilings
        verdict = ""
        reason = ""
        freezes: tuple[Action, ...] = ()
        top_due = state.last_top is None or now - state.last_top >= s.top.period_s
        sub_due = state.last_sub is None or now - state.last_sub >= s.sub_period_s
        if top_due:
            top = top_step(s.top, top, slack=slack, load=load, now=now)
            if slack is not None and slack < 0 and state.top.mode is not Mode.DISABLE:
                # BE was running when LC broke its SLO: remember where each raised knob was.
                raised: dict[str, int] = {
                    k: levels.get(k) for k in FLOORED if levels.get(k) > specs[k].floor
                }
                if not raised and s.ceilings.floor:
                    raised = {RUN: 1}
                ceilings = learn(s.ceilings, ceilings, raised, load=load, now=now)
            if top.mode is not Mode.DISABLE:
                top, levels, pending, reason = self._under_ceilings(
                    top, levels, pending, ceilings, load=load, now=now, specs=specs
                )
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
                    noisy=noisy,
                    no_grow_slack=s.top.no_grow_slack,
                    now=now,
                )
                if outcome is Verdict.KEEP:
                    verdict = f"kept {pending.direction} {pending.knob}"
                    pending = None
                elif outcome is Verdict.ROLLBACK:
                    verdict = (
                        f"rolled back {pending.direction} {pending.knob} "
                        f"(slack {pending.slack_before:.2f} -> {slack:.2f})"
                    )
                    levels = levels.with_level(pending.knob, pending.before)
                    holds = (*holds, Hold(pending.knob, pending.direction, now + s.trial.hold_s))
                    if (
                        pending.direction is Direction.GROW
                        and slack is not None
                        and slack < s.top.no_grow_slack
                    ):
                        ceilings = learn(
                            s.ceilings, ceilings, {pending.knob: pending.after}, load=load, now=now
                        )
                    reason = verdict
                    pending = None
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
                )
                if pending is not None:
                    levels = levels.with_level(pending.knob, pending.after)
                    reason = f"{pending.direction} {pending.knob}: {top.reason}"
        if top_due:
            evict, decisions = evict_step(
                s.evict,
                evict,
                mode=top.mode,
                at_floor=self.at_floor(levels),
                workloads=tuple(workloads),
                now=now,
            )
            freezes = tuple(_evict_action(d.verb, d.workload, d.reason) for d in decisions)
        memory, memory_actions = self._memory_step(state, obs, now, due=sub_due)
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
        )
        return new_state, actions

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
        memory, memory_actions = self._memory_step(state, obs, now, due=sub_due)
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
        self, state: ControllerState, obs: Observation, now: float, *, due: bool
    ) -> tuple[SenpaiState, tuple[Action, ...]]:
        """senpai's step on the BE box's own memory signals (every sub period)."""
        if not due:
            return state.memory, ()
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
    ) -> Trial | None:
        if mode is Mode.GROW:
            for knob in GROW_ORDER:
                spec = specs[knob]
                level = levels.get(knob)
                if level >= spec.top or held(holds, knob, Direction.GROW, now):
                    continue
                if knob is Knob.WEIGHT and slack < self.settings.weight.grow_slack:
                    continue
                if blocking(self.settings.ceilings, ceilings, knob, level + 1, load=load, now=now):
                    continue
                return Trial(knob, Direction.GROW, level, level + 1, slack, now)
            return None
        for knob in SHRINK_ORDER:
            spec = specs[knob]
            level = levels.get(knob)
            if level <= spec.floor or held(holds, knob, Direction.SHRINK, now):
                continue
            return Trial(
                knob, Direction.SHRINK, level, spec.clamp(level - spec.shrink_step), slack, now
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
        }


def _fraction(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.0%}"


def _evict_action(verb: str, workload: str, reason: str) -> Action:
    if verb == "freeze":
        return Freeze(workload, reason)
    if verb == "thaw":
        return Thaw(workload, reason)
    return Evict(workload, reason)
