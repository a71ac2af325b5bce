"""The exact decomposition: priority order against brute force on small hosts and against
an independent MIP of the node assignment on large ones; never worse than greedy; no
path dependence through a sequence of decisions."""

from __future__ import annotations

import random

import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from corral.bench.placement import big_instance, family_instance, family_topology
from corral.placement.cost import explain
from corral.placement.decisions import DecisionSettings, EventKind, decide
from corral.placement.greedy import place_greedy
from corral.placement.lexicographic import node_costs, unsupported
from corral.placement.optimal import place_optimal
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology
from corral.topology.presets import build_topology, preset, toy_16
from tests.test_optimal import _assignments, _brute_force_vector

SMALL = {
    "2s-2c-2t": lambda: build_topology(sockets=2, cores_per_socket=2, threads_per_core=2),
    "2s-3c-2t": lambda: build_topology(sockets=2, cores_per_socket=3, threads_per_core=2),
    "1s-4c-2t": lambda: build_topology(sockets=1, cores_per_socket=4, threads_per_core=2),
    "2s-3c-1t": lambda: build_topology(sockets=2, cores_per_socket=3, threads_per_core=1),
    "2numa-1s": lambda: build_topology(
        sockets=1, cores_per_socket=4, threads_per_core=2, numa_per_socket=2
    ),
}


def _exclusive(wid: str, cpus: int) -> Workload:
    return Workload(id=wid, qos="LC", cpus=cpus, policy="exclusive")


def _small_instance(rng: random.Random, topo: Topology) -> list[Workload]:
    # Small enough to enumerate every placement in well under a second.
    big = len(topo.cpus) > 8
    left = len(topo.cpus) - (1 if big else 0)
    workloads: list[Workload] = []
    for index in range(rng.randint(1, 2 if big else 3)):
        if left <= 0:
            break
        size = rng.randint(1, min(3 if big else 5, left))
        left -= size
        workloads.append(_exclusive(f"w{index}", size))
    if rng.random() < 0.4:
        workloads.append(Workload(id="be", cpus=1, policy="shared"))
    return workloads


def _random_previous(
    rng: random.Random, topo: Topology, workloads: list[Workload]
) -> dict[str, CpuSet]:
    cpus = list(topo.all_cpus.ids())
    rng.shuffle(cpus)
    previous = {}
    for w in workloads:
        if w.policy is Policy.EXCLUSIVE:
            previous[w.id] = CpuSet(cpus[: w.whole_cpus])
            cpus = cpus[w.whole_cpus :]
    return previous


@pytest.mark.parametrize("shape", sorted(SMALL))
@pytest.mark.parametrize("seed", range(20))
def test_the_vector_is_the_brute_force_minimum_on_small_hosts(shape: str, seed: int) -> None:
    topo = SMALL[shape]()
    rng = random.Random(f"{shape}/{seed}")
    workloads = _small_instance(rng, topo)
    result = place_optimal(topo, workloads)
    assert result.method == "decomposition"
    assert result.optimal
    expected = _brute_force_vector(topo, workloads)
    assert result.cost.priorities[:6] == expected
    assert result.priority_bound == expected
    assert result.cost.priorities <= result.greedy_cost.priorities


@pytest.mark.parametrize("shape", ["2s-2c-2t", "2s-3c-2t", "1s-4c-2t"])
@pytest.mark.parametrize("seed", range(6))
def test_with_previous_cpus_the_first_four_levels_stay_exact(shape: str, seed: int) -> None:
    topo = SMALL[shape]()
    rng = random.Random(f"prev/{shape}/{seed}")
    workloads = _small_instance(rng, topo)
    previous = _random_previous(rng, topo, workloads)
    result = place_optimal(topo, workloads, previous=previous)
    expected = _brute_force_vector(topo, workloads, previous=previous)
    assert result.cost.priorities[:4] == expected[:4]
    assert result.priority_bound is not None
    assert result.priority_bound[:4] == expected[:4]
    assert result.priority_bound[4] <= expected[4]  # the churn bound is a bound
    assert result.cost.priorities <= result.greedy_cost.priorities
    if result.optimal:
        assert result.cost.priorities[:6] == expected


def test_node_costs_closed_forms() -> None:
    # 4 cores, 5 threads in 3 odd parts (1+1+3): 3 free threads take the 3 odd threads.
    assert node_costs(8, 5, 3, per_core=2, pool_used=False) == (0, 1, 3)
    # 7 threads in 3 odd parts on 8: one free thread, so two odd parts pair on one core.
    assert node_costs(8, 7, 3, per_core=2, pool_used=False) == (1, 2, 3)
    # With the pool in use every single thread shares: pairs, and one lone odd part.
    assert node_costs(8, 5, 3, per_core=2, pool_used=True) == (2, 1, 3)
    assert node_costs(8, 5, 3, per_core=1, pool_used=True) == (0, 0, 5)
    # Few threads: each on its own core.
    assert node_costs(8, 3, 1, per_core=2, pool_used=False) == (0, 0, 3)


def test_hosts_outside_the_decomposition_say_why() -> None:
    everything = CpuSet(range(10_000))
    assert unsupported(preset("epyc-7742-2s"), everything, full_cores=False) != ""
    four = build_topology(sockets=2, cores_per_socket=4, threads_per_core=2, numa_per_socket=2)
    assert "4 NUMA nodes" in unsupported(four, four.all_cpus, full_cores=False)
    assert unsupported(toy_16(), toy_16().all_cpus, full_cores=True) == "full cores"
    half = toy_16().all_cpus - CpuSet([0])
    assert "immovable" in unsupported(toy_16(), half, full_cores=False)
    assert unsupported(toy_16(), toy_16().all_cpus, full_cores=False) == ""


def _node_assignment_mip(topo: Topology, workloads: list[Workload]) -> float:
    """Fewest shared cores over whole-workload node assignments, by an independent MIP
    (scipy/HiGHS): x[w, n] binary, s[n] >= (odd_n - free_n) / 2, s[n] >= 0."""
    nodes = list(topo.numa_nodes)
    caps = [len(topo.cpus_in_numa(n)) for n in nodes]
    n_w, n_n = len(workloads), len(nodes)
    n_x = n_w * n_n
    cost = np.concatenate([np.zeros(n_x), np.ones(n_n)])
    rows, lower, upper = [], [], []
    for i in range(n_w):  # each workload on one node
        row = np.zeros(n_x + n_n)
        row[i * n_n : (i + 1) * n_n] = 1
        rows.append(row)
        lower.append(1)
        upper.append(1)
    for j in range(n_n):
        cap = np.zeros(n_x + n_n)
        share = np.zeros(n_x + n_n)
        for i, w in enumerate(workloads):
            cap[i * n_n + j] = w.whole_cpus
            # 2 s_n - odd_n - threads_n >= -cap_n
            share[i * n_n + j] = -(w.whole_cpus % 2) - w.whole_cpus
        share[n_x + j] = 2
        rows.extend([cap, share])
        lower.extend([-np.inf, -caps[j]])
        upper.extend([caps[j], np.inf])
    result = milp(
        c=cost,
        integrality=np.ones(n_x + n_n),
        bounds=Bounds(np.zeros(n_x + n_n), np.concatenate([np.ones(n_x), np.full(n_n, 1e4)])),
        constraints=LinearConstraint(np.array(rows), lower, upper),
    )
    assert result.status == 0
    return float(result.fun)


@pytest.mark.parametrize("threads", [64, 128, 256])
@pytest.mark.parametrize("seed", range(3))
def test_large_family_instances_meet_the_bound_and_an_independent_mip(
    threads: int, seed: int
) -> None:
    topo = family_topology(threads)
    workloads = family_instance(random.Random(f"test/{threads}/{seed}"), threads)
    result = place_optimal(topo, workloads)
    assert result.optimal
    assert result.priority_bound == result.cost.priorities[:6]
    assert result.cost.cross_socket_workloads == 0
    assert result.cost.shared_cores == result.shared_cores_bound
    assert result.shared_cores_bound == pytest.approx(_node_assignment_mip(topo, workloads))
    greedy = place_greedy(topo, workloads)
    by_id = {w.id: w for w in workloads}
    assert result.cost.priorities <= explain(topo, by_id, greedy.as_cpusets()).priorities


def test_512_threads_and_200_workloads_is_proven() -> None:
    topo = family_topology(512)
    workloads = big_instance(random.Random("test/512"), 200)
    result = place_optimal(topo, workloads)
    assert result.optimal
    assert result.cost.shared_cores == result.shared_cores_bound
    placed = result.placement.as_cpusets()
    assert sum(len(c) for c in placed.values()) == sum(w.whole_cpus for w in workloads)
    assert len(CpuSet().union(*placed.values())) == sum(w.whole_cpus for w in workloads)


@pytest.mark.parametrize("seed", range(10))
def test_never_worse_than_greedy_with_pools_immovables_and_previous(seed: int) -> None:
    rng = random.Random(f"mixed/{seed}")
    topo = family_topology(64)
    workloads = family_instance(rng, 64)[: rng.randint(3, 12)]
    # An immovable workload on a whole core, best-effort work in the pool.
    workloads.append(Workload(id="pin", cpus=2, policy="immovable", cpuset="62-63"))
    if rng.random() < 0.5:
        workloads.append(Workload(id="be", cpus=2, policy="shared"))
    previous = _random_previous(rng, topo, workloads) if rng.random() < 0.5 else {}
    previous = {wid: cpus - CpuSet([62, 63]) for wid, cpus in previous.items()}
    previous = {wid: c for wid, c in previous.items() if c}
    result = place_optimal(topo, workloads, previous=previous)
    assert result.cost.priorities <= result.greedy_cost.priorities
    held = [a.cpuset for wid, a in result.placement.assignments.items() if wid not in ("be",)]
    assert sum(len(c) for c in held) == len(CpuSet().union(*held))
    greedy = place_greedy(topo, workloads, previous=previous)
    assert len(result.placement.refusals) <= len(greedy.refusals)


def test_a_sequence_of_decisions_stays_at_the_from_scratch_optimum() -> None:
    # Path dependence: after every add and remove, spread and shared cores equal those of
    # placing the same workloads from scratch, and the whole vector is never worse than
    # kubelet's incremental (greedy keeping) placement of the same event.
    topo = family_topology(64)
    rng = random.Random("sequence")
    settings = DecisionSettings()
    current: list[Workload] = []
    previous: dict[str, CpuSet] = {}
    for step in range(40):
        if current and (rng.random() < 0.4 or sum(w.whole_cpus for w in current) > 52):
            gone = rng.choice(current)
            current = [w for w in current if w.id != gone.id]
            kind = EventKind.REMOVE
        else:
            current = [*current, _exclusive(f"s{step}", rng.choice([1, 2, 3, 4, 6, 8]))]
            kind = EventKind.ADD
        before = dict(previous)
        decision = decide(topo, current, previous, kind=kind, settings=settings)
        current = [w for w in current if w.id in decision.placement.assignments]
        previous = decision.placement.as_cpusets()
        fresh = place_optimal(topo, current)
        assert decision.cost.priorities[:2] == fresh.cost.priorities[:2]
        kept = place_greedy(topo, current, previous=dict(before))
        by_id = {w.id: w for w in current}
        greedy_cost = explain(topo, by_id, kept.as_cpusets(), previous=dict(before))
        assert decision.cost.priorities <= greedy_cost.priorities


def test_brute_force_helper_enumerates_every_placement() -> None:
    # The helper the property tests rely on: C(4, 2) * C(2, 1) placements of 2 + 1.
    assert len(list(_assignments((0, 1, 2, 3), [2, 1]))) == 12


@pytest.mark.parametrize("seed", range(2))
def test_l3_domains_inside_a_node_keep_the_better_of_decomposition_and_mip(seed: int) -> None:
    # One NUMA node per socket, four-core L3 domains: the decomposition's extraction
    # spreads load over the L3 domains; the bound cannot prove L3 balance, so the MIP
    # runs as well and the better vector is kept.
    from corral.bench._mixes import draw_mix
    from corral.placement.optimal import Method

    topo = build_topology(sockets=2, cores_per_socket=8, threads_per_core=2, cores_per_l3=4)
    workloads = draw_mix(random.Random(f"ccx/{seed}"), topo, 0.8)
    result = place_optimal(topo, workloads, budget_ms=200)
    by_mip = place_optimal(topo, workloads, budget_ms=200, method=Method.MIP)
    assert result.cost.priorities <= by_mip.cost.priorities
    assert result.cost.priorities <= result.greedy_cost.priorities
