"""The cores sub-controller's geometry: which CPUs a BE box of N cores gets.

BE grows and shrinks by whole physical cores taken from the top of the CPU numbering (the
end of the machine farthest from CPU 0, where the kernel and interrupts usually land).
When the host has SMT, LC is confined to the remaining cores so LC and BE never share a
physical core (Heracles' rule: a sibling hyperthread is the worst neighbour). Without SMT
the LC box may keep every CPU (``lc_overlap``): there, measured on this project's VM,
a BE group at ``cpu.idle`` or minimal weight yields a shared CPU within microseconds,
while taking a whole CPU from a 2-CPU LC halves its capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from corral.errors import InputError
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology


@dataclass(frozen=True, slots=True)
class CoresSettings:
    """Bounds of the cores ladder."""

    min_cores: int = 1
    """Fewest cores BE keeps while it runs (a cpuset cannot be empty while it has tasks;
    to give BE nothing corral freezes it)."""
    max_cores: int | None = None
    """Most cores BE may get; None: every core but the LC reserve."""
    lc_reserve_cores: int = 1
    """Cores never given to BE exclusively when LC is confined (SMT hosts)."""
    shrink_step: int = 2
    """Cores taken from BE per shrink step (Heracles: 2)."""
    lc_overlap: bool = True
    """Without SMT, let LC keep every CPU while BE is confined to its cores."""

    def __post_init__(self) -> None:
        if self.min_cores < 1:
            raise InputError("cores.min_cores", "must be at least 1", "freezing gives BE 0")
        if self.shrink_step < 1:
            raise InputError("cores.shrink_step", "must be at least 1", "Heracles uses 2")
        if self.lc_reserve_cores < 0:
            raise InputError("cores.lc_reserve_cores", "is negative", "use 0 or more")


def core_sets(topology: Topology) -> tuple[CpuSet, ...]:
    """The physical cores of ``topology`` as CPU sets, in CPU order."""
    return tuple(core.cpus for core in sorted(topology.cores, key=lambda c: min(c.cpus)))


def max_be_cores(settings: CoresSettings, cores: Sequence[CpuSet]) -> int:
    """The top of the cores ladder on this machine."""
    smt = any(len(c) > 1 for c in cores)
    limit = len(cores) - settings.lc_reserve_cores if smt or not settings.lc_overlap else len(cores)
    if settings.max_cores is not None:
        limit = min(limit, settings.max_cores)
    return max(settings.min_cores, min(limit, len(cores)))


def split(settings: CoresSettings, cores: Sequence[CpuSet], be_cores: int) -> tuple[CpuSet, CpuSet]:
    """``(be_cpus, lc_cpus)`` for a BE box of ``be_cores`` whole cores (clamped to the
    machine). LC gets the other cores, or every CPU without SMT when ``lc_overlap``."""
    if not cores:
        raise InputError("topology", "has no cores", "load a topology with CPUs")
    count = max(1, min(be_cores, len(cores)))
    be = CpuSet().union(*cores[len(cores) - count :])
    everything = CpuSet().union(*cores)
    smt = any(len(c) > 1 for c in cores)
    if settings.lc_overlap and not smt:
        return be, everything
    lc = everything - be
    return be, lc if lc else everything
