"""One placement decision of the agent, made by `corral.placement.decisions.decide`.

The agent holds assignments; the placement layer wants the CPUs each exclusive workload
holds now (``previous``), so placed workloads stay where they are on add, update and remove
(greedy: never moved, as kubelet; optimal: only when the cost model says the move pays for
its churn) and a rebalance is applied only when it places more workloads or saves more
than the hysteresis threshold.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.agent.predictions import with_predictions
from corral.errors import CorralError
from corral.placement.allocate import Allocator
from corral.placement.assignment import Assignment, Placement
from corral.placement.decisions import DecisionSettings, EventKind
from corral.placement.decisions import decide as decide_placement
from corral.placement.workload import Policy, Workload
from corral.topology.model import Topology


@dataclass(frozen=True)
class Decision:
    """A placement and how it was reached (``adopted``: a rebalance was applied)."""

    placement: Placement
    allocator: str
    duration_s: float
    moves: int
    fallback: bool = False
    adopted: bool = True
    detail: Mapping[str, Any] = field(default_factory=dict)


def held_cpus(workloads: Sequence[Workload], previous: Mapping[str, Assignment]) -> dict[str, Any]:
    """The CPUs each exclusive workload of ``workloads`` holds in ``previous``."""
    exclusive = {w.id for w in workloads if w.policy is Policy.EXCLUSIVE}
    return {wid: a.cpuset for wid, a in previous.items() if wid in exclusive}


def decide(
    topology: Topology,
    workloads: Sequence[Workload],
    previous: Mapping[str, Assignment],
    *,
    allocator: Allocator | str,
    budget_ms: float,
    rebalance: bool,
    predicted: Mapping[str, float] | None = None,
) -> Decision:
    """Place ``workloads`` (the whole list). ``previous`` must hold only workloads whose
    spec did not change since it was computed. ``predicted`` (cores by id, from
    `corral.agent.predictions`) fills in ``predicted_cpus`` where a spec leaves it unset,
    for the cost model only. A solver error falls back to greedy and says so
    (``fallback``)."""
    started = time.perf_counter()
    if predicted:
        workloads = with_predictions(workloads, predicted)
    allocator = Allocator(allocator)
    settings = DecisionSettings(allocator=allocator, budget_ms=budget_ms)
    kind = EventKind.REBALANCE if rebalance else EventKind.ADD
    held = held_cpus(workloads, previous)
    fallback_reason = ""
    try:
        made = decide_placement(topology, workloads, held, kind=kind, settings=settings)
    except CorralError as err:
        fallback_reason = f"{allocator.value} failed: {err}"
        greedy = DecisionSettings(allocator=Allocator.GREEDY, budget_ms=budget_ms)
        made = decide_placement(topology, workloads, held, kind=kind, settings=greedy)
    fallback = made.fell_back or bool(fallback_reason)
    detail: dict[str, Any] = {
        "reason": made.reason,
        "applied": made.applied,
        "cost_total": round(made.cost.total, 6),
        "optimal": made.optimal,
        "gap": made.gap,
        "solve_ms": round(made.solve_ms, 3),
        "moved_cpus": made.moved_cpus,
        "budget_ms": budget_ms,
        "fallback_reason": fallback_reason or made.fallback_reason,
    }
    return Decision(
        made.placement,
        Allocator.GREEDY.value if fallback_reason else allocator.value,
        time.perf_counter() - started,
        sum(1 for lost in made.moved.values() if lost),
        fallback=fallback,
        adopted=made.applied,
        detail=detail,
    )
