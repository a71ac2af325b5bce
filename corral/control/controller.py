"""The colocation controller as a pure step: ``(state, observation, now) -> (state, actions)``.

It composes the top controller (`top`), the BE knob ladders with trial steps that are
rolled back when they do not help (`knobs`, `cores`, `weight`, `cache`), senpai's memory
probe (`memory`) and the freeze/evict escalation (`evict`). No I/O and no clock: the
runtime reads the signals, passes ``now`` and applies the actions.

Cadence: the top controller decides every ``top.period_s``; the sub-controllers judge a
pending step or take a new one every ``sub_period_s``; senpai ticks every ``sub_period_s``.
One knob moves at a time, so each step's effect can be judged on its own.
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

GROW_ORDER = ("quota", "cores", "ways", "mb", "weight")
"""Growth gives back the last resort first (quota), then capacity, then weight."""
SHRINK_ORDER = ("weight", "cores", "mb", "ways", "quota")
"""Shrinking takes first what costs BE least and helps LC most here (weight), quota last."""


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

    def __post_init__(self) -> None:
        if self.sub_period_s <= 0:
            raise InputError("sub_period_s", f"{self.sub_period_s} is not positive", "e.g. 2")
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

    def get(self, knob: str) -> int:
        """The level of ``knob``."""
        return int(getattr(self, knob))

    def with_level(self, knob: str, level: int) -> Levels:
        """A copy with ``knob`` at ``level``."""
        return replace(self, **{knob: level})


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


@dataclass(frozen=True, slots=True)
class Controller:
    """The controller for one machine: settings plus its physical cores (CPU sets)."""

    settings: ControllerSettings
    cores: tuple[CpuSet, ...]

    def __post_init__(self) -> None:
        if not self.cores:
            raise InputError("topology", "has no cores", "load the host's topology")

    def specs(self) -> dict[str, KnobSpec]:
        """The knob ladders on this machine (knobs the host lacks have floor == top)."""
        s = self.settings
        ways_top = s.cache.max_be_ways
        ways_floor = s.cache.min_ways if s.cache.total_ways else 0
        mb_top = max(0, len(s.cache.mb_ladder) - 1)
        return {
            "cores": KnobSpec(
                "cores", s.cores.min_cores, max_be_cores(s.cores, self.cores), s.cores.shrink_step
            ),
            "weight": KnobSpec("weight", 0, len(s.weight.ladder) - 1),
            "quota": KnobSpec("quota", 0, len(s.weight.quota_ladder)),
            "ways": KnobSpec("ways", ways_floor, max(ways_floor, ways_top)),
            "mb": KnobSpec("mb", 0, mb_top),
        }

    def initial(self) -> ControllerState:
        """BE starts small: floor cores, the most protective weight, no quota, floor
        cache; it grows from there while slack allows."""
        specs = self.specs()
        return ControllerState(
            levels=Levels(
                cores=specs["cores"].floor,
                weight=0,
                quota=specs["quota"].top,
                ways=specs["ways"].floor,
                mb=specs["mb"].floor,
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
        return all(levels.get(k) == specs[k].floor for k in ("cores", "weight", "ways", "mb"))

    def step(
        self,
        state: ControllerState,
        obs: Observation,
        now: float,
        *,
        workloads: Sequence[BeWorkload] = (),
    ) -> tuple[ControllerState, tuple[Action, ...]]:
        """One control step; see the module docstring for the cadence."""
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
                raised = {
                    k: levels.get(k)
                    for k in ("cores", "weight", "ways", "mb")
                    if levels.get(k) > specs[k].floor
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
            floored = levels
            for knob in ("cores", "weight", "ways", "mb"):
                floored = floored.with_level(knob, specs[knob].floor)
            levels, reason = floored, f"BE disabled: {top.reason}"
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
        memory = state.memory
        memory_actions: tuple[Action, ...] = ()
        if sub_due:
            memory = senpai_step(
                s.memory,
                memory,
                psi_some_us=obs.psi_some_us,
                usage_bytes=obs.be_memory_bytes,
                now=now,
            )
            if memory.high is not None and memory.high != state.memory.high:
                memory_actions = (
                    SetMemoryHigh(
                        memory.high,
                        f"senpai: {memory.pressure_us or 0:.0f} us of pressure this tick",
                    ),
                )
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
        )
        return new_state, actions

    def _under_ceilings(
        self,
        top: TopState,
        levels: Levels,
        pending: Trial | None,
        ceilings: tuple[Ceiling, ...],
        *,
        load: float | None,
        now: float,
        specs: dict[str, KnobSpec],
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
        for knob in ("cores", "weight", "ways", "mb"):
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
        specs: dict[str, KnobSpec],
    ) -> Trial | None:
        if mode is Mode.GROW:
            for knob in GROW_ORDER:
                spec = specs[knob]
                level = levels.get(knob)
                if level >= spec.top or held(holds, knob, Direction.GROW, now):
                    continue
                if knob == "weight" and slack < self.settings.weight.grow_slack:
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

        def changed(*knobs: str) -> bool:
            return old is None or any(old.get(k) != new.get(k) for k in knobs)

        be, lc = split(s.cores, self.cores, new.cores)
        if changed("cores"):
            out.append(SetCpus(be, lc, reason))
        if changed("weight"):
            w = s.weight.weight(new.weight)
            out.append(SetWeight(w.idle, w.shares, reason))
        if changed("quota", "cores"):
            quota = s.weight.quota_cpus(new.quota, len(be))
            previous = None if old is None else s.weight.quota_cpus(old.quota, len(be))
            if old is None or quota != previous or changed("quota"):
                out.append(SetQuota(quota, reason))
        if (s.cache.total_ways or s.cache.mb_ladder) and changed("ways", "mb"):
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
                "knob": state.pending.knob,
                "direction": str(state.pending.direction),
                "since": state.pending.started,
            },
            "holds": [
                {"knob": h.knob, "direction": str(h.direction), "until": h.until}
                for h in state.holds
            ],
            "ceilings": [
                {"knob": c.knob, "level": c.level, "load": c.load, "until": c.until}
                for c in state.ceilings
            ],
            "frozen": [wid for wid, _ in state.evict.frozen],
            "evicted": list(state.evict.evicted),
            "last_verdict": state.last_verdict,
        }


def _fraction(load: float | None) -> str:
    return "unknown" if load is None else f"{load:.0%}"


def _evict_action(verb: str, workload: str, reason: str) -> Action:
    if verb == "freeze":
        return Freeze(workload, reason)
    if verb == "thaw":
        return Thaw(workload, reason)
    return Evict(workload, reason)
