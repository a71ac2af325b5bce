"""The placement cost model: what makes one placement worse than another, term by term.

Every term is pure, computed from the online topology, the workloads and their cpusets,
normalised so that its value means the same on a 16-thread box and a 512-thread one, and
multiplied by a weight from `CostWeights`. `explain` returns each term; the optimiser
(`corral.placement.optimal`) minimises exactly the same sum.

Priorities. Placements are compared lexicographically on `CostBreakdown.priorities`, the
order the seeds rank the harms (memory across nodes first, churn last):

1. ``spread``: extra NUMA nodes plus extra sockets, summed over exclusive workloads (0
   unless no placement keeps every workload within the fewest nodes its request needs);
2. ``shared_cores``: physical cores whose threads serve two or more owners (the shared
   pool counts as an owner when it hosts a workload; an exclusive thread next to an
   idle, unused pool thread is not shared). Odd requests force a lower bound: on a node
   with ``F`` free threads and ``o`` odd parts, ``max(0, (o - F) / 2)`` cores pair two
   workloads (``ceil(o / 2)`` when the pool is used); `corral.placement.lexicographic`
   computes the bound over all node assignments and reports it;
3. ``sibling_cores``: cores where one workload holds two threads (not counted under
   ``full_cores``), only where (1) and (2) leave no choice;
4. ``hot_l3_threads``: L3 balance (the ``imbalance`` term's raw excess);
5. ``moved_cpus``: churn;
6. ``fragmentation`` (raw), then the weighted total: tie-breakers.

No weight can make a lower level outweigh a higher one: the comparison is on the vector,
not on a sum (lexicographic solving), so the dominance needs no argument about weight
ratios. The weighted total below stays as the last tie-breaker, the figure the CLI and
the rebalance threshold use, and the objective of the MIP on hosts the exact
decomposition does not cover (`corral.placement.optimal`), whose answer is then kept only
when its vector is no worse than greedy's.

Busyness. A pinned (exclusive) workload's threads are busy a fraction
``u = min(1, expected_use / cpus)`` of the time (1 without a prediction). Every thread not
held exclusively belongs to the shared pool (immovable CPUs included), whose busyness is
``min(1, demand / pool size)`` with ``demand`` the expected use of the shared, numa and
immovable workloads placed. The pool is one owner: the kernel may run any pool task on
any pool thread, so no finer prediction exists for a single thread.

Terms (raw value, then the normaliser):

* ``numa_spread``: per exclusive workload, NUMA nodes touched minus the fewest that could
  hold its request on this host; divided by the number of exclusive workloads.
* ``socket_spread``: the same for sockets (a workload split across sockets pays both).
* ``shared_cores``: every physical core whose threads have two or more owners costs
  ``shared_floor + (1 - shared_floor) * mean busyness of its threads``: little for idle
  neighbours, 1 for two busy ones; the floor (0.1) because a prediction can be wrong and
  an idle neighbour can wake up. Divided by the number of exclusive workloads.
* ``siblings``: design.md asks that a workload avoid two hyperthreads of one core unless it
  asked for whole cores. Each core where one exclusive workload holds two or more threads
  costs that workload's busyness; not charged under ``full_cores`` (whole cores asked
  for). Divided by the number of exclusive workloads. In corral's pool model the other
  way always puts a pool thread next to the workload (a shared core), so the default
  weight is a quarter of ``shared_cores``: siblings of one workload share code and data
  and contend less than strangers. Raise ``siblings`` above ``shared_cores`` to spread
  workloads over cores when the pool is idle.
* ``imbalance``: hot L3 domains. An L3 domain whose busy fraction exceeds that of its
  home (the NUMA node holding it, or its socket when the node has one L3) by more than
  ``imbalance_tolerance`` has excess busy threads; the term sums them as a fraction of the
  host's CPUs. Only within a home: balancing load across NUMA nodes or sockets was
  measured to fragment free capacity (``corral bench placement``, churn: the next large
  arrival then has to cross NUMA nodes, which costs far more), so spreading across nodes
  is left to the spread terms and kubelet-style packing. Hosts with one L3 per NUMA node
  and socket have no imbalance term. A tolerated band rather than a range: a perfectly
  even spread is rarely possible with whole workloads, and a band lets the solver prove
  a placement optimal.
* ``fragmentation``: ``1 - largest free block / largest NUMA node``, where a NUMA node's
  free block is its online CPUs held by no exclusive or immovable workload: the biggest
  request that can still arrive without crossing NUMA nodes. Placement is decided one
  event at a time; without this term the optimiser breaks ties (and trades small gains)
  in ways that leave free CPUs scattered, so the next large arrival has to cross nodes.
  0 on single-node hosts.
* ``churn``: CPUs of exclusive workloads that held CPUs before and would lose them
  (``|previous - new|``); divided by the CPUs requested by exclusive workloads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from corral.errors import InputError
from corral.placement.assignment import Placement
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

TERMS: tuple[str, ...] = (
    "numa_spread",
    "socket_spread",
    "shared_cores",
    "siblings",
    "imbalance",
    "fragmentation",
    "churn",
)
PRIORITIES: tuple[str, ...] = (
    "spread",
    "shared_cores",
    "sibling_cores",
    "hot_l3_threads",
    "moved_cpus",
    "fragmentation",
    "weighted_total",
)
"""The names of `CostBreakdown.priorities`, most important first."""
POOL = ""  # owner key of the shared pool (workload ids are never empty)


@dataclass(frozen=True, slots=True)
class CostWeights:
    """Weights of the cost terms; the defaults follow titus-isolate's order of importance
    (locality >> shared cores >> balance and churn) on corral's normalised scales."""

    numa_spread: float = 4.0
    """Per extra NUMA node per exclusive workload (averaged). Remote memory costs every
    access, so this is the heaviest term."""
    socket_spread: float = 4.0
    """Per extra socket per exclusive workload (averaged); on top of ``numa_spread``."""
    shared_cores: float = 1.0
    """Per shared core per exclusive workload, times the core's mean busyness."""
    siblings: float = 0.25
    """Per core where a workload holds two of its own threads, times its busyness."""
    imbalance: float = 0.5
    """Per hot L3 thread's worth of excess busyness, as a fraction of the host."""
    shared_floor: float = 0.1
    """Part of a shared core's cost that does not depend on predicted use, in [0, 1] (not
    a weight)."""
    imbalance_tolerance: float = 0.1
    """Busy-fraction points above the host average a domain may carry before it counts as
    a hot spot (not a weight; 0.1 = ten points)."""
    fragmentation: float = 0.1
    """Per fraction of the largest NUMA node that is not free in one block: a tie-breaker
    towards kubelet-style best fit (a 4-CPU hole on a 32-CPU node costs 0.0125)."""
    churn: float = 2.0
    """Per fraction of pinned CPUs that move: moving every pinned CPU costs 2, as much as
    half of all exclusive workloads crossing one NUMA node more than needed."""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, where: str = "weights") -> CostWeights:
        """Defaults overridden by ``data`` (``{term: weight}``); `InputError` names an
        unknown term or a weight that is not a finite non-negative number."""
        known = {f.name for f in fields(cls)}
        # Every field is a non-negative number; the tolerance is one too.
        values: dict[str, float] = {}
        for key, value in data.items():
            if key not in known:
                raise InputError(
                    f"{where}.{key}",
                    "unknown cost term",
                    f"terms: {', '.join(TERMS)} (and shared_floor, imbalance_tolerance)",
                )
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value < 0
            ):
                raise InputError(f"{where}.{key}", f"must be a finite number >= 0, got {value!r}")
            if key == "shared_floor" and value > 1:
                raise InputError(f"{where}.{key}", f"must be in [0, 1], got {value!r}")
            values[key] = float(value)
        return replace(cls(), **values)

    @classmethod
    def parse_overrides(cls, items: list[str], *, where: str = "--weight") -> CostWeights:
        """Weights from ``term=value`` strings (the CLI's ``--weight`` options)."""
        data: dict[str, Any] = {}
        for item in items:
            key, sep, text = item.partition("=")
            if not sep:
                raise InputError(where, f"{item!r} is not term=value", "e.g. churn=5")
            try:
                data[key.strip()] = float(text)
            except ValueError:
                raise InputError(f"{where} {key}", f"{text!r} is not a number") from None
        return cls.from_mapping(data, where=where)

    def as_dict(self) -> dict[str, float]:
        """``{term: weight}``."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TermValue:
    """One term: its raw value, the value after normalisation, and after weighting."""

    raw: float
    normalised: float
    weighted: float


@dataclass(frozen=True)
class CostBreakdown:
    """The cost of one placement, term by term, with the counts people ask about."""

    terms: Mapping[str, TermValue]
    total: float
    cross_numa_workloads: int
    """Exclusive workloads on more NUMA nodes than they need."""
    cross_socket_workloads: int
    shared_cores: int
    """Cores whose threads serve two or more owners (the pool counts when it hosts a
    workload)."""
    sibling_cores: int
    moved_cpus: int
    pool_busyness: float
    details: Mapping[str, str] = field(default_factory=dict)
    spread: int = 0
    """Extra NUMA nodes plus extra sockets over all exclusive workloads (priority 1)."""
    hot_l3_threads: float = 0.0
    """Busy threads above the tolerated share in hot L3 domains (priority 4)."""

    @property
    def priorities(self) -> tuple[float, ...]:
        """The priority vector, compared lexicographically (lower is better): see
        `PRIORITIES` and the module doc. Floats are rounded to 9 places so that equal
        placements compare equal whatever the summation order."""
        return (
            float(self.spread),
            float(self.shared_cores),
            float(self.sibling_cores),
            round(self.hot_l3_threads, 9),
            float(self.moved_cpus),
            round(self.terms["fragmentation"].raw, 9),
            round(self.total, 9),
        )

    def weighted(self) -> dict[str, float]:
        """``{term: weighted value}``: what the CLI prints as ``"cost"``."""
        return {name: round(term.weighted, 6) for name, term in self.terms.items()}

    def to_json(self) -> dict[str, Any]:
        """Terms (raw, normalised, weighted), total and counts."""
        return {
            "total": round(self.total, 6),
            "terms": {
                name: {
                    "raw": round(t.raw, 6),
                    "normalised": round(t.normalised, 6),
                    "weighted": round(t.weighted, 6),
                }
                for name, t in self.terms.items()
            },
            "cross_numa_workloads": self.cross_numa_workloads,
            "cross_socket_workloads": self.cross_socket_workloads,
            "shared_cores": self.shared_cores,
            "sibling_cores": self.sibling_cores,
            "moved_cpus": self.moved_cpus,
            "pool_busyness": round(self.pool_busyness, 6),
            "spread": self.spread,
            "priorities": dict(zip(PRIORITIES, self.priorities, strict=True)),
        }


def better(a: CostBreakdown, b: CostBreakdown) -> bool:
    """Whether placement cost ``a`` is strictly better than ``b`` in priority order."""
    return a.priorities < b.priorities


def busyness(workload: Workload) -> float:
    """Fraction of time each of the workload's threads is expected busy, in [0, 1]."""
    return min(1.0, workload.expected_use / workload.cpus)


def units_needed(sizes: list[int], cpus: int) -> int:
    """The fewest units (NUMA nodes or sockets of the given sizes) that can hold ``cpus``."""
    total = 0
    for count, size in enumerate(sorted(sizes, reverse=True), start=1):
        total += size
        if total >= cpus:
            return count
    return max(1, len(sizes))


def pool_busyness(
    topology: Topology, workloads: Mapping[str, Workload], cpusets: Mapping[str, CpuSet]
) -> float:
    """Busyness of the shared pool given the placed workloads (see the module doc)."""
    online = topology.all_cpus
    exclusive = CpuSet().union(
        *(cpus for wid, cpus in cpusets.items() if workloads[wid].policy is Policy.EXCLUSIVE)
    )
    pool = len(online - exclusive)
    demand = sum(
        workloads[wid].expected_use
        for wid in cpusets
        if workloads[wid].policy is not Policy.EXCLUSIVE
    )
    return pool_busyness_of(demand, pool)


def pool_busyness_of(demand: float, pool_size: int) -> float:
    """``min(1, demand / pool_size)``; 0 for an empty pool."""
    return 0.0 if pool_size <= 0 else min(1.0, demand / pool_size)


def explain(
    topology: Topology,
    workloads: Mapping[str, Workload],
    cpusets: Mapping[str, CpuSet],
    *,
    weights: CostWeights | None = None,
    previous: Mapping[str, CpuSet] | None = None,
    full_cores: bool = False,
) -> CostBreakdown:
    """The cost of placing each workload of ``cpusets`` on its CPUs, term by term.

    ``topology`` is the host as seen by the allocator (offline CPUs removed);
    ``workloads`` must hold every id of ``cpusets``; ``previous`` gives the CPUs held
    before (for churn).
    """
    weights = weights or CostWeights()
    previous = previous or {}
    online = topology.all_cpus
    exclusive = {
        wid: cpus & online
        for wid, cpus in cpusets.items()
        if workloads[wid].policy is Policy.EXCLUSIVE
    }
    owner: dict[int, str] = {cpu: POOL for cpu in online}
    for wid, cpus in exclusive.items():
        for cpu in cpus:
            owner[cpu] = wid
    u_pool = pool_busyness(topology, workloads, cpusets)
    pool_used = any(workloads[wid].policy is not Policy.EXCLUSIVE for wid in cpusets)
    busy = {wid: busyness(workloads[wid]) for wid in exclusive}

    def thread_busy(cpu: int) -> float:
        who = owner[cpu]
        return u_pool if who == POOL else busy[who]

    n_ex = max(1, len(exclusive))
    pinned_cpus = max(1, sum(workloads[wid].whole_cpus for wid in exclusive))

    numa_sizes = [
        len(_whole(topology, topology.cpus_in_numa(n), full_cores)) for n in topology.numa_nodes
    ]
    socket_sizes = [
        len(_whole(topology, topology.cpus_in_socket(s), full_cores)) for s in topology.sockets
    ]
    numa_extra = socket_extra = 0
    cross_numa = cross_socket = 0
    for wid, cpus in exclusive.items():
        if not cpus:
            continue
        want = workloads[wid].whole_cpus
        extra_n = len(topology.numa_nodes_of(cpus)) - units_needed(numa_sizes, want)
        extra_s = len(topology.sockets_of(cpus)) - units_needed(socket_sizes, want)
        numa_extra += max(0, extra_n)
        socket_extra += max(0, extra_s)
        cross_numa += extra_n > 0
        cross_socket += extra_s > 0

    shared_raw = sibling_raw = 0.0
    shared_count = sibling_count = 0
    for core in topology.cores:
        owners = [owner[cpu] for cpu in core.cpus]
        distinct = set(owners)
        if len(distinct) > 1:
            mean = sum(thread_busy(cpu) for cpu in core.cpus) / len(core.cpus)
            shared_raw += weights.shared_floor + (1 - weights.shared_floor) * mean
            if pool_used or POOL not in distinct or len(distinct) > 2:
                shared_count += 1
        if not full_cores:
            for who in distinct - {POOL}:
                if owners.count(who) >= 2:
                    sibling_raw += busy[who]
                    sibling_count += 1

    homes = l3_homes(topology)
    hot = 0.0
    references: dict[tuple[str, int], float] = {}
    for l3, (attr, unit) in homes.items():
        if (attr, unit) not in references:
            home = topology.cpus_in_numa(unit) if attr == "numa" else topology.cpus_in_socket(unit)
            references[attr, unit] = sum(thread_busy(c) for c in home) / len(home)
        cpus = topology.cpus_in_l3(l3)
        fraction = sum(thread_busy(c) for c in cpus) / len(cpus)
        reference = references[attr, unit]
        hot += len(cpus) * max(0.0, fraction - reference - weights.imbalance_tolerance)
    imbalance_raw = hot / len(online)

    fragmentation_raw = 0.0
    if len(topology.numa_nodes) > 1:
        held = CpuSet().union(
            *(
                cpus
                for wid, cpus in cpusets.items()
                if workloads[wid].policy in (Policy.EXCLUSIVE, Policy.IMMOVABLE)
            )
        )
        sizes = [len(topology.cpus_in_numa(n)) for n in topology.numa_nodes]
        largest_free = max(len(topology.cpus_in_numa(n) - held) for n in topology.numa_nodes)
        fragmentation_raw = 1 - largest_free / max(sizes)

    moved = 0
    for wid, cpus in exclusive.items():
        before = previous.get(wid)
        if before is not None:
            moved += len(before - cpus)

    raw = {
        "numa_spread": (float(numa_extra), n_ex),
        "socket_spread": (float(socket_extra), n_ex),
        "shared_cores": (shared_raw, n_ex),
        "siblings": (sibling_raw, n_ex),
        "imbalance": (imbalance_raw, 1),
        "fragmentation": (fragmentation_raw, 1),
        "churn": (float(moved), pinned_cpus),
    }
    terms: dict[str, TermValue] = {}
    for name in TERMS:
        value, scale = raw[name]
        normalised = value / scale
        terms[name] = TermValue(value, normalised, normalised * getattr(weights, name))
    return CostBreakdown(
        terms=terms,
        total=sum(t.weighted for t in terms.values()),
        cross_numa_workloads=cross_numa,
        cross_socket_workloads=cross_socket,
        shared_cores=shared_count,
        sibling_cores=sibling_count,
        moved_cpus=moved,
        pool_busyness=u_pool,
        details={
            "hot_l3_threads": f"{hot:.3f}",
        },
        spread=numa_extra + socket_extra,
        hot_l3_threads=hot,
    )


def explain_placement(
    topology: Topology,
    workloads: Mapping[str, Workload],
    placement: Placement,
    *,
    weights: CostWeights | None = None,
    previous: Mapping[str, CpuSet] | None = None,
    full_cores: bool = False,
) -> CostBreakdown:
    """`explain` for a `Placement` (its assignments; refusals cost nothing here, callers
    compare refusals first)."""
    return explain(
        topology,
        workloads,
        placement.as_cpusets(),
        weights=weights,
        previous=previous,
        full_cores=full_cores,
    )


def l3_homes(topology: Topology) -> dict[int, tuple[str, int]]:
    """For each L3 domain that has siblings to be balanced against: its home, the NUMA
    node holding it (if the node has several L3 domains) or else its socket (if the
    socket has several). L3 domains without one are left out."""
    numa_of: dict[int, set[int]] = {}
    socket_of: dict[int, int] = {}
    for cpu in topology.cpus:
        numa_of.setdefault(cpu.l3, set()).add(cpu.numa)
        socket_of[cpu.l3] = cpu.socket
    l3_in_numa: dict[int, set[int]] = {}
    l3_in_socket: dict[int, set[int]] = {}
    for cpu in topology.cpus:
        l3_in_numa.setdefault(cpu.numa, set()).add(cpu.l3)
        l3_in_socket.setdefault(cpu.socket, set()).add(cpu.l3)
    homes: dict[int, tuple[str, int]] = {}
    for l3, nodes in numa_of.items():
        if len(nodes) == 1 and len(l3_in_numa[next(iter(nodes))]) > 1:
            homes[l3] = ("numa", next(iter(nodes)))
        elif len(l3_in_socket[socket_of[l3]]) > 1:
            homes[l3] = ("socket", socket_of[l3])
    return homes


def _whole(topology: Topology, cpus: CpuSet, full_cores: bool) -> CpuSet:
    return topology.whole_cores_within(cpus) if full_cores else cpus
