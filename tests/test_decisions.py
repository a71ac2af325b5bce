"""Incremental decisions: add, remove, rebalance with hysteresis, coalesced bursts."""

from __future__ import annotations

import pytest

from corral.errors import InputError
from corral.placement.allocate import Allocator
from corral.placement.cost import CostWeights
from corral.placement.decisions import (
    Batch,
    BurstWindow,
    DecisionSettings,
    Event,
    EventKind,
    coalesce,
    decide,
    decide_batch,
)
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import toy_16

P = CpuSet.parse


def _exclusive(wid: str, cpus: int, use: float | None = None) -> Workload:
    return Workload(id=wid, qos="LC", cpus=cpus, policy="exclusive", predicted_cpus=use)


# Best-effort work in the shared pool: an exclusive thread next to a pool thread is then a
# shared core, so whole cores are what the priorities ask for (the usual host).
BE = Workload(id="be", cpus=1, policy="shared")


GREEDY = DecisionSettings(allocator=Allocator.GREEDY)
OPTIMAL = DecisionSettings(allocator=Allocator.OPTIMAL, budget_ms=2000)


@pytest.mark.parametrize("settings", [GREEDY, OPTIMAL], ids=["greedy", "optimal"])
def test_add_places_the_new_workload_without_moving_placed_ones(
    settings: DecisionSettings,
) -> None:
    topo = toy_16()
    placed = [_exclusive("a", 4), _exclusive("b", 2)]
    previous = {"a": P("0-1,8-9"), "b": P("4,12")}
    decision = decide(
        topo, [*placed, _exclusive("c", 3), BE], previous, kind=EventKind.ADD, settings=settings
    )
    assert decision.applied
    assert decision.moved_cpus == 0
    assert decision.requested_cpus == 3
    assert decision.placement.cpuset_of("a") == previous["a"]
    assert len(decision.placement.cpuset_of("c")) == 3
    assert decision.placement.cpuset_of("c").isdisjoint(previous["a"] | previous["b"])


def test_add_moves_a_workload_left_across_sockets_whatever_churn_costs() -> None:
    topo = toy_16()
    # "a" sits across both sockets: spread ranks above churn, so the next add fixes it
    # whatever the churn weight.
    previous = {"a": P("0-1,4-5")}
    workloads = [_exclusive("a", 4), _exclusive("b", 2), BE]
    for churn in (0.0, 100.0):
        settings = DecisionSettings(budget_ms=2000, weights=CostWeights(churn=churn))
        moved = decide(topo, workloads, previous, kind=EventKind.ADD, settings=settings)
        assert len(topo.sockets_of(moved.placement.cpuset_of("a"))) == 1
        assert moved.moved_cpus == 2
        assert moved.optimal


def test_an_add_keeps_placed_workloads_and_a_rebalance_spreads_them() -> None:
    # No best-effort work: a thread next to an idle pool thread shares nothing, so the
    # fewest sibling cores put each thread on its own core. Siblings alone do not move a
    # running workload on an add; the next rebalance does.
    topo = toy_16()
    previous = {"a": P("0-1,8-9")}
    workloads = [_exclusive("a", 4), _exclusive("b", 2)]
    added = decide(topo, workloads, previous, kind=EventKind.ADD, settings=OPTIMAL)
    assert added.moved_cpus == 0
    assert "placed workloads kept" in added.reason
    assert not added.optimal
    after = added.placement.as_cpusets()
    balanced = decide(topo, workloads, after, kind=EventKind.REBALANCE, settings=OPTIMAL)
    assert balanced.applied
    assert balanced.cost.sibling_cores == 0
    assert balanced.cost.shared_cores == 0
    assert balanced.cost.cross_socket_workloads == 0
    assert 0 < balanced.moved_cpus <= 4


def test_remove_frees_the_cpus_and_keeps_the_rest() -> None:
    topo = toy_16()
    previous = {"a": P("0-1,8-9"), "b": P("4,12")}
    decision = decide(
        topo, [_exclusive("b", 2), BE], previous, kind=EventKind.REMOVE, settings=OPTIMAL
    )
    assert "a" not in decision.placement.assignments
    assert decision.placement.cpuset_of("b") == P("4,12")
    assert decision.moved_cpus == 0


def test_rebalance_applies_only_a_saving_above_the_threshold() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 4), _exclusive("b", 4)]
    checkerboard = {"a": P("0,4,8,12"), "b": P("1,5,9,13")}
    settings = DecisionSettings(budget_ms=2000, rebalance_threshold=0.01)
    applied = decide(topo, workloads, checkerboard, kind=EventKind.REBALANCE, settings=settings)
    assert applied.applied
    assert applied.current_cost is not None
    assert applied.cost.total < applied.current_cost.total
    assert applied.cost.cross_socket_workloads == 0
    # Fewer crossings apply whatever the threshold: they rank above any weighted saving.
    strict = DecisionSettings(budget_ms=2000, rebalance_threshold=100.0)
    fixed = decide(topo, workloads, checkerboard, kind=EventKind.REBALANCE, settings=strict)
    assert fixed.applied
    assert "fewer workloads across nodes" in fixed.reason
    # Equal on spread, shared and sibling cores: only a saving above the threshold moves.
    same = {"a": P("0-1,8-9"), "b": P("2-3,10-11")}
    held = decide(topo, [*workloads, BE], same, kind=EventKind.REBALANCE, settings=strict)
    assert not held.applied
    assert held.placement.cpuset_of("a") == same["a"]
    assert held.moved_cpus == 0
    assert "kept the current placement" in held.reason


def test_rebalance_of_a_good_placement_moves_nothing() -> None:
    topo = toy_16()
    workloads = [_exclusive("a", 4), _exclusive("b", 4)]
    good = {"a": P("0-1,8-9"), "b": P("4-5,12-13")}
    decision = decide(topo, [*workloads, BE], good, kind=EventKind.REBALANCE, settings=OPTIMAL)
    assert decision.moved_cpus == 0


def test_coalesce_folds_a_burst_into_its_net_effect() -> None:
    a, b, c = _exclusive("a", 1), _exclusive("b", 2), _exclusive("c", 1)
    events = [
        Event(EventKind.ADD, workload=a, at=0.0),
        Event(EventKind.ADD, workload=b, at=0.001),
        Event(EventKind.REMOVE, workload_id="a", at=0.002),  # cancels a's add
        Event(EventKind.REMOVE, workload_id="old", at=0.003),
        Event(EventKind.ADD, workload=c, at=0.004),
        Event(EventKind.REBALANCE, at=0.005),
    ]
    batch = coalesce(events)
    assert [w.id for w in batch.adds] == ["b", "c"]
    assert set(batch.removes) == {"a", "old"}
    assert batch.rebalance
    assert batch.kind is EventKind.ADD
    assert batch.events == 6
    assert Batch(removes=("x",)).kind is EventKind.REMOVE
    assert Batch().kind is EventKind.REBALANCE


def test_a_burst_of_adds_is_one_decision() -> None:
    topo = toy_16()
    current = [_exclusive("a", 2), BE]
    previous = {"a": P("0,8")}
    adds = [_exclusive(f"n{i}", 1 + i % 2) for i in range(6)]
    events = [Event(EventKind.ADD, workload=w, at=i * 0.001) for i, w in enumerate(adds)]
    decision, after = decide_batch(topo, current, previous, events, settings=OPTIMAL)
    assert [w.id for w in after] == ["a", "be", *(w.id for w in adds)]
    assert decision.kind is EventKind.ADD
    assert decision.requested_cpus == sum(w.whole_cpus for w in adds)
    assert set(decision.placement.assignments) == {w.id for w in after}
    assert decision.placement.cpuset_of("a") == P("0,8")


def test_a_workload_added_again_with_a_new_spec_is_placed_afresh() -> None:
    topo = toy_16()
    current = [_exclusive("a", 2)]
    events = [Event(EventKind.ADD, workload=_exclusive("a", 4))]
    decision, _ = decide_batch(topo, current, {"a": P("0,8")}, events, settings=OPTIMAL)
    assert len(decision.placement.cpuset_of("a")) == 4
    assert decision.requested_cpus == 4


def test_burst_window_waits_for_quiet_or_the_longest_wait() -> None:
    window = BurstWindow(quiet_s=0.05, max_wait_s=0.5, max_events=3)
    one = [Event(EventKind.ADD, workload=_exclusive("a", 1), at=10.0)]
    assert not window.ready([], 11.0)
    assert not window.ready(one, 10.01)
    assert window.ready(one, 10.06)
    steady = [Event(EventKind.REMOVE, workload_id=f"w{i}", at=10.0 + i * 0.04) for i in range(2)]
    assert not window.ready(steady, 10.06)
    assert window.ready(steady, 10.6) or window.ready(steady, 10.5)
    many = [Event(EventKind.REMOVE, workload_id=f"w{i}", at=10.0) for i in range(3)]
    assert window.ready(many, 10.0)


def test_bad_events_and_settings_are_refused() -> None:
    with pytest.raises(InputError):
        Event(EventKind.ADD)
    with pytest.raises(InputError):
        Event(EventKind.REMOVE)
    with pytest.raises(InputError):
        DecisionSettings(budget_ms=0)
    with pytest.raises(InputError):
        DecisionSettings(rebalance_threshold=-1)
