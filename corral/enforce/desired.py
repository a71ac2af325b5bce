"""The desired kernel state of every workload, as values, computed without touching the OS.

`desired_states` turns a placement into one `DesiredState` per cgroup corral manages:
the corral parent, the BE box, and each placed workload. The writers (`corral.enforce.
files`) map a state onto v1 or v2 file names; the `Enforcer` writes them.

Rules, and why:

* ``cpuset.cpus`` is the placement's CPU set; ``cpuset.mems`` the NUMA nodes of those CPUs,
  so memory is allocated next to the CPUs that use it.
* LC and system workloads get a CPU weight proportional to their request (kubelet's
  shares = milli-CPU * 1024 / 1000); BE workloads get the minimum weight and, where the
  kernel has it, ``cpu.idle`` = 1 (SCHED_IDLE for the group): measured on this host, both
  keep an LC p99 within 2x of running alone, while a CFS quota does not (design.md s5).
* A CFS quota (= the request) only for the QoS classes in ``EnforceSettings.quota_qos``
  (default: system agents). Exclusive workloads never get one: their cpuset already bounds
  them and throttling only adds tail latency (kubelet's DisableCPUQuotaWithExclusiveCPUs).
* ``memory.max`` is the workload's memory limit; ``memory.high`` follows Kubernetes
  MemoryQoS: ``request + factor * (limit - request)``, page aligned, and is left at ``max``
  when request equals limit (a missing request defaults to the limit, as in Kubernetes)
  or there is no limit. On v1 they become
  ``memory.limit_in_bytes`` and ``memory.soft_limit_in_bytes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from corral.enforce.weights import (
    DEFAULT_PERIOD_US,
    MAX_PERIOD_US,
    MIN_PERIOD_US,
    MIN_SHARES,
    Conversion,
    quota_from_cores,
    shares_from_cores,
)
from corral.errors import InputError
from corral.placement.assignment import Placement
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


class Kind(StrEnum):
    """What a managed cgroup is for."""

    PARENT = "parent"  # the corral-managed parent of everything corral creates
    BE_BOX = "be-box"  # the one parent of all BE workloads
    WORKLOAD = "workload"


@dataclass(frozen=True, slots=True)
class CpuMax:
    """A CFS bandwidth limit: ``quota_us`` per ``period_us``; quota None means unlimited."""

    quota_us: int | None
    period_us: int = DEFAULT_PERIOD_US


@dataclass(frozen=True, slots=True)
class MemoryLimits:
    """memory.high and memory.max in bytes (page aligned); None means unlimited."""

    high: int | None = None
    max: int | None = None


@dataclass(frozen=True, slots=True)
class DesiredState:
    """What one cgroup should look like. A field set to None is not managed by corral.

    ``cgroup`` is the path relative to each hierarchy's root (``corral/be/batch``).
    ``mems`` holds NUMA node ids. ``shares`` is on the v1 scale; v2 hosts get the converted
    ``cpu.weight``. ``create`` says corral owns the cgroup (creates it, may remove it);
    located cgroups (explicit path, container id) belong to their runtime.
    """

    name: str
    cgroup: str
    kind: Kind = Kind.WORKLOAD
    cpus: CpuSet | None = None
    mems: tuple[int, ...] | None = None
    shares: int | None = None
    idle: bool | None = None
    cpu_max: CpuMax | None = None
    memory: MemoryLimits | None = None
    exclusive: bool = False
    create: bool = True
    foreign_files: frozenset[str] = frozenset()
    """Interface files of this cgroup another owner writes (the colocation controller):
    corral's enforcer never writes them and does not count them as drift."""

    def mems_text(self) -> str:
        """``cpuset.mems`` in the kernel's list format."""
        return "" if self.mems is None else str(CpuSet(self.mems))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready form for ``--json`` output and the agent's API."""
        return {
            "name": self.name,
            "cgroup": self.cgroup,
            "kind": str(self.kind),
            "cpus": None if self.cpus is None else str(self.cpus),
            "mems": None if self.mems is None else self.mems_text(),
            "shares": self.shares,
            "idle": self.idle,
            "cpu_max": None
            if self.cpu_max is None
            else {"quota_us": self.cpu_max.quota_us, "period_us": self.cpu_max.period_us},
            "memory": None
            if self.memory is None
            else {"high": self.memory.high, "max": self.memory.max},
            "exclusive": self.exclusive,
            "create": self.create,
        }


@dataclass(frozen=True, slots=True)
class EnforceSettings:
    """Knobs of the desired-state rules; every default is explained in the module doc."""

    parent: str = "corral"
    """The corral-managed parent cgroup, relative to each hierarchy root."""
    be_box: str = "be"
    """Name of the BE box under ``parent``."""
    period_us: int = DEFAULT_PERIOD_US
    """CFS period in microseconds (kernel range 1000..1000000); 100 ms is the kernel default."""
    quota_qos: frozenset[Qos] = field(default_factory=lambda: frozenset({Qos.SYSTEM}))
    """QoS classes whose non-exclusive workloads are capped at their request by a CFS quota."""
    be_idle: bool = True
    """Put BE work (the box and each BE cgroup) in the idle class where ``cpu.idle`` exists."""
    be_memory_max: int | None = None
    """Bytes the whole BE box may use; None: the sum of BE limits when every BE has one."""
    be_cpu_limit: float | None = None
    """Cores the whole BE box may use (a CFS quota); None: no quota, BE soaks up idle time."""
    memory_throttling_factor: float = 0.9
    """Kubernetes MemoryQoS factor for memory.high between request and limit."""
    page_size: int = 4096
    """Memory limits are rounded down to whole pages, as the kernel stores them."""
    conversion: Conversion = Conversion.QUADRATIC
    """shares -> cpu.weight mapping on v2 hosts (see corral.enforce.weights)."""
    controlled_be_files: frozenset[str] = frozenset()
    """Interface files of the BE box that the colocation controller owns (its CPU and
    memory-pressure knobs); when ``cpuset.cpus`` is among them, the cpusets of the BE
    workloads in the box are the controller's too. Empty: the enforcer owns everything."""

    def __post_init__(self) -> None:
        if not MIN_PERIOD_US <= self.period_us <= MAX_PERIOD_US:
            raise InputError(
                "period_us", f"{self.period_us} is outside the kernel's 1000..1000000 us"
            )
        if not 0.0 <= self.memory_throttling_factor <= 1.0:
            raise InputError("memory_throttling_factor", "must be between 0 and 1")
        for name in (self.parent, self.be_box):
            _check_relative(name, "parent")

    @property
    def be_box_path(self) -> str:
        """The BE box cgroup, relative to each hierarchy root."""
        return f"{self.parent}/{self.be_box}"

    def created_path(self, workload: Workload) -> str:
        """Where corral creates the cgroup of a workload that names none."""
        if workload.qos is Qos.BE:
            return f"{self.be_box_path}/{workload.id}"
        return f"{self.parent}/{workload.id}"


def memory_limits(workload: Workload, settings: EnforceSettings) -> MemoryLimits:
    """memory.high / memory.max of one workload (Kubernetes MemoryQoS for the high mark)."""
    page = settings.page_size
    limit = workload.memory_limit
    if limit is None:
        return MemoryLimits()
    # Kubernetes defaults a missing request to the limit (no memory.high then).
    request = limit if workload.memory_request is None else workload.memory_request
    high: int | None = None
    if request < limit:
        raw = request + settings.memory_throttling_factor * (limit - request)
        high = int(raw) // page * page
    return MemoryLimits(high=high, max=limit // page * page)


def workload_state(
    topology: Topology,
    workload: Workload,
    cpus: CpuSet,
    *,
    settings: EnforceSettings,
    cgroup: str | None = None,
) -> DesiredState:
    """The desired state of one placed workload; ``cgroup`` is its located path, if any."""
    be = workload.qos is Qos.BE
    idle = be and settings.be_idle
    exclusive = workload.policy is Policy.EXCLUSIVE
    cpu_max: CpuMax | None = CpuMax(quota_us=None, period_us=settings.period_us)
    if workload.qos in settings.quota_qos and not exclusive:
        cpu_max = CpuMax(
            quota_us=quota_from_cores(workload.cpus, settings.period_us),
            period_us=settings.period_us,
        )
    return DesiredState(
        name=workload.id,
        cgroup=settings.created_path(workload) if cgroup is None else cgroup,
        kind=Kind.WORKLOAD,
        cpus=cpus,
        mems=topology.numa_nodes_of(cpus),
        shares=MIN_SHARES if be else shares_from_cores(workload.cpus),
        idle=idle,
        cpu_max=cpu_max,
        memory=memory_limits(workload, settings),
        exclusive=exclusive,
        create=cgroup is None,
    )


def desired_states(
    topology: Topology,
    workloads: Sequence[Workload],
    placement: Placement,
    *,
    settings: EnforceSettings | None = None,
    locations: Mapping[str, str] | None = None,
) -> tuple[DesiredState, ...]:
    """Desired states for the corral parent, the BE box and every placed workload.

    ``locations`` maps workload ids to cgroups found for their ``cgroup``/``container_id``
    (see `corral.enforce.locate`); workloads without one get a cgroup corral creates under
    the parent (BE ones inside the BE box). Workloads the placement refused are left out.
    Parents come before children in the result.
    """
    settings = settings or EnforceSettings()
    locations = locations or {}
    leaves: list[DesiredState] = []
    be_created: list[tuple[Workload, DesiredState]] = []
    for workload in workloads:
        if workload.id not in placement.assignments:
            continue
        if (workload.cgroup or workload.container_id) and workload.id not in locations:
            raise InputError(
                f"workloads.{workload.id}",
                "names a cgroup or container id that was not located",
                "locate it first (Enforcer.locate) or drop the field",
            )
        state = workload_state(
            topology,
            workload,
            placement.cpuset_of(workload.id),
            settings=settings,
            cgroup=locations.get(workload.id),
        )
        if state.create and workload.qos is Qos.BE:
            be_created.append((workload, state))
            if "cpuset.cpus" in settings.controlled_be_files:
                state = replace(state, foreign_files=frozenset({"cpuset.cpus"}))
        leaves.append(state)
    all_cpus = topology.all_cpus
    parent = DesiredState(
        name=settings.parent,
        cgroup=settings.parent,
        kind=Kind.PARENT,
        cpus=all_cpus,
        mems=topology.numa_nodes_of(all_cpus),
    )
    return (parent, be_box_state(topology, placement, be_created, settings), *leaves)


def be_box_state(
    topology: Topology,
    placement: Placement,
    members: Sequence[tuple[Workload, DesiredState]],
    settings: EnforceSettings,
) -> DesiredState:
    """The BE box: the one parent of corral-created BE cgroups, with its own limits.

    Its CPUs are the union of its members' CPUs (else the shared pool, else every CPU not
    held exclusively), its weight is the minimum (idle where available), and its memory
    max caps all BE memory together so that BE pressure and OOM kills stay inside it.
    """
    cpus = CpuSet().union(*(state.cpus for _, state in members if state.cpus is not None))
    if not cpus:
        cpus = placement.pools.get("shared", CpuSet())
    if not cpus:
        cpus = topology.all_cpus - placement.pools.get("exclusive", CpuSet())
    if not cpus:
        cpus = topology.all_cpus
    memory_max = settings.be_memory_max
    if memory_max is None and members and all(w.memory_limit is not None for w, _ in members):
        memory_max = sum(w.memory_limit or 0 for w, _ in members)
    quota = (
        None
        if settings.be_cpu_limit is None
        else quota_from_cores(settings.be_cpu_limit, settings.period_us)
    )
    page = settings.page_size
    return DesiredState(
        name=settings.be_box_path,
        cgroup=settings.be_box_path,
        kind=Kind.BE_BOX,
        cpus=cpus,
        mems=topology.numa_nodes_of(cpus),
        shares=MIN_SHARES,
        idle=settings.be_idle,
        cpu_max=CpuMax(quota_us=quota, period_us=settings.period_us),
        memory=MemoryLimits(
            high=None, max=None if memory_max is None else memory_max // page * page
        ),
        foreign_files=settings.controlled_be_files,
    )


def _check_relative(path: str, field_name: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in {"", ".", ".."} for p in parts):
        raise InputError(
            field_name, f"{path!r} is not a relative cgroup path", "write e.g. 'corral'"
        )
