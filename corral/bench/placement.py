"""The placement benchmark: greedy (kubelet order) against the optimal allocator.

Four parts, all on the built-in topology presets and seeded, so a run is repeatable:

* ``static``: for each preset and fill (50/80/95% of the CPUs requested), several workload
  mixes placed from scratch by both allocators: every cost term, cross-NUMA workloads,
  shared cores, refusals, decision time, and the optimiser's gap and proofs. A per-instance
  check counts where the optimiser has more cross-NUMA workloads or shared cores than greedy.
* ``churn``: a Poisson arrival / exponential lifetime sequence at about 80% fill; each event
  is one decision; CPUs of placed workloads that move per event against the CPUs the
  event requested.
* ``burst``: a burst of adds decided once (`decide_batch`) against one decision per add.
* ``solvers``: the same models solved by highspy (warm-started) and scipy.optimize.milp.
* ``family`` (issue 15's instances): 2 sockets with one NUMA node and one L3 each,
  siblings numbered 2l and 2l+1, exclusive requests drawn from {1,2,3,4,6,8,12,16} until
  80-95% of the threads are asked for, 10-39 workloads, on 64, 128 and 256 threads; plus
  512 threads with 200 workloads (requests from {1,2,3}, about 78% full). Per size: the
  share proven optimal at the default budget, cross-socket workloads (and how many no
  placement avoids), shared cores against their lower bound, decision time p50/p99, and
  greedy's figures on the same instances.

The churn part also checks path dependence: after every event it places the same
workloads from scratch and counts events where the sequence's (spread, shared cores) is
worse than the from-scratch one; mean (spread, shared, sibling cores) of both are shown.
"""

from __future__ import annotations

import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from corral.bench._mixes import arrival_sequence, draw_mix, draw_workload
from corral.placement.allocate import Allocator
from corral.placement.cost import TERMS, CostBreakdown, explain_placement
from corral.placement.decisions import (
    DecisionSettings,
    Event,
    EventKind,
    decide,
    decide_batch,
)
from corral.placement.greedy import place_greedy
from corral.placement.optimal import (
    DEFAULT_BUDGET_MS,
    DEFAULT_GAP,
    place_optimal,
    solve_highs,
    solve_scipy,
)
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Cpu, Topology
from corral.topology.presets import preset

ALL_PRESETS = (
    "toy-16",
    "r4.16xlarge",
    "xeon-gold-6230-2s",
    "epyc-7742-2s",
    "epyc-9654-2s",
    "epyc-9754-2s",
)


@dataclass(frozen=True, slots=True)
class PlacementBenchConfig:
    """What to run. `quick` is for tests and CI (well under a minute); `full` for reports."""

    presets: tuple[str, ...] = ALL_PRESETS
    fills: tuple[float, ...] = (0.5, 0.8, 0.95)
    instances: int = 10
    churn_presets: tuple[str, ...] = ("r4.16xlarge", "epyc-7742-2s")
    events: int = 200
    burst_preset: str = "epyc-7742-2s"
    burst_size: int = 100
    solver_preset: str = "r4.16xlarge"
    solver_instances: int = 5
    family_sizes: tuple[int, ...] = (64, 128, 256)
    family_instances: int = 100
    big_instances: int = 10
    only_family: bool = False
    budget_ms: float = DEFAULT_BUDGET_MS
    gap: float = DEFAULT_GAP
    seed: int = 0

    @classmethod
    def quick(cls) -> PlacementBenchConfig:
        """A small run: three presets, two mixes each, short sequences."""
        return cls(
            presets=("toy-16", "r4.16xlarge", "epyc-7742-2s"),
            instances=2,
            churn_presets=("r4.16xlarge",),
            events=30,
            burst_preset="r4.16xlarge",
            burst_size=20,
            solver_instances=2,
            family_instances=10,
            big_instances=3,
        )


@dataclass(frozen=True, slots=True)
class Run:
    """One allocator on one instance."""

    ms: float
    cost: CostBreakdown
    refused: int
    gap: float | None = None
    optimal: bool = False
    fell_back: bool = False
    source: str = ""
    mip_ms: float = 0.0


@dataclass(frozen=True)
class StaticRow:
    """One preset and fill: both allocators over all instances."""

    preset: str
    threads: int
    fill: float
    workloads: float
    greedy: list[Run]
    optimal: list[Run]

    def worse(self, attr: str) -> int:
        """Instances where the optimiser has more of ``attr`` than greedy."""
        return sum(
            getattr(o.cost, attr) > getattr(g.cost, attr)
            for g, o in zip(self.greedy, self.optimal, strict=True)
        )

    def to_json(self) -> dict[str, Any]:
        """Aggregates per allocator, plus the per-instance comparison."""
        return {
            "preset": self.preset,
            "threads": self.threads,
            "fill": self.fill,
            "workloads": round(self.workloads, 1),
            "greedy": _aggregate(self.greedy),
            "optimal": _aggregate(self.optimal),
            "optimal_worse_in_priority_order": sum(
                o.cost.priorities > g.cost.priorities
                for g, o in zip(self.greedy, self.optimal, strict=True)
            ),
            "optimal_more_cross_numa": self.worse("cross_numa_workloads"),
            "optimal_more_shared_cores": self.worse("shared_cores"),
        }


@dataclass(frozen=True)
class ChurnRow:
    """One allocator through one arrival/departure sequence."""

    preset: str
    allocator: str
    events: int
    moved: list[int]
    requested: list[int]
    ms: list[float]
    costs: list[float]
    refused: int
    vectors: list[tuple[float, ...]] = field(default_factory=list)
    """(spread, shared cores, sibling cores) after each event."""
    drift: int = 0
    """Events whose (spread, shared cores) is worse than placing the same workloads from
    scratch (path dependence; sibling cores may wait for a rebalance)."""
    scratch: list[tuple[float, ...]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """Moved and requested CPUs per event, decision times, mean cost."""
        moved = statistics.fmean(self.moved) if self.moved else 0.0
        requested = statistics.fmean(self.requested) if self.requested else 0.0
        return {
            "preset": self.preset,
            "allocator": self.allocator,
            "events": self.events,
            "moved_cpus_per_event": round(moved, 3),
            "requested_cpus_per_event": round(requested, 3),
            "moved_over_requested": round(moved / requested, 3) if requested else None,
            "max_moved_in_one_event": max(self.moved, default=0),
            "ms_p50": _pct(self.ms, 50),
            "ms_p99": _pct(self.ms, 99),
            "mean_cost": round(statistics.fmean(self.costs), 4) if self.costs else None,
            "refused_adds": self.refused,
            "mean_priorities": _mean_vector(self.vectors),
            "mean_priorities_from_scratch": _mean_vector(self.scratch),
            "events_worse_than_from_scratch": self.drift,
        }


@dataclass(frozen=True)
class PlacementBenchResult:
    """Everything the benchmark measured."""

    config: PlacementBenchConfig
    static: list[StaticRow] = field(default_factory=list)
    churn: list[ChurnRow] = field(default_factory=list)
    burst: dict[str, Any] = field(default_factory=dict)
    solvers: dict[str, Any] = field(default_factory=dict)
    family: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``corral bench placement --json`` prints."""
        return {
            "config": {
                "presets": list(self.config.presets),
                "fills": list(self.config.fills),
                "instances": self.config.instances,
                "events": self.config.events,
                "budget_ms": self.config.budget_ms,
                "gap": self.config.gap,
                "seed": self.config.seed,
                "family_sizes": list(self.config.family_sizes),
                "family_instances": self.config.family_instances,
                "big_instances": self.config.big_instances,
            },
            "static": [row.to_json() for row in self.static],
            "churn": [row.to_json() for row in self.churn],
            "burst": self.burst,
            "solvers": self.solvers,
            "family": self.family,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class _Phase:
    """A counter of one phase's units that reports each step to ``on_progress``."""

    step: str
    total: int
    on_progress: Callable[[str, int, int], None] | None
    done: int = 0

    def advance(self) -> None:
        """One more unit done; reported as ``(step, done, total)``."""
        self.done += 1
        if self.on_progress is not None:
            self.on_progress(self.step, min(self.done, self.total), self.total)

    def start(self) -> _Phase:
        """Report the phase at zero (so a slow first unit already shows)."""
        if self.on_progress is not None:
            self.on_progress(self.step, 0, self.total)
        return self

    def finish(self) -> None:
        """Report the phase complete (a sequence may hold fewer events than planned)."""
        if self.on_progress is not None:
            self.on_progress(self.step, self.total, self.total)


def run_placement_bench(
    config: PlacementBenchConfig,
    *,
    on_progress: Callable[[str, int, int], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PlacementBenchResult:
    """Run the benchmark described by ``config`` (see the module doc).

    ``on_progress(step, done, total)`` is called after each instance or event of the
    phases ``family instances``, ``from-scratch instances``, ``churn events``, ``burst
    decisions`` and ``solver runs`` (the last four only without `only_family`).
    """
    started = clock()
    settings = DecisionSettings(budget_ms=config.budget_ms, gap=config.gap)
    family_total = len(config.family_sizes) * config.family_instances + config.big_instances
    phase = _Phase("family instances", family_total, on_progress).start()
    family = []
    for threads in config.family_sizes:
        family.append(_family_row(config, threads, None, clock, phase=phase))
    if config.big_instances:
        family.append(_family_row(config, 512, 200, clock, phase=phase))
    phase.finish()
    if config.only_family:
        return PlacementBenchResult(config=config, family=family, seconds=clock() - started)
    static_total = len(config.presets) * len(config.fills) * config.instances
    phase = _Phase("from-scratch instances", static_total, on_progress).start()
    static = []
    for name in config.presets:
        topo = preset(name)
        for fill in config.fills:
            static.append(_static_row(topo, name, fill, config, clock, phase=phase))
    phase.finish()
    churn_total = len(config.churn_presets) * 2 * config.events
    phase = _Phase("churn events", churn_total, on_progress).start()
    churn = []
    for name in config.churn_presets:
        churn.extend(_churn_rows(preset(name), name, config, settings, clock, phase=phase))
    phase.finish()
    phase = _Phase("burst decisions", config.burst_size + 1, on_progress).start()
    burst = _burst(preset(config.burst_preset), config, settings, clock, phase=phase)
    phase.finish()
    phase = _Phase("solver runs", 2 * config.solver_instances, on_progress).start()
    solvers = _solvers(preset(config.solver_preset), config, clock, phase=phase)
    phase.finish()
    return PlacementBenchResult(
        config=config,
        static=static,
        churn=churn,
        burst=burst,
        solvers=solvers,
        family=family,
        seconds=clock() - started,
    )


FAMILY_REQUESTS = (1, 2, 3, 4, 6, 8, 12, 16)


def family_topology(threads: int) -> Topology:
    """2 sockets, one NUMA node and one L3 per socket, siblings numbered 2l and 2l+1."""
    cores = threads // 2
    per_socket = cores // 2
    records = [
        Cpu(
            id=2 * core + t,
            core=core,
            socket=core // per_socket,
            numa=core // per_socket,
            l3=core // per_socket,
        )
        for core in range(cores)
        for t in range(2)
    ]
    return Topology.from_records(records, name=f"family-{threads}")


def family_instance(rng: random.Random, threads: int) -> list[Workload]:
    """Exclusive requests from `FAMILY_REQUESTS` until 80-95% of ``threads`` are asked
    for; redrawn (up to 50 times) until there are 10-39 workloads."""
    workloads: list[Workload] = []
    for _ in range(50):
        target = rng.uniform(0.8, 0.95) * threads
        workloads, total = [], 0
        while total < target:
            fits = [r for r in FAMILY_REQUESTS if total + r <= 0.95 * threads]
            if not fits:
                break
            r = rng.choice(fits)
            total += r
            workloads.append(_family_workload(len(workloads), r))
        if 10 <= len(workloads) <= 39:
            break
    return workloads


def big_instance(rng: random.Random, count: int) -> list[Workload]:
    """``count`` exclusive workloads asking for 1-3 CPUs each."""
    return [_family_workload(i, rng.choice((1, 2, 3))) for i in range(count)]


def _family_workload(index: int, cpus: int) -> Workload:
    return Workload(id=f"w{index}", qos="LC", cpus=cpus, policy="exclusive")


def _family_row(
    config: PlacementBenchConfig,
    threads: int,
    count: int | None,
    clock: Callable[[], float],
    *,
    phase: _Phase,
) -> dict[str, Any]:
    topo = family_topology(threads)
    instances = config.big_instances if count else config.family_instances
    ms: list[float] = []
    greedy_ms: list[float] = []
    proven = cross = cross_bound = shared = shared_bound = 0
    greedy_cross = greedy_shared = greedy_siblings = siblings = workloads_total = 0
    worse_than_greedy = 0
    for index in range(instances):
        rng = random.Random(f"{config.seed}/family/{threads}/{count}/{index}")
        workloads = big_instance(rng, count) if count else family_instance(rng, threads)
        workloads_total += len(workloads)
        result = place_optimal(topo, workloads, budget_ms=config.budget_ms, gap=config.gap)
        ms.append(result.solve_ms)
        proven += result.optimal
        cross += result.cost.cross_socket_workloads
        shared += result.cost.shared_cores
        siblings += result.cost.sibling_cores
        bound = result.priority_bound
        if bound is not None:
            cross_bound += int(bound[0] // 2)  # an unavoidable split: one node, one socket
        shared_bound += result.shared_cores_bound or 0
        t0 = clock()
        greedy = place_greedy(topo, workloads)
        greedy_ms.append((clock() - t0) * 1000)
        g_cost = explain_placement(topo, {w.id: w for w in workloads}, greedy)
        greedy_cross += g_cost.cross_socket_workloads
        greedy_shared += g_cost.shared_cores
        greedy_siblings += g_cost.sibling_cores
        worse_than_greedy += result.cost.priorities > g_cost.priorities
        phase.advance()
    return {
        "threads": threads,
        "instances": instances,
        "workloads_mean": round(workloads_total / max(1, instances), 1),
        "proven_share": round(proven / max(1, instances), 3),
        "cross_socket": cross,
        "cross_socket_unavoidable": cross_bound,
        "shared_cores": shared,
        "shared_cores_bound": shared_bound,
        "sibling_cores": siblings,
        "ms_p50": _pct(ms, 50),
        "ms_p99": _pct(ms, 99),
        "ms_max": round(max(ms), 2) if ms else None,
        "worse_than_greedy": worse_than_greedy,
        "greedy": {
            "cross_socket": greedy_cross,
            "shared_cores": greedy_shared,
            "sibling_cores": greedy_siblings,
            "ms_p50": _pct(greedy_ms, 50),
        },
    }


def plot_placement(doc: Mapping[str, Any], path: Path) -> None:
    """Draw a benchmark document into ``path`` (PNG, SVG or PDF by suffix), and nothing else.

    Always the instance family: proven share, cross-socket workloads, shared cores against
    the bound and decision times per size, next to greedy's. With from-scratch rows (not
    ``--family-only``) also those, per preset and fill: cross-NUMA workloads and shared
    cores, and decision time p50, greedy against optimal.
    """
    import matplotlib  # noqa: PLC0415 - optional, only for --plot

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    static = doc.get("static") or []
    fig, axes = plt.subplots(3 if static else 2, 2, figsize=(12, 10.5 if static else 7))
    _plot_family(axes, doc)
    if static:
        _plot_static(axes[2], static)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _plot_family(axes: Any, doc: Mapping[str, Any]) -> None:
    rows = doc["family"]
    labels = [f"{r['threads']}" + ("/200" if r["threads"] == 512 else "") for r in rows]
    x = np.arange(len(rows))
    ax = axes[0][0]
    ax.bar(x, [100 * r["proven_share"] for r in rows], color="tab:green")
    ax.axhline(95, color="grey", linestyle="--", linewidth=1)
    ax.set_title(f"family: proven optimal at {doc['config']['budget_ms']:g} ms (%)")
    ax.set_ylim(0, 105)
    width = 0.38
    ax = axes[0][1]
    ax.bar(x - width / 2, [r["cross_socket"] for r in rows], width, label="corral")
    ax.bar(x + width / 2, [r["greedy"]["cross_socket"] for r in rows], width, label="greedy")
    ax.plot(
        x, [r["cross_socket_unavoidable"] for r in rows], "k_", markersize=20, label="unavoidable"
    )
    ax.set_title("family: cross-socket workloads (all instances)")
    ax.legend()
    ax = axes[1][0]
    ax.bar(x - width / 2, [r["shared_cores"] for r in rows], width, label="corral")
    ax.bar(x + width / 2, [r["greedy"]["shared_cores"] for r in rows], width, label="greedy")
    ax.plot(x, [r["shared_cores_bound"] for r in rows], "k_", markersize=20, label="lower bound")
    ax.set_title("family: cores shared between workloads (all instances)")
    ax.legend()
    ax = axes[1][1]
    ax.bar(x - width / 2, [r["ms_p50"] for r in rows], width, label="p50")
    ax.bar(x + width / 2, [r["ms_p99"] for r in rows], width, label="p99")
    ax.axhline(doc["config"]["budget_ms"], color="grey", linestyle="--", linewidth=1)
    ax.set_title("family: decision time (ms)")
    ax.legend()
    for row in axes[:2]:
        for a in row:
            a.set_xticks(x, labels)
            a.set_xlabel("threads")


def _plot_static(axes: Any, static: Sequence[Mapping[str, Any]]) -> None:
    labels = [f"{r['preset']}\n{r['fill']:.0%}" for r in static]
    x = np.arange(len(static))
    width = 0.2
    ax = axes[0]
    for offset, alloc, term, hatch in (
        (-1.5, "greedy", "cross_numa", ""),
        (-0.5, "optimal", "cross_numa", ""),
        (0.5, "greedy", "shared_cores", "//"),
        (1.5, "optimal", "shared_cores", "//"),
    ):
        ax.bar(
            x + offset * width,
            [r[alloc][term] for r in static],
            width,
            color="tab:orange" if alloc == "greedy" else "tab:blue",
            hatch=hatch,
            label=f"{alloc} {term.replace('_', ' ')}",
        )
    ax.set_title("from scratch: cross-NUMA workloads and shared cores (totals)")
    ax.legend(fontsize="small")
    ax = axes[1]
    ax.bar(x - width, [r["greedy"]["ms_p50"] or 0 for r in static], 2 * width, label="greedy")
    ax.bar(x + width, [r["optimal"]["ms_p50"] or 0 for r in static], 2 * width, label="optimal")
    ax.set_yscale("log")
    ax.set_title("from scratch: decision time p50 (ms, log)")
    ax.legend()
    for a in axes:
        a.set_xticks(x, labels, fontsize="small", rotation=45, ha="right")


def _static_row(
    topo: Topology,
    name: str,
    fill: float,
    config: PlacementBenchConfig,
    clock: Callable[[], float],
    *,
    phase: _Phase,
) -> StaticRow:
    greedy_runs: list[Run] = []
    optimal_runs: list[Run] = []
    counts = []
    for index in range(config.instances):
        rng = random.Random(f"{config.seed}/{name}/{fill}/{index}")
        workloads = draw_mix(rng, topo, fill)
        counts.append(len(workloads))
        by_id = {w.id: w for w in workloads}
        t0 = clock()
        greedy = place_greedy(topo, workloads)
        greedy_ms = (clock() - t0) * 1000
        greedy_runs.append(
            Run(greedy_ms, explain_placement(topo, by_id, greedy), len(greedy.refusals))
        )
        result = place_optimal(topo, workloads, budget_ms=config.budget_ms, gap=config.gap)
        optimal_runs.append(
            Run(
                result.solve_ms,
                result.cost,
                len(result.placement.refusals),
                gap=result.gap,
                optimal=result.optimal,
                fell_back=result.fell_back,
                source=result.source,
                mip_ms=result.mip_ms,
            )
        )
        phase.advance()
    return StaticRow(
        name, len(topo.cpus), fill, statistics.fmean(counts), greedy_runs, optimal_runs
    )


def _exclusive_cpusets(
    workloads: Sequence[Workload], cpusets: dict[str, CpuSet]
) -> dict[str, CpuSet]:
    policy = {w.id: w.policy for w in workloads}
    return {wid: c for wid, c in cpusets.items() if policy[wid] is Policy.EXCLUSIVE}


def _churn_rows(
    topo: Topology,
    name: str,
    config: PlacementBenchConfig,
    settings: DecisionSettings,
    clock: Callable[[], float],
    *,
    phase: _Phase,
) -> list[ChurnRow]:
    rng = random.Random(f"{config.seed}/churn/{name}")
    initial = draw_mix(rng, topo, 0.7)
    arrivals = arrival_sequence(rng, topo, initial, events=config.events)
    rows = []
    for allocator in (Allocator.GREEDY, Allocator.OPTIMAL):
        mode = DecisionSettings(allocator=allocator, budget_ms=settings.budget_ms, gap=settings.gap)
        first = decide(topo, initial, {}, kind=EventKind.ADD, settings=mode, clock=clock)
        current = [w for w in initial if w.id in first.placement.assignments]
        previous = _exclusive_cpusets(current, first.placement.as_cpusets())
        moved: list[int] = []
        requested: list[int] = []
        times: list[float] = []
        costs: list[float] = []
        vectors: list[tuple[float, ...]] = []
        scratch: list[tuple[float, ...]] = []
        drift = 0
        refused = 0
        for event in arrivals:
            phase.advance()
            ids = {w.id for w in current}
            if event.kind == "remove":
                if event.workload.id not in ids:
                    continue  # refused on arrival, or never placed
                workloads = [w for w in current if w.id != event.workload.id]
                kind = EventKind.REMOVE
            else:
                workloads = [*current, event.workload]
                kind = EventKind.ADD
            decision = decide(topo, workloads, previous, kind=kind, settings=mode, clock=clock)
            placed = decision.placement.assignments
            refused += len(decision.placement.refusals)
            current = [w for w in workloads if w.id in placed]
            previous = _exclusive_cpusets(current, decision.placement.as_cpusets())
            moved.append(decision.moved_cpus)
            requested.append(decision.requested_cpus)
            times.append(decision.solve_ms)
            costs.append(decision.cost.total)
            vector = decision.cost.priorities[:3]
            vectors.append(vector)
            fresh = place_optimal(
                topo, current, budget_ms=settings.budget_ms, gap=settings.gap
            ).cost.priorities[:3]
            scratch.append(fresh)
            drift += vector[:2] > fresh[:2]
        rows.append(
            ChurnRow(
                name,
                str(allocator),
                len(moved),
                moved,
                requested,
                times,
                costs,
                refused,
                vectors=vectors,
                drift=drift,
                scratch=scratch,
            )
        )
    return rows


def _burst(
    topo: Topology,
    config: PlacementBenchConfig,
    settings: DecisionSettings,
    clock: Callable[[], float],
    *,
    phase: _Phase,
) -> dict[str, Any]:
    rng = random.Random(f"{config.seed}/burst")
    initial = draw_mix(rng, topo, 0.3)
    first = decide(topo, initial, {}, kind=EventKind.ADD, settings=settings, clock=clock)
    current = [w for w in initial if w.id in first.placement.assignments]
    previous = _exclusive_cpusets(current, first.placement.as_cpusets())
    adds: list[Workload] = []
    room = 0.85 * len(topo.cpus) - sum(w.cpus for w in current)
    while len(adds) < config.burst_size:
        w = draw_workload(rng, topo, f"b{len(adds)}")
        if w.cpus > room:
            break
        room -= w.cpus
        adds.append(w)
    events = [Event(EventKind.ADD, workload=w, at=i * 0.001) for i, w in enumerate(adds)]
    phase.total = len(adds) + 1
    batch, _ = decide_batch(topo, current, previous, events, settings=settings, clock=clock)
    phase.advance()
    one_by_one_ms = 0.0
    moved_one_by_one = 0
    state, prev = list(current), dict(previous)
    for w in adds:
        decision = decide(
            topo, [*state, w], prev, kind=EventKind.ADD, settings=settings, clock=clock
        )
        one_by_one_ms += decision.solve_ms
        moved_one_by_one += decision.moved_cpus
        state = [x for x in [*state, w] if x.id in decision.placement.assignments]
        prev = _exclusive_cpusets(state, decision.placement.as_cpusets())
        phase.advance()
    return {
        "preset": config.burst_preset,
        "adds": len(adds),
        "batch_ms": round(batch.solve_ms, 2),
        "batch_cost": round(batch.cost.total, 4),
        "batch_moved_cpus": batch.moved_cpus,
        "one_by_one_ms": round(one_by_one_ms, 2),
        "one_by_one_moved_cpus": moved_one_by_one,
        "speedup": round(one_by_one_ms / batch.solve_ms, 1) if batch.solve_ms else None,
    }


def _solvers(
    topo: Topology, config: PlacementBenchConfig, clock: Callable[[], float], *, phase: _Phase
) -> dict[str, Any]:
    results: dict[str, dict[str, list[float]]] = {}
    for label, solver in (("highspy", solve_highs), ("scipy", solve_scipy)):
        times: list[float] = []
        costs: list[float] = []
        proven: list[float] = []
        for index in range(config.solver_instances):
            rng = random.Random(f"{config.seed}/solver/{index}")
            workloads = draw_mix(rng, topo, 0.8)
            result = place_optimal(
                topo,
                workloads,
                budget_ms=config.budget_ms,
                gap=config.gap,
                solver=solver,
                clock=clock,
            )
            times.append(result.solve_ms)
            costs.append(result.cost.total)
            proven.append(1.0 if result.optimal else 0.0)
            phase.advance()
        results[label] = {"ms": times, "cost": costs, "proven": proven}
    return {
        "preset": config.solver_preset,
        **{
            label: {
                "ms_p50": _pct(r["ms"], 50),
                "mean_cost": round(statistics.fmean(r["cost"]), 4),
                "proven_fraction": round(statistics.fmean(r["proven"]), 3),
            }
            for label, r in results.items()
        },
    }


def _mean_vector(vectors: Sequence[tuple[float, ...]]) -> dict[str, float] | None:
    if not vectors:
        return None
    names = ("spread", "shared_cores", "sibling_cores")
    return {name: round(statistics.fmean(v[i] for v in vectors), 3) for i, name in enumerate(names)}


def _pct(values: Sequence[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _aggregate(runs: list[Run]) -> dict[str, Any]:
    gaps = [r.gap for r in runs if r.gap is not None]
    return {
        "ms_p50": _pct([r.ms for r in runs], 50),
        "ms_p99": _pct([r.ms for r in runs], 99),
        "solver_ms_p50": _pct([r.mip_ms for r in runs], 50),
        "cost": round(statistics.fmean(r.cost.total for r in runs), 4),
        "terms": {
            term: round(statistics.fmean(r.cost.terms[term].weighted for r in runs), 4)
            for term in TERMS
        },
        "cross_numa": sum(r.cost.cross_numa_workloads for r in runs),
        "shared_cores": sum(r.cost.shared_cores for r in runs),
        "refused": sum(r.refused for r in runs),
        "gap_pct_p50": round(100 * float(np.median(gaps)), 3) if gaps else None,
        "gap_pct_max": round(100 * max(gaps), 3) if gaps else None,
        "proven": sum(r.optimal for r in runs),
        "fell_back": sum(r.fell_back for r in runs),
        "kept_mip": sum(r.source in ("mip", "decomposition") for r in runs),
        "instances": len(runs),
    }
