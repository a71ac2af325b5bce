"""The dCat-style per-workload cache manager on recorded sequences (pure logic): each
workload is a recorded response of performance and misses to its number of ways."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.control.dcat import (
    Allocation,
    Category,
    DcatSettings,
    DcatState,
    PerfSample,
    dcat_actions,
    dcat_step,
    from_counters,
    from_latency,
    from_throughput,
    grants,
)

S = DcatSettings(min_ways=1, settle_periods=1)
Model = Callable[[int], PerfSample]


def streaming(ways: int) -> PerfSample:
    """A scan over memory: more ways change nothing, misses stay high."""
    return PerfSample(perf=1.0, mpki=30.0)


def hungry(fits: int) -> Model:
    """A working set that fits in ``fits`` ways: each way up to it gains 10%, then none."""

    def model(ways: int) -> PerfSample:
        return PerfSample(perf=1.0 + 0.1 * min(ways, fits), mpki=max(1.0, 2.0 * (fits - ways)))

    return model


cache_hungry = hungry(6)


def insensitive(ways: int) -> PerfSample:
    """Compute-bound: the same at any number of ways, few misses."""
    return PerfSample(perf=2.0, mpki=0.2)


def run(
    models: Mapping[str, Model], *, budget: int, periods: int, state: DcatState | None = None
) -> tuple[DcatState, Allocation, list[dict[str, Category]]]:
    """Drive the manager: each period every workload reports its model at its ways."""
    state = state or DcatState()
    allocation = Allocation(())
    ways: dict[str, int] = {}
    history = []
    for _ in range(periods):
        samples = {w: models[w](ways[w]) if w in ways else None for w in models}
        state, allocation = dcat_step(S, state, budget=budget, samples=samples)
        ways = {w: n for w, _, n in allocation.spans}
        history.append({w: c.category for w, c in state.workloads})
    return state, allocation, history


def categories(state: DcatState) -> dict[str, Category]:
    return {w: c.category for w, c in state.workloads}


def test_a_streaming_workload_gives_its_ways_back() -> None:
    # 13 ways: baselines of 6 and one free way, which the scan tries first.
    models = {"scan": streaming, "web": hungry(10)}
    state, allocation, history = run(models, budget=13, periods=40)
    assert Category.STREAMING in [h["scan"] for h in history[:6]]
    assert categories(state)["scan"] is Category.STREAMING
    ways = {w: n for w, _, n in allocation.spans}
    assert ways["scan"] == S.min_ways
    assert ways["web"] == 10  # the scan's ways went to the receiver, as far as they helped
    assert Category.RECEIVER in [h["web"] for h in history]


def test_a_receiver_that_improves_keeps_the_ways_that_helped_and_stops_there() -> None:
    state, allocation, history = run({"web": cache_hungry}, budget=12, periods=30)
    # Alone it starts with all 12: it gives away what it does not use and keeps 6.
    assert Category.DONOR in [h["web"] for h in history]
    assert categories(state)["web"] is Category.KEEPER
    assert allocation.spans == (("web", 0, 6),)
    state, allocation, history = run(
        {"web": cache_hungry, "a": insensitive, "b": insensitive}, budget=12, periods=40
    )
    ways = {w: n for w, _, n in allocation.spans}
    assert Category.RECEIVER in [h["web"] for h in history]
    assert ways["web"] == 6  # each way up to 6 was kept, the 7th (no gain) given back
    assert categories(state)["web"] is Category.KEEPER


def test_a_donor_that_does_not_lose_performance_donates_down_to_min_ways() -> None:
    _, allocation, history = run({"calc": insensitive, "web": cache_hungry}, budget=8, periods=30)
    assert Category.DONOR in [h["calc"] for h in history]
    ways = {w: n for w, _, n in allocation.spans}
    assert ways["calc"] == S.min_ways
    assert ways["web"] == 6  # got what helped it from the donor, not more


def test_a_donor_that_loses_performance_takes_its_way_back_and_keeps() -> None:
    state, allocation, _ = run({"web": cache_hungry, "web2": cache_hungry}, budget=8, periods=12)
    ways = {w: n for w, _, n in allocation.spans}
    assert ways == {"web": 4, "web2": 4}
    assert set(categories(state).values()) == {Category.KEEPER}


def test_a_phase_change_sends_a_keeper_back_to_reclaim() -> None:
    state, _, _ = run({"web": cache_hungry, "calc": insensitive}, budget=8, periods=30)
    assert categories(state)["web"] is Category.KEEPER
    ways = dict((w, n) for w, _, n in dcat_step(S, state, budget=8, samples={})[1].spans)
    assert ways == {}
    shifted = {"web": PerfSample(perf=0.5, mpki=20.0), "calc": insensitive(1)}
    after, _ = dcat_step(S, state, budget=8, samples=shifted)
    assert categories(after)["web"] is Category.RECLAIM


def test_a_new_budget_resets_every_workload_to_its_new_baseline() -> None:
    state, _, _ = run({"scan": streaming, "web": cache_hungry}, budget=12, periods=10)
    after, allocation = dcat_step(S, state, budget=4, samples={"scan": None, "web": None})
    assert set(categories(after).values()) == {Category.RECLAIM}
    assert allocation.spans == (("scan", 0, 2), ("web", 2, 2))


def test_too_few_ways_for_everyone_are_shared_and_said_so() -> None:
    _, allocation = dcat_step(S, DcatState(), budget=2, samples=dict.fromkeys("abc"))
    assert allocation.shared and "shared" in allocation.reason
    assert set(allocation.masks().values()) == {0b11}


def test_grants_are_contiguous_masks_from_the_offset() -> None:
    _, allocation = dcat_step(S, DcatState(), budget=6, samples=dict.fromkeys("ab"), offset=2)
    assert {g.workload: g.mask for g in grants(allocation)} == {"a": 0b11100, "b": 0b11100000}


def test_signals_from_counters_throughput_and_latency() -> None:
    sample = from_counters(cycles=2_000, instructions=1_000, llc_misses=30)
    assert sample == PerfSample(perf=0.5, mpki=30.0)
    assert from_counters(0, 0, 0) is None
    assert from_throughput(120.0) == PerfSample(120.0)
    assert from_latency(2.0) == PerfSample(0.5) and from_latency(None) is None


@given(
    st.integers(1, 20),
    st.integers(0, 4),
    st.lists(
        st.dictionaries(
            st.sampled_from("abcd"),
            st.one_of(st.none(), st.builds(PerfSample, st.floats(0.1, 10), st.floats(0, 50))),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_allocations_never_overlap_nor_leave_the_budget(
    budget: int, offset: int, periods: list[dict[str, PerfSample | None]]
) -> None:
    state = DcatState()
    for samples in periods:
        state, allocation = dcat_step(S, state, budget=budget, samples=samples)
        assert {w for w, _, _ in allocation.spans} == set(samples)
        if allocation.shared:
            continue
        end = 0
        for _, first, ways in allocation.spans:
            assert first >= end and ways >= S.min_ways
            end = first + ways
        assert end <= budget


def test_bad_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"dcat\.gain"):
        DcatSettings(gain=0)


def test_actions_are_emitted_only_when_a_mask_changes_and_say_why() -> None:
    samples: dict[str, PerfSample | None] = {"scan": None, "web": None}
    state, action = dcat_actions(S, DcatState(), budget=8, samples=samples)
    assert action is not None
    assert {g.workload: g.mask for g in action.grants} == {"scan": 0x0F, "web": 0xF0}
    assert "scan reclaim 4 ways (new workload)" in action.reason
    state, again = dcat_actions(S, state, budget=8, samples=samples)
    assert again is None  # nothing moved
