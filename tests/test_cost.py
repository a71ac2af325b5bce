"""The cost model on hand-made placements."""

from __future__ import annotations

import pytest

from corral.errors import InputError
from corral.placement.cost import PRIORITIES, CostWeights, better, explain
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import build_topology, toy_16

P = CpuSet.parse


def _exclusive(wid: str, cpus: int, use: float | None = None) -> Workload:
    return Workload(id=wid, qos="LC", cpus=cpus, policy="exclusive", predicted_cpus=use)


def test_checkerboard_placement_costs_more_than_one_socket_each() -> None:
    # toy-16: socket 0 = cores 0-3 (CPUs 0-3 and 8-11), socket 1 = cores 4-7.
    topo = toy_16()
    ws = {"a": _exclusive("a", 4), "b": _exclusive("b", 4)}
    per_socket = explain(topo, ws, {"a": P("0-1,8-9"), "b": P("4-5,12-13")})
    checkerboard = explain(topo, ws, {"a": P("0,4,8,12"), "b": P("1,5,9,13")})
    assert checkerboard.total > per_socket.total
    assert checkerboard.cross_numa_workloads == 2
    assert per_socket.cross_numa_workloads == 0
    assert checkerboard.terms["numa_spread"].raw == 2
    assert checkerboard.terms["socket_spread"].raw == 2
    assert per_socket.terms["numa_spread"].raw == 0


def test_two_busy_siblings_cost_more_than_two_idle_ones() -> None:
    topo = toy_16()
    busy = {"a": _exclusive("a", 1, 1.0), "b": _exclusive("b", 1, 1.0)}
    idle = {"a": _exclusive("a", 1, 0.05), "b": _exclusive("b", 1, 0.05)}
    split_core = {"a": P("0"), "b": P("8")}  # CPUs 0 and 8 are siblings
    busy_cost = explain(topo, busy, split_core)
    idle_cost = explain(topo, idle, split_core)
    assert busy_cost.shared_cores == idle_cost.shared_cores == 1
    assert busy_cost.terms["shared_cores"].raw == pytest.approx(1.0)
    assert idle_cost.terms["shared_cores"].raw == pytest.approx(0.1 + 0.9 * 0.05)
    assert busy_cost.total > idle_cost.total


def test_a_core_of_one_workload_is_not_a_shared_core_but_pays_the_siblings_term() -> None:
    topo = toy_16()
    ws = {"a": _exclusive("a", 2, 2.0)}
    whole = explain(topo, ws, {"a": P("0,8")})
    assert whole.shared_cores == 0
    assert whole.sibling_cores == 1
    assert whole.terms["siblings"].raw == pytest.approx(1.0)
    asked_whole_cores = explain(topo, ws, {"a": P("0,8")}, full_cores=True)
    assert asked_whole_cores.terms["siblings"].raw == 0


def test_hot_l3_domain_costs_imbalance_and_spread_load_does_not() -> None:
    # One socket, two L3 domains of two cores each.
    topo = build_topology(sockets=1, cores_per_socket=4, threads_per_core=2, cores_per_l3=2)
    ws = {"a": _exclusive("a", 2, 2.0), "b": _exclusive("b", 2, 2.0)}
    # L3 0 = cores 0,1 = CPUs 0,1,4,5.
    hot = explain(topo, ws, {"a": P("0,4"), "b": P("1,5")})
    even = explain(topo, ws, {"a": P("0,4"), "b": P("2,6")})
    assert hot.terms["imbalance"].raw > 0
    assert even.terms["imbalance"].raw == 0


def test_churn_counts_cpus_that_placed_workloads_lose() -> None:
    topo = toy_16()
    ws = {"a": _exclusive("a", 2), "b": _exclusive("b", 2)}
    before = {"a": P("0,8"), "b": P("1,9")}
    cost = explain(topo, ws, {"a": P("0,8"), "b": P("2,10")}, previous=before)
    assert cost.moved_cpus == 2
    assert cost.terms["churn"].normalised == pytest.approx(2 / 4)
    stay = explain(topo, ws, before, previous=before)
    assert stay.moved_cpus == 0


def test_weights_scale_terms_and_are_overridable() -> None:
    topo = toy_16()
    ws = {"a": _exclusive("a", 4)}
    cpus = {"a": P("0,4,8,12")}
    default = explain(topo, ws, cpus)
    heavy = explain(topo, ws, cpus, weights=CostWeights.from_mapping({"numa_spread": 40}))
    assert heavy.terms["numa_spread"].weighted == pytest.approx(
        10 * default.terms["numa_spread"].weighted
    )
    zero = CostWeights.parse_overrides(["numa_spread=0", "socket_spread=0"])
    assert explain(topo, ws, cpus, weights=zero).terms["numa_spread"].weighted == 0


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"numa": 1}, "weights.numa"),
        ({"churn": -1}, "weights.churn"),
        ({"churn": "x"}, "weights.churn"),
    ],
)
def test_bad_weights_are_refused_naming_the_term(data: dict[str, object], field: str) -> None:
    with pytest.raises(InputError) as err:
        CostWeights.from_mapping(data)
    assert err.value.field == field


def test_pool_busyness_weighs_shared_cores_with_the_pool() -> None:
    topo = toy_16()
    lone = {"a": _exclusive("a", 1, 1.0)}
    busy_pool = {**lone, "be": Workload(id="be", cpus=15, policy="shared", predicted_cpus=15)}
    idle_pool = {**lone, "be": Workload(id="be", cpus=15, policy="shared", predicted_cpus=0)}
    rest = topo.all_cpus - P("0")
    busy = explain(topo, busy_pool, {"a": P("0"), "be": rest})
    idle = explain(topo, idle_pool, {"a": P("0"), "be": rest})
    assert busy.pool_busyness == pytest.approx(1.0)
    assert busy.terms["shared_cores"].raw == pytest.approx(1.0)
    assert idle.terms["shared_cores"].raw == pytest.approx(0.1 + 0.9 * 0.5)


def test_scattering_small_workloads_over_numa_nodes_costs_fragmentation() -> None:
    topo = toy_16()  # two NUMA nodes of 8 CPUs
    ws = {"a": _exclusive("a", 2), "b": _exclusive("b", 2)}
    packed = explain(topo, ws, {"a": P("0,8"), "b": P("1,9")})
    scattered = explain(topo, ws, {"a": P("0,8"), "b": P("4,12")})
    assert packed.terms["fragmentation"].raw == 0
    assert scattered.terms["fragmentation"].raw == pytest.approx(2 / 8)
    assert scattered.total > packed.total


def test_priorities_rank_crossings_then_shared_then_sibling_cores_whatever_the_weights() -> None:
    topo = toy_16()
    ws = {"a": _exclusive("a", 3), "b": _exclusive("b", 3)}
    # Both whole on socket 0 but sharing core 1 (CPUs 1 and 9) between a and b.
    paired = explain(topo, ws, {"a": P("0,8,1"), "b": P("9,2,10")})
    # a crosses sockets, nothing shared.
    crossing = explain(topo, ws, {"a": P("0,8,4"), "b": P("1,9,2")})
    # Each on its own socket, one single thread next to an idle (unused) pool thread.
    apart = explain(topo, ws, {"a": P("0,8,1"), "b": P("4,12,5")})
    assert paired.shared_cores == 1 and paired.spread == 0
    assert crossing.spread == 2 and crossing.shared_cores == 0  # one NUMA node, one socket
    assert apart.priorities < paired.priorities < crossing.priorities
    assert better(apart, paired) and not better(crossing, paired)
    # Weights change the weighted total (the last entry) but never the ranking: with the
    # spread weights at 0 crossing adds nothing to the total and still ranks last.
    free = CostWeights(numa_spread=0.0, socket_spread=0.0)
    crossing_free = explain(topo, ws, {"a": P("0,8,4"), "b": P("1,9,2")}, weights=free)
    paired_free = explain(topo, ws, {"a": P("0,8,1"), "b": P("9,2,10")}, weights=free)
    assert crossing_free.terms["numa_spread"].weighted == 0.0
    assert crossing_free.priorities > paired_free.priorities
    assert dict(zip(PRIORITIES, apart.priorities, strict=True)) == apart.to_json()["priorities"]
