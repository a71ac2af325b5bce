"""Order cpuset writes so the kernel accepts every one and no CPU is granted twice.

Pure planning over a snapshot of a cpuset tree. The kernel's rules (cgroup v1, and what
corral keeps to on v2 too):

* a child's ``cpuset.cpus`` must stay within its parent's, so a parent is widened before
  its children grow and shrunk only after its children have shrunk (EINVAL / EBUSY else);
* a cgroup that holds tasks may never be emptied (ENOSPC);
* corral's own rule: a CPU of an exclusive workload is never held by another workload at
  the same time, so every workload first releases the CPUs it loses, and only then are
  CPUs granted. When workloads swap CPUs in a cycle (A takes B's, B takes A's) and neither
  can release to an empty set, one of them is staged on a spare CPU of its parent first.

Each write moves the tree from one valid state to another, so a failure part-way leaves
a consistent tree and re-planning from a fresh read finishes the job (idempotent: a tree
already at its targets plans no write).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from corral.topology.cpuset import CpuSet


class Step(StrEnum):
    """Why a write is in the plan."""

    WIDEN = "widen"  # a parent grows to make room for its children
    RELEASE = "release"  # a workload gives up CPUs it loses
    STAGE = "stage"  # a workload parks on a spare CPU to break a swap cycle
    GRANT = "grant"  # a workload gets its final CPUs
    SHRINK = "shrink"  # a parent shrinks to its final CPUs after its children


@dataclass(frozen=True, slots=True)
class SetNode:
    """A cgroup in the snapshot: its current set, and its target (None: only widened)."""

    current: CpuSet
    target: CpuSet | None
    exclusive: bool = False
    has_tasks: bool = False


@dataclass(frozen=True, slots=True)
class SetWrite:
    """Write ``value`` to the cgroup ``cgroup`` (relative path) during ``step``."""

    cgroup: str
    value: CpuSet
    step: Step


class PlanError(ValueError):
    """The targets cannot be reached by valid writes; the message says which cgroups."""


def parent_in(nodes: Mapping[str, object], path: str) -> str | None:
    """The nearest ancestor of ``path`` present in ``nodes`` (None at the top)."""
    head = path
    while "/" in head:
        head = head.rsplit("/", 1)[0]
        if head in nodes:
            return head
    return None


def plan_set_writes(nodes: Mapping[str, SetNode]) -> tuple[SetWrite, ...]:
    """The ordered writes that take every node from ``current`` to ``target``.

    Raises `PlanError` for targets that break the rules themselves (a child outside its
    parent's target, an empty target for a cgroup with tasks, an exclusive target shared
    with another workload) and for a swap cycle with no spare CPU to stage through.
    """
    parents = {path: parent_in(nodes, path) for path in nodes}
    descendants: dict[str, list[str]] = {path: [] for path in nodes}
    for path in nodes:
        up = parents[path]
        while up is not None:
            descendants[up].append(path)
            up = parents[up]
    leaves = sorted(p for p in nodes if not descendants[p] and nodes[p].target is not None)
    _validate(nodes, descendants, leaves)
    cur = {path: node.current for path, node in nodes.items()}
    plan: list[SetWrite] = []

    def write(path: str, value: CpuSet, step: Step) -> None:
        plan.append(SetWrite(path, value, step))
        cur[path] = value

    depth = {path: path.count("/") for path in nodes}
    for path in sorted((p for p in nodes if descendants[p]), key=lambda p: (depth[p], p)):
        want = CpuSet().union(
            cur[path],
            nodes[path].target or CpuSet(),
            *(nodes[d].target or CpuSet() for d in descendants[path]),
        )
        if want != cur[path]:
            write(path, want, Step.WIDEN)

    for path in leaves:
        target = _target(nodes, path)
        kept = cur[path] & target
        if kept != cur[path] and (kept or not nodes[path].has_tasks):
            write(path, kept, Step.RELEASE)

    pending = [p for p in leaves if cur[p] != nodes[p].target]
    stagings = 0
    while pending:
        progressed = False
        for path in list(pending):
            target = _target(nodes, path)
            if target.isdisjoint(_held_against(nodes, cur, leaves, path)):
                write(path, target, Step.GRANT)
                pending.remove(path)
                progressed = True
        if progressed:
            continue
        stagings += 1
        if stagings > 2 * len(leaves):
            raise PlanError(f"cpuset writes for {', '.join(pending)} do not converge")
        write_staging = _staging(nodes, cur, leaves, pending, parents)
        if write_staging is None:
            raise PlanError(
                f"{', '.join(pending)} swap CPUs in a cycle and their parent has no CPU "
                "held by no other workload to stage through; free one CPU or apply the "
                "change in two steps"
            )
        write(write_staging[0], write_staging[1], Step.STAGE)

    for path in sorted(
        (p for p in nodes if descendants[p] and nodes[p].target is not None),
        key=lambda p: (-depth[p], p),
    ):
        target = _target(nodes, path)
        if cur[path] != target:
            write(path, target, Step.SHRINK)
    return tuple(plan)


def _held_against(
    nodes: Mapping[str, SetNode], cur: Mapping[str, CpuSet], leaves: list[str], path: str
) -> CpuSet:
    """CPUs ``path`` may not take now: held by another leaf where either side is exclusive."""
    mine = nodes[path].exclusive
    return CpuSet().union(*(cur[o] for o in leaves if o != path and (mine or nodes[o].exclusive)))


def _conflict(nodes: Mapping[str, SetNode], a: str, b: str) -> bool:
    return nodes[a].exclusive or nodes[b].exclusive


def _staging(
    nodes: Mapping[str, SetNode],
    cur: Mapping[str, CpuSet],
    leaves: list[str],
    pending: list[str],
    parents: Mapping[str, str | None],
) -> tuple[str, CpuSet] | None:
    """Park one blocking workload on a CPU that neither it nor anyone it blocks needs.

    A blocker holds CPUs another pending workload must get. Parking it on a CPU outside
    every conflicting pending target means it blocks nobody afterwards, so each workload
    is staged at most once and the grants converge.
    """
    for path in pending:
        parent = parents[path]
        if parent is None:
            continue
        rivals = [q for q in pending if q != path and _conflict(nodes, path, q)]
        wanted_by_rivals = CpuSet().union(*(nodes[q].target or CpuSet() for q in rivals))
        if cur[path].isdisjoint(wanted_by_rivals):
            continue  # not a blocker
        spare = cur[parent] - _held_against(nodes, cur, leaves, path) - cur[path] - wanted_by_rivals
        if spare:
            return path, spare.first(1)
    return None


def _validate(
    nodes: Mapping[str, SetNode], descendants: Mapping[str, list[str]], leaves: list[str]
) -> None:
    for path, node in nodes.items():
        if node.target is None:
            continue
        if not node.target and node.has_tasks:
            raise PlanError(f"{path}: a cgroup with tasks cannot have an empty cpuset")
        for child in descendants[path]:
            child_target = nodes[child].target
            if child_target is not None and not child_target <= node.target:
                raise PlanError(
                    f"{child}: target {child_target} is not inside its parent {path}'s "
                    f"target {node.target}"
                )
    for path in leaves:
        if not nodes[path].exclusive:
            continue
        target = _target(nodes, path)
        for other in leaves:
            other_target = _target(nodes, other)
            if other != path and not target.isdisjoint(other_target):
                raise PlanError(f"{path}: exclusive CPUs {target} overlap {other}'s {other_target}")


def _target(nodes: Mapping[str, SetNode], path: str) -> CpuSet:
    """The target of ``path``, which the plan needs: a leaf or a shrinking parent."""
    target = nodes[path].target
    if target is None:
        raise PlanError(f"{path}: no target CPU set where the plan needs one")
    return target
