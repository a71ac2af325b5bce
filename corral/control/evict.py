"""Freeze, evict and thaw BE workloads when shrinking is not enough.

When the top controller keeps BE disabled while every BE knob is already at its floor,
the lowest-priority BE workload still running is frozen (cgroup freezer: it keeps its
memory but gets no CPU), one per period. A workload frozen for ``evict_after_s`` while BE
stays disabled is evicted (killed) when ``evict`` is on - freezing frees CPU, eviction
also frees memory. Once the top controller allows growth again, the highest-priority
frozen workload is thawed, one per ``thaw_interval_s``. When attribution finds that a
freeze did not help (the violation went on without BE), `release_all` thaws every frozen
workload at once and the freeze is not counted towards eviction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral.control.top import Mode
from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class BeWorkload:
    """A BE workload the controller may freeze; lower ``priority`` goes first."""

    id: str
    priority: int = 0


@dataclass(frozen=True, slots=True)
class EvictSettings:
    """When to freeze, evict and thaw."""

    freeze_after_periods: int = 1
    """Top periods BE must stay disabled at its floor before the first freeze (1: give the
    floor one period to work)."""
    evict: bool = False
    """Kill a workload that stayed frozen ``evict_after_s`` (off: freeze only)."""
    evict_after_s: float = 300.0
    thaw_interval_s: float = 15.0
    """Seconds between two thaws, so each thaw is seen before the next."""

    def __post_init__(self) -> None:
        if self.freeze_after_periods < 0:
            raise InputError("evict.freeze_after_periods", "is negative", "use 0 or more")


@dataclass(frozen=True, slots=True)
class EvictState:
    """Frozen workloads (id -> when frozen), the evicted, and the disabled-at-floor run."""

    frozen: tuple[tuple[str, float], ...] = ()
    evicted: tuple[str, ...] = ()
    floor_periods: int = 0
    last_thaw: float = float("-inf")


@dataclass(frozen=True, slots=True)
class EvictDecision:
    """What to do to which workload, and why."""

    verb: str  # "freeze" | "thaw" | "evict"
    workload: str
    reason: str


def evict_step(
    settings: EvictSettings,
    state: EvictState,
    *,
    mode: Mode,
    at_floor: bool,
    workloads: tuple[BeWorkload, ...],
    now: float,
    thaw_unless_disabled: bool = False,
) -> tuple[EvictState, tuple[EvictDecision, ...]]:
    """One top period of the freeze/evict/thaw escalation; frozen workloads are thawed in
    ``grow`` mode, or in any mode but ``disable`` with ``thaw_unless_disabled`` (the
    controller attributes violations, so only a disable is a reason to keep BE frozen)."""
    frozen = dict(state.frozen)
    known = {w.id for w in workloads}
    # A workload that left (finished, removed) is forgotten.
    frozen = {k: v for k, v in frozen.items() if k in known}
    running = [w for w in workloads if w.id not in frozen and w.id not in state.evicted]
    decisions: list[EvictDecision] = []
    floor_periods = state.floor_periods + 1 if mode is Mode.DISABLE and at_floor else 0
    if mode is Mode.DISABLE:
        if floor_periods > settings.freeze_after_periods and running:
            victim = min(running, key=lambda w: (w.priority, w.id))
            frozen[victim.id] = now
            decisions.append(
                EvictDecision(
                    "freeze",
                    victim.id,
                    f"BE disabled at its floor for {floor_periods} periods; "
                    f"lowest priority ({victim.priority})",
                )
            )
        if settings.evict:
            for wid, since in sorted(frozen.items()):
                if now - since >= settings.evict_after_s:
                    del frozen[wid]
                    decisions.append(
                        EvictDecision(
                            "evict", wid, f"frozen {now - since:.0f} s, BE still disabled"
                        )
                    )
        evicted = state.evicted + tuple(d.workload for d in decisions if d.verb == "evict")
        return EvictState(tuple(frozen.items()), evicted, floor_periods, state.last_thaw), tuple(
            decisions
        )
    last_thaw = state.last_thaw
    may_thaw = mode is Mode.GROW or thaw_unless_disabled
    if may_thaw and frozen and now - last_thaw >= settings.thaw_interval_s:
        priority = {w.id: w.priority for w in workloads}
        wid = max(frozen, key=lambda k: (priority.get(k, 0), k))
        del frozen[wid]
        last_thaw = now
        decisions.append(EvictDecision("thaw", wid, "slack and load allow BE again"))
    return replace(
        state, frozen=tuple(frozen.items()), floor_periods=floor_periods, last_thaw=last_thaw
    ), tuple(decisions)


def release_all(state: EvictState, *, reason: str) -> tuple[EvictState, tuple[EvictDecision, ...]]:
    """Thaw every frozen workload at once (the freezing was found not to be BE's fault, see
    `corral.control.attribution`); the evicted stay evicted, the floor run restarts."""
    decisions = tuple(EvictDecision("thaw", wid, reason) for wid, _ in sorted(state.frozen))
    return replace(state, frozen=(), floor_periods=0), decisions


def running(state: EvictState, workloads: tuple[BeWorkload, ...]) -> tuple[BeWorkload, ...]:
    """The workloads neither frozen nor evicted."""
    frozen = {wid for wid, _ in state.frozen}
    return tuple(w for w in workloads if w.id not in frozen and w.id not in state.evicted)
