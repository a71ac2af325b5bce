"""The agent's decisions as a pure step: ``step(state, batch, now) -> result``.

`step` takes the committed workload set and placement (`CoreState`), one coalesced batch of
requests (adds, updates, removes, each possibly awaited by a caller) and the time, and
returns the next state with the effects that make it real, as values:

* `Commit`: the decision record, workload rows and assignments to store in one
  transaction (the acknowledgement point: nothing is answered before it is durable);
* `Enforce`: the workloads and placement to write into the kernel, and the removed
  workloads whose cgroups to release;
* `Answer` values: what each waiting caller is told, by waiter token.

Placement itself is injected (``place``), so the step is tested with recorded batches and
a fake allocator; the agent passes `corral.agent.decide.decide` bound to its topology and
settings. A request that waits for its decision and cannot be placed is refused alone:
its spec is dropped from the batch (nothing stored) and the others are placed again
without it, so one bad request never fails another's decision.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from corral.agent.decide import Decision
from corral.agent.events import EventKind
from corral.agent.state import LoggedEvent, Status, StoredWorkload
from corral.errors import CorralError
from corral.placement.assignment import Assignment, Placement
from corral.placement.workload import Workload

Place = Callable[[Sequence[Workload], Mapping[str, Assignment]], Decision]
"""Place the whole workload list, keeping ``previous`` assignments where the allocator may."""


class CoreInvariantError(CorralError):
    """A request breaks the core's contract (a bug in the caller, not bad input)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One add, update or remove of a batch. ``waiter`` is the token of a caller who waits
    for the decision; ``stored`` says the spec was committed (as pending) before queueing."""

    kind: EventKind
    workload_id: str
    workload: Workload | None = None
    revision: int = 0
    stored: bool = False
    waiter: int | None = None
    created_s: float | None = None
    detail: str = ""

    def __post_init__(self) -> None:
        if self.kind not in (EventKind.ADD, EventKind.UPDATE, EventKind.REMOVE):
            raise CoreInvariantError(f"request {self.workload_id}: {self.kind} is not a mutation")
        if self.kind is not EventKind.REMOVE and self.workload is None:
            raise CoreInvariantError(f"request {self.workload_id}: {self.kind} without a spec")


@dataclass(frozen=True, slots=True)
class CoreState:
    """The committed workloads, their placement and the specs that placement is for."""

    workloads: Mapping[str, StoredWorkload] = field(default_factory=dict)
    placement: Placement = field(default_factory=lambda: Placement(assignments={}, pools={}))
    decided: Mapping[str, Workload] = field(default_factory=dict)


class AnswerKind(StrEnum):
    """What a waiting caller is told."""

    PLACED = "placed"  # its workload was placed and committed
    REFUSED = "refused"  # it could not be placed; nothing of it was stored
    PENDING = "pending"  # a removal in the same batch came after it
    REMOVED = "removed"  # its removal is committed


@dataclass(frozen=True, slots=True)
class Answer:
    """The reply to one waiter."""

    waiter: int
    kind: AnswerKind
    workload_id: str
    reason: str = ""
    stored: StoredWorkload | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    """Everything one decision stores, in one transaction."""

    at_s: float
    trigger: str
    events: tuple[LoggedEvent, ...]
    workloads: tuple[StoredWorkload, ...]
    removed: Mapping[str, int]
    assignments: Mapping[str, Assignment]
    duration_ms: float
    allocator: str
    moves: int
    detail: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Enforce:
    """What the kernel must hold after the decision."""

    workloads: tuple[Workload, ...]
    placement: Placement
    released: tuple[Workload, ...]


@dataclass(frozen=True, slots=True)
class StepResult:
    """The next state and the effects, in the order the agent performs them: commit,
    enforce, then answer."""

    state: CoreState
    commit: Commit
    enforce: Enforce
    answers: tuple[Answer, ...]
    decision: Decision


@dataclass
class _Working:
    """The batch being folded into the committed state (local to one `step`)."""

    workloads: dict[str, StoredWorkload]
    previous: dict[str, Assignment]
    removed: dict[str, int] = field(default_factory=dict)
    released: dict[str, Workload] = field(default_factory=dict)
    waiters: dict[str, list[Request]] = field(default_factory=dict)
    unstored: set[str] = field(default_factory=set)
    answers: list[Answer] = field(default_factory=list)


def _fold(state: CoreState, requests: Sequence[Request], now: float) -> _Working:
    """Apply the batch's requests in order to a copy of the committed state."""
    work = _Working(dict(state.workloads), dict(state.placement.assignments))
    for request in requests:
        wid = request.workload_id
        if request.kind is EventKind.REMOVE:
            old = work.workloads.pop(wid, None)
            work.previous.pop(wid, None)
            work.removed[wid] = request.revision
            if old is not None:
                work.released[wid] = old.workload
            work.unstored.discard(wid)
            for waiter in work.waiters.pop(wid, []):
                # Acknowledged in order: the PUT happened, then the removal.
                work.answers.append(_pending_answer(waiter, now))
            continue
        spec = request.workload
        if spec is None:  # excluded by Request's own check; kept for the type checker
            raise CoreInvariantError(f"request {wid}: no spec")
        old = work.workloads.get(wid)
        if state.decided.get(wid) != spec:
            work.previous.pop(wid, None)  # a changed spec may get other CPUs
        created = old.created_s if old is not None else (request.created_s or now)
        work.workloads[wid] = StoredWorkload(
            spec, Status.PENDING, "", request.revision, created, now
        )
        work.removed.pop(wid, None)
        work.released.pop(wid, None)
        if request.stored:
            work.unstored.discard(wid)
        else:
            work.unstored.add(wid)
        if request.waiter is not None:
            work.waiters.setdefault(wid, []).append(request)
    return work


def _pending_answer(request: Request, now: float) -> Answer:
    if request.waiter is None or request.workload is None:
        raise CoreInvariantError(f"request {request.workload_id}: no waiter or spec")
    stored = StoredWorkload(request.workload, Status.PENDING, "", request.revision, now, now)
    return Answer(request.waiter, AnswerKind.PENDING, request.workload_id, stored=stored)


def _place(state: CoreState, work: _Working, place: Place) -> Decision:
    """Place the working set; a waited-for request that is refused is dropped (reverted to
    its committed version, if any) and the rest placed again."""
    while True:
        decision = place([s.workload for s in work.workloads.values()], work.previous)
        refused = [wid for wid in decision.placement.refusals if wid in work.unstored]
        if not refused:
            return decision
        for wid in refused:
            work.unstored.discard(wid)
            reason = decision.placement.refusals[wid].reason
            for waiter in work.waiters.pop(wid, []):
                if waiter.waiter is not None:
                    work.answers.append(Answer(waiter.waiter, AnswerKind.REFUSED, wid, reason))
            if wid in state.workloads:
                work.workloads[wid] = state.workloads[wid]
                if wid in state.placement.assignments:
                    work.previous[wid] = state.placement.assignments[wid]
            else:
                work.workloads.pop(wid)


def _final(work: _Working, placement: Placement) -> dict[str, StoredWorkload]:
    """Each working workload with its new status: placed, or refused with the reason."""
    final: dict[str, StoredWorkload] = {}
    for wid, stored in work.workloads.items():
        if wid in placement.assignments:
            final[wid] = replace(stored, status=Status.PLACED, reason="")
        else:
            refusal = placement.refusals.get(wid)
            reason = refusal.reason if refusal else "not placed"
            final[wid] = replace(stored, status=Status.REFUSED, reason=reason)
    return final


def step(
    state: CoreState,
    requests: Sequence[Request],
    now: float,
    *,
    place: Place,
    trigger: str,
    topology_changed: bool = False,
) -> StepResult:
    """Decide one batch (see the module docstring). Pure: ``place`` is the only callee
    that computes, and it must be pure as well."""
    work = _fold(state, requests, now)
    decision = _place(state, work, place)
    placement = decision.placement
    final = _final(work, placement)
    for wid, waiting in work.waiters.items():
        refusal = placement.refusals.get(wid)
        for request in waiting:
            if request.waiter is None:
                continue
            if refusal is not None:
                work.answers.append(Answer(request.waiter, AnswerKind.REFUSED, wid, refusal.reason))
            else:
                work.answers.append(
                    Answer(request.waiter, AnswerKind.PLACED, wid, stored=final.get(wid))
                )
    for request in requests:
        if request.kind is EventKind.REMOVE and request.waiter is not None:
            work.answers.append(Answer(request.waiter, AnswerKind.REMOVED, request.workload_id))
    logged = tuple(LoggedEvent(r.kind.value, r.workload_id, r.detail) for r in requests) or (
        LoggedEvent(trigger, None, "topology changed" if topology_changed else ""),
    )
    detail = dict(decision.detail)
    detail.update({"fallback": decision.fallback, "adopted": decision.adopted})
    commit = Commit(
        at_s=now,
        trigger=trigger,
        events=logged,
        workloads=tuple(final.values()),
        removed=dict(work.removed),
        assignments=placement.assignments,
        duration_ms=decision.duration_s * 1000,
        allocator=decision.allocator,
        moves=decision.moves,
        detail=detail,
    )
    next_state = CoreState(
        workloads=final,
        placement=placement,
        decided={wid: s.workload for wid, s in final.items()},
    )
    enforce = Enforce(
        workloads=tuple(s.workload for s in final.values()),
        placement=placement,
        released=tuple(work.released.values()),
    )
    return StepResult(next_state, commit, enforce, tuple(work.answers), decision)


def settle(current: Mapping[str, StoredWorkload], result: StepResult) -> dict[str, StoredWorkload]:
    """The workload table after ``result`` is committed, given ``current`` (the table now,
    which may hold writes acknowledged while the step ran): those newer writes stay for the
    next decision; everything else is the step's."""
    merged = dict(result.state.workloads)
    final = result.state.workloads
    removed = result.commit.removed
    for wid, stored in current.items():
        decided = max(final[wid].revision if wid in final else 0, removed.get(wid, 0))
        if stored.revision > decided:
            merged[wid] = stored
    return merged
