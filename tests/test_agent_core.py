"""The agent's pure core on recorded batches: `step(state, batch, now) -> result`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.agent.core import (
    AnswerKind,
    CoreInvariantError,
    CoreState,
    Request,
    settle,
    step,
)
from corral.agent.decide import Decision, decide
from corral.agent.events import EventKind
from corral.agent.state import Status, StoredWorkload
from corral.placement.assignment import Assignment
from corral.placement.workload import Workload
from corral.topology.presets import toy_16

TOPO = toy_16()


def place(workloads: Sequence[Workload], previous: Mapping[str, Assignment]) -> Decision:
    return decide(TOPO, workloads, previous, allocator="greedy", budget_ms=20, rebalance=False)


def exclusive(wid: str, cpus: int) -> Workload:
    return Workload(id=wid, qos="LC", cpus=cpus, policy="exclusive")


def add(wid: str, spec: Workload, revision: int, waiter: int | None = None) -> Request:
    return Request(EventKind.ADD, wid, spec, revision, stored=waiter is None, waiter=waiter)


def test_a_burst_of_waited_adds_is_one_commit_and_every_waiter_hears_placed() -> None:
    batch = [add(f"w{i}", exclusive(f"w{i}", 2), i + 1, waiter=i) for i in range(5)]
    result = step(CoreState(), batch, 100.0, place=place, trigger="add")
    assert {a.waiter: a.kind for a in result.answers} == dict.fromkeys(range(5), AnswerKind.PLACED)
    assert {w.workload.id for w in result.commit.workloads} == {f"w{i}" for i in range(5)}
    assert all(w.status is Status.PLACED for w in result.commit.workloads)
    cpus = [result.state.placement.cpuset_of(f"w{i}") for i in range(5)]
    assert sum(len(c) for c in cpus) == len(set().union(*cpus)) == 10  # no CPU twice
    assert len(result.commit.events) == 5


def test_a_waited_request_that_cannot_fit_is_refused_alone_and_nothing_of_it_is_stored() -> None:
    batch = [
        add("a", exclusive("a", 2), 1, waiter=1),
        add("huge", exclusive("huge", 32), 2, waiter=2),
        add("b", exclusive("b", 4), 3, waiter=3),
    ]
    result = step(CoreState(), batch, 1.0, place=place, trigger="add")
    answers = {a.waiter: a for a in result.answers}
    assert answers[2].kind is AnswerKind.REFUSED and "huge" not in result.state.workloads
    assert "requested=32" in answers[2].reason or "32" in answers[2].reason
    assert answers[1].kind is answers[3].kind is AnswerKind.PLACED
    assert {w.workload.id for w in result.commit.workloads} == {"a", "b"}


def test_an_acknowledged_request_that_cannot_fit_is_stored_as_refused_with_the_reason() -> None:
    batch = [add("huge", exclusive("huge", 32), 1)]  # stored before queueing: no waiter
    result = step(CoreState(), batch, 1.0, place=place, trigger="add")
    (stored,) = result.commit.workloads
    assert stored.status is Status.REFUSED and stored.reason
    assert result.answers == ()


def test_a_put_then_a_remove_in_one_batch_answers_both_in_order_and_releases_the_old() -> None:
    first = step(CoreState(), [add("a", exclusive("a", 2), 1)], 1.0, place=place, trigger="add")
    batch = [
        Request(EventKind.UPDATE, "a", exclusive("a", 4), 2, waiter=7),
        Request(EventKind.REMOVE, "a", None, 3, waiter=8),
    ]
    result = step(first.state, batch, 2.0, place=place, trigger="remove+update")
    kinds = [(a.waiter, a.kind) for a in result.answers]
    assert kinds == [(7, AnswerKind.PENDING), (8, AnswerKind.REMOVED)]
    assert [w.id for w in result.enforce.released] == ["a"]
    assert result.commit.removed == {"a": 3}
    assert "a" not in result.state.placement.assignments


def test_a_changed_spec_is_placed_afresh_and_an_unchanged_one_keeps_its_cpus() -> None:
    seen: list[set[str]] = []

    def recording(ws: Sequence[Workload], previous: Mapping[str, Assignment]) -> Decision:
        seen.append(set(previous))
        return place(ws, previous)

    batch = [add("a", exclusive("a", 2), 1), add("b", exclusive("b", 2), 2)]
    first = step(CoreState(), batch, 1.0, place=recording, trigger="add")
    step(
        first.state,
        [Request(EventKind.UPDATE, "a", exclusive("a", 4), 3, stored=True)],
        2.0,
        place=recording,
        trigger="update",
    )
    assert seen[-1] == {"b"}


def test_writes_acknowledged_while_a_step_ran_stay_for_the_next_decision() -> None:
    result = step(CoreState(), [add("a", exclusive("a", 2), 1)], 1.0, place=place, trigger="add")
    newer = StoredWorkload(exclusive("a", 4), Status.PENDING, "", 5, 1.0, 1.5)
    other = StoredWorkload(exclusive("z", 1), Status.PENDING, "", 6, 1.5, 1.5)
    merged = settle({"a": newer, "z": other}, result)
    assert merged["a"] is newer and merged["z"] is other


def test_a_request_without_a_spec_is_a_contract_error_not_a_crash_later() -> None:
    with pytest.raises(CoreInvariantError, match="without a spec"):
        Request(EventKind.ADD, "a", None, 1)
    with pytest.raises(CoreInvariantError, match="not a mutation"):
        Request(EventKind.REBALANCE, "a", None, 1)


_ops = st.lists(
    st.tuples(
        st.sampled_from(["put", "wait", "remove"]),
        st.sampled_from(["a", "b", "c", "d"]),
        st.integers(min_value=1, max_value=12),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None)
@given(first=_ops, second=_ops)
def test_every_waiter_is_answered_once_and_no_exclusive_cpu_is_given_twice(
    first: list[tuple[str, str, int]], second: list[tuple[str, str, int]]
) -> None:
    state = CoreState()
    revision = 0
    for ops in (first, second):
        batch: list[Request] = []
        for op, wid, cpus in ops:
            revision += 1
            if op == "remove":
                batch.append(Request(EventKind.REMOVE, wid, None, revision, waiter=revision))
            else:
                waiter = revision if op == "wait" else None
                batch.append(add(wid, exclusive(wid, cpus), revision, waiter=waiter))
        result = step(state, batch, float(revision), place=place, trigger="mixed")
        waiters = [r.waiter for r in batch if r.waiter is not None]
        assert sorted(a.waiter for a in result.answers) == sorted(waiters)
        cpus_held = [a.cpuset for a in result.state.placement.assignments.values()]
        union = set().union(*cpus_held) if cpus_held else set()
        assert sum(len(c) for c in cpus_held) == len(union)
        assert union <= set(TOPO.all_cpus)
        for answer in result.answers:  # refused with a reason, or placed with CPUs
            if answer.kind is AnswerKind.REFUSED:
                assert answer.reason
            if answer.kind is AnswerKind.PLACED:
                assert answer.workload_id in result.state.placement.assignments
        state = result.state
