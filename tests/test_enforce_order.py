"""The cpuset write order: parents widen first and shrink last, no CPU held twice."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.enforce.order import PlanError, SetNode, SetWrite, Step, parent_in, plan_set_writes
from corral.topology.cpuset import CpuSet


def cs(text: str) -> CpuSet:
    return CpuSet.parse(text)


def replay(nodes: Mapping[str, SetNode], plan: tuple[SetWrite, ...]) -> None:
    """Apply the plan step by step and check the kernel's and corral's rules after each."""
    cur = {path: node.current for path, node in nodes.items()}
    leaves = [
        p
        for p in nodes
        if nodes[p].target is not None and not any(q.startswith(p + "/") for q in nodes)
    ]

    def check() -> None:
        for path, value in cur.items():
            parent = parent_in(nodes, path)
            if parent is not None:
                assert value <= cur[parent], f"{path}={value} outside parent {parent}={cur[parent]}"
            if nodes[path].has_tasks:
                assert value, f"{path} emptied while it has tasks"
        for a in leaves:
            for b in leaves:
                if a < b and (nodes[a].exclusive or nodes[b].exclusive):
                    assert cur[a].isdisjoint(cur[b]), f"{a}={cur[a]} and {b}={cur[b]} overlap"

    check()
    for write in plan:
        cur[write.cgroup] = write.value
        check()
    for path, node in nodes.items():
        if node.target is not None:
            assert cur[path] == node.target
        else:
            assert node.current <= cur[path]


def test_a_new_tree_widens_parents_top_down_before_granting_leaves() -> None:
    nodes = {
        "corral": SetNode(CpuSet(), cs("0-3")),
        "corral/be": SetNode(CpuSet(), cs("2-3")),
        "corral/web": SetNode(CpuSet(), cs("0-1"), exclusive=True),
        "corral/be/batch": SetNode(CpuSet(), cs("2-3")),
    }
    plan = plan_set_writes(nodes)
    order = [(w.cgroup, w.step) for w in plan]
    assert order.index(("corral", Step.WIDEN)) < order.index(("corral/be", Step.WIDEN))
    assert order.index(("corral/be", Step.WIDEN)) < order.index(("corral/be/batch", Step.GRANT))
    replay(nodes, plan)


def test_children_shrink_before_their_parent() -> None:
    nodes = {
        "corral/be": SetNode(cs("0-3"), cs("2-3")),
        "corral/be/a": SetNode(cs("0-3"), cs("2-3"), has_tasks=True),
        "corral/be/b": SetNode(cs("1-3"), cs("3"), has_tasks=True),
    }
    plan = plan_set_writes(nodes)
    assert plan[-1] == SetWrite("corral/be", cs("2-3"), Step.SHRINK)
    replay(nodes, plan)


def test_exclusive_cpus_are_released_before_they_are_granted() -> None:
    # web moves from CPU 1 to CPU 2; db takes over CPU 1.
    nodes = {
        "corral": SetNode(cs("0-3"), cs("0-3")),
        "corral/db": SetNode(cs("0"), cs("0-1"), exclusive=True, has_tasks=True),
        "corral/web": SetNode(cs("1-2"), cs("2"), exclusive=True, has_tasks=True),
    }
    plan = plan_set_writes(nodes)
    assert plan == (
        SetWrite("corral/web", cs("2"), Step.RELEASE),
        SetWrite("corral/db", cs("0-1"), Step.GRANT),
    )
    replay(nodes, plan)


def test_a_shared_workload_leaves_a_cpu_before_an_exclusive_one_gets_it() -> None:
    nodes = {
        "corral": SetNode(cs("0-1"), cs("0-1")),
        "corral/batch": SetNode(cs("0-1"), cs("1"), has_tasks=True),
        "corral/web": SetNode(CpuSet(), cs("0"), exclusive=True),  # new, no tasks yet
    }
    plan = plan_set_writes(nodes)
    steps = [(w.cgroup, str(w.value)) for w in plan]
    assert steps.index(("corral/batch", "1")) < steps.index(("corral/web", "0"))
    replay(nodes, plan)


def test_a_swap_cycle_is_staged_through_a_spare_cpu() -> None:
    nodes = {
        "corral": SetNode(cs("0-2"), cs("0-2")),
        "corral/a": SetNode(cs("0"), cs("1"), exclusive=True, has_tasks=True),
        "corral/b": SetNode(cs("1"), cs("0"), exclusive=True, has_tasks=True),
    }
    plan = plan_set_writes(nodes)
    assert plan[0] == SetWrite("corral/a", cs("2"), Step.STAGE)
    replay(nodes, plan)


def test_a_swap_cycle_without_a_spare_cpu_is_refused_before_any_write() -> None:
    nodes = {
        "corral": SetNode(cs("0-1"), cs("0-1")),
        "corral/a": SetNode(cs("0"), cs("1"), exclusive=True, has_tasks=True),
        "corral/b": SetNode(cs("1"), cs("0"), exclusive=True, has_tasks=True),
    }
    with pytest.raises(PlanError, match="cycle"):
        plan_set_writes(nodes)


def test_targets_that_break_the_rules_are_refused() -> None:
    with pytest.raises(PlanError, match="not inside its parent"):
        plan_set_writes({"p": SetNode(cs("0-3"), cs("0-1")), "p/c": SetNode(cs("0"), cs("2"))})
    with pytest.raises(PlanError, match="overlap"):
        plan_set_writes(
            {
                "p/a": SetNode(cs("0"), cs("0-1"), exclusive=True),
                "p/b": SetNode(cs("2"), cs("1-2")),
            }
        )
    with pytest.raises(PlanError, match="empty"):
        plan_set_writes({"p/a": SetNode(cs("0"), CpuSet(), has_tasks=True)})


def test_a_tree_at_its_targets_plans_no_write() -> None:
    nodes = {
        "corral": SetNode(cs("0-3"), cs("0-3")),
        "corral/a": SetNode(cs("0-1"), cs("0-1"), exclusive=True, has_tasks=True),
        "kubepods": SetNode(cs("0-3"), None),
    }
    assert plan_set_writes(nodes) == ()


@st.composite
def trees(draw: st.DrawFn) -> dict[str, SetNode]:
    """A parent with a BE box and leaves; exclusive leaves own disjoint CPUs before and after."""
    ncpu = draw(st.integers(6, 9))
    all_cpus = CpuSet.range(0, ncpu)

    def assignment() -> tuple[dict[str, CpuSet], set[str]]:
        order = draw(st.permutations(list(range(ncpu))))
        names = ["a", "b", "c"]
        out: dict[str, CpuSet] = {}
        taken = 0
        excl: set[str] = set()
        for name in names:
            k = draw(st.integers(1, 2))
            out[name] = CpuSet(order[taken : taken + k])
            taken += k
            excl.add(name)
        shared_pool = CpuSet(order[taken:]) or CpuSet(order[-1:])
        for name in ("x", "y"):
            out[name] = shared_pool
        return out, excl

    before, excl = assignment()
    after, _ = assignment()
    # shared leaves must not overlap exclusive ones: remove those CPUs from the pools
    for table in (before, after):
        held = CpuSet().union(*(table[n] for n in excl))
        for name in ("x", "y"):
            rest = table[name] - held
            if not rest:
                free = all_cpus - held
                rest = free.first(1) if free else CpuSet()
            table[name] = rest
    if not all(before[n] and after[n] for n in ("x", "y")):
        for table in (before, after):
            table.pop("x"), table.pop("y")
    nodes: dict[str, SetNode] = {
        "corral": SetNode(all_cpus, all_cpus),
    }
    box_before = CpuSet().union(*(before.get(n, CpuSet()) for n in ("x", "y")))
    box_after = CpuSet().union(*(after.get(n, CpuSet()) for n in ("x", "y")))
    if "x" in before:
        nodes["corral/be"] = SetNode(box_before, box_after)
    for name in before:
        path = f"corral/be/{name}" if name in ("x", "y") else f"corral/{name}"
        nodes[path] = SetNode(
            before[name], after[name], exclusive=name in excl, has_tasks=draw(st.booleans())
        )
    return nodes


@settings(max_examples=300, deadline=None)
@given(trees())
def test_every_step_of_a_plan_is_valid_and_it_ends_at_the_targets(
    nodes: dict[str, SetNode],
) -> None:
    try:
        plan = plan_set_writes(nodes)
    except PlanError as err:
        assert "cycle" in str(err)
        return
    replay(nodes, plan)
    again = {
        p: SetNode(n.current if n.target is None else n.target, n.target, n.exclusive, n.has_tasks)
        for p, n in nodes.items()
    }
    assert plan_set_writes(again) == ()
