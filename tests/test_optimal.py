"""The optimal allocator: same optimum as brute force, invariants, budget, fallback."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator, Mapping
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.placement.allocate import Allocator, allocate
from corral.placement.cost import CostWeights, explain
from corral.placement.greedy import place_greedy
from corral.placement.optimal import (
    Method,
    MipModel,
    MipSolution,
    SolverError,
    place_optimal,
    solve_highs,
    solve_scipy,
)
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology
from corral.topology.presets import build_topology, epyc_9754_2s, preset, toy_16

P = CpuSet.parse

SMALL_SHAPES = {
    "2s-2c-2t": lambda: build_topology(sockets=2, cores_per_socket=2, threads_per_core=2),
    "1s-2l3-2t": lambda: build_topology(
        sockets=1, cores_per_socket=4, threads_per_core=2, cores_per_l3=2
    ),
    "2s-2numa-1t": lambda: build_topology(
        sockets=2, cores_per_socket=4, threads_per_core=1, numa_per_socket=2
    ),
}


def _exclusive(wid: str, cpus: int, use: float | None = None) -> Workload:
    return Workload(id=wid, qos="LC", cpus=cpus, policy="exclusive", predicted_cpus=use)


def _assignments(cpus: tuple[int, ...], sizes: list[int]) -> Iterator[list[frozenset[int]]]:
    if not sizes:
        yield []
        return
    for chosen in itertools.combinations(cpus, sizes[0]):
        rest = tuple(c for c in cpus if c not in chosen)
        for tail in _assignments(rest, sizes[1:]):
            yield [frozenset(chosen), *tail]


def _brute_force(
    topo: Topology,
    workloads: list[Workload],
    *,
    previous: Mapping[str, CpuSet] | None = None,
    weights: CostWeights | None = None,
) -> float:
    exclusive = [w for w in workloads if w.policy is Policy.EXCLUSIVE]
    by_id = {w.id: w for w in workloads}
    best = float("inf")
    for combo in _assignments(topo.all_cpus.ids(), [w.whole_cpus for w in exclusive]):
        cpusets = {w.id: CpuSet(c) for w, c in zip(exclusive, combo, strict=True)}
        pool = topo.all_cpus - CpuSet().union(*cpusets.values())
        for w in workloads:
            if w.policy is Policy.SHARED:
                cpusets[w.id] = pool
        cost = explain(topo, by_id, cpusets, previous=previous, weights=weights).total
        best = min(best, cost)
    return best


def _brute_force_vector(
    topo: Topology, workloads: list[Workload], *, previous: Mapping[str, CpuSet] | None = None
) -> tuple[float, ...]:
    """The lexicographically smallest priority vector (first six entries) of any
    placement of the exclusive workloads."""
    exclusive = [w for w in workloads if w.policy is Policy.EXCLUSIVE]
    by_id = {w.id: w for w in workloads}
    best: tuple[float, ...] | None = None
    for combo in _assignments(topo.all_cpus.ids(), [w.whole_cpus for w in exclusive]):
        cpusets = {w.id: CpuSet(c) for w, c in zip(exclusive, combo, strict=True)}
        pool = topo.all_cpus - CpuSet().union(*cpusets.values())
        for w in workloads:
            if w.policy is Policy.SHARED:
                cpusets[w.id] = pool
        vector = explain(topo, by_id, cpusets, previous=previous).priorities[:6]
        best = vector if best is None or vector < best else best
    assert best is not None
    return best


def _random_instance(rng: random.Random, topo: Topology) -> list[Workload]:
    n_cpus = len(topo.cpus)
    workloads: list[Workload] = []
    left = n_cpus - 1
    for index in range(rng.randint(1, 3)):
        size = rng.randint(1, min(3, left))
        if size <= 0:
            break
        left -= size
        use = round(rng.uniform(0.1, 1.0) * size, 2) if rng.random() < 0.7 else None
        workloads.append(_exclusive(f"w{index}", size, use))
        if left <= 1:
            break
    if rng.random() < 0.6:
        workloads.append(
            Workload(id="be", cpus=1, policy="shared", predicted_cpus=rng.uniform(0, 1))
        )
    return workloads


@pytest.mark.parametrize("shape", sorted(SMALL_SHAPES))
@pytest.mark.parametrize("seed", range(6))
def test_optimal_matches_brute_force_on_small_instances(shape: str, seed: int) -> None:
    topo = SMALL_SHAPES[shape]()
    rng = random.Random(seed * 101 + len(shape))
    workloads = _random_instance(rng, topo)
    result = place_optimal(topo, workloads, budget_ms=5000, gap=0.0, method=Method.MIP)
    assert result.cost.priorities <= result.greedy_cost.priorities
    if result.source == "mip":
        # The MIP's weighted objective is exact: what it keeps is the weighted optimum.
        assert result.cost.total == pytest.approx(_brute_force(topo, workloads), abs=1e-7)
        assert result.optimal
        assert result.gap == pytest.approx(0.0, abs=1e-6)
    auto = place_optimal(topo, workloads)
    assert auto.cost.priorities <= result.cost.priorities
    if auto.method == "decomposition":
        # Spread, shared and sibling cores are exact; the rest when proven (L3 balance
        # inside a node is left to the extraction, whose bound cannot prove it).
        vector = _brute_force_vector(topo, workloads)
        assert auto.cost.priorities[:3] == vector[:3]
        assert auto.optimal == (auto.cost.priorities[:6] == auto.priority_bound)
        if auto.optimal:
            assert auto.cost.priorities[:6] == vector


@pytest.mark.parametrize("seed", range(4))
def test_optimal_matches_brute_force_with_churn(seed: int) -> None:
    topo = SMALL_SHAPES["2s-2c-2t"]()
    rng = random.Random(seed)
    workloads = _random_instance(rng, topo)
    exclusive = [w for w in workloads if w.policy is Policy.EXCLUSIVE]
    # Previous CPUs: a random valid placement of the same workloads.
    cpus = list(topo.all_cpus.ids())
    rng.shuffle(cpus)
    previous: dict[str, CpuSet] = {}
    for w in exclusive:
        previous[w.id] = CpuSet(cpus[: w.whole_cpus])
        cpus = cpus[w.whole_cpus :]
    weights = CostWeights(churn=rng.choice([0.5, 2.0, 8.0]))
    result = place_optimal(
        topo,
        workloads,
        budget_ms=5000,
        gap=0.0,
        previous=previous,
        weights=weights,
        method=Method.MIP,
    )
    assert result.cost.priorities <= result.greedy_cost.priorities
    # The MIP minimises the weighted total; the better of its answer and greedy's (the
    # comparison it was kept by before priorities) is the weighted optimum.
    expected = _brute_force(topo, workloads, previous=previous, weights=weights)
    best_weighted = min(result.cost.total, result.greedy_cost.total)
    assert best_weighted == pytest.approx(expected, abs=1e-7)
    auto = place_optimal(topo, workloads, previous=previous)
    # Spread, shared and sibling cores and L3 are exact whatever the previous CPUs;
    # churn is kept low by the extraction and never above greedy's at equal levels.
    vector = _brute_force_vector(topo, workloads, previous=previous)
    assert auto.cost.priorities[:4] == vector[:4]
    assert auto.cost.priorities <= auto.greedy_cost.priorities


def test_optimal_keeps_workloads_on_one_socket_where_greedy_splits_them() -> None:
    topo = toy_16()
    # Immovable CPUs 0 and 4 leave 7 CPUs on each socket: 4+3 fit on each, but kubelet's
    # largest-first packing splits two workloads across the sockets.
    workloads = [
        Workload(id="pin", cpus=1, policy="immovable", cpuset="0,4"),
        _exclusive("a", 4),
        _exclusive("b", 4),
        _exclusive("c", 3),
        _exclusive("d", 3),
    ]
    result = place_optimal(topo, workloads, budget_ms=2000)
    assert result.greedy_cost.cross_socket_workloads == 2
    assert result.cost.cross_socket_workloads == 0
    assert result.source == "mip"
    assert result.cost.priorities < result.greedy_cost.priorities


@st.composite
def _instances(draw: st.DrawFn) -> tuple[Topology, list[Workload], CpuSet]:
    topo = draw(
        st.sampled_from([toy_16(), SMALL_SHAPES["1s-2l3-2t"](), SMALL_SHAPES["2s-2numa-1t"]()])
    )
    all_ids = list(topo.all_cpus.ids())
    offline = draw(st.sets(st.sampled_from(all_ids), max_size=3))
    online = topo.all_cpus - CpuSet(offline)
    workloads: list[Workload] = []
    for index in range(draw(st.integers(1, 6))):
        policy = draw(st.sampled_from(["exclusive", "exclusive", "shared", "numa", "immovable"]))
        cpus = draw(st.integers(1, 6))
        use = draw(st.none() | st.floats(0, float(cpus)))
        if policy == "immovable":
            fixed = draw(st.sets(st.sampled_from(all_ids), min_size=1, max_size=2))
            workloads.append(
                Workload(id=f"w{index}", cpus=cpus, policy=policy, cpuset=CpuSet(fixed))
            )
        else:
            workloads.append(Workload(id=f"w{index}", cpus=cpus, policy=policy, predicted_cpus=use))
    return topo, workloads, online


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_instances(), st.booleans())
def test_invariants_hold_for_any_instance(
    instance: tuple[Topology, list[Workload], CpuSet], full_cores: bool
) -> None:
    topo, workloads, online = instance
    result = place_optimal(topo, workloads, online=online, full_cores=full_cores, budget_ms=200)
    placement = result.placement
    by_id = {w.id: w for w in workloads}
    seen: dict[int, str] = {}
    fixed = CpuSet().union(
        *(w.cpuset for w in workloads if w.policy is Policy.IMMOVABLE and w.cpuset)
    )
    for wid, assignment in placement.assignments.items():
        w = by_id[wid]
        assert assignment.cpuset.issubset(online), "cpusets stay within online CPUs"
        assert assignment.reason
        if w.policy is Policy.EXCLUSIVE:
            assert len(assignment.cpuset) == w.whole_cpus
            assert assignment.cpuset.isdisjoint(fixed)
            for cpu in assignment.cpuset:
                assert cpu not in seen, f"CPU {cpu} given to {seen.get(cpu)} and {wid}"
                seen[cpu] = wid
            if full_cores:
                assert topo.whole_cores_within(assignment.cpuset) == assignment.cpuset
    for w in workloads:
        assert (w.id in placement.assignments) != (w.id in placement.refusals)
        if w.id in placement.refusals:
            assert placement.refusals[w.id].reason
    assert len(placement.refusals) <= len(
        place_greedy(topo, workloads, online=online, full_cores=full_cores).refusals
    )
    assert result.cost.priorities <= result.greedy_cost.priorities


def test_an_impossible_request_is_refused_with_the_reason() -> None:
    topo = toy_16()
    workloads = [_exclusive("big", 20), _exclusive("ok", 2)]
    result = place_optimal(topo, workloads)
    assert "big" in result.placement.refusals
    assert "requested=20" in result.placement.refusals["big"].reason
    assert len(result.placement.cpuset_of("ok")) == 2


def _big_instance() -> tuple[Topology, list[Workload]]:
    topo = epyc_9754_2s()
    rng = random.Random(7)
    workloads = []
    total = 0
    while total < 0.85 * len(topo.cpus):
        size = rng.choice([1, 2, 3, 4, 6, 8, 16])
        total += size
        workloads.append(
            _exclusive(f"w{len(workloads)}", size, round(size * rng.uniform(0.1, 1), 2))
        )
    return topo, workloads


@pytest.mark.slow
def test_time_budget_is_passed_to_the_solver_and_a_cut_short_solve_is_not_called_optimal() -> None:
    topo, workloads = _big_instance()
    limits: list[float] = []

    def recording(model: MipModel, **kwargs: object) -> MipSolution:
        limits.append(float(kwargs["time_limit_s"]))  # type: ignore[arg-type]
        return solve_highs(model, **kwargs)  # type: ignore[arg-type]

    result = place_optimal(topo, workloads, budget_ms=5, solver=recording)
    assert limits and max(limits) <= 0.005
    assert not result.optimal
    assert result.cost.priorities <= result.greedy_cost.priorities


def test_solver_error_falls_back_to_greedy_and_says_why() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3), _exclusive("b", 2)]

    def broken(model: MipModel, **kwargs: object) -> MipSolution:
        raise SolverError("injected failure")

    result = place_optimal(topo, workloads, solver=broken, method=Method.MIP)
    assert result.fell_back
    assert "injected failure" in result.fallback_reason
    assert result.source == "greedy"
    assert result.placement.as_cpusets() == place_greedy(topo, workloads).as_cpusets()


def test_a_solver_that_finds_nothing_falls_back_to_greedy() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3)]

    def empty(model: MipModel, **kwargs: object) -> MipSolution:
        return MipSolution(
            values=None, objective=None, bound=None, status="Time limit reached", proven=False
        )

    result = place_optimal(topo, workloads, solver=empty, method=Method.MIP)
    assert result.fell_back
    assert "found no placement" in result.fallback_reason


def test_a_solver_returning_an_impossible_solution_falls_back() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3)]

    def wrong(model: MipModel, **kwargs: object) -> MipSolution:
        return MipSolution(
            values=np.zeros(len(model.cost)), objective=0.0, bound=0.0, status="x", proven=True
        )

    result = place_optimal(topo, workloads, solver=wrong, method=Method.MIP)
    assert result.fell_back
    assert "unusable" in result.fallback_reason


def test_scipy_and_highspy_backends_agree() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3, 2.0), _exclusive("b", 5, 1.0), _exclusive("c", 2, 2.0)]
    by_highs = place_optimal(topo, workloads, budget_ms=5000, gap=0.0, method=Method.MIP)
    by_scipy = place_optimal(
        topo, workloads, budget_ms=5000, gap=0.0, solver=solve_scipy, method=Method.MIP
    )
    assert by_highs.cost.total == pytest.approx(by_scipy.cost.total, abs=1e-9)


def test_allocate_routes_to_the_optimal_allocator() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3), _exclusive("b", 2)]
    placement = allocate(topo, workloads, allocator=Allocator.OPTIMAL, budget_ms=500)
    assert sorted(placement.assignments) == ["a", "b"]
    kept = allocate(topo, workloads, previous={"a": P("5-7"), "b": P("0-1")})
    assert kept.cpuset_of("a") == P("5-7")


def test_place_cli_reports_cost_terms_gap_and_churn_against_previous(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from typer.testing import CliRunner

    from corral.cli import app

    spec = tmp_path / "w.yaml"
    spec.write_text(
        "workloads:\n"
        "  - {id: pin, cpus: 1, policy: immovable, cpuset: '0,4'}\n"
        "  - {id: a, qos: LC, cpus: 4, policy: exclusive}\n"
        "  - {id: b, qos: LC, cpus: 4, policy: exclusive}\n"
        "  - {id: c, qos: LC, cpus: 3, policy: exclusive}\n"
        "  - {id: d, qos: LC, cpus: 3, policy: exclusive}\n"
    )
    runner = CliRunner()
    args = [
        "place",
        "-t",
        "toy-16",
        "-w",
        str(spec),
        "--allocator",
        "optimal",
        "--budget-ms",
        "2000",
    ]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc["cost"]) == {
        "numa_spread",
        "socket_spread",
        "shared_cores",
        "siblings",
        "imbalance",
        "fragmentation",
        "churn",
    }
    assert doc["optimal"] is True
    assert doc["gap"] == 0
    assert doc["fell_back"] is False
    assert doc["bound"] is not None
    assert doc["solve_ms"] > 0
    previous = tmp_path / "prev.json"
    previous.write_text(json.dumps({"assignments": {"a": "1-2,9-10"}}))
    again = runner.invoke(app, [*args, "--json", "--previous", str(previous)])
    assert json.loads(again.stdout)["assignments"]["a"] == "1-2,9-10"
    human = runner.invoke(app, args)
    assert "proven optimal" in human.stdout
    assert "shared_cores" in human.stdout
    bad = runner.invoke(app, [*args, "--weight", "nope=1"])
    assert bad.exit_code == 2
    assert "unknown cost term" in bad.output


def _bench_like_mix(topo: Topology, seed: int, fill: float) -> list[Workload]:
    from corral.bench._mixes import draw_mix

    return draw_mix(random.Random(seed), topo, fill)


@pytest.mark.parametrize("seed", range(3))
def test_ccx_host_leaves_no_hot_l3_domain_and_proves_the_placement(seed: int) -> None:
    # 256 threads, four L3 domains per NUMA node: the MIP decides per node, the
    # extraction balances the node's L3 domains, so the bound proves the whole cost.
    topo = preset("epyc-7742-2s")
    workloads = _bench_like_mix(topo, seed, 0.8)
    result = place_optimal(topo, workloads, budget_ms=5000)
    assert result.cost.terms["imbalance"].weighted == pytest.approx(0.0, abs=1e-9)
    assert result.optimal
    assert result.gap is not None and result.gap <= 0.001 + 1e-9
    assert result.cost.priorities <= result.greedy_cost.priorities


@pytest.mark.parametrize("seed", range(3))
def test_lp_relaxation_bounds_the_optimum_on_a_two_socket_host(seed: int) -> None:
    # The free-block and parity cuts make the LP relaxation as strong as the MIP here.
    topo = preset("r4.16xlarge")
    workloads = _bench_like_mix(topo, seed, 0.8)
    models: list[MipModel] = []

    def recording(model: MipModel, **kwargs: object) -> MipSolution:
        models.append(model)
        return solve_highs(model, **kwargs)  # type: ignore[arg-type]

    result = place_optimal(topo, workloads, budget_ms=5000, solver=recording, method=Method.MIP)
    relaxed = replace(models[0], integer=np.zeros_like(models[0].integer))
    lp = solve_highs(relaxed, time_limit_s=5.0, gap=0.0)
    assert result.optimal
    assert lp.objective is not None
    assert lp.objective == pytest.approx(result.cost.total, abs=1e-6)


def test_an_infeasible_start_is_never_taken_for_the_answer() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 3, 2.0), _exclusive("b", 5, 1.0)]
    models: list[MipModel] = []

    def recording(model: MipModel, **kwargs: object) -> MipSolution:
        models.append(model)
        return solve_highs(model, **kwargs)  # type: ignore[arg-type]

    expected = place_optimal(
        topo, workloads, budget_ms=5000, gap=0.0, solver=recording, method=Method.MIP
    )
    start = np.zeros(len(models[0].cost))
    solution = solve_highs(models[0], time_limit_s=5.0, gap=0.0, warm_start=start)
    assert solution.values is not None
    assert not solution.from_start
    assert solution.proven
    assert solution.objective == pytest.approx(expected.cost.total, abs=1e-7)
