"""Workload mixes and arrival sequences for the placement benchmark.

Request sizes follow the Bitbrains GWA-T-12 "Rnd" VMs shipped in ../shared/traces (46% of
VMs with 1 core, 15% with 2, 28% with 4, 9% with 8, 2% with 32), capped at one NUMA node.
Predicted use spreads from near idle to busy, as in that trace (half the workloads under
20% of their request, the rest 30-100%).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from corral.placement.workload import Workload
from corral.topology.model import Topology

SIZES: tuple[tuple[int, float], ...] = ((1, 0.46), (2, 0.15), (4, 0.28), (8, 0.09), (32, 0.02))
SHARED_FRACTION = 0.15
"""Share of the requested CPUs that goes to shared (pool) workloads."""


def draw_size(rng: random.Random, cap: int) -> int:
    """One request size from the Bitbrains distribution, at most ``cap``."""
    sizes = [size for size, _ in SIZES]
    weights = [p for _, p in SIZES]
    drawn: int = rng.choices(sizes, weights)[0]
    return min(drawn, cap)


def draw_use(rng: random.Random, cpus: float) -> float:
    """A predicted P95 use for a request of ``cpus``: near idle or busy, half and half."""
    share = rng.uniform(0.02, 0.2) if rng.random() < 0.5 else rng.uniform(0.3, 1.0)
    return round(cpus * share, 3)


def draw_workload(rng: random.Random, topology: Topology, wid: str) -> Workload:
    """One workload: exclusive LC most of the time, a shared BE one otherwise."""
    cap = min(len(topology.cpus_in_numa(n)) for n in topology.numa_nodes)
    if rng.random() < SHARED_FRACTION:
        cpus = rng.choice([0.5, 1.0, 2.0, 4.0])
        return Workload(
            id=wid, qos="BE", cpus=cpus, policy="shared", predicted_cpus=draw_use(rng, cpus)
        )
    size = draw_size(rng, cap)
    return Workload(
        id=wid, qos="LC", cpus=size, policy="exclusive", predicted_cpus=draw_use(rng, size)
    )


def draw_mix(rng: random.Random, topology: Topology, fill: float) -> list[Workload]:
    """Workloads whose requests add up to about ``fill`` of the host's CPUs (never more)."""
    target = fill * len(topology.cpus)
    workloads: list[Workload] = []
    total = 0.0
    misses = 0
    while misses < 20:
        w = draw_workload(rng, topology, f"w{len(workloads)}")
        if total + w.cpus > target:
            misses += 1
            continue
        workloads.append(w)
        total += w.cpus
    return workloads


@dataclass(frozen=True, slots=True)
class Arrival:
    """An event of the arrival/departure sequence."""

    at: float
    kind: str  # "add" or "remove"
    workload: Workload


def arrival_sequence(
    rng: random.Random,
    topology: Topology,
    initial: list[Workload],
    *,
    events: int,
    fill: float = 0.8,
    mean_lifetime: float = 600.0,
) -> list[Arrival]:
    """The first ``events`` adds and removes after ``initial`` is placed: Poisson arrivals
    sized so the host hovers around ``fill`` of its CPUs requested (Little's law) and
    exponential lifetimes, for the initial workloads too (memoryless, so the sequence
    starts in steady state)."""
    mean_size = sum(size * p for size, p in SIZES)
    rate = fill * len(topology.cpus) / (mean_size * mean_lifetime)
    timeline = [Arrival(rng.expovariate(1 / mean_lifetime), "remove", w) for w in initial]
    now = 0.0
    for index in range(events):
        now += rng.expovariate(rate)
        w = draw_workload(rng, topology, f"a{index}")
        timeline.append(Arrival(now, "add", w))
        timeline.append(Arrival(now + rng.expovariate(1 / mean_lifetime), "remove", w))
    timeline.sort(key=lambda a: a.at)
    return timeline[:events]
