"""The optimal allocator: exclusive CPUs in the cost model's priority order, never worse
than greedy.

Two methods. Placements are compared on `CostBreakdown.priorities` (spread, shared cores,
sibling cores, hot L3 threads, moved CPUs, fragmentation, weighted total:
lexicographically; see `corral.placement.cost`).

* The exact decomposition (`corral.placement.lexicographic`) on hosts it covers (one or
  two NUMA nodes each in one socket, one or two threads per core with every core wholly
  available or wholly taken, not ``full_cores``; with several L3 domains per node the
  MIP runs first and the decomposition after it when the budget allows, the better kept):
  workloads to NUMA nodes by a dynamic programme, then cores within each node. It proves
  its vector against a bound in milliseconds (512 threads and 200 workloads in about
  20 ms), so the budget is not needed; greedy is not even computed when the bound is met
  (``OptimalResult.greedy_cost`` computes it on demand). When previous CPUs make the
  churn entry miss its bound (the in-node extraction keeps previous CPUs greedily), the
  result is compared with greedy and the better kept. Spread, shared and sibling cores
  never depend on the previous placement, so a sequence of decisions cannot drift above
  the from-scratch optimum there, whatever the history.
* The MIP below everywhere else (and with ``method=Method.MIP``): it minimises the
  weighted total, then its answer is kept only when its vector beats greedy's.

The MIP:

Formulation (symmetry-aware). Cores that are interchangeable under the cost model (same
L3 domain, NUMA node and socket, same number of online and available threads, the same
previous owners) form a group; the MIP decides, per exclusive workload, group and thread
count k, *how many* cores of the group the workload takes k threads of, never which core
or which thread. On two-thread cores a pairing count says how many cores two different
workloads split. On cores with three or more threads each core serves at most one
exclusive workload. Every term of `corral.placement.cost` is linear in these counts, so the
MIP objective equals `explain()` of the extracted placement and the solver's dual bound
is a bound on that cost (checked against brute force in the tests).

Two reductions keep big hosts within a budget of tens of ms, both exact on small hosts:
with several L3 domains per NUMA node on more than 32 cores (AMD CCXs), groups are per
NUMA node and the extraction spreads counts over L3 domains, then swaps cores of one group
between the node's L3 domains while that lowers the hot-L3 excess (the bound leaves L3
hot spots out, so it is proven only when the extraction removes them, which it usually
does); and when workloads x groups exceeds 2000, a workload may take only free cores and
its own previous ones (no swaps between placed workloads).

Tight relaxation. Two valid cuts make the LP relaxation's bound equal the optimum on most
instances (measured on the benchmark mixes): the largest free NUMA block is at most the
free CPUs left in total (without it the big-M choice of the free node lets the LP claim
an empty node for free), and on hosts where every group pairs threads, an odd number of
odd requests leaves a single thread unpaired (the LP pairs half threads instead). So
`solve_highs` solves the LP first and stops there when its solution is integral or it
bounds the warm start within the gap; only then does branch and bound run.

Solver: HiGHS through highspy, warm-started with the greedy placement so that a budget-
limited solve starts from what greedy knows. scipy.optimize.milp drives the same HiGHS
but takes no starting solution; `solve_scipy` is kept for the benchmark's comparison
(same costs, similar times on 64 threads; fewer proofs within the budget). The better of
the MIP's and greedy's placements under the cost model is returned; solver errors and
empty results fall back to greedy, with the reason.
"""

from __future__ import annotations

import heapq
import logging
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Generic, Protocol, TypeVar, cast

import highspy
import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from corral.errors import CorralError
from corral.placement.assignment import Assignment, Placement
from corral.placement.cost import (
    PRIORITIES,
    CostBreakdown,
    CostWeights,
    busyness,
    explain_placement,
    l3_homes,
    pool_busyness_of,
    units_needed,
)
from corral.placement.greedy import place_greedy
from corral.placement.highs import quiet_highs
from corral.placement.kubelet import Strategy
from corral.placement.lexicographic import LexPlan, place_lexicographic, unsupported
from corral.placement.pools import check_immovable, exclusive_order, immovable_cpus, place_pooled
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

_log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_BUDGET_MS = 50.0
"""Whole-decision budget: short enough to run on every add, remove and rebalance."""
DEFAULT_GAP = 0.001
"""Relative MIP gap at which the solver stops: 0.1% of the cost."""
_AGGREGATE_ABOVE = 32  # cores beyond which L3 domains are aggregated per NUMA node
_RESTRICT_ABOVE = 2000  # workloads x core groups beyond which swaps are left out


class Method(StrEnum):
    """How `place_optimal` searches: ``auto`` uses the exact decomposition where it covers
    the host (`corral.placement.lexicographic.unsupported`) and the MIP elsewhere; ``mip``
    always uses the MIP (the weighted model, compared with greedy in priority order)."""

    AUTO = "auto"
    MIP = "mip"


class SolverError(CorralError):
    """The MIP solver failed (raised by solvers, turned into a greedy fallback)."""


@dataclass(frozen=True, slots=True)
class MipModel:
    """A MIP in HiGHS's column-wise form: minimise ``cost @ x + offset``."""

    cost: NDArray[np.float64]
    offset: float
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    integer: NDArray[np.bool_]
    matrix: sparse.csc_matrix
    row_lower: NDArray[np.float64]
    row_upper: NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class MipSolution:
    """What a solver found: best values (None if none), objective, dual bound, status."""

    values: NDArray[np.float64] | None
    objective: float | None
    bound: float | None
    status: str
    proven: bool
    from_start: bool = False
    """``values`` is the warm start, returned unchanged."""


class Solver(Protocol):
    """Solves a `MipModel` within a time limit and relative gap; raises `SolverError`."""

    def __call__(
        self,
        model: MipModel,
        *,
        time_limit_s: float,
        gap: float,
        warm_start: NDArray[np.float64] | None,
    ) -> MipSolution: ...


def solve_highs(
    model: MipModel,
    *,
    time_limit_s: float,
    gap: float,
    warm_start: NDArray[np.float64] | None = None,
) -> MipSolution:
    """Solve with HiGHS (highspy), starting from ``warm_start`` when given.

    The LP relaxation is solved first (a few ms): when its solution is integral it is the
    optimum, and when it bounds ``warm_start`` within ``gap`` the start is proven good
    enough; either way the branch and bound, whose set-up alone costs several times the
    LP, is skipped. Otherwise the MIP runs in the time left, its bound no weaker than the
    LP's.
    """
    started = time.perf_counter()
    try:
        h = quiet_highs()
        h.setOptionValue("time_limit", max(time_limit_s, 1e-3))
        h.setOptionValue("mip_rel_gap", gap)
        h.setOptionValue("random_seed", 0)
        # The LP relaxation is small: presolve would double its time (measured on 256
        # threads). Branch and bound below gets presolve back: it needs it on the many
        # small groups that previous placements make.
        h.setOptionValue("presolve", "off")
        lp = highspy.HighsLp()
        n_cols = len(model.cost)
        lp.num_col_ = n_cols
        lp.num_row_ = len(model.row_lower)
        lp.col_cost_ = model.cost
        lp.col_lower_ = model.lower
        lp.col_upper_ = model.upper
        lp.row_lower_ = model.row_lower
        lp.row_upper_ = model.row_upper
        lp.offset_ = model.offset
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = model.matrix.indptr
        lp.a_matrix_.index_ = model.matrix.indices
        lp.a_matrix_.value_ = model.matrix.data
        if h.passModel(lp) != highspy.HighsStatus.kOk:
            raise SolverError("HiGHS refused the model")
        h.run()
        lp_status = h.getModelStatus()
        if lp_status == highspy.HighsModelStatus.kInfeasible:
            return MipSolution(None, None, None, h.modelStatusToString(lp_status), False)
        lp_bound: float | None = None
        if lp_status == highspy.HighsModelStatus.kOptimal:
            lp_bound = float(h.getInfo().objective_function_value)
            x = np.array(h.getSolution().col_value, dtype=np.float64)
            if _integral(model, x):
                x[model.integer] = np.round(x[model.integer])
                objective = float(model.cost @ x) + model.offset
                return MipSolution(x, objective, lp_bound, "Optimal (LP relaxation)", True)
            if warm_start is not None and _feasible(model, warm_start):
                objective = float(model.cost @ warm_start) + model.offset
                if objective - lp_bound <= gap * max(abs(objective), 1e-9) + 1e-9:
                    return MipSolution(
                        warm_start,
                        objective,
                        lp_bound,
                        "Optimal (start within LP bound)",
                        True,
                        from_start=True,
                    )
        left = time_limit_s - (time.perf_counter() - started)
        h.setOptionValue("time_limit", max(left, 1e-3))
        h.setOptionValue("presolve", "choose")
        integer = np.flatnonzero(model.integer).astype(np.int32)
        h.changeColsIntegrality(
            len(integer),
            integer,
            np.full(len(integer), highspy.HighsVarType.kInteger.value, dtype=np.uint8),
        )
        if warm_start is not None:
            start = highspy.HighsSolution()
            start.col_value = list(warm_start)
            start.value_valid = True
            h.setSolution(start)
        h.run()
        status = h.getModelStatus()
        info = h.getInfo()
        found = info.primal_solution_status == 2  # kSolutionStatusFeasible
        values = np.array(h.getSolution().col_value, dtype=np.float64) if found else None
        bound = float(info.mip_dual_bound)
        bound = max(bound, lp_bound) if lp_bound is not None else bound
        return MipSolution(
            values=values,
            objective=float(info.objective_function_value) if found else None,
            bound=bound if math.isfinite(bound) else None,
            status=h.modelStatusToString(status),
            proven=status == highspy.HighsModelStatus.kOptimal,
        )
    except (RuntimeError, ValueError, TypeError) as err:
        raise SolverError(f"HiGHS failed: {err}") from err


def _integral(model: MipModel, x: NDArray[np.float64], tol: float = 1e-6) -> bool:
    """Whether the integer columns of ``x`` are integers (within ``tol``)."""
    values = x[model.integer]
    return bool(np.all(np.abs(values - np.round(values)) <= tol))


def _feasible(model: MipModel, x: NDArray[np.float64], tol: float = 1e-6) -> bool:
    """Whether ``x`` satisfies the bounds, rows and integrality of ``model``."""
    if len(x) != len(model.cost):
        return False
    if np.any(x < model.lower - tol) or np.any(x > model.upper + tol):
        return False
    activity = model.matrix @ x
    if np.any(activity < model.row_lower - tol) or np.any(activity > model.row_upper + tol):
        return False
    return _integral(model, x, tol)


def solve_scipy(
    model: MipModel,
    *,
    time_limit_s: float,
    gap: float,
    warm_start: NDArray[np.float64] | None = None,
) -> MipSolution:
    """Solve with scipy.optimize.milp (HiGHS underneath; ignores ``warm_start``)."""
    from scipy.optimize import Bounds, LinearConstraint, milp  # noqa: PLC0415 - optional path

    try:
        result = milp(
            c=model.cost,
            integrality=model.integer.astype(np.int64),
            bounds=Bounds(model.lower, model.upper),
            constraints=LinearConstraint(model.matrix, model.row_lower, model.row_upper),
            options={"time_limit": max(time_limit_s, 1e-3), "mip_rel_gap": gap},
        )
    except (RuntimeError, ValueError, TypeError) as err:
        raise SolverError(f"scipy milp failed: {err}") from err
    found = result.x is not None
    bound = getattr(result, "mip_dual_bound", None)
    return MipSolution(
        values=np.asarray(result.x, dtype=np.float64) if found else None,
        objective=float(result.fun) + model.offset if found else None,
        bound=float(bound) + model.offset if bound is not None and math.isfinite(bound) else None,
        status=str(result.message),
        proven=result.status == 0,
    )


class Lazy(Generic[T]):
    """A value computed on first `get` (once), or given up front."""

    def __init__(self, compute: Callable[[], T]) -> None:
        self._compute = compute
        self._value: T | None = None
        self._done = False

    @classmethod
    def of(cls, value: T) -> Lazy[T]:
        """An already computed value."""
        lazy = cls(lambda: value)
        lazy._value, lazy._done = value, True
        return lazy

    @property
    def done(self) -> bool:
        """Whether the value is computed."""
        return self._done

    def get(self) -> T:
        """The value (computed now if it was not yet)."""
        if not self._done:
            self._value, self._done = self._compute(), True
        return cast(T, self._value)


@dataclass(frozen=True)
class OptimalResult:
    """The placement chosen, its cost, and how it was found.

    ``bound`` is a lower bound on the cost of any placement of the same exclusive workloads
    (None when the solver gave none; on hosts with several L3 domains per NUMA node it
    leaves L3 hot spots out; None from the decomposition, see ``priority_bound``);
    ``optimal`` says ``cost`` is proven within the requested gap of that bound (for the
    decomposition: its priority vector meets ``priority_bound``); ``fell_back`` says the
    MIP gave nothing usable and ``fallback_reason`` why. ``source`` is ``decomposition``,
    ``mip`` or ``greedy`` (the one kept).
    """

    placement: Placement
    cost: CostBreakdown
    greedy: Lazy[CostBreakdown]
    """Greedy's cost, computed on first use: a placement proven optimal in priority
    order needs no comparison with greedy, so the decision does not pay for it."""
    source: str
    optimal: bool
    bound: float | None
    gap: float | None
    fell_back: bool
    fallback_reason: str
    solver_status: str
    solve_ms: float
    mip_ms: float = 0.0
    stats: Mapping[str, int] = field(default_factory=dict)
    method: str = "mip"
    """``decomposition`` (exact, `corral.placement.lexicographic`) or ``mip``."""
    priority_bound: tuple[float, ...] | None = None
    """A lower bound on the first six entries of `CostBreakdown.priorities` over all
    placements (decomposition only); ``optimal`` then means the vector meets it."""
    shared_cores_bound: int | None = None
    """The fewest shared cores any placement without needless crossings has (what odd
    requests force), when the decomposition computed it."""

    @property
    def greedy_cost(self) -> CostBreakdown:
        """The cost of greedy's placement of the same workloads."""
        return self.greedy.get()

    def to_json(self) -> dict[str, object]:
        """The fields `corral place --json` adds to the placement."""
        return {
            "cost": self.cost.weighted(),
            "cost_total": round(self.cost.total, 6),
            "priorities": dict(zip(PRIORITIES, self.cost.priorities, strict=True)),
            "priority_bound": None
            if self.priority_bound is None
            else dict(zip(PRIORITIES, self.priority_bound, strict=False)),
            "shared_cores_bound": self.shared_cores_bound,
            "method": self.method,
            "greedy_cost_total": round(self.greedy_cost.total, 6),
            "optimal": self.optimal,
            "gap": None if self.gap is None else round(self.gap, 6),
            "bound": None if self.bound is None else round(self.bound, 6),
            "source": self.source,
            "fell_back": self.fell_back,
            "fallback_reason": self.fallback_reason,
            "solver_status": self.solver_status,
            "solve_ms": round(self.solve_ms, 3),
        }


def place_greedy_keeping(
    topology: Topology,
    workloads: Sequence[Workload],
    previous: Mapping[str, CpuSet],
    *,
    online: CpuSet | None = None,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
) -> Placement:
    """kubelet's incremental behaviour: exclusive workloads keep their previous CPUs when
    those still fit (same count, online, not fixed by immovable workloads, not taken);
    the others take CPUs in kubelet order from what is left. No previous: `place_greedy`.
    """
    return place_greedy(
        topology,
        workloads,
        online=online,
        strategy=strategy,
        full_cores=full_cores,
        previous=previous,
    )


def place_optimal(
    topology: Topology,
    workloads: Sequence[Workload],
    *,
    online: CpuSet | None = None,
    weights: CostWeights | None = None,
    budget_ms: float = DEFAULT_BUDGET_MS,
    gap: float = DEFAULT_GAP,
    previous: Mapping[str, CpuSet] | None = None,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
    solver: Solver = solve_highs,
    clock: Callable[[], float] = time.perf_counter,
    method: Method = Method.AUTO,
) -> OptimalResult:
    """Place every workload minimising the cost model, within ``budget_ms`` for the whole
    decision (model build, solve, extraction; the solver gets what the build left).

    Promises: the result is never worse than greedy (kubelet order, keeping previous CPUs
    when ``previous`` is given) in the cost model's priority order
    (`CostBreakdown.priorities`), and never refuses more workloads;
    exclusive workloads never share a thread; numa, shared and immovable workloads follow
    the pool rules of `place_pooled`; a workload that cannot be placed is refused with
    the reason. Solver errors and solves that find nothing fall back to greedy.
    """
    return _place_optimal(
        topology,
        workloads,
        online=online,
        weights=weights,
        budget_ms=budget_ms,
        gap=gap,
        previous=previous,
        strategy=strategy,
        full_cores=full_cores,
        solver=solver,
        clock=clock,
        method=method,
        greedy_memo=None,
    )


def _place_optimal(
    topology: Topology,
    workloads: Sequence[Workload],
    *,
    online: CpuSet | None,
    weights: CostWeights | None,
    budget_ms: float,
    gap: float,
    previous: Mapping[str, CpuSet] | None,
    strategy: Strategy,
    full_cores: bool,
    solver: Solver,
    clock: Callable[[], float],
    method: Method,
    greedy_memo: Lazy[tuple[Placement, CostBreakdown]] | None,
) -> OptimalResult:
    """`place_optimal`, sharing greedy's placement when the caller computed it."""
    started = clock()
    weights = weights or CostWeights()
    previous = dict(previous or {})
    online_cpus = topology.all_cpus if online is None else online & topology.all_cpus
    host = topology if online_cpus == topology.all_cpus else topology.restricted_to(online_cpus)
    by_id = {w.id: w for w in workloads}

    def cost_of(p: Placement) -> CostBreakdown:
        return explain_placement(
            host, by_id, p, weights=weights, previous=previous, full_cores=full_cores
        )

    def greedy_pair() -> tuple[Placement, CostBreakdown]:
        placement = place_greedy_keeping(
            topology,
            workloads,
            previous,
            online=online_cpus,
            strategy=strategy,
            full_cores=full_cores,
        )
        return placement, cost_of(placement)

    greedy_memo = greedy_memo or Lazy(greedy_pair)
    request = _Request(topology, host, workloads, online_cpus, previous, strategy, full_cores)
    if method is not Method.MIP and l3_homes(host):
        # L3 domains inside a node or socket: the decomposition's bound cannot prove L3
        # balance, the MIP's extraction balances them. The MIP runs first (as before the
        # decomposition existed); the decomposition then runs if the budget allows, and
        # the better of the two in priority order is kept.
        by_mip = _place_optimal(
            topology,
            workloads,
            online=online,
            weights=weights,
            budget_ms=budget_ms,
            gap=gap,
            previous=previous,
            strategy=strategy,
            full_cores=full_cores,
            solver=solver,
            clock=clock,
            method=Method.MIP,
            greedy_memo=greedy_memo,
        )
        if (clock() - started) * 1000 > 0.6 * budget_ms:
            return by_mip
        decomposed = _place_decomposed(request, greedy_memo, cost_of, started=started, clock=clock)
        if decomposed is None:
            return by_mip
        mine = (len(decomposed.placement.refusals), decomposed.cost.priorities)
        theirs = (len(by_mip.placement.refusals), by_mip.cost.priorities)
        kept = decomposed if mine < theirs else by_mip
        return replace(kept, solve_ms=(clock() - started) * 1000)
    if method is not Method.MIP:
        decomposed = _place_decomposed(request, greedy_memo, cost_of, started=started, clock=clock)
        if decomposed is not None:
            return decomposed
    greedy, greedy_cost = greedy_memo.get()

    def fallback(reason: str, status: str = "", **extra: float) -> OptimalResult:
        if reason:
            _log.warning("optimal.fallback", extra={"reason": reason})
        return OptimalResult(
            placement=greedy,
            cost=greedy_cost,
            greedy=Lazy.of(greedy_cost),
            source="greedy",
            optimal=not reason and not status,
            bound=extra.get("bound"),
            gap=0.0 if not reason and not status else None,
            fell_back=bool(reason),
            fallback_reason=reason,
            solver_status=status or ("not needed" if not reason else "failed"),
            solve_ms=(clock() - started) * 1000,
            mip_ms=extra.get("mip_ms", 0.0),
        )

    immovable, base_refusals = check_immovable(topology, online_cpus, workloads)
    available = online_cpus - immovable_cpus(workloads)
    if full_cores:
        # Whole cores of the physical host, as greedy counts them: a core with an offline
        # or immovable thread is not whole.
        available = topology.whole_cores_within(available)
    chosen = _exclusive_to_place(topology, workloads, available, greedy, full_cores)
    if not chosen:
        return fallback("")
    pool_workloads = [
        w for w in workloads if w.policy is not Policy.EXCLUSIVE and w.id in greedy.assignments
    ]
    pool_size = len(online_cpus) - sum(w.whole_cpus for w in chosen)
    u_pool = pool_busyness_of(sum(w.expected_use for w in pool_workloads), pool_size)
    aggregate = _l3_inside_numa(host)
    formulation = _Formulation(
        host,
        chosen,
        available,
        previous,
        weights,
        u_pool=u_pool,
        full_cores=full_cores,
        aggregate_l3=aggregate,
        reserved=immovable_cpus(workloads) & online_cpus,
    )
    # The solver starts from greedy, or from greedy with the workloads that previous
    # decisions left spread over NUMA nodes placed afresh when that costs less: after a
    # run of adds and removes the LP relaxation prices spreading at nothing, so within a
    # budget of tens of ms the solver rarely finds that move itself.
    start, start_cost = greedy, greedy_cost
    repaired = _repair_spread(
        topology, host, workloads, previous, online_cpus, strategy=strategy, full_cores=full_cores
    )
    if repaired is not None and len(repaired.refusals) <= len(greedy.refusals):
        repaired_cost = cost_of(repaired)
        if repaired_cost.priorities < greedy_cost.priorities:
            start, start_cost = repaired, repaired_cost
    start_exclusive = {
        wid: a.cpuset
        for wid, a in start.assignments.items()
        if by_id[wid].policy is Policy.EXCLUSIVE
    }
    warm = (
        formulation.encode(start_exclusive)
        if set(start_exclusive) == {w.id for w in chosen}
        else None
    )
    budget_s = budget_ms / 1000
    left_s = budget_s - (clock() - started)
    solve_started = clock()
    try:
        share = 0.85  # the rest is for extraction and the comparison with greedy
        # The solver always gets at least half the budget, even when a cold start (caches,
        # the greedy baseline) ate into it: a budget is a target, not a guillotine.
        solution = solver(
            formulation.model,
            time_limit_s=max(left_s * share, budget_s * share / 2, 1e-3),
            gap=gap,
            warm_start=warm,
        )
    except SolverError as err:
        return fallback(f"solver error: {err}")
    if solution.values is None:
        return fallback(
            f"the solver found no placement ({solution.status})",
            solution.status,
            mip_ms=(clock() - solve_started) * 1000,
        )
    if solution.from_start and not formulation.aggregate_l3 and solution.bound is not None:
        # The solver kept the start, which the exact model prices as explain() does:
        # nothing to decode, the start is the answer and the bound proves it.
        kept_bound = max(0.0, solution.bound)
        slack = start_cost.total - kept_bound
        kept_gap = 0.0 if slack <= 1e-7 else slack / max(abs(start_cost.total), 1e-6)
        return OptimalResult(
            placement=start,
            cost=start_cost,
            greedy=Lazy.of(greedy_cost),
            source="greedy" if start is greedy else "mip",
            optimal=kept_gap <= gap + 1e-9,
            bound=kept_bound,
            gap=kept_gap,
            fell_back=False,
            fallback_reason="",
            solver_status=solution.status,
            solve_ms=(clock() - started) * 1000,
            mip_ms=(clock() - solve_started) * 1000,
            stats=formulation.stats(),
        )
    try:
        cpusets = formulation.decode(solution.values)
    except SolverError as err:
        return fallback(f"unusable solver result: {err}", solution.status)
    mip_ms = (clock() - solve_started) * 1000
    exclusive = {
        wid: Assignment(wid, cpus, "exclusive: optimal MIP") for wid, cpus in cpusets.items()
    }
    refusals = dict(base_refusals)
    for w in exclusive_order(workloads):
        if w.id not in exclusive and w.id in greedy.refusals:
            refusals[w.id] = greedy.refusals[w.id]
    mip_placement = place_pooled(
        topology,
        online_cpus,
        workloads,
        exclusive=exclusive,
        refusals=refusals,
        immovable=immovable,
    )
    mip_cost = cost_of(mip_placement)
    use_mip = (len(mip_placement.refusals), mip_cost.priorities) < (
        len(greedy.refusals),
        greedy_cost.priorities,
    )
    best, best_cost = (mip_placement, mip_cost) if use_mip else (greedy, greedy_cost)
    # Every term is >= 0, so 0 bounds the cost when the solver's bound is weaker.
    bound = None if solution.bound is None else max(0.0, solution.bound)
    if bound is not None and len(best.refusals) == len(mip_placement.refusals):
        gap_value: float | None = max(0.0, best_cost.total - bound) / max(
            abs(best_cost.total), 1e-6
        )
        if best_cost.total - bound <= 1e-7:
            gap_value = 0.0
    else:
        gap_value = None
    optimal = gap_value is not None and gap_value <= gap + 1e-9
    if use_mip:
        note = "proven optimal" if optimal else f"best found ({solution.status})"
        best = replace(
            best,
            assignments={
                wid: replace(a, reason=f"exclusive: optimal MIP, {note}") if wid in cpusets else a
                for wid, a in best.assignments.items()
            },
        )
    return OptimalResult(
        placement=best,
        cost=best_cost,
        greedy=Lazy.of(greedy_cost),
        source="mip" if use_mip else "greedy",
        optimal=optimal,
        bound=bound,
        gap=gap_value,
        fell_back=False,
        fallback_reason="",
        solver_status=solution.status,
        solve_ms=(clock() - started) * 1000,
        mip_ms=mip_ms,
        stats=formulation.stats(),
    )


@dataclass(frozen=True, slots=True)
class _Request:
    """What `place_optimal` was asked (the parts the decomposition needs)."""

    topology: Topology
    host: Topology
    workloads: Sequence[Workload]
    online: CpuSet
    previous: Mapping[str, CpuSet]
    strategy: Strategy
    full_cores: bool


def _place_decomposed(
    request: _Request,
    greedy_memo: Lazy[tuple[Placement, CostBreakdown]],
    cost_of: Callable[[Placement], CostBreakdown],
    *,
    started: float,
    clock: Callable[[], float],
) -> OptimalResult | None:
    """The exact decomposition (`corral.placement.lexicographic`) when it covers the
    host, else None. Greedy is computed only when the result is not proven optimal in
    priority order (or greedy decides which workloads fit): then the better is kept."""
    workloads = request.workloads
    immovable, base_refusals = check_immovable(request.topology, request.online, workloads)
    reserved = immovable_cpus(workloads) & request.online
    available = request.online - immovable_cpus(workloads)
    if unsupported(request.host, available, full_cores=request.full_cores):
        return None
    candidates = exclusive_order(workloads)
    if not candidates:
        return None
    refusals = dict(base_refusals)
    if sum(w.whole_cpus for w in candidates) <= len(available):
        chosen = candidates
    else:
        greedy, _ = greedy_memo.get()
        chosen = [w for w in candidates if w.id in greedy.assignments]
        refusals.update(
            {w.id: greedy.refusals[w.id] for w in candidates if w.id in greedy.refusals}
        )
    pool_used = any(
        w.policy is not Policy.EXCLUSIVE and (w.policy is not Policy.IMMOVABLE or w.id in immovable)
        for w in workloads
    )
    plan: LexPlan | None = None
    demand = sum(
        w.expected_use
        for w in workloads
        if w.policy is not Policy.EXCLUSIVE
        and (w.policy is not Policy.IMMOVABLE or w.id in immovable)
    )
    u_pool = pool_busyness_of(demand, len(request.online) - sum(w.whole_cpus for w in chosen))
    for _ in range(2):
        plan = place_lexicographic(
            request.host,
            chosen,
            available,
            request.previous,
            pool_used=pool_used,
            reserved=reserved,
            u_pool=u_pool,
        )
        if plan is None:
            return None
        exclusive = {
            wid: Assignment(wid, cpus, "exclusive: exact in priority order")
            for wid, cpus in plan.cpusets.items()
        }
        placement = place_pooled(
            request.topology,
            request.online,
            workloads,
            exclusive=exclusive,
            refusals=refusals,
            immovable=immovable,
        )
        placed_pool = any(
            by.policy is not Policy.EXCLUSIVE for by in workloads if by.id in placement.assignments
        )
        if placed_pool == pool_used:
            break
        pool_used = placed_pool
    if plan is None:
        return None
    cost = cost_of(placement)
    reached = all(abs(a - b) <= 1e-9 for a, b in zip(cost.priorities, plan.bound, strict=False))
    # A shared workload refused for want of a pool is refused by any placement of the
    # same exclusive workloads; a numa workload refused here might not be by greedy.
    extra = set(placement.refusals) - set(refusals)
    by_id = {w.id: w for w in workloads}
    proven = reached and all(by_id[wid].policy is Policy.SHARED for wid in extra)
    method_ms = (clock() - started) * 1000
    best, best_cost, source = placement, cost, "decomposition"
    if not proven or greedy_memo.done:
        greedy, greedy_cost = greedy_memo.get()
        if (len(greedy.refusals), greedy_cost.priorities) < (
            len(placement.refusals),
            cost.priorities,
        ):
            best, best_cost, source = greedy, greedy_cost, "greedy"
            # Greedy is a placement too: it is proven when it meets the bound.
            proven = all(
                abs(a - b) <= 1e-9 for a, b in zip(best_cost.priorities, plan.bound, strict=False)
            ) and not (set(best.refusals) - set(refusals))
    note = "proven optimal" if proven else "best found"
    if source == "decomposition":
        best = replace(
            best,
            assignments={
                wid: replace(a, reason=f"exclusive: exact in priority order, {note}")
                if wid in plan.cpusets
                else a
                for wid, a in best.assignments.items()
            },
        )
    return OptimalResult(
        placement=best,
        cost=best_cost,
        greedy=Lazy(lambda: greedy_memo.get()[1]),
        source=source,
        optimal=proven,
        bound=None,
        gap=0.0 if proven else None,
        fell_back=False,
        fallback_reason="",
        solver_status="decomposition: " + ("proven" if proven else "bound not reached"),
        solve_ms=(clock() - started) * 1000,
        mip_ms=method_ms,
        method="decomposition",
        priority_bound=plan.bound,
        shared_cores_bound=plan.shared_bound,
    )


def _repair_spread(
    topology: Topology,
    host: Topology,
    workloads: Sequence[Workload],
    previous: Mapping[str, CpuSet],
    online: CpuSet,
    *,
    strategy: Strategy,
    full_cores: bool,
) -> Placement | None:
    """`place_greedy_keeping` with the exclusive workloads whose previous CPUs span more
    NUMA nodes than their request needs placed afresh (None when there are none)."""
    if not previous or len(host.numa_nodes) < 2:
        return None
    sizes = [len(host.cpus_in_numa(n)) for n in host.numa_nodes]
    spread = {
        w.id
        for w in workloads
        if w.policy is Policy.EXCLUSIVE
        and w.id in previous
        and len(host.numa_nodes_of(previous[w.id])) > units_needed(sizes, w.whole_cpus)
    }
    if not spread:
        return None
    kept = {wid: cpus for wid, cpus in previous.items() if wid not in spread}
    return place_greedy_keeping(
        topology, workloads, kept, online=online, strategy=strategy, full_cores=full_cores
    )


def _l3_inside_numa(topology: Topology) -> bool:
    """True when every L3 domain lies in one NUMA node and some node holds several (AMD
    CCXs). Then the MIP decides counts per NUMA node and the extraction spreads them over
    the node's L3 domains, busiest workloads first onto the least busy domain: identical
    L3 domains are otherwise a symmetry the solver drowns in (a 256-thread EPYC with 40
    workloads did not close a 3% gap in a second; aggregated, the model is a quarter the
    size and often solves in tens of ms). The bound then leaves L3 hot spots out, so the
    reported gap is an upper estimate there."""
    numa_of_l3: dict[int, set[int]] = defaultdict(set)
    for cpu in topology.cpus:
        numa_of_l3[cpu.l3].add(cpu.numa)
    if any(len(nodes) > 1 for nodes in numa_of_l3.values()):
        return False
    # Small hosts keep the exact L3-level model: it is small enough to solve.
    return len(numa_of_l3) > len(topology.numa_nodes) and len(topology.cores) > _AGGREGATE_ABOVE


def _exclusive_to_place(
    topology: Topology,
    workloads: Sequence[Workload],
    available: CpuSet,
    greedy: Placement,
    full_cores: bool,
) -> list[Workload]:
    """The exclusive workloads the MIP places: all of them when their requests fit the
    available CPUs (each and together); otherwise the ones greedy could place."""
    candidates = exclusive_order(workloads)
    per_core = topology.threads_per_core
    if full_cores:
        capacity = len(topology.whole_cores_within(available))
        fits_alone = [w for w in candidates if w.whole_cpus % per_core == 0]
    else:
        capacity = len(available)
        fits_alone = list(candidates)
    if len(fits_alone) == len(candidates) and sum(w.whole_cpus for w in candidates) <= capacity:
        return candidates
    return [w for w in candidates if w.id in greedy.assignments]


@dataclass(frozen=True, slots=True)
class _Scales:
    """The cost model's normalisers, fixed by the whole host even for a sub-problem."""

    workloads: int
    pinned: int
    host_cpus: int

    @classmethod
    def of(cls, topology: Topology, chosen: Sequence[Workload], u_pool: float) -> _Scales:
        host = len(topology.cpus)
        pinned = sum(w.whole_cpus for w in chosen)
        return cls(max(1, len(chosen)), max(1, pinned), host)


@dataclass(frozen=True, slots=True)
class _Group:
    cores: tuple[tuple[int, ...], ...]  # available threads of each core, ascending
    l3: int
    numa: int
    socket: int
    threads: int  # online threads per core
    pattern: tuple[str, ...]  # previous owners of the available threads, sorted

    @property
    def avail(self) -> int:
        return len(self.cores[0])


class _Formulation:
    """Builds the MIP, encodes a placement as a starting point and decodes solutions."""

    def __init__(
        self,
        topology: Topology,
        chosen: Sequence[Workload],
        available: CpuSet,
        previous: Mapping[str, CpuSet],
        weights: CostWeights,
        *,
        u_pool: float,
        full_cores: bool,
        aggregate_l3: bool = False,
        scales: _Scales | None = None,
        reserved: CpuSet | None = None,
    ) -> None:
        self.reserved = reserved or CpuSet()  # immovable CPUs: never free for exclusive
        self.topology = topology
        self.aggregate_l3 = aggregate_l3
        self.scales = scales or _Scales.of(topology, chosen, u_pool)
        self.chosen = list(chosen)
        self.previous = previous
        self.full_cores = full_cores
        self.u_pool = u_pool
        self.busy = {w.id: busyness(w) for w in chosen}
        self.want = {w.id: w.whole_cpus for w in chosen}
        ids = {w.id for w in chosen}
        prev_owner = {cpu: wid for wid, cpus in previous.items() if wid in ids for cpu in cpus}
        self.prev_owner = prev_owner
        self._l3_of = {cpu.id: cpu.l3 for cpu in topology.cpus}
        groups: dict[tuple[object, ...], list[tuple[int, ...]]] = defaultdict(list)
        meta: dict[tuple[object, ...], tuple[int, int, int, int, tuple[str, ...]]] = {}
        for core in topology.cores:
            threads = tuple((core.cpus & available).ids())
            if not threads:
                continue
            pattern = tuple(sorted(prev_owner.get(cpu, "") for cpu in threads))
            l3 = -1 if aggregate_l3 else core.l3
            key = (l3, core.numa, core.socket, len(core.cpus), len(threads), pattern)
            groups[key].append(threads)
            meta[key] = (l3, core.numa, core.socket, len(core.cpus), pattern)
        self.groups = [
            _Group(tuple(cores), *meta[key]) for key, cores in sorted(groups.items(), key=str)
        ]
        # Previous owners split cores into many small groups. On a big host that makes
        # the model too large for a budget of tens of ms, so there a workload may take
        # only free cores and its own previous ones (no swaps of CPUs between placed
        # workloads, which the churn term rarely pays for anyway).
        self.restricted = len(self.chosen) * len(self.groups) > _RESTRICT_ABOVE
        self.weights = weights
        self._build(weights)

    # --- model ------------------------------------------------------------------------
    def _col(self, cost: float, lower: float, upper: float, integer: bool) -> int:
        self._cost.append(cost)
        self._lower.append(lower)
        self._upper.append(upper)
        self._integer.append(integer)
        return len(self._cost) - 1

    def _row(self, coefs: Mapping[int, float], lower: float, upper: float) -> None:
        self._row_of.extend([len(self._row_lower)] * len(coefs))
        self._col_of.extend(coefs.keys())
        self._value_of.extend(coefs.values())
        self._row_lower.append(lower)
        self._row_upper.append(upper)

    def _allowed_k(self, group: _Group, want: int) -> list[int]:
        if self.full_cores:
            ks = [group.threads] if group.avail == group.threads else []
        else:
            ks = list(range(1, group.avail + 1))
        return [k for k in ks if k <= want]

    def _pairing(self, group: _Group) -> bool:
        return not self.full_cores and group.threads == 2 and group.avail == 2

    def _build(self, weights: CostWeights) -> None:
        self._cost: list[float] = []
        self._lower: list[float] = []
        self._upper: list[float] = []
        self._integer: list[bool] = []
        self._row_of: list[int] = []  # the matrix in triplets (zeros dropped at the end)
        self._col_of: list[int] = []
        self._value_of: list[float] = []
        self._row_lower: list[float] = []
        self._row_upper: list[float] = []
        topo = self.topology
        inf = highspy.kHighsInf
        n_ex = self.scales.workloads
        pinned = self.scales.pinned
        c_shared = weights.shared_cores / n_ex
        floor = weights.shared_floor
        c_sib = 0.0 if self.full_cores else weights.siblings / n_ex
        c_numa = weights.numa_spread / n_ex
        c_socket = weights.socket_spread / n_ex
        c_churn = weights.churn / pinned
        u_p = self.u_pool
        offset = 0.0

        self.n: dict[tuple[str, int, int], int] = {}
        self.m: dict[int, int] = {}
        self.indicators: dict[int, list[int]] = {}  # y column -> the n columns it covers
        by_w: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        by_g: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
        self.by_g = by_g
        # The bulk of the columns: appended inline (this loop dominates the build).
        costs, lowers, uppers, integers = self._cost, self._lower, self._upper, self._integer
        for gi, g in enumerate(self.groups):
            others = {owner for owner in g.pattern if owner}
            n_cores = len(g.cores)
            ks = self._allowed_k(g, g.threads)
            for w in self.chosen:
                if self.restricted and others and w.id not in others:
                    continue
                u = self.busy[w.id]
                want = self.want[w.id]
                w_cols = by_w[w.id]
                for k in ks:
                    if k > want:
                        break
                    cost = 0.0
                    if k < g.threads:
                        mean = (k * u + (g.threads - k) * u_p) / g.threads
                        cost += c_shared * (floor + (1 - floor) * mean)
                    if k >= 2:
                        cost += c_sib * u
                    col = len(costs)
                    costs.append(cost)
                    lowers.append(0.0)
                    uppers.append(float(min(n_cores, want // k)))
                    integers.append(True)
                    self.n[w.id, gi, k] = col
                    w_cols.append((gi, k, col))
                    by_g[gi].append((w.id, k, col))
            if self._pairing(g):
                # A pair turns two cores shared with the pool into one shared core.
                pair = -c_shared * (floor + (1 - floor) * u_p)
                self.m[gi] = self._col(pair, 0, len(g.cores), True)

        # Demand: each workload gets exactly its request.
        for w in self.chosen:
            coefs = {col: float(k) for _, k, col in by_w[w.id]}
            self._row(coefs, w.whole_cpus, w.whole_cpus)
            if w.whole_cpus % 2:
                # An odd request takes an odd number of threads on some core: a valid cut
                # that closes most of the LP gap (the relaxation takes "half a core").
                odd = {col: 1.0 for _, k, col in by_w[w.id] if k % 2}
                if odd:
                    self._row(odd, 1.0, inf)
        # Capacity and pairing per group.
        for gi, g in enumerate(self.groups):
            capacity = {col: 1.0 for _, _, col in by_g[gi]}
            if gi in self.m:
                m = self.m[gi]
                halves = {col: 1.0 for _, k, col in by_g[gi] if k == 1}
                capacity[m] = -1.0
                self._row({m: 2.0, **{c: -1.0 for c in halves}}, -inf, 0.0)
                if c_sib > c_shared * (1 - floor):
                    # Pairs need two different workloads (m + n1_w <= sum n1). With the
                    # siblings weight at most 0.9 the shared-cores one a workload paired
                    # with itself is never cheaper than the full core it really is, so
                    # these rows are left out and `decode` turns such pairs into cores.
                    for _, k, col in by_g[gi]:
                        if k == 1:
                            row = {c: -1.0 for c in halves}
                            row[col] = 0.0
                            row[m] = 1.0
                            self._row(row, -inf, 0.0)
            self._row(capacity, -inf, float(len(g.cores)))
        # Parity cut. When every group pairs (two-thread cores, both available), each
        # workload takes single threads in a number of the parity of its request, so an
        # odd number of odd requests leaves at least one single thread unpaired; the LP
        # relaxation pairs half threads instead (a fraction of a pair per group).
        odd_requests = sum(w.whole_cpus % 2 for w in self.chosen)
        if self.m and odd_requests % 2 and all(gi in self.m for gi in by_g):
            singles = {col: -1.0 for gi in by_g for _, k, col in by_g[gi] if k == 1}
            self._row({**singles, **{m: 2.0 for m in self.m.values()}}, -inf, -1.0)
        # Spread over NUMA nodes and sockets.
        for unit_attr, units, c_unit in (
            ("numa", topo.numa_nodes, c_numa),
            ("socket", topo.sockets, c_socket),
        ):
            if len(units) < 2 or c_unit == 0:
                continue
            sizes = [
                len(
                    self._whole(
                        topo.cpus_in_numa(u) if unit_attr == "numa" else topo.cpus_in_socket(u)
                    )
                )
                for u in units
            ]
            unit_of_group = [getattr(g, unit_attr) for g in self.groups]
            needs: dict[int, int] = {}
            for w in self.chosen:
                want = self.want[w.id]
                if want not in needs:
                    needs[want] = units_needed(sizes, want)
                need = needs[want]
                offset -= c_unit * need
                ys: dict[int, float] = {}
                per_unit: dict[int, dict[int, float]] = defaultdict(dict)
                for gi, k, col in by_w[w.id]:
                    per_unit[unit_of_group[gi]][col] = float(k)
                for index, unit in enumerate(units):
                    if unit not in per_unit:
                        continue
                    coefs = per_unit[unit]
                    # y >= the unit's share of the request: one row, appended inline.
                    y = len(costs)
                    costs.append(c_unit)
                    lowers.append(0.0)
                    uppers.append(1.0)
                    integers.append(True)
                    self.indicators[y] = list(coefs)
                    self._row_of.extend([len(self._row_lower)] * (len(coefs) + 1))
                    self._col_of.extend(coefs)
                    self._col_of.append(y)
                    self._value_of.extend(coefs.values())
                    self._value_of.append(-float(min(want, sizes[index])))
                    self._row_lower.append(-inf)
                    self._row_upper.append(0.0)
                    ys[y] = 1.0
                if need > 1 or len(ys) > 1:
                    self._row(ys, float(need), inf)  # a valid cut: at least `need` units
            # Workloads that can use no unit at all still pay their unit count in the
            # offset only; they are infeasible anyway (demand row).
        # Churn: CPUs kept on previously held threads.
        self.keep: dict[tuple[str, int], int] = {}
        for w in self.chosen:
            before = self.previous.get(w.id)
            if before is None:
                continue
            offset += c_churn * len(before)
            for gi, g in enumerate(self.groups):
                p = g.pattern.count(w.id)
                if not p:
                    continue
                col = self._col(-c_churn, 0, float(p * len(g.cores)), False)
                self.keep[w.id, gi] = col
                mine = [(k, c) for gj, k, c in by_w[w.id] if gj == gi]
                taken = {c: -float(k) for k, c in mine}
                self._row({col: 1.0, **taken}, -inf, 0.0)
                used = {c: -float(p) for _, c in mine}
                self._row({col: 1.0, **used}, -inf, 0.0)
        # Hot L3 domains: busy fraction above the home's (NUMA node or socket) plus the
        # tolerance. Both fractions are affine in the counts:
        # |d| (frac_d - frac_home - tol) = sum_d c n - |d|/|home| sum_home c n - |d| tol,
        # with c = k (u - u_pool).
        host = self.scales.host_cpus
        self.levels: list[list[tuple[int, float, dict[int, float]]]] = []
        homes = {} if self.aggregate_l3 or weights.imbalance == 0 else l3_homes(topo)
        level: list[tuple[int, float, dict[int, float]]] = []
        for d, (attr, unit) in sorted(homes.items()):
            home = topo.cpus_in_numa(unit) if attr == "numa" else topo.cpus_in_socket(unit)
            share = len(topo.cpus_in_l3(d)) / len(home)
            hot_coefs: dict[int, float] = defaultdict(float)
            for gi, g in enumerate(self.groups):
                in_d = g.l3 == d
                in_home = getattr(g, attr) == unit
                if not (in_d or in_home):
                    continue
                for wid, k, col in by_g[gi]:
                    c = k * (self.busy[wid] - u_p)
                    hot_coefs[col] += (c if in_d else 0.0) - (share * c if in_home else 0.0)
            base = -len(topo.cpus_in_l3(d)) * weights.imbalance_tolerance
            e = self._col(weights.imbalance / host, 0, inf, False)
            self._row({e: 1.0, **{c: -v for c, v in hot_coefs.items()}}, base, inf)
            level.append((e, base, dict(hot_coefs)))
        if level:
            self.levels.append(level)
        # Fragmentation: t <= free CPUs of the NUMA node chosen by r (one node), maximised.
        self.fragmentation: tuple[int, dict[int, int]] | None = None
        if len(topo.numa_nodes) > 1 and weights.fragmentation > 0:
            largest = max(len(topo.cpus_in_numa(n)) for n in topo.numa_nodes)
            node_free = {n: len(topo.cpus_in_numa(n) - self.reserved) for n in topo.numa_nodes}
            big_m = float(max(node_free.values()))
            offset += weights.fragmentation
            # Valid bound: the free CPUs of one node are at most all the free CPUs left.
            left = sum(node_free.values()) - sum(w.whole_cpus for w in self.chosen)
            t = self._col(-weights.fragmentation / largest, 0, max(0.0, min(big_m, left)), False)
            picks: dict[int, int] = {}
            for node in topo.numa_nodes:
                r = self._col(0.0, 0, 1, True)
                picks[node] = r
                used = {
                    col: float(k)
                    for gi, g in enumerate(self.groups)
                    if g.numa == node
                    for _, k, col in by_g[gi]
                }
                # t + used_n + M r_n <= base_n + M
                self._row({t: 1.0, r: big_m, **used}, -inf, node_free[node] + big_m)
            self._row({r: 1.0 for r in picks.values()}, 1.0, 1.0)
            self.fragmentation = (t, picks)

        n_cols = len(self._cost)
        vals = np.array(self._value_of, dtype=np.float64)
        keep = vals != 0
        matrix = sparse.csc_matrix(
            (
                vals[keep],
                (
                    np.array(self._row_of, dtype=np.int64)[keep],
                    np.array(self._col_of, dtype=np.int64)[keep],
                ),
            ),
            shape=(len(self._row_lower), n_cols),
        )
        matrix.sort_indices()
        self.model = MipModel(
            cost=np.array(self._cost, dtype=np.float64),
            offset=offset,
            lower=np.array(self._lower, dtype=np.float64),
            upper=np.array(self._upper, dtype=np.float64),
            integer=np.array(self._integer, dtype=np.bool_),
            matrix=matrix,
            row_lower=np.array(self._row_lower, dtype=np.float64),
            row_upper=np.array(self._row_upper, dtype=np.float64),
        )

    def _whole(self, cpus: CpuSet) -> CpuSet:
        return self.topology.whole_cores_within(cpus) if self.full_cores else cpus

    def stats(self) -> dict[str, int]:
        """Model size: groups, columns, rows, non-zeros."""
        return {
            "groups": len(self.groups),
            "columns": len(self.model.cost),
            "rows": len(self.model.row_lower),
            "nonzeros": int(self.model.matrix.nnz),
        }

    # --- placements <-> values ---------------------------------------------------------
    def encode(self, cpusets: Mapping[str, CpuSet]) -> NDArray[np.float64] | None:
        """The column values of a placement of the chosen workloads (None if the
        placement uses a shape the model does not allow)."""
        x = [0.0] * len(self.model.cost)  # a list: numpy scalar indexing is slow here
        owner = {cpu: wid for wid, cpus in cpusets.items() for cpu in cpus}
        for gi, g in enumerate(self.groups):
            for threads in g.cores:
                counts = Counter(owner[cpu] for cpu in threads if cpu in owner)
                if len(counts) > 1:
                    if gi not in self.m or len(counts) != 2:
                        return None
                    x[self.m[gi]] += 1
                for wid, k in counts.items():
                    col = self.n.get((wid, gi, k))
                    if col is None:
                        return None
                    x[col] += 1
        for y, covered in self.indicators.items():
            x[y] = 1.0 if any(x[c] > 0.5 for c in covered) else 0.0
        for (wid, gi), col in self.keep.items():
            mine = [(k, c) for w2, k, c in self.by_g[gi] if w2 == wid]
            taken = sum(k * x[c] for k, c in mine)
            cores = sum(x[c] for _, c in mine)
            x[col] = min(taken, self.groups[gi].pattern.count(wid) * cores)
        for level in self.levels:
            for e, base, coefs in level:
                x[e] = max(0.0, base + sum(v * x[c] for c, v in coefs.items()))
        if self.fragmentation is not None:
            t, picks = self.fragmentation
            topo = self.topology
            held = CpuSet(owner)
            free = {
                n: len(topo.cpus_in_numa(n) - self.reserved) - len(topo.cpus_in_numa(n) & held)
                for n in picks
            }
            best = max(free, key=lambda n: (free[n], -n))
            x[picks[best]] = 1.0
            x[t] = float(free[best])
        return np.array(x, dtype=np.float64)

    def _arrange(
        self, group: _Group, take: list[list[str]], l3_busy: Mapping[int, float]
    ) -> list[tuple[tuple[int, ...], list[str]]]:
        """Match the cores a group must give (``take``: owners per core) to its cores.

        Within one L3 domain any match is equal. Across several (aggregated groups), the
        cores of one owner set go together, the busiest bundles first, each to the L3
        domain with room that would be least busy afterwards, so that workloads stay L3
        local and no domain runs hot when another could take the load.
        """
        by_l3: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        for threads in group.cores:
            by_l3[self._l3_of[threads[0]]].append(threads)
        if len(by_l3) == 1:
            return list(zip(group.cores, take, strict=False))
        bundles: dict[tuple[str, ...], list[list[str]]] = defaultdict(list)
        for owners in take:
            bundles[tuple(sorted(owners))].append(owners)
        busy = dict(l3_busy)
        size = {d: len(self.topology.cpus_in_l3(d)) for d in by_l3}

        def load(key: tuple[str, ...]) -> float:
            return sum(self.busy[w] - self.u_pool for w in key) * len(bundles[key])

        pairs: list[tuple[tuple[int, ...], list[str]]] = []
        for key in sorted(bundles, key=lambda k: (-load(k), k)):
            items = bundles[key]
            per_core = sum(self.busy[w] - self.u_pool for w in key)
            while items:
                fits = [d for d in by_l3 if len(by_l3[d]) >= len(items)]
                candidates = fits or [max(by_l3, key=lambda d: (len(by_l3[d]), -d))]
                d = min(
                    candidates,
                    key=lambda d: (
                        (busy[d] + per_core * min(len(items), len(by_l3[d]))) / size[d],
                        d,
                    ),
                )
                while items and by_l3[d]:
                    pairs.append((by_l3[d].pop(0), items.pop()))
                    busy[d] += per_core
                if not by_l3[d]:
                    del by_l3[d]
        return pairs

    def _threads_for(self, threads: tuple[int, ...], owners: list[str]) -> dict[str, list[int]]:
        """Give each owner on one core its share, keeping previously held threads."""
        free = list(threads)
        got: dict[str, list[int]] = defaultdict(list)
        wanted = Counter(owners)
        for wid, count in wanted.items():
            for cpu in [c for c in free if self.prev_owner.get(c) == wid][:count]:
                free.remove(cpu)
                got[wid].append(cpu)
        for wid, count in wanted.items():
            while len(got[wid]) < count:
                # Leave threads another owner here held before to that owner.
                cpu = next((c for c in free if self.prev_owner.get(c) not in wanted), free[0])
                free.remove(cpu)
                got[wid].append(cpu)
        return got

    def _balance(self, arranged: list[tuple[int, tuple[int, ...], list[str]]]) -> None:
        """Lower the hot-L3 excess (the cost model's imbalance term) of an arrangement by
        swapping the owners of two cores of one group (same previous owners, so churn is
        unchanged) in different L3 domains of one home, best swap first, until no swap
        helps. Only L3 domains move load: every other term is the same for any core of a
        group."""
        topo = self.topology
        homes = l3_homes(topo)
        if not homes:
            return
        u_p = self.u_pool
        tol = self.weights.imbalance_tolerance
        size = {d: len(topo.cpus_in_l3(d)) for d in homes}
        l3 = [self._l3_of[threads[0]] for _, threads, _ in arranged]
        delta = [sum(self.busy[w] - u_p for w in owners) for _, _, owners in arranged]
        load = {d: u_p * size[d] for d in homes}
        for index, d in enumerate(l3):
            if d in load:
                load[d] += delta[index]
        home_cpus: dict[tuple[str, int], int] = {}
        home_load: dict[tuple[str, int], float] = defaultdict(float)
        for home in homes.values():
            attr, unit = home
            cpus = topo.cpus_in_numa(unit) if attr == "numa" else topo.cpus_in_socket(unit)
            home_cpus[home] = len(cpus)
        for d, home in homes.items():
            home_load[home] += load[d]
        # Reserved or offline threads of a home are pool threads too.
        for home, n_cpus in home_cpus.items():
            in_l3s = sum(size[d] for d, h in homes.items() if h == home)
            home_load[home] += u_p * (n_cpus - in_l3s)
        cap = {d: size[d] * (home_load[h] / home_cpus[h] + tol) for d, h in homes.items()}
        in_l3: dict[int, list[int]] = defaultdict(list)
        by_group_home: dict[tuple[int, tuple[str, int]], list[int]] = defaultdict(list)
        for index, (gi, _, _) in enumerate(arranged):
            d = l3[index]
            if d in homes:
                in_l3[d].append(index)
                by_group_home[gi, homes[d]].append(index)

        def best_swap(d: int) -> tuple[int, int]:
            """The swap of a core of ``d`` that lowers the excess most, or (-1, -1)."""
            load_d, cap_d = load[d], cap[d]
            before_d = max(0.0, load_d - cap_d)
            best_gain, best_pair = 1e-9, (-1, -1)
            for a in in_l3[d]:
                delta_a = delta[a]
                for b in by_group_home[arranged[a][0], homes[d]]:
                    diff = delta_a - delta[b]
                    e = l3[b]
                    if diff <= 1e-12 or e == d:
                        continue
                    load_e, cap_e = load[e], cap[e]
                    gain = (
                        before_d
                        + max(0.0, load_e - cap_e)
                        - max(0.0, load_d - diff - cap_d)
                        - max(0.0, load_e + diff - cap_e)
                    )
                    if gain > best_gain:
                        best_gain, best_pair = gain, (a, b)
            return best_pair

        for _ in range(4 * len(arranged)):
            # The hottest domain first; the next only when it cannot be cooled.
            hot = sorted(
                (d for d in homes if load[d] - cap[d] > 1e-12),
                key=lambda d: (cap[d] - load[d], d),
            )
            a, b = -1, -1
            for d in hot:
                a, b = best_swap(d)
                if a >= 0:
                    break
            if a < 0:
                return
            diff = delta[a] - delta[b]
            load[l3[a]] -= diff
            load[l3[b]] += diff
            delta[a], delta[b] = delta[b], delta[a]
            (ga, ta, oa), (gb, tb, ob) = arranged[a], arranged[b]
            arranged[a], arranged[b] = (ga, ta, ob), (gb, tb, oa)

    def decode(self, values: NDArray[np.float64]) -> dict[str, CpuSet]:
        """Turn solver values into cpusets: counts become cores, preferring each
        workload's previous threads. Raises `SolverError` if the counts do not fit."""
        result: dict[str, list[int]] = defaultdict(list)
        arranged: list[tuple[int, tuple[int, ...], list[str]]] = []  # group, core, owners
        rounded: list[int] = np.rint(values).astype(np.int64).tolist()
        l3_busy = {
            d: self.u_pool * len(self.topology.cpus_in_l3(d)) for d in self.topology.l3_domains
        }
        for gi, g in enumerate(self.groups):
            counts: dict[int, list[tuple[str, int]]] = defaultdict(list)
            for wid, k, col in self.by_g[gi]:
                count = rounded[col]
                if count:
                    counts[k].append((wid, count))
            pairs = rounded[self.m[gi]] if gi in self.m else 0
            cores = list(g.cores)
            take: list[list[str]] = []  # per used core: the owners of its taken threads
            for k in sorted(counts, reverse=True):
                if k == 1 and gi in self.m:
                    continue
                for wid, count in counts[k]:
                    take.extend([[wid] * k for _ in range(count)])
            if gi in self.m:
                halves = {wid: count for wid, count in counts.get(1, [])}
                take.extend(_pair_up(halves, pairs))
            if len(take) > len(cores):
                raise SolverError(f"group of {len(cores)} cores asked for {len(take)}")
            used: set[tuple[int, ...]] = set()
            for threads, owners in self._arrange(g, take, l3_busy):
                arranged.append((gi, threads, owners))
                used.add(threads)
                l3_busy[self._l3_of[threads[0]]] += sum(
                    self.busy[wid] - self.u_pool for wid in owners
                )
            arranged.extend((gi, threads, []) for threads in g.cores if threads not in used)
        if self.aggregate_l3 and self.weights.imbalance > 0:
            self._balance(arranged)
        for _, threads, owners in arranged:
            for wid, cpus in self._threads_for(threads, owners).items():
                result[wid].extend(cpus)
        cpusets = {wid: CpuSet(cpus) for wid, cpus in result.items()}
        for w in self.chosen:
            got = len(cpusets.get(w.id, CpuSet()))
            if got != w.whole_cpus:
                raise SolverError(f"{w.id} got {got} CPUs for a request of {w.whole_cpus}")
        return cpusets


def _pair_up(halves: Mapping[str, int], pairs: int) -> list[list[str]]:
    """Split single threads into ``pairs`` two-thread cores (two different workloads
    where possible, most numerous first; a workload left to pair with itself gets the
    whole core, which the model never prices above that) and lone threads."""
    heap = [(-count, wid) for wid, count in halves.items() if count > 0]
    heapq.heapify(heap)
    cores: list[list[str]] = []
    for _ in range(pairs):
        if not heap:
            raise SolverError("more pairs than single threads")
        c1, w1 = heapq.heappop(heap)
        if heap:
            c2, w2 = heapq.heappop(heap)
        elif c1 <= -2:
            c2, w2 = c1, w1
        else:
            raise SolverError("more pairs than single threads")
        cores.append([w1, w2])
        if w1 == w2:
            if c1 + 2 < 0:
                heapq.heappush(heap, (c1 + 2, w1))
            continue
        for count, wid in ((c1 + 1, w1), (c2 + 1, w2)):
            if count < 0:
                heapq.heappush(heap, (count, wid))
    for count, wid in heap:
        cores.extend([[wid]] * -count)
    return cores
