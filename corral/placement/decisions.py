"""Incremental placement decisions: add, remove, rebalance, and bursts coalesced into one.

Pure functions for the agent. The caller holds the current workloads and the CPUs each
exclusive workload holds (``previous``); a decision returns the placement to enforce, what
it costs, which CPUs move, and whether it was applied.

* ``add`` / ``remove``: place the workload list after the event. Greedy keeps every
  placed exclusive workload where it is (kubelet's behaviour); optimal moves placed
  workloads only when that lowers the first two priorities of the cost model (needless
  NUMA/socket crossings, then shared cores): when the optimum in priority order moves
  some and a placement keeping them (greedy keeping) is as good on those two, the latter
  is taken, so sibling cores, L3 balance and fragmentation alone never move a running
  workload outside a rebalance.
* ``rebalance``: propose a fresh placement (optimal: with the churn term; greedy:
  kubelet order from scratch) and apply it only if it refuses fewer workloads, or has
  fewer needless crossings, shared cores or sibling cores (the whole-number priorities of
  `corral.placement.cost`, compared in that order), or, equal on those, lowers the
  weighted cost by more than ``rebalance_threshold`` (hysteresis, so the host does not
  flap between near-equal placements).

With the optimal allocator every decision is exact in priority order on the hosts the
decomposition covers, so spread, shared and sibling cores after an event equal those of
placing the same workloads from scratch: a run of events cannot drift above the
from-scratch optimum (``corral bench placement`` counts such events in its churn part).
* Bursts: `coalesce` folds a run of events (hundreds of containers starting at once) into
  one `Batch`; `BurstWindow.ready` says when to stop collecting; `decide_batch` makes the
  single decision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.errors import InputError, PlacementError
from corral.placement.allocate import Allocator
from corral.placement.assignment import Placement
from corral.placement.cost import CostBreakdown, CostWeights, explain_placement
from corral.placement.greedy import place_greedy
from corral.placement.kubelet import Strategy
from corral.placement.optimal import (
    DEFAULT_BUDGET_MS,
    DEFAULT_GAP,
    OptimalResult,
    Solver,
    place_greedy_keeping,
    place_optimal,
    solve_highs,
)
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


class EventKind(StrEnum):
    """What triggered a decision (titus-isolate's events)."""

    ADD = "add"
    REMOVE = "remove"
    REBALANCE = "rebalance"


@dataclass(frozen=True, slots=True)
class DecisionSettings:
    """How decisions are made."""

    allocator: Allocator = Allocator.OPTIMAL
    budget_ms: float = DEFAULT_BUDGET_MS
    """Time budget of one decision in milliseconds (optimal only)."""
    gap: float = DEFAULT_GAP
    """Relative MIP gap at which the solver may stop (optimal only)."""
    weights: CostWeights = field(default_factory=CostWeights)
    rebalance_threshold: float = 0.02
    """Cost units a rebalance must save to be applied: about one busy shared core among 50
    exclusive workloads with the default weights, so noise in predictions alone does not
    move workloads."""
    strategy: Strategy = Strategy.PACKED
    full_cores: bool = False

    def __post_init__(self) -> None:
        if self.budget_ms <= 0:
            raise InputError("budget_ms", f"must be > 0, got {self.budget_ms}")
        if not 0 <= self.gap < 1:
            raise InputError("gap", f"must be in [0, 1), got {self.gap}")
        if self.rebalance_threshold < 0:
            raise InputError("rebalance_threshold", f"must be >= 0, got {self.rebalance_threshold}")


@dataclass(frozen=True)
class Decision:
    """The outcome of one decision.

    ``placement`` is what to enforce: the proposal when ``applied``, otherwise the current
    placement (for a rebalance that did not pay). ``moved`` maps each exclusive workload
    that held CPUs before to the number of those CPUs it loses; ``requested_cpus`` counts
    the CPUs asked for by exclusive workloads new in this decision.
    """

    kind: EventKind
    placement: Placement
    applied: bool
    cost: CostBreakdown
    current_cost: CostBreakdown | None
    proposed_cost: CostBreakdown
    moved: Mapping[str, int]
    requested_cpus: int
    solve_ms: float
    reason: str
    optimal: bool = False
    gap: float | None = None
    bound: float | None = None
    fell_back: bool = False
    fallback_reason: str = ""

    @property
    def moved_cpus(self) -> int:
        """CPUs of already-placed exclusive workloads that move."""
        return sum(self.moved.values())

    def cpusets(self) -> dict[str, CpuSet]:
        """Workload id -> CPUs to enforce."""
        return self.placement.as_cpusets()

    def to_json(self) -> dict[str, Any]:
        """A summary for logs and the API."""
        return {
            "kind": str(self.kind),
            "applied": self.applied,
            "reason": self.reason,
            "cost": self.cost.weighted(),
            "cost_total": round(self.cost.total, 6),
            "proposed_cost_total": round(self.proposed_cost.total, 6),
            "current_cost_total": None
            if self.current_cost is None
            else round(self.current_cost.total, 6),
            "moved_cpus": self.moved_cpus,
            "moved": dict(self.moved),
            "requested_cpus": self.requested_cpus,
            "solve_ms": round(self.solve_ms, 3),
            "optimal": self.optimal,
            "gap": self.gap,
            "fell_back": self.fell_back,
            "fallback_reason": self.fallback_reason,
        }


def moved_cpus(
    workloads: Sequence[Workload], previous: Mapping[str, CpuSet], placement: Placement
) -> dict[str, int]:
    """For every exclusive workload placed before and now: CPUs it held and no longer
    does (only non-zero entries)."""
    moved: dict[str, int] = {}
    for w in workloads:
        before = previous.get(w.id)
        if w.policy is not Policy.EXCLUSIVE or before is None or w.id not in placement.assignments:
            continue
        lost = len(before - placement.cpuset_of(w.id))
        if lost:
            moved[w.id] = lost
    return moved


def decide(
    topology: Topology,
    workloads: Sequence[Workload],
    previous: Mapping[str, CpuSet],
    *,
    kind: EventKind,
    settings: DecisionSettings | None = None,
    online: CpuSet | None = None,
    solver: Solver = solve_highs,
    clock: Callable[[], float] = time.perf_counter,
) -> Decision:
    """Decide the placement of ``workloads`` (the whole list after the event) given the
    CPUs exclusive workloads hold now (``previous``; entries for workloads no longer in
    the list are ignored). See the module doc for what each kind does.
    """
    settings = settings or DecisionSettings()
    started = clock()
    ids = {w.id for w in workloads}
    previous = {wid: cpus for wid, cpus in previous.items() if wid in ids}
    by_id = {w.id: w for w in workloads}
    requested = sum(
        w.whole_cpus for w in workloads if w.policy is Policy.EXCLUSIVE and w.id not in previous
    )

    def cost_of(p: Placement) -> CostBreakdown:
        host = topology if online is None else topology.restricted_to(online & topology.all_cpus)
        return explain_placement(
            host,
            by_id,
            p,
            weights=settings.weights,
            previous=previous,
            full_cores=settings.full_cores,
        )

    result: OptimalResult | None = None
    kept_note = ""
    if settings.allocator is Allocator.OPTIMAL:
        result = place_optimal(
            topology,
            workloads,
            online=online,
            weights=settings.weights,
            budget_ms=settings.budget_ms,
            gap=settings.gap,
            previous=previous,
            strategy=settings.strategy,
            full_cores=settings.full_cores,
            solver=solver,
            clock=clock,
        )
        proposal, proposed_cost = result.placement, result.cost
        if kind is not EventKind.REBALANCE and moved_cpus(workloads, previous, proposal):
            kept = _kept_unless_worse(
                topology,
                workloads,
                previous,
                proposal=proposal,
                proposed=proposed_cost,
                settings=settings,
                online=online,
            )
            if kept is not None:
                proposal, proposed_cost = kept[0], cost_of(kept[0])
                kept_note = kept[1]
    elif kind is EventKind.REBALANCE:
        proposal = place_greedy(
            topology,
            workloads,
            online=online,
            strategy=settings.strategy,
            full_cores=settings.full_cores,
        )
        proposed_cost = cost_of(proposal)
    else:
        proposal = place_greedy_keeping(
            topology,
            workloads,
            previous,
            online=online,
            strategy=settings.strategy,
            full_cores=settings.full_cores,
        )
        proposed_cost = cost_of(proposal)

    current: Placement | None = None
    current_cost: CostBreakdown | None = None
    applied = True
    reason = f"{kind}: placed by {settings.allocator}" + kept_note
    if kind is EventKind.REBALANCE:
        current = place_greedy_keeping(
            topology,
            workloads,
            previous,
            online=online,
            strategy=settings.strategy,
            full_cores=settings.full_cores,
        )
        current_cost = cost_of(current)
        saving = current_cost.total - proposed_cost.total
        ranked = PRIORITY_LEVELS
        if len(proposal.refusals) < len(current.refusals):
            reason = "rebalance: applied, the proposal places more workloads"
        elif len(proposal.refusals) == len(current.refusals) and (
            proposed_cost.priorities[:ranked] < current_cost.priorities[:ranked]
        ):
            reason = (
                "rebalance: applied, fewer workloads across nodes, shared cores or sibling "
                f"cores {_levels(proposed_cost)} < {_levels(current_cost)}"
            )
        elif len(proposal.refusals) == len(current.refusals) and (
            proposed_cost.priorities[:ranked] == current_cost.priorities[:ranked]
            and saving > settings.rebalance_threshold
        ):
            reason = (
                f"rebalance: applied, saves {saving:.4f} > threshold "
                f"{settings.rebalance_threshold:g}"
            )
        else:
            applied = False
            reason = (
                f"rebalance: kept the current placement, the proposal saves {saving:.4f} "
                f"(threshold {settings.rebalance_threshold:g})"
            )
    chosen = proposal if applied else current
    chosen_cost = proposed_cost if applied else current_cost
    if chosen is None or chosen_cost is None:
        raise PlacementError(f"{kind} decision: no placement to choose ({reason})")
    return Decision(
        kind=kind,
        placement=chosen,
        applied=applied,
        cost=chosen_cost,
        current_cost=current_cost,
        proposed_cost=proposed_cost,
        moved=moved_cpus(workloads, previous, chosen),
        requested_cpus=requested,
        solve_ms=(clock() - started) * 1000,
        reason=reason,
        optimal=result.optimal and not kept_note if result is not None else False,
        gap=result.gap if result is not None else None,
        bound=result.bound if result is not None else None,
        fell_back=result.fell_back if result is not None else False,
        fallback_reason=result.fallback_reason if result is not None else "",
    )


PRIORITY_LEVELS = 3
"""The whole-number priorities (spread, shared cores, sibling cores) a rebalance applies
for whatever the weighted saving; below them the threshold keeps the host from flapping."""


def _levels(cost: CostBreakdown) -> str:
    return "/".join(f"{v:g}" for v in cost.priorities[:PRIORITY_LEVELS])


def _kept_unless_worse(
    topology: Topology,
    workloads: Sequence[Workload],
    previous: Mapping[str, CpuSet],
    *,
    proposal: Placement,
    proposed: CostBreakdown,
    settings: DecisionSettings,
    online: CpuSet | None,
) -> tuple[Placement, str] | None:
    """On an add or remove, the placement that keeps placed workloads where they are
    (greedy keeping, kubelet's incremental behaviour) when the optimum moves some of them
    without fewer needless crossings or shared cores (`STABLE_LEVELS`); None otherwise.
    Sibling cores, L3 balance and fragmentation alone wait for a rebalance."""
    kept = place_greedy_keeping(
        topology,
        workloads,
        previous,
        online=online,
        strategy=settings.strategy,
        full_cores=settings.full_cores,
    )
    host = topology if online is None else topology.restricted_to(online & topology.all_cpus)
    by_id = {w.id: w for w in workloads}
    kept_cost = explain_placement(
        host,
        by_id,
        kept,
        weights=settings.weights,
        previous=previous,
        full_cores=settings.full_cores,
    )
    if len(kept.refusals) > len(proposal.refusals):
        return None
    if kept_cost.priorities[:STABLE_LEVELS] > proposed.priorities[:STABLE_LEVELS]:
        return None
    return kept, (
        ", placed workloads kept: moving them would not lower needless crossings or "
        "shared cores (sibling cores and L3 balance wait for a rebalance)"
    )


STABLE_LEVELS = 2
"""Priorities (spread, shared cores) for which an add or remove moves placed workloads."""


# --- bursts ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Event:
    """One add, remove or rebalance request; ``workload`` is required for ``add``."""

    kind: EventKind
    workload_id: str = ""
    workload: Workload | None = None
    at: float = 0.0
    """When it arrived (seconds on the caller's clock)."""

    def __post_init__(self) -> None:
        if self.kind is EventKind.ADD and self.workload is None:
            raise InputError("event.workload", "an add event needs the workload")
        if self.kind is EventKind.REMOVE and not self.workload_id:
            raise InputError("event.workload_id", "a remove event needs the workload id")
        if self.workload is not None and self.workload_id not in ("", self.workload.id):
            raise InputError(
                "event.workload_id",
                f"{self.workload_id!r} differs from the workload's id {self.workload.id!r}",
            )

    @property
    def id(self) -> str:
        """The workload the event concerns ("" for a rebalance)."""
        return self.workload.id if self.workload is not None else self.workload_id


@dataclass(frozen=True, slots=True)
class Batch:
    """Events folded into their net effect: workloads to add (or replace), ids to remove,
    and whether a rebalance was asked for."""

    adds: tuple[Workload, ...] = ()
    removes: tuple[str, ...] = ()
    rebalance: bool = False
    events: int = 0

    @property
    def kind(self) -> EventKind:
        """The decision this batch needs: add if anything arrives, else remove, else
        rebalance."""
        if self.adds:
            return EventKind.ADD
        if self.removes:
            return EventKind.REMOVE
        return EventKind.REBALANCE

    def apply(self, current: Sequence[Workload]) -> list[Workload]:
        """The workload list after the batch (order: current ones kept, then new ones)."""
        gone = set(self.removes) | {w.id for w in self.adds}
        return [w for w in current if w.id not in gone] + list(self.adds)


def coalesce(events: Sequence[Event]) -> Batch:
    """Fold events in arrival order: for each workload the last event wins (an add then a
    remove cancel out; a remove then an add is a replacement); rebalances merge into one."""
    last: dict[str, Event] = {}
    rebalance = False
    for event in sorted(events, key=lambda e: e.at):
        if event.kind is EventKind.REBALANCE:
            rebalance = True
        else:
            last.pop(event.id, None)
            last[event.id] = event
    adds = tuple(e.workload for e in last.values() if e.workload is not None)
    removes = tuple(e.id for e in last.values() if e.kind is EventKind.REMOVE)
    return Batch(adds=adds, removes=removes, rebalance=rebalance, events=len(events))


@dataclass(frozen=True, slots=True)
class BurstWindow:
    """When a run of events is complete enough to decide on."""

    quiet_s: float = 0.05
    """Decide once no event arrived for this long: container starts in a burst come
    milliseconds apart, so 50 ms of quiet ends one."""
    max_wait_s: float = 0.5
    """Never hold the first event longer than this, however busy the burst."""
    max_events: int = 1000
    """Decide at once when this many events are pending."""

    def ready(self, events: Sequence[Event], now: float) -> bool:
        """True when ``events`` (pending, non-empty) should be decided on at ``now``."""
        if not events:
            return False
        first = min(e.at for e in events)
        last = max(e.at for e in events)
        return (
            len(events) >= self.max_events
            or now - last >= self.quiet_s
            or now - first >= self.max_wait_s
        )


def decide_batch(
    topology: Topology,
    current: Sequence[Workload],
    previous: Mapping[str, CpuSet],
    events: Sequence[Event],
    *,
    settings: DecisionSettings | None = None,
    online: CpuSet | None = None,
    solver: Solver = solve_highs,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[Decision, list[Workload]]:
    """One decision for a whole burst: returns it and the workload list after the burst.
    A workload added again with a different spec loses its previous CPUs (it is new)."""
    batch = coalesce(events)
    workloads = batch.apply(current)
    running = {w.id: w for w in current}
    replaced = {w.id for w in batch.adds if w.id in running and running[w.id] != w}
    kept_previous = {wid: cpus for wid, cpus in previous.items() if wid not in replaced}
    decision = decide(
        topology,
        workloads,
        kept_previous,
        kind=batch.kind,
        settings=settings,
        online=online,
        solver=solver,
        clock=clock,
    )
    return decision, workloads
