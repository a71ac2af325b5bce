"""Kubernetes' static CPU manager, reproduced choice for choice (design.md section 3).

This follows kubelet's ``cpu_assignment.go`` (v1.32-1.34): ``takeByTopologyNUMAPacked``
(packed and spread orders) and ``takeByTopologyNUMADistributed``, plus the static
policy's ``full-pcpus-only`` checks. Details that matter for identical output:

* kubelet identifies a core by its lowest CPU id (``getUniqueCoreID``), so core ties
  break on that, not on corral's core number;
* a core (socket) counts as free when its available CPUs equal the host's CPUs per core
  (per socket) computed as total CPUs divided by cores (sockets), as kubelet does; a NUMA
  node is free when all of its own CPUs are available;
* every sorted list counts *available* CPUs and is computed once at the start of its step;
* with full cores only whole free cores are offered, so results are whole cores even when
  the available set has split cores (kubelet assumes it never does);
* the distributed search tries NUMA-node counts from kubelet's minimum up to
  ``min(groups needed, NUMA nodes with free CPUs)``; population standard deviation of the
  free CPUs left on the NUMA nodes that had free CPUs decides, first strictly-lower wins.

The uncore-cache option (``prefer-align-cpus-by-uncorecache``) is not reproduced.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from corral.errors import PlacementError
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


class Strategy(StrEnum):
    """kubelet's CPU manager policy options, as corral names them."""

    PACKED = "packed"
    SPREAD = "spread"  # distribute-cpus-across-cores
    DISTRIBUTED = "distributed"  # distribute-cpus-across-numa


class NotEnoughCpusError(PlacementError):
    """kubelet's ``not enough cpus available to satisfy request``."""


class SmtAlignmentError(PlacementError):
    """kubelet's ``SMT Alignment Error`` under full-pcpus-only."""


def take_cpus(
    topology: Topology,
    available: CpuSet,
    count: int,
    *,
    strategy: Strategy = Strategy.PACKED,
    full_cores: bool = False,
) -> CpuSet:
    """Choose ``count`` CPUs out of ``available`` exactly as kubelet's static policy would.

    Raises `NotEnoughCpusError` / `SmtAlignmentError` with kubelet's own message text, and
    `PlacementError` for option combinations kubelet refuses (spread with full cores).
    """
    available = available & topology.all_cpus
    if count < 0:
        raise PlacementError(f"a CPU request must not be negative, got {count}")
    if strategy is Strategy.SPREAD and full_cores:
        raise PlacementError(
            "spread (distribute-cpus-across-cores) cannot be combined with full cores "
            "(full-pcpus-only), as in kubelet"
        )
    if full_cores:
        per_core = topology.threads_per_core
        if count % per_core:
            raise SmtAlignmentError(
                f"SMT Alignment Error: requested {count} cpus not multiple cpus per core = "
                f"{per_core}"
            )
        # kubelet relies on every earlier grant and the reserved CPUs being whole cores; corral
        # makes that hold by offering only whole free cores (a no-op when kubelet's holds).
        available = _whole_free_cores(topology, available, per_core)
        physical = len(available)
        if count > physical:
            raise SmtAlignmentError(
                "SMT Alignment Error: not enough free physical CPUs: available physical "
                f"CPUs = {physical}, requested CPUs = {count}, CPUs per core = {per_core}"
            )
    if strategy is Strategy.DISTRIBUTED:
        group = topology.threads_per_core if full_cores else 1
        return _take_distributed(topology, available, count, group)
    return _take_packed(topology, available, count, spread=strategy is Strategy.SPREAD)


def _whole_free_cores(topology: Topology, available: CpuSet, per_core: int) -> CpuSet:
    return CpuSet(
        cpu
        for core in topology.cores
        if len(core.cpus & available) == per_core
        for cpu in core.cpus & available
    )


@dataclass
class _Accumulator:
    """kubelet's cpuAccumulator: the CPUs still available and what has been taken."""

    topology: Topology
    available: set[int]
    needed: int
    spread: bool

    def __post_init__(self) -> None:
        topo = self.topology
        self.result: set[int] = set()
        self.core_key = topo.first_cpu_of_core
        self.cpus_per_core = len(topo.cpus) // len(topo.cores)
        self.cpus_per_socket = len(topo.cpus) // len(topo.sockets)
        self.numa_first = len(topo.sockets) >= len(topo.numa_nodes)
        # Cached on the topology: counting a unit's free CPUs costs its size, not the host's.
        self._unit_of = topo.unit_of
        self._members = topo.members_of
        # Free-CPU counts per unit, kept up to date by `take` instead of recounted per sort.
        self._counts: dict[str, Counter[int]] = {
            attr: Counter(self._unit_of[attr][c] for c in self.available)
            for attr in ("numa", "socket", "core")
        }

    # --- counting available CPUs ----------------------------------------------------
    def _avail_where(self, attr: str, value: int) -> list[int]:
        return [c for c in self._members[attr].get(value, ()) if c in self.available]

    def avail_numa(self, numa: int) -> list[int]:
        return self._avail_where("numa", numa)

    def avail_socket(self, socket: int) -> list[int]:
        return self._avail_where("socket", socket)

    def avail_core(self, core: int) -> list[int]:
        return self._avail_where("core", core)

    def _present(self, attr: str) -> set[int]:
        return {unit for unit, free in self._counts[attr].items() if free > 0}

    def _sorted(
        self,
        ids: Iterable[int],
        count: Callable[[int], int],
        key: Callable[[int], int] = lambda i: i,
    ) -> list[int]:
        return sorted(ids, key=lambda i: (count(i), key(i)))

    # --- kubelet's nested orders ----------------------------------------------------
    def sorted_numa(self) -> list[int]:
        count = self._counter("numa")
        if self.numa_first:
            return self._sorted(self._present("numa"), count)
        result: list[int] = []
        for socket in self.sorted_sockets():
            numas = {self._unit_of["numa"][c] for c in self.avail_socket(socket)}
            result.extend(self._sorted(numas, count))
        return result

    def sorted_sockets(self) -> list[int]:
        count = self._counter("socket")
        if not self.numa_first:
            return self._sorted(self._present("socket"), count)
        result: list[int] = []
        for numa in self.sorted_numa():
            sockets = {self._unit_of["socket"][c] for c in self.avail_numa(numa)}
            result.extend(self._sorted(sockets, count))
        return result

    def sorted_cores(self) -> list[int]:
        count = self._counter("core")
        result: list[int] = []
        outer_attr, outer = (
            ("socket", self.sorted_sockets()) if self.numa_first else ("numa", self.sorted_numa())
        )
        for unit in outer:
            core_of = self._unit_of["core"]
            cores = {core_of[c] for c in self._avail_where(outer_attr, unit)}
            result.extend(self._sorted(cores, count, key=self.core_key.__getitem__))
        return result

    def _counter(self, attr: str) -> Callable[[int], int]:
        counts = self._counts[attr]
        return lambda unit: counts.get(unit, 0)

    def sorted_cpus(self) -> list[int]:
        if self.spread:
            ordered: list[int] = []
            for socket in self.sorted_sockets():
                ordered.extend(sorted(self.avail_socket(socket)))
            return ordered
        packed: list[int] = []
        for core in self.sorted_cores():
            packed.extend(sorted(self.avail_core(core)))
        return packed

    # --- taking ---------------------------------------------------------------------
    def satisfied(self) -> bool:
        return self.needed < 1

    def failed(self) -> bool:
        return self.needed > len(self.available)

    def take(self, cpus: Iterable[int]) -> None:
        taken = set(cpus)
        for cpu in taken & self.available:
            for attr, counts in self._counts.items():
                counts[self._unit_of[attr][cpu]] -= 1
        self.result |= taken
        self.available -= taken
        self.needed -= len(taken)

    def take_full_numa(self) -> None:
        for numa in [
            n
            for n in self.sorted_numa()
            if self._counts["numa"][n] == len(self.topology.cpus_in_numa(n))
        ]:
            cpus = self.topology.cpus_in_numa(numa)
            if self.needed >= len(cpus):
                self.take(cpus)

    def take_full_sockets(self) -> None:
        for socket in [
            s for s in self.sorted_sockets() if self._counts["socket"][s] == self.cpus_per_socket
        ]:
            cpus = self.topology.cpus_in_socket(socket)
            if self.needed >= len(cpus):
                self.take(cpus)

    def take_full_cores(self) -> None:
        for core in [
            c for c in self.sorted_cores() if self._counts["core"][c] == self.cpus_per_core
        ]:
            cpus = self.topology.core(core).cpus
            if self.needed >= len(cpus):
                self.take(cpus)

    def take_remaining(self) -> None:
        for cpu in self.sorted_cpus():
            self.take([cpu])
            if self.satisfied():
                return


def _not_enough(count: int, available: int) -> NotEnoughCpusError:
    return NotEnoughCpusError(
        f"not enough cpus available to satisfy request: requested={count}, available={available}"
    )


def _take_packed(topology: Topology, available: CpuSet, count: int, *, spread: bool) -> CpuSet:
    acc = _Accumulator(topology, set(available), count, spread)
    if acc.satisfied():
        return CpuSet()
    if acc.failed():
        raise _not_enough(count, len(available))
    steps = [acc.take_full_numa, acc.take_full_sockets]
    if not acc.numa_first:
        steps.reverse()
    if not spread:
        steps.append(acc.take_full_cores)
    steps.append(acc.take_remaining)
    for step in steps:
        step()
        if acc.satisfied():
            return CpuSet(acc.result)
    raise PlacementError("failed to allocate cpus")  # unreachable when not failed()


def _std(values: Iterable[int]) -> float:
    data = list(values)
    mean = sum(data) / len(data)
    return math.sqrt(sum((v - mean) ** 2 for v in data) / len(data))


def _take_distributed(topology: Topology, available: CpuSet, count: int, group: int) -> CpuSet:
    if count % group:
        return _take_packed(topology, available, count, spread=False)
    acc = _Accumulator(topology, set(available), count, spread=False)
    if acc.satisfied():
        return CpuSet()
    if acc.failed():
        raise _not_enough(count, len(available))
    numas = acc.sorted_numa()
    free = {n: len(acc.avail_numa(n)) for n in numas}
    total_groups = (len(topology.cpus) - 1) // group + 1
    groups_per_numa = (total_groups - 1) // len(topology.numa_nodes) + 1
    groups_needed = (count - 1) // group + 1
    k_min = (groups_needed - 1) // groups_per_numa + 1
    k_max = min(groups_needed, len(numas))
    for k in range(k_min, k_max + 1):
        best_balance = math.inf
        best_combo: tuple[int, ...] | None = None
        best_remainder: tuple[int, ...] = ()
        for combo in itertools.combinations(numas, k):
            if best_balance == 0:
                break
            if sum(free[n] for n in combo) < count:
                continue
            if sum(free[n] // group for n in combo) * group < count:
                continue
            share = (count // k // group) * group
            if any(free[n] < share for n in combo):
                continue
            after = dict(free)
            for n in combo:
                after[n] -= share
            remainder = count - share * k
            local_best = math.inf
            local_subset: tuple[int, ...] = ()
            if remainder == 0:
                local_best = _std(after[n] for n in numas)
            candidates = [n for n in combo if after[n] >= group]
            for size in range(len(candidates), 0, -1):
                if remainder == 0:
                    break
                for subset in itertools.combinations(candidates, size):
                    trial = _spread_remainder(after, subset, remainder, group)
                    if trial is None:
                        continue
                    balance = _std(trial[n] for n in numas)
                    if balance < local_best:
                        local_best, local_subset = balance, subset
            if local_best < best_balance:
                best_balance, best_combo, best_remainder = local_best, combo, local_subset
        if best_combo is None:
            continue
        share = (count // len(best_combo) // group) * group
        for numa in best_combo:
            acc.take(_take_packed(topology, CpuSet(acc.avail_numa(numa)), share, spread=False))
        remainder = count - share * len(best_combo)
        while remainder > 0:
            progressed = False
            for numa in best_remainder:
                if remainder == 0:
                    break
                pool = acc.avail_numa(numa)
                if len(pool) < group:
                    continue
                acc.take(_take_packed(topology, CpuSet(pool), group, spread=False))
                remainder -= group
                progressed = True
            if not progressed:
                raise PlacementError(
                    f"accounting error, not enough CPUs allocated, remaining: {remainder}"
                )
        return CpuSet(acc.result)
    return _take_packed(topology, available, count, spread=False)


def _spread_remainder(
    after: dict[int, int], subset: tuple[int, ...], remainder: int, group: int
) -> dict[int, int] | None:
    """Hand ``remainder`` CPUs round-robin, ``group`` at a time, to ``subset``; None if the
    subset cannot hold them."""
    if sum(after[n] for n in subset) < remainder:
        return None
    trial = dict(after)
    while remainder > 0:
        progressed = False
        for n in subset:
            if remainder == 0:
                break
            if trial[n] < group:
                continue
            trial[n] -= group
            remainder -= group
            progressed = True
        if not progressed:
            # kubelet would spin here forever; corral treats the subset as unusable.
            return None
    return trial
