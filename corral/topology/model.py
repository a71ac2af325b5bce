"""Topology: the host as sockets, NUMA nodes, L3 domains, physical cores and threads.

A `Topology` is an immutable value built from a list of `Cpu` records. It checks itself
on construction (see `Topology.__post_init__`) and offers derived views that placement
needs: cores with their sibling threads, CPUs per NUMA node / socket / L3 domain, and
free-CPU counts for a given available set.

Core ids are global: a core id names one physical core on one socket (loaders that read
per-socket core numbers, like sysfs, renumber them).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property

from corral.errors import TopologyError
from corral.topology.cpuset import CpuSet


@dataclass(frozen=True, slots=True, order=True)
class Cpu:
    """One logical CPU (hyperthread) and where it sits."""

    id: int
    core: int
    socket: int
    numa: int
    l3: int


@dataclass(frozen=True, slots=True)
class Core:
    """A physical core: its sibling threads and the domains it belongs to."""

    id: int
    socket: int
    numa: int
    l3: int
    cpus: CpuSet


@dataclass(frozen=True, slots=True)
class FreeCounts:
    """How many available CPUs each unit holds (units with none are absent)."""

    by_numa: Mapping[int, int]
    by_socket: Mapping[int, int]
    by_l3: Mapping[int, int]
    by_core: Mapping[int, int]


@dataclass(frozen=True)
class Topology:
    """An immutable CPU topology; construction validates it.

    Raises `TopologyError` for: no CPUs, negative ids, duplicate CPU ids, a core whose
    threads sit on different sockets, NUMA nodes or L3 domains, and an L3 domain that
    spans sockets.
    """

    cpus: tuple[Cpu, ...]
    name: str = ""
    _by_id: dict[int, Cpu] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.cpus))
        object.__setattr__(self, "cpus", ordered)
        _validate(ordered)
        object.__setattr__(self, "_by_id", {cpu.id: cpu for cpu in ordered})

    @classmethod
    def from_records(cls, records: Iterable[Cpu], *, name: str = "") -> Topology:
        """Build a topology from CPU records in any order."""
        return cls(tuple(records), name=name)

    # --- single lookups -------------------------------------------------------------
    def cpu(self, cpu_id: int) -> Cpu:
        """The record of one CPU; `KeyError` names the id when it is not in the host."""
        try:
            return self._by_id[cpu_id]
        except KeyError:
            raise KeyError(f"CPU {cpu_id} is not in this topology") from None

    def core_of(self, cpu_id: int) -> Core:
        """The physical core holding ``cpu_id``."""
        return self.core(self.cpu(cpu_id).core)

    def core(self, core_id: int) -> Core:
        """The physical core with this id."""
        return self._cores_by_id[core_id]

    def siblings(self, cpu_id: int) -> CpuSet:
        """All threads of the core holding ``cpu_id`` (including itself)."""
        return self.core_of(cpu_id).cpus

    # --- whole-host views -----------------------------------------------------------
    @cached_property
    def all_cpus(self) -> CpuSet:
        """Every CPU of the host."""
        return CpuSet(cpu.id for cpu in self.cpus)

    @cached_property
    def cores(self) -> tuple[Core, ...]:
        """Physical cores ordered by id."""
        return tuple(self._cores_by_id[core_id] for core_id in sorted(self._cores_by_id))

    @cached_property
    def _cores_by_id(self) -> dict[int, Core]:
        threads: dict[int, list[Cpu]] = defaultdict(list)
        for cpu in self.cpus:
            threads[cpu.core].append(cpu)
        return {
            core_id: Core(
                id=core_id,
                socket=members[0].socket,
                numa=members[0].numa,
                l3=members[0].l3,
                cpus=CpuSet(cpu.id for cpu in members),
            )
            for core_id, members in threads.items()
        }

    @cached_property
    def first_cpu_of_core(self) -> Mapping[int, int]:
        """Core id -> its lowest CPU id (how kubelet names a core)."""
        return {core.id: min(core.cpus) for core in self.cores}

    @cached_property
    def unit_of(self) -> Mapping[str, Mapping[int, int]]:
        """For ``"core"``, ``"socket"``, ``"numa"`` and ``"l3"``: CPU id -> that unit's id."""
        return {
            attr: {cpu.id: getattr(cpu, attr) for cpu in self.cpus}
            for attr in ("core", "socket", "numa", "l3")
        }

    @cached_property
    def members_of(self) -> Mapping[str, Mapping[int, tuple[int, ...]]]:
        """For ``"core"``, ``"socket"``, ``"numa"`` and ``"l3"``: unit id -> its CPU ids."""
        members: dict[str, dict[int, list[int]]] = {attr: {} for attr in self.unit_of}
        for attr, units in self.unit_of.items():
            for cpu_id, unit in units.items():
                members[attr].setdefault(unit, []).append(cpu_id)
        return {
            attr: {unit: tuple(ids) for unit, ids in units.items()}
            for attr, units in members.items()
        }

    @cached_property
    def sockets(self) -> tuple[int, ...]:
        """Socket ids, ascending."""
        return tuple(sorted({cpu.socket for cpu in self.cpus}))

    @cached_property
    def numa_nodes(self) -> tuple[int, ...]:
        """NUMA node ids, ascending."""
        return tuple(sorted({cpu.numa for cpu in self.cpus}))

    @cached_property
    def l3_domains(self) -> tuple[int, ...]:
        """L3 domain ids, ascending."""
        return tuple(sorted({cpu.l3 for cpu in self.cpus}))

    @cached_property
    def threads_per_core(self) -> int:
        """Threads per core as kubelet computes it: CPUs divided by cores, rounded down."""
        return len(self.cpus) // len(self._cores_by_id)

    @cached_property
    def max_threads_per_core(self) -> int:
        """The most threads any one core has (2 on an SMT host even with a CPU offline)."""
        return max(len(core.cpus) for core in self._cores_by_id.values())

    def cpus_in_numa(self, numa: int) -> CpuSet:
        """CPUs of one NUMA node (empty for an unknown node)."""
        return self._cpus_by("numa").get(numa, CpuSet())

    def cpus_in_socket(self, socket: int) -> CpuSet:
        """CPUs of one socket (empty for an unknown socket)."""
        return self._cpus_by("socket").get(socket, CpuSet())

    def cpus_in_l3(self, l3: int) -> CpuSet:
        """CPUs of one L3 domain (empty for an unknown domain)."""
        return self._cpus_by("l3").get(l3, CpuSet())

    def cores_in_numa(self, numa: int) -> tuple[Core, ...]:
        """Cores of one NUMA node, by id."""
        return tuple(core for core in self.cores if core.numa == numa)

    def cores_in_socket(self, socket: int) -> tuple[Core, ...]:
        """Cores of one socket, by id."""
        return tuple(core for core in self.cores if core.socket == socket)

    def numa_nodes_of(self, cpus: CpuSet) -> tuple[int, ...]:
        """The NUMA nodes that ``cpus`` touch, ascending."""
        return tuple(sorted({self._by_id[c].numa for c in cpus if c in self._by_id}))

    def sockets_of(self, cpus: CpuSet) -> tuple[int, ...]:
        """The sockets that ``cpus`` touch, ascending."""
        return tuple(sorted({self._by_id[c].socket for c in cpus if c in self._by_id}))

    def free_counts(self, available: CpuSet) -> FreeCounts:
        """Count the available CPUs per NUMA node, socket, L3 domain and core."""
        cpus = [self._by_id[c] for c in available if c in self._by_id]
        return FreeCounts(
            by_numa=dict(Counter(cpu.numa for cpu in cpus)),
            by_socket=dict(Counter(cpu.socket for cpu in cpus)),
            by_l3=dict(Counter(cpu.l3 for cpu in cpus)),
            by_core=dict(Counter(cpu.core for cpu in cpus)),
        )

    def whole_cores_within(self, available: CpuSet) -> CpuSet:
        """The CPUs of every core all of whose threads are in ``available``."""
        return CpuSet(
            cpu for core in self.cores if core.cpus.issubset(available) for cpu in core.cpus
        )

    def restricted_to(self, online: CpuSet) -> Topology:
        """The same host with only ``online`` CPUs (for offline CPUs)."""
        return Topology(tuple(cpu for cpu in self.cpus if cpu.id in online), name=self.name)

    def describe(self) -> str:
        """One line: sockets, NUMA nodes, L3 domains, cores and threads."""
        return (
            f"{len(self.sockets)} socket(s), {len(self.numa_nodes)} NUMA node(s), "
            f"{len(self.l3_domains)} L3 domain(s), {len(self.cores)} core(s), "
            f"{len(self.cpus)} CPU(s)"
        )

    def _cpus_by(self, attr: str) -> dict[int, CpuSet]:
        cache = self.__dict__.setdefault("_groups", {})
        if attr not in cache:
            groups: dict[int, list[int]] = defaultdict(list)
            for cpu in self.cpus:
                groups[getattr(cpu, attr)].append(cpu.id)
            cache[attr] = {key: CpuSet(ids) for key, ids in groups.items()}
        result: dict[int, CpuSet] = cache[attr]
        return result


def _validate(cpus: tuple[Cpu, ...]) -> None:
    if not cpus:
        raise TopologyError("cpus", "the topology has no CPUs", "list at least one CPU")
    seen: set[int] = set()
    for index, cpu in enumerate(cpus):
        for attr in ("id", "core", "socket", "numa", "l3"):
            value = getattr(cpu, attr)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TopologyError(
                    f"cpus[{index}].{attr}",
                    f"must be a non-negative integer, got {value!r}",
                )
        if cpu.id in seen:
            raise TopologyError(
                "cpus", f"CPU id {cpu.id} appears more than once", "give every CPU its own id"
            )
        seen.add(cpu.id)
    first_of_core: dict[int, Cpu] = {}
    for cpu in cpus:
        first = first_of_core.setdefault(cpu.core, cpu)
        for attr, what in (("socket", "sockets"), ("numa", "NUMA nodes"), ("l3", "L3 domains")):
            if getattr(first, attr) != getattr(cpu, attr):
                raise TopologyError(
                    f"cpus[id={cpu.id}].{attr}",
                    f"core {cpu.core} is split across {what}: CPU {first.id} has {attr} "
                    f"{getattr(first, attr)}, CPU {cpu.id} has {attr} {getattr(cpu, attr)}",
                    "core ids must name one physical core; give cores on different "
                    f"{what} different ids",
                )
    socket_of_l3: dict[int, Cpu] = {}
    for cpu in cpus:
        first = socket_of_l3.setdefault(cpu.l3, cpu)
        if first.socket != cpu.socket:
            raise TopologyError(
                f"cpus[id={cpu.id}].l3",
                f"L3 domain {cpu.l3} spans sockets {first.socket} and {cpu.socket}",
                "an L3 cache belongs to one socket; number L3 domains across the host",
            )
