from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.placement.greedy import place_greedy
from corral.placement.kubelet import Strategy, take_cpus
from corral.placement.workload import Policy, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.presets import PRESETS, preset


def w(wid: str, cpus: float, policy: str = "exclusive", **extra: object) -> Workload:
    return Workload.model_validate({"id": wid, "cpus": cpus, "policy": policy, **extra})


def test_exclusive_workloads_go_largest_first_in_kubelet_order() -> None:
    topo = preset("toy-16")
    placement = place_greedy(topo, [w("small", 2), w("big", 8), w("mid", 4)])
    available = topo.all_cpus
    for wid, size in (("big", 8), ("mid", 4), ("small", 2)):
        expected = take_cpus(topo, available, size)
        assert placement.cpuset_of(wid) == expected
        available -= expected
    assert placement.pools["shared"] == available
    assert not placement.refusals


def test_immovable_cpus_are_kept_and_never_given_exclusively() -> None:
    topo = preset("toy-16")
    placement = place_greedy(topo, [w("agent", 0.5, "immovable", cpuset="0,8"), w("lc", 2)])
    assert placement.cpuset_of("agent") == CpuSet([0, 8])
    assert placement.cpuset_of("lc").isdisjoint(CpuSet([0, 8]))


def test_numa_workloads_get_the_node_with_most_free_capacity_that_fits() -> None:
    topo = preset("toy-16")  # NUMA 0: 0-3,8-11; NUMA 1: 4-7,12-15
    placement = place_greedy(
        topo, [w("lc", 6), w("cache", 4, "numa"), w("cache2", 3, "numa"), w("batch", 2, "shared")]
    )
    lc = placement.cpuset_of("lc")
    assert lc == CpuSet([0, 1, 2, 8, 9, 10])  # node 0 is left with 2 shared CPUs
    assert placement.cpuset_of("cache") == topo.cpus_in_numa(1)
    assert placement.cpuset_of("cache2") == topo.cpus_in_numa(1)  # 4 of 8 left there vs 2
    assert placement.cpuset_of("batch") == topo.all_cpus - lc
    assert placement.pools["numa-0"] == CpuSet([3, 11])


def test_refusals_name_the_workload_and_reason_and_others_still_place() -> None:
    topo = preset("toy-16")
    placement = place_greedy(
        topo,
        [
            w("huge", 20),
            w("ok", 4),
            w("fat-cache", 12, "numa"),
            w("pinned-off", 1, "immovable", cpuset="40"),
        ],
    )
    assert "requested=20, available=16" in placement.refusals["huge"].reason
    assert "no NUMA node's shared pool holds 12" in placement.refusals["fat-cache"].reason
    assert "not online" in placement.refusals["pinned-off"].reason
    assert "ok" in placement.assignments


def test_shared_workloads_are_refused_when_exclusive_ones_hold_every_cpu() -> None:
    topo = preset("toy-16")
    placement = place_greedy(topo, [w("all", 16), w("batch", 1, "shared")])
    assert "shared pool is empty" in placement.refusals["batch"].reason


def test_overcommitted_shared_pool_is_a_warning_not_a_refusal() -> None:
    topo = preset("toy-16")
    placement = place_greedy(topo, [w("a", 10, "shared"), w("b", 10, "shared")])
    assert not placement.refusals
    assert any("overcommitted" in text for text in placement.warnings)


def test_offline_cpus_are_never_assigned() -> None:
    topo = preset("toy-16")
    online = topo.all_cpus - CpuSet([0, 8])
    placement = place_greedy(topo, [w("lc", 4), w("b", 1, "shared")], online=online)
    assert placement.cpuset_of("lc") <= online
    assert placement.cpuset_of("b") <= online


workload_specs = st.lists(
    st.tuples(
        st.sampled_from(["exclusive", "numa", "shared", "immovable"]),
        st.integers(min_value=1, max_value=40),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(
    name=st.sampled_from(["toy-16", "xeon-e2288g", "r4.16xlarge", "xeon-gold-6230-2s"]),
    specs=workload_specs,
    strategy=st.sampled_from(list(Strategy)),
    full_cores=st.booleans(),
    offline=st.sets(st.integers(min_value=0, max_value=79), max_size=6),
)
def test_every_workload_is_placed_or_refused_and_exclusive_cpus_are_never_shared(
    name: str,
    specs: list[tuple[str, int]],
    strategy: Strategy,
    full_cores: bool,
    offline: set[int],
) -> None:
    topo = PRESETS[name]()
    if strategy is Strategy.SPREAD:
        full_cores = False
    online = topo.all_cpus - CpuSet(offline)
    workloads = []
    for index, (policy, size) in enumerate(specs):
        extra: dict[str, object] = {}
        if policy == "immovable":
            extra["cpuset"] = str(CpuSet([size % len(topo.cpus)]))
        workloads.append(w(f"w{index}", size, policy, **extra))
    placement = place_greedy(
        topo, workloads, online=online, strategy=strategy, full_cores=full_cores
    )
    exclusive_seen: set[int] = set()
    immovable = CpuSet().union(*(x.cpuset for x in workloads if x.cpuset))
    for workload in workloads:
        placed = workload.id in placement.assignments
        refused = workload.id in placement.refusals
        assert placed != refused
        if refused:
            assert placement.refusals[workload.id].reason
            continue
        cpus = placement.cpuset_of(workload.id)
        assert cpus and cpus <= online
        if workload.policy is Policy.EXCLUSIVE:
            assert len(cpus) == workload.cpus
            assert exclusive_seen.isdisjoint(cpus)
            assert cpus.isdisjoint(immovable)
            exclusive_seen |= set(cpus)
            if full_cores:
                assert topo.whole_cores_within(cpus) == cpus
    for workload in workloads:
        if workload.policy in (Policy.SHARED, Policy.NUMA) and workload.id in placement.assignments:
            assert placement.cpuset_of(workload.id).isdisjoint(CpuSet(exclusive_seen))
