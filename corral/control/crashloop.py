"""Hold a BE workload that is caught in an OOM-kill loop, with a growing back-off.

A BE workload whose memory limit is too small for it is killed by the kernel's OOM killer
and, when a supervisor inside it restarts the worker at once (stress-ng, gunicorn, Celery
and Spark executors all do), killed again: it makes no progress, and every round costs
page faults, reclaim and an OOM kill. No static isolation stops it: ``cpu.idle`` only
orders it behind LC, so it takes the CPU from the BE work that does make progress, and its
kernel work reaches LC. kubelet's CrashLoopBackOff would back the restarts off, but it
never sees them: the container did not exit.

The rule: a workload with at least ``kills`` OOM kills within ``window_s`` seconds is in a
crash loop. It is frozen for ``hold_s``, then thawed to try again (its limit may have been
raised meanwhile); each new loop doubles the hold, up to ``max_hold_s``, and a workload
that runs ``reset_s`` without a loop starts from ``hold_s`` again - kubelet's back-off (10 s
doubling to 5 minutes, reset after 10 minutes of running). The counters are the kernel's
per-workload OOM-kill counts (v1 ``memory.oom_control``, v2 ``memory.events``); kills
before a workload was first seen do not count. Pure: no I/O and no clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class CrashLoopSettings:
    """When a workload counts as crash-looping, and how long it is held."""

    enabled: bool = True
    kills: int = 3
    """OOM kills within ``window_s`` that make a crash loop."""
    window_s: float = 30.0
    hold_s: float = 10.0
    """The first hold; each further loop doubles it."""
    max_hold_s: float = 300.0
    reset_s: float = 600.0
    """Running this long without a loop brings the hold back to ``hold_s``."""

    def __post_init__(self) -> None:
        if self.kills < 1:
            raise InputError("crash_loop.kills", f"{self.kills} is below 1", "kubelet-like: 3")
        for name in ("window_s", "hold_s", "max_hold_s", "reset_s"):
            if not getattr(self, name) > 0:
                raise InputError(f"crash_loop.{name}", "must be positive", "e.g. the default")
        if self.max_hold_s < self.hold_s:
            raise InputError(
                "crash_loop.max_hold_s",
                f"{self.max_hold_s} is below hold_s {self.hold_s}",
                "raise max_hold_s or lower hold_s",
            )


@dataclass(frozen=True, slots=True)
class LoopRecord:
    """What is known of one workload: its last OOM-kill count, its recent kills, its hold."""

    workload: str
    kills_seen: int
    kill_times: tuple[float, ...] = ()
    held_until: float | None = None
    next_hold_s: float = 0.0
    released: float | None = None
    """When its last hold ended (the calm spell that resets the back-off counts from it)."""
    loops: int = 0

    @property
    def held(self) -> bool:
        """Frozen by this rule now."""
        return self.held_until is not None


@dataclass(frozen=True, slots=True)
class CrashLoopState:
    """One record per BE workload seen."""

    records: tuple[LoopRecord, ...] = ()

    def held(self) -> tuple[str, ...]:
        """The workloads held now."""
        return tuple(r.workload for r in self.records if r.held)

    def record(self, workload: str) -> LoopRecord | None:
        """The record of ``workload``, if it was seen."""
        return next((r for r in self.records if r.workload == workload), None)


@dataclass(frozen=True, slots=True)
class LoopDecision:
    """Freeze (``hold``) or thaw (``release``) one workload, and why."""

    workload: str
    hold: bool
    reason: str


def crash_loop_step(
    settings: CrashLoopSettings,
    state: CrashLoopState,
    kills: Mapping[str, int | None],
    now: float,
) -> tuple[CrashLoopState, tuple[LoopDecision, ...]]:
    """The next state and the holds and releases due at ``now``, from each present BE
    workload's cumulative OOM-kill count (None: unreadable this tick, its record is
    kept). A workload no longer present is forgotten."""
    if not settings.enabled:
        return state, ()
    records: list[LoopRecord] = []
    decisions: list[LoopDecision] = []
    for workload, count in kills.items():
        old = state.record(workload)
        if count is None:
            if old is not None:
                records.append(old)
            continue
        record, decision = _step_one(settings, old, workload, count, now)
        records.append(record)
        if decision is not None:
            decisions.append(decision)
    return CrashLoopState(tuple(records)), tuple(decisions)


def _step_one(
    s: CrashLoopSettings, old: LoopRecord | None, workload: str, count: int, now: float
) -> tuple[LoopRecord, LoopDecision | None]:
    if old is None:
        return LoopRecord(workload, count, next_hold_s=s.hold_s), None
    # A count below the last one is a new cgroup of the same name: all its kills are new.
    new = count - old.kills_seen if count >= old.kills_seen else count
    times = tuple(t for t in old.kill_times if now - t <= s.window_s) + (now,) * new
    record = replace(old, kills_seen=count, kill_times=times)
    if record.held_until is not None:
        if now < record.held_until:
            return record, None
        why = f"crash-loop hold of {record.workload} ended; BE may try again"
        released = replace(record, held_until=None, kill_times=(), released=now)
        return released, LoopDecision(workload, False, why)
    if len(times) < s.kills:
        return record, None
    calm = old.released is None or now - old.released > s.reset_s
    hold = s.hold_s if calm else old.next_hold_s
    why = (
        f"crash loop: {len(times)} OOM kills in {s.window_s:g} s; "
        f"held {hold:g} s (back-off, loop {old.loops + 1})"
    )
    held = replace(
        record,
        held_until=now + hold,
        next_hold_s=min(2 * hold, s.max_hold_s),
        loops=old.loops + 1,
        kill_times=(),
    )
    return held, LoopDecision(workload, True, why)


def crash_loop_refused(
    state: CrashLoopState, workload: str, *, hold: bool, now: float
) -> CrashLoopState:
    """``state`` after the kernel refused ``workload``'s freeze (``hold``: it is not held,
    whatever the step decided) or its thaw (it is still held, due for release now)."""
    records = tuple(
        replace(r, held_until=None if hold else now) if r.workload == workload else r
        for r in state.records
    )
    return CrashLoopState(records)


def status(state: CrashLoopState, now: float) -> list[dict[str, object]]:
    """The held workloads for ``/status``: seconds left, loops so far, next hold."""
    return [
        {
            "workload": r.workload,
            "held_s_left": round(max(0.0, (r.held_until or now) - now), 1),
            "loops": r.loops,
            "next_hold_s": r.next_hold_s,
        }
        for r in state.records
        if r.held
    ]
