"""Exact placement in priority order by decomposition: workloads to NUMA nodes, then cores.

The priority vector of `corral.placement.cost` (spread, shared cores, sibling cores, hot
L3 threads, moved CPUs, fragmentation) depends, on the hosts covered here, only on how
many threads and how many *odd parts* each NUMA node receives, plus where inside a node
each workload keeps its previous CPUs. So the exact optimum is found in two steps:

1. Nodes (a small bin-packing): a dynamic programme over the exclusive workloads whose
   state is (threads on node 0, odd parts on node 0) for each number of avoidable splits
   (and of even requests split into two odd parts). Its value is the most previously held
   CPUs the workloads can keep on the nodes they get, an upper bound on what any
   placement of that state keeps. Every reachable final state is priced with the closed
   forms below and the lexicographic minimum is taken; the minimum is the *bound* vector.
2. Cores within each node (easy): the closed forms are met exactly by construction, the
   previous CPUs kept where the shapes allow.

Closed forms for a node of ``C`` two-thread cores holding ``R`` threads in ``o`` odd parts
(``F = 2C - R`` free threads). Pool unused: an odd part sits next to a free thread, so
only ``max(0, (o - F) / 2)`` cores must pair two workloads; then the fewest sibling cores
are ``(R - H) / 2`` with ``H = min(F + 2 * shared, R)`` single threads (each free thread
sits next to a workload's single thread). Pool used: a single thread next to the pool is
a shared core too, so odd parts pair up, ``ceil(o / 2)`` shared cores and
``(R - o) / 2`` sibling cores. One thread per core: neither exists. Each is a lower
bound (a counting argument on the node's cores) and the construction meets it.

Hosts covered (`unsupported` says why not): one or two NUMA nodes, each in one socket;
every core with the same number of threads (one or two) and its threads all available
or all taken (offline or immovable); not ``full_cores``. Several L3 domains in a node
(AMD CCXs): the extraction spreads each workload's units, busiest first, over the
domain that stays least loaded, but the bound's L3 entry is 0, which proves nothing
there (`corral.placement.optimal` then also runs its MIP and keeps the better). Time:
without previous CPUs the programme is two big-integer shifts per workload (bit sets of
reachable states); with them, numpy arrays of kept CPUs. A whole decision on 512
threads and 200 workloads takes about 21 ms here.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from corral.placement.cost import busyness, units_needed
from corral.placement.workload import Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology

_NEG = -(10**9)
_MAX_SPLITS = 2  # avoidable splits searched before giving up (the MIP then runs)


@dataclass(frozen=True)
class LexPlan:
    """Exclusive cpusets in priority order, and the bound they are measured against.

    ``bound`` is a lower bound on (spread, shared cores, sibling cores, hot L3 threads,
    moved CPUs, fragmentation) over every placement of the same workloads, compared
    lexicographically; ``shared_bound`` is its shared-cores part (what odd requests force
    once no workload crosses nodes needlessly).
    """

    cpusets: Mapping[str, CpuSet]
    bound: tuple[float, ...]
    shared_bound: int
    split: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Node:
    node: int
    cores: tuple[tuple[int, ...], ...]  # available cores, threads ascending
    free_base: int  # node CPUs not fixed by immovable workloads

    @property
    def cap(self) -> int:
        return sum(len(c) for c in self.cores)


@dataclass(frozen=True, slots=True)
class _Item:
    wid: str
    want: int
    keep: tuple[int, ...]  # previously held available CPUs per node
    forced: bool  # no single node can hold it: crossing costs nothing


def unsupported(topology: Topology, available: CpuSet, *, full_cores: bool) -> str:
    """Why the decomposition does not cover this host ('' when it does)."""
    if full_cores:
        return "full cores"
    nodes = topology.numa_nodes
    if len(nodes) > 2:
        return f"{len(nodes)} NUMA nodes"
    if any(len(topology.sockets_of(topology.cpus_in_numa(n))) > 1 for n in nodes):
        return "a NUMA node spans sockets"
    sizes = {len(core.cpus) for core in topology.cores}
    if len(sizes) != 1 or not sizes <= {1, 2}:
        return f"threads per core {sorted(sizes)}"
    for core in topology.cores:
        inside = core.cpus & available
        if inside and inside != core.cpus:
            return "a core with some threads fixed by immovable workloads"
    return ""


def node_costs(
    cap: int, threads: int, odd: int, *, per_core: int, pool_used: bool
) -> tuple[int, int, int]:
    """(shared cores, sibling cores, single threads) the best arrangement of ``threads``
    threads in ``odd`` odd parts on ``cap`` available threads of one node reaches."""
    if per_core == 1 or threads == 0:
        return 0, 0, threads
    if pool_used:
        return (odd + 1) // 2, (threads - odd) // 2, odd
    free = cap - threads
    shared = max(0, (odd - free) // 2)
    singles = min(free + 2 * shared, threads)
    return shared, (threads - singles) // 2, singles


def place_lexicographic(
    topology: Topology,
    chosen: Sequence[Workload],
    available: CpuSet,
    previous: Mapping[str, CpuSet],
    *,
    pool_used: bool,
    reserved: CpuSet,
    u_pool: float = 0.0,
) -> LexPlan | None:
    """Exclusive CPUs for ``chosen`` (all of which fit ``available``) minimising the
    priority vector, with its bound; None when more than two avoidable splits would be
    needed (the caller then uses the MIP). ``topology`` is the online host, ``reserved``
    the CPUs of immovable workloads."""
    per_core = topology.threads_per_core
    nodes = [
        _Node(
            n,
            tuple(
                tuple(core.cpus.ids())
                for core in topology.cores_in_numa(n)
                if core.cpus.issubset(available)
            ),
            len(topology.cpus_in_numa(n) - reserved),
        )
        for n in topology.numa_nodes
    ]
    sizes = [len(topology.cpus_in_numa(n.node)) for n in nodes]
    items = []
    for w in chosen:
        before = previous.get(w.id, CpuSet())
        keep = tuple(
            min(w.whole_cpus, len(before & CpuSet(c for core in n.cores for c in core)))
            for n in nodes
        )
        forced = len(nodes) == 2 and units_needed(sizes, w.whole_cpus) >= 2
        items.append(_Item(w.id, w.whole_cpus, keep, forced))
    held_before = sum(len(previous[w.id]) for w in chosen if w.id in previous)
    if len(nodes) == 1:
        parts: dict[str, tuple[int, ...]] = {it.wid: (it.want,) for it in items}
        kept = sum(it.keep[0] for it in items)
        state = _State(0, 0, sum(it.want for it in items), 0)
    else:
        found = None
        for max_k in range(_MAX_SPLITS + 1):
            found = _two_nodes(
                nodes,
                items,
                max_k=max_k,
                per_core=per_core,
                pool_used=pool_used,
                held_before=held_before,
                sizes=sizes,
            )
            if found is not None:
                break
        if found is None:
            return None
        two, state, kept = found
        parts = dict(two)
    busy = {w.id: busyness(w) for w in chosen}
    prev_owner = {cpu: wid for wid, cpus in previous.items() if wid in busy for cpu in cpus}
    cpus: dict[str, list[int]] = defaultdict(list)
    spread = _L3Spread(topology, {w: u - u_pool for w, u in busy.items()})
    shared_total = sibling_total = 0
    loads = []
    for index, node in enumerate(nodes):
        node_parts = {wid: p[index] for wid, p in parts.items() if p[index] > 0}
        threads = sum(node_parts.values())
        odd = sum(p % 2 for p in node_parts.values()) if per_core == 2 else 0
        shared, siblings, singles = node_costs(
            node.cap, threads, odd, per_core=per_core, pool_used=pool_used
        )
        shared_total += shared
        sibling_total += siblings
        loads.append(threads)
        pairs = odd // 2 if pool_used else shared
        for wid, got in _build_node(
            node,
            node_parts,
            singles=singles,
            pairs=pairs,
            prev_owner=prev_owner,
            busy=busy,
            spread=spread,
        ).items():
            cpus[wid].extend(got)
    spread_cost = _split_cost(topology) * state.splits
    bound = (
        float(spread_cost),
        float(shared_total),
        float(sibling_total),
        0.0,
        float(held_before - kept),
        _fragmentation(nodes, loads, sizes),
    )
    split = tuple(wid for wid, p in parts.items() if sum(1 for x in p if x) > 1)
    return LexPlan(
        cpusets={wid: CpuSet(c) for wid, c in cpus.items()},
        bound=bound,
        shared_bound=shared_total,
        split=split,
    )


@dataclass(frozen=True, slots=True)
class _State:
    splits: int
    even_odd: int
    threads0: int
    odd0: int


def _split_cost(topology: Topology) -> int:
    """Spread of one avoidable split on a two-node host: one NUMA node, plus one socket
    when the nodes sit on different sockets."""
    nodes = topology.numa_nodes
    if len(nodes) < 2:
        return 0
    sockets = {topology.sockets_of(topology.cpus_in_numa(n))[0] for n in nodes}
    return 1 + (len(sockets) > 1)


def _fragmentation(nodes: Sequence[_Node], loads: Sequence[int], sizes: Sequence[int]) -> float:
    if len(nodes) < 2:
        return 0.0
    largest_free = max(n.free_base - load for n, load in zip(nodes, loads, strict=True))
    return round(1 - largest_free / max(sizes), 9)


def _shift(values: NDArray[np.int64], a: int, p: int) -> NDArray[np.int64] | None:
    """``values`` moved ``a`` threads and ``p`` odd parts up (None if off the grid)."""
    rows, cols = values.shape
    if a >= rows or p >= cols:
        return None
    out = np.full_like(values, _NEG)
    out[a:, p:] = values[: rows - a, : cols - p]
    return out


def _two_nodes(
    nodes: Sequence[_Node],
    items: Sequence[_Item],
    *,
    max_k: int,
    per_core: int,
    pool_used: bool,
    held_before: int,
    sizes: Sequence[int],
) -> tuple[dict[str, tuple[int, int]], _State, int] | None:
    """The programme over (avoidable splits, even-odd splits) layers; the lexicographic
    best final state and the parts that reach it, or None if none is feasible."""
    cap0, cap1 = nodes[0].cap, nodes[1].cap
    total = sum(it.want for it in items)
    odd_requests = sum(it.want % 2 for it in items) if per_core == 2 else 0
    forced = sum(it.forced for it in items)
    max_e = (max_k + forced) if per_core == 2 else 0
    grid = _Grid(cap0 + 1, (odd_requests + 2 * max_e + 1) if per_core == 2 else 1, per_core)
    steps = [
        (it, _moves(it, (cap0, cap1), per_core=per_core, max_k=max_k, max_e=max_e)) for it in items
    ]
    if held_before:
        layers, history = _values_programme(grid, steps, (max_k, max_e))
    else:
        masks, bit_history = _reach_programme(grid, steps, (max_k, max_e))
        layers = {key: grid.values_of(mask) for key, mask in masks.items()}
    picked = _best_state(
        layers,
        nodes,
        total=total,
        odd_requests=odd_requests,
        per_core=per_core,
        pool_used=pool_used,
        held_before=held_before,
        sizes=sizes,
        cap1=cap1,
    )
    if picked is None:
        return None
    state, kept = picked
    parts: dict[str, tuple[int, int]] = {}
    layer, r0, o0 = (state.splits, state.even_odd), state.threads0, state.odd0
    for index in range(len(steps) - 1, -1, -1):
        it, moves = steps[index]
        if held_before:
            a = int(history[index][layer][r0, o0])
            move = next(m for m in moves if m.a == a)
        else:
            move = _reached_by(grid, bit_history, index, moves, (layer, r0, o0))
        parts[it.wid] = (move.a, it.want - move.a)
        layer = (layer[0] - move.dk, layer[1] - move.de)
        r0 -= move.a
        o0 -= move.p
    ordered = {it.wid: parts[it.wid] for it in items}
    return ordered, state, kept


@dataclass(frozen=True, slots=True)
class _Move:
    a: int  # threads on node 0
    p: int  # odd parts on node 0 (0 or 1)
    dk: int  # avoidable splits added
    de: int  # even requests split into two odd parts added
    gain: int  # previously held CPUs kept (an upper bound)

    def target(self, k: int, e: int) -> tuple[int, int]:
        return (k + self.dk, e + self.de)


@dataclass(frozen=True, slots=True)
class _Grid:
    rows: int  # threads on node 0: 0..cap0
    cols: int  # odd parts on node 0
    per_core: int

    def values_of(self, mask: int) -> NDArray[np.int64]:
        """A reachability bit set as programme values (0 reached, _NEG not)."""
        size = self.rows * self.cols
        raw = mask.to_bytes((size + 7) // 8 + 1, "little")
        bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")[:size]
        return np.where(bits.reshape(self.rows, self.cols) > 0, 0, _NEG).astype(np.int64)


def _moves(
    it: _Item, caps: tuple[int, int], *, per_core: int, max_k: int, max_e: int
) -> list[_Move]:
    cap0, cap1 = caps
    moves = []
    for a in _options(it, cap0, cap1):
        split = 0 < a < it.want
        dk = int(split and not it.forced)
        de = int(split and per_core == 2 and it.want % 2 == 0 and a % 2 == 1)
        if dk > max_k or de > max_e:
            continue
        gain = min(a, it.keep[0]) + min(it.want - a, it.keep[1])
        moves.append(_Move(a, a % 2 if per_core == 2 else 0, dk, de, gain))
    return moves


def _reach_programme(
    grid: _Grid, steps: Sequence[tuple[_Item, list[_Move]]], limits: tuple[int, int]
) -> tuple[dict[tuple[int, int], int], list[dict[tuple[int, int], int]]]:
    """Reachable (threads, odd parts) on node 0 per layer, as Python-int bit sets (bit
    ``threads * cols + odd``): two shifts and an or per workload."""
    full = (1 << (grid.rows * grid.cols)) - 1
    layers: dict[tuple[int, int], int] = {(0, 0): 1}
    history = []
    for _, moves in steps:
        new: dict[tuple[int, int], int] = defaultdict(int)
        for (k, e), mask in layers.items():
            for m in moves:
                target = m.target(k, e)
                if target[0] > limits[0] or target[1] > limits[1]:
                    continue
                new[target] |= (mask << (m.a * grid.cols + m.p)) & full
        layers = {key: mask for key, mask in new.items() if mask}
        history.append(layers)
    return layers, history


def _reached_by(
    grid: _Grid,
    history: Sequence[Mapping[tuple[int, int], int]],
    index: int,
    moves: Sequence[_Move],
    state: tuple[tuple[int, int], int, int],
) -> _Move:
    """A move of step ``index`` that reaches (layer, r0, o0) from a reached state."""
    layer, r0, o0 = state
    before = history[index - 1] if index else {(0, 0): 1}
    for m in moves:
        source = (layer[0] - m.dk, layer[1] - m.de)
        r, o = r0 - m.a, o0 - m.p
        if m.target(*source) != layer or r < 0 or o < 0 or source not in before:
            continue
        if (before[source] >> (r * grid.cols + o)) & 1:
            return m
    raise AssertionError("unreachable state in the placement programme")


def _values_programme(
    grid: _Grid, steps: Sequence[tuple[_Item, list[_Move]]], limits: tuple[int, int]
) -> tuple[
    dict[tuple[int, int], NDArray[np.int64]], list[dict[tuple[int, int], NDArray[np.int64]]]
]:
    """The most previously held CPUs kept per (layer, threads, odd parts) on node 0, and
    the move (threads on node 0) that reaches each state's best."""
    start = np.full((grid.rows, grid.cols), _NEG, dtype=np.int64)
    start[0, 0] = 0
    layers: dict[tuple[int, int], NDArray[np.int64]] = {(0, 0): start}
    history: list[dict[tuple[int, int], NDArray[np.int64]]] = []
    for _, moves in steps:
        new: dict[tuple[int, int], NDArray[np.int64]] = {}
        choice: dict[tuple[int, int], NDArray[np.int64]] = {}
        for (k, e), cur in layers.items():
            for m in moves:
                target = m.target(k, e)
                if target[0] > limits[0] or target[1] > limits[1]:
                    continue
                moved = _shift(cur, m.a, m.p)
                if moved is None:
                    continue
                cand = moved + m.gain
                best = new.get(target)
                if best is None:
                    new[target] = cand
                    choice[target] = np.full(cand.shape, m.a, dtype=np.int64)
                else:
                    better = cand > best
                    new[target] = np.where(better, cand, best)
                    choice[target] = np.where(better, m.a, choice[target])
        layers = new
        history.append(choice)
    return layers, history


def _options(it: _Item, cap0: int, cap1: int) -> list[int]:
    """Threads the workload may put on node 0: all, none, or (a split) anything between
    that both nodes can hold."""
    whole = [
        a for a in (it.want, 0) if (a == it.want and a <= cap0) or (a == 0 and it.want <= cap1)
    ]
    if it.forced:
        whole = []
    low, high = max(1, it.want - cap1), min(it.want - 1, cap0)
    return whole + list(range(low, high + 1))


def _best_state(
    layers: Mapping[tuple[int, int], NDArray[np.int64]],
    nodes: Sequence[_Node],
    *,
    total: int,
    odd_requests: int,
    per_core: int,
    pool_used: bool,
    held_before: int,
    sizes: Sequence[int],
    cap1: int,
) -> tuple[_State, int] | None:
    """The reachable final state with the lexicographically smallest priority vector."""
    best_key: tuple[float, ...] | None = None
    best: tuple[_State, int] | None = None
    cap0 = nodes[0].cap
    for (k, e), values in sorted(layers.items()):
        if best_key is not None and k > best_key[0]:
            break  # fewer avoidable splits always win
        r0 = np.arange(values.shape[0])[:, None]
        o0 = np.arange(values.shape[1])[None, :]
        r1 = total - r0
        o1 = odd_requests + 2 * e - o0 if per_core == 2 else np.zeros_like(o0)
        ok = (values > _NEG // 2) & (r1 >= 0) & (r1 <= cap1) & (o1 >= 0)
        if not ok.any():
            continue
        rr0, oo0 = np.nonzero(ok)
        rr1 = total - rr0
        oo1 = (odd_requests + 2 * e - oo0) if per_core == 2 else np.zeros_like(oo0)
        sh0, sib0 = _vector_costs(cap0, rr0, oo0, per_core, pool_used)
        sh1, sib1 = _vector_costs(cap1, rr1, oo1, per_core, pool_used)
        kept = values[rr0, oo0]
        free = np.maximum(nodes[0].free_base - rr0, nodes[1].free_base - rr1)
        frag = np.round(1 - free / max(sizes), 9)
        keys = np.lexsort((rr0, frag, held_before - kept, sib0 + sib1, sh0 + sh1))
        i = int(keys[0])
        key = (
            float(k),
            float(sh0[i] + sh1[i]),
            float(sib0[i] + sib1[i]),
            float(held_before - kept[i]),
            float(frag[i]),
        )
        if best_key is None or key < best_key:
            best_key = key
            best = (_State(k, e, int(rr0[i]), int(oo0[i])), int(kept[i]))
    return best


def _vector_costs(
    cap: int, threads: NDArray[np.int64], odd: NDArray[np.int64], per_core: int, pool_used: bool
) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """`node_costs` over arrays: (shared cores, sibling cores)."""
    if per_core == 1:
        zero = np.zeros_like(threads)
        return zero, zero
    if pool_used:
        return (odd + 1) // 2, (threads - odd) // 2
    free = cap - threads
    shared = np.maximum(0, (odd - free) // 2)
    singles = np.minimum(free + 2 * shared, threads)
    return shared, (threads - singles) // 2


def _build_node(
    node: _Node,
    parts: Mapping[str, int],
    *,
    singles: int,
    pairs: int,
    prev_owner: Mapping[int, str],
    busy: Mapping[str, float],
    spread: _L3Spread,
) -> dict[str, list[int]]:
    """Threads of one node for its parts: ``singles`` single threads in all (``pairs``
    cores of them paired between two workloads), the rest as whole cores; previously
    held threads kept where the shape allows."""
    cores = list(node.cores)
    if not parts:
        return {}
    if len(cores[0]) == 1:
        return _one_thread(cores, parts, prev_owner)
    halves = _halves(cores, parts, singles, prev_owner, busy)
    paired = _pairs(cores, halves, pairs, prev_owner, busy)
    full = {wid: (parts[wid] - halves[wid]) // 2 for wid in parts}
    lone = Counter({wid: halves[wid] for wid in parts})
    for a, b in paired:
        lone[a] -= 1
        lone[b] -= 1
    units: list[tuple[str, ...]] = []  # ("full", w), ("pair", a, b), ("single", w)
    for wid in parts:
        units.extend([("full", wid)] * full[wid])
        units.extend([("single", wid)] * lone[wid])
    units.extend(("pair", a, b) for a, b in paired)
    return _assign(cores, units, prev_owner, spread)


def _one_thread(
    cores: list[tuple[int, ...]], parts: Mapping[str, int], prev_owner: Mapping[int, str]
) -> dict[str, list[int]]:
    got: dict[str, list[int]] = defaultdict(list)
    free = [c[0] for c in cores]
    for cpu in list(free):
        wid = prev_owner.get(cpu)
        if wid is not None and wid in parts and len(got[wid]) < parts[wid]:
            got[wid].append(cpu)
            free.remove(cpu)
    for wid, want in parts.items():
        while len(got[wid]) < want:
            got[wid].append(free.pop(0))
    return dict(got)


def _halves(
    cores: Sequence[tuple[int, ...]],
    parts: Mapping[str, int],
    singles: int,
    prev_owner: Mapping[int, str],
    busy: Mapping[str, float],
) -> dict[str, int]:
    """Single threads per workload: odd parts one each, the rest two at a time, first to
    workloads that held single threads here before, then the busiest."""
    halves = {wid: p % 2 for wid, p in parts.items()}
    extra = singles - sum(halves.values())
    before: Counter[str] = Counter()
    for core in cores:
        owners = [prev_owner.get(c) for c in core]
        for wid in {o for o in owners if o is not None}:
            if wid in parts and owners.count(wid) == 1:
                before[wid] += 1
    for wid in sorted(parts, key=lambda w: (-before[w], w)):
        while extra >= 2 and halves[wid] + 2 <= min(parts[wid], before[wid] + 1):
            halves[wid] += 2
            extra -= 2
    order = sorted(parts, key=lambda w: (-busy[w], w))
    while extra >= 2:
        moved = False
        for wid in order:
            if extra >= 2 and halves[wid] + 2 <= parts[wid]:
                halves[wid] += 2
                extra -= 2
                moved = True
        if not moved:
            break
    return halves


def _pairs(
    cores: Sequence[tuple[int, ...]],
    halves: Mapping[str, int],
    pairs: int,
    prev_owner: Mapping[int, str],
    busy: Mapping[str, float],
) -> list[tuple[str, str]]:
    """``pairs`` pairs of different workloads with single threads: pairs that shared a
    core before first, then the least busy."""
    left = Counter({w: h for w, h in halves.items() if h > 0})
    chosen: list[tuple[str, str]] = []
    for core in cores:
        if len(chosen) >= pairs:
            break
        a, b = (prev_owner.get(c) for c in core)
        if a and b and a != b and left[a] > 0 and left[b] > 0:
            chosen.append((a, b))
            left[a] -= 1
            left[b] -= 1
    while len(chosen) < pairs:
        ranked = sorted((w for w in left if left[w] > 0), key=lambda w: (-left[w], busy[w], w))
        if len(ranked) < 2:
            break  # cannot happen when the counts come from `node_costs`
        a, b = ranked[0], ranked[1]
        chosen.append((a, b))
        left[a] -= 1
        left[b] -= 1
    return chosen


def _assign(
    cores: list[tuple[int, ...]],
    units: list[tuple[str, ...]],
    prev_owner: Mapping[int, str],
    spread: _L3Spread,
) -> dict[str, list[int]]:
    """Put each unit on a core: first cores whose previous owners match it wholly, then
    partly, then the free ones (spread over the node's L3 domains when it has several);
    each owner takes its previous thread."""
    got: dict[str, list[int]] = defaultdict(list)
    pending = list(units)

    def owners_of(unit: tuple[str, ...]) -> tuple[str, ...]:
        return (unit[1], unit[1]) if unit[0] == "full" else unit[1:]

    def score(unit: tuple[str, ...], core: tuple[int, ...]) -> int:
        previous = [prev_owner.get(c) for c in core]
        want = list(owners_of(unit))
        hits = 0
        for wid in previous:
            if wid in want:
                want.remove(wid)
                hits += 1
        return hits

    by_owner: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for core in cores:
        for wid in {prev_owner.get(c) for c in core}:
            if wid is not None:
                by_owner[wid].append(core)
    open_cores = set(cores)
    for needed in (2, 1):
        for unit in list(pending):
            owners = owners_of(unit)
            target = min(needed, len(owners))
            if unit[0] == "single" and needed == 2:
                continue
            candidates = sorted({c for wid in set(owners) for c in by_owner.get(wid, ())})
            hit = next(
                (core for core in candidates if core in open_cores and score(unit, core) >= target),
                None,
            )
            if hit is None:
                continue
            _take(hit, unit, owners, prev_owner, got)
            open_cores.discard(hit)
            pending.remove(unit)
            spread.add(hit, owners)
    free_cores = [core for core in cores if core in open_cores]
    # The rest: cores nobody held before first, so others' previous cores stay open.
    free_cores.sort(key=lambda core: (any(c in prev_owner for c in core), core))
    for unit, core in spread.arrange(pending, free_cores, owners_of):
        _take(core, unit, owners_of(unit), prev_owner, got)
    return dict(got)


class _L3Spread:
    """L3 balance inside a node (priority 4): the load each L3 domain carries above the
    pool's, and where the remaining units go so that no domain runs hot."""

    def __init__(self, topology: Topology, excess: Mapping[str, float]) -> None:
        self.l3_of = {cpu.id: cpu.l3 for cpu in topology.cpus}
        self.size = {d: len(topology.cpus_in_l3(d)) for d in topology.l3_domains}
        self.excess = excess  # busyness above the pool's, per workload thread
        self.load: dict[int, float] = defaultdict(float)

    def add(self, core: tuple[int, ...], owners: Sequence[str]) -> None:
        """Count a placed unit's load on its core's L3 domain."""
        self.load[self.l3_of[core[0]]] += sum(self.excess[w] for w in owners)

    def arrange(
        self,
        units: Sequence[tuple[str, ...]],
        free: Sequence[tuple[int, ...]],
        owners_of: Callable[[tuple[str, ...]], tuple[str, ...]],
    ) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
        """Units matched to free cores. One L3 domain: in order. Several: the units of
        one workload together (L3 locality), the busiest workloads first, each to the
        domain with room that would be least loaded afterwards."""
        by_l3: dict[int, list[tuple[int, ...]]] = defaultdict(list)
        for core in free:
            by_l3[self.l3_of[core[0]]].append(core)
        if len(by_l3) <= 1:
            pairs = list(zip(units, free, strict=False))
        else:
            bundles: dict[tuple[str, ...], list[tuple[str, ...]]] = defaultdict(list)
            for unit in units:
                bundles[tuple(sorted(set(owners_of(unit))))].append(unit)

            def weight(unit: tuple[str, ...]) -> float:
                return sum(self.excess[w] for w in owners_of(unit))

            order = sorted(bundles, key=lambda k: (-sum(map(weight, bundles[k])), k))
            pairs = []
            for key in order:
                items = sorted(bundles[key], key=weight, reverse=True)
                while items:
                    need = sum(map(weight, items))
                    fits = [d for d in by_l3 if len(by_l3[d]) >= len(items)]
                    pool = fits or [max(by_l3, key=lambda d: (len(by_l3[d]), -d))]
                    d = min(pool, key=lambda d: ((self.load[d] + need) / self.size[d], d))
                    while items and by_l3[d]:
                        pairs.append((items.pop(0), by_l3[d].pop(0)))
                    if not by_l3[d]:
                        del by_l3[d]
        for unit, core in pairs:
            self.add(core, owners_of(unit))
        return pairs


def _take(
    core: tuple[int, ...],
    unit: tuple[str, ...],
    owners: tuple[str, ...],
    prev_owner: Mapping[int, str],
    got: dict[str, list[int]],
) -> None:
    threads = list(core)
    if unit[0] == "full":
        got[owners[0]].extend(threads)
        return
    mine: list[tuple[str, int]] = []
    for wid in owners:
        cpu = next((c for c in threads if prev_owner.get(c) == wid), None)
        if cpu is None:
            cpu = next((c for c in threads if prev_owner.get(c) not in owners), threads[0])
        threads.remove(cpu)
        mine.append((wid, cpu))
    for wid, cpu in mine:
        got[wid].append(cpu)
