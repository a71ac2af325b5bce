"""What the controller asks the actuator to do; every action says why."""

from __future__ import annotations

from dataclasses import dataclass

from corral.topology.cpuset import CpuSet


@dataclass(frozen=True, slots=True)
class SetCpus:
    """Confine the BE box to ``be`` and the LC box to ``lc``."""

    be: CpuSet
    lc: CpuSet
    reason: str


@dataclass(frozen=True, slots=True)
class SetWeight:
    """The BE box's CPU weight: ``cpu.idle`` = 1, or ``cpu.shares``."""

    idle: bool
    shares: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class SetQuota:
    """The BE box's CFS quota in CPUs (None: unlimited)."""

    cpus: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class SetMemoryHigh:
    """The BE box's reclaim threshold (senpai's probe), in bytes."""

    bytes: int
    reason: str


@dataclass(frozen=True, slots=True)
class SetCache:
    """resctrl: LLC capacity bitmasks for LC and BE, and BE's MBA percentage."""

    lc_mask: int | None
    be_mask: int | None
    be_mb_percent: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class WayGrant:
    """One workload's LLC capacity bitmask (contiguous ways)."""

    workload: str
    mask: int


@dataclass(frozen=True, slots=True)
class SetWorkloadWays:
    """resctrl: per-workload LLC masks from the dCat manager (`corral.control.dcat`)."""

    grants: tuple[WayGrant, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Freeze:
    """Freeze one BE workload (cgroup freezer)."""

    workload: str
    reason: str


@dataclass(frozen=True, slots=True)
class Thaw:
    """Thaw one frozen BE workload."""

    workload: str
    reason: str


@dataclass(frozen=True, slots=True)
class Evict:
    """Kill one BE workload's processes."""

    workload: str
    reason: str


Action = (
    SetCpus
    | SetWeight
    | SetQuota
    | SetMemoryHigh
    | SetCache
    | SetWorkloadWays
    | Freeze
    | Thaw
    | Evict
)


def describe(action: Action) -> str:
    """One line naming the action and its value (for logs, events and /status)."""
    match action:
        case SetCpus(be=be, lc=lc):
            return f"cpus be={be} lc={lc}"
        case SetWeight(idle=True):
            return "weight idle"
        case SetWeight(shares=shares):
            return f"weight shares={shares}"
        case SetQuota(cpus=None):
            return "quota none"
        case SetQuota(cpus=cpus):
            return f"quota {cpus:.2f} cpus"
        case SetMemoryHigh(bytes=size):
            return f"memory.high {size >> 20} MiB"
        case SetCache(lc_mask=lc, be_mask=be, be_mb_percent=mb):
            return (
                f"cache lc={lc:#x} be={be:#x} mb={mb}"
                if lc is not None and be is not None
                else f"cache mb={mb}"
            )
        case SetWorkloadWays(grants=grants):
            return "ways " + " ".join(f"{g.workload}={g.mask:#x}" for g in grants)
        case Freeze(workload=w):
            return f"freeze {w}"
        case Thaw(workload=w):
            return f"thaw {w}"
        case Evict(workload=w):
            return f"evict {w}"
    raise AssertionError(action)  # pragma: no cover
