"""Read a cgroup's cumulative CPU time on every cgroup layout.

Where the counter lives comes from `CgroupLayout.accounting` (never from guessed paths):

* v1 with ``cpuacct`` as its own hierarchy (this project's VM), co-mounted as
  ``cpu,cpuacct`` (one directory holding both sets of files; the ``cpu`` and ``cpuacct``
  symlinks to it are skipped by detection), or a named hierarchy holding cpuacct:
  ``<hierarchy>/<cgroup>/cpuacct.usage``, nanoseconds, counting the cgroup and its children;
* cgroup v2, pure or hybrid (``unified``): ``<mount>/<cgroup>/cpu.stat`` ``usage_usec``,
  microseconds. Since Linux 4.20 every v2 cgroup has it even when no controller is
  enabled (``cgroup_base_stat_cputime_show`` in kernel/cgroup/rstat.c); this VM's
  controller-less cgroup2 shows it too (Linux 6.18).

A cgroup missing from the accounting hierarchy is looked up in the cgroup2 mount as well
(hybrid hosts where a runtime or systemd made the cgroup only there). A v1 ``cpu.stat``
has no ``usage_usec`` (only throttling counters) and is not a usage source.

`UsageReader.read` never raises for what happens on a live host: it returns `CpuUsage`
or `NoUsage` with a reason; a cgroup that vanishes mid-read is `CGROUP_MISSING`, as psutil
treats a process that exits under it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from corral.enforce.cgroupfs import CgroupFsError, cgroup_dir, read_file
from corral.enforce.detect import CgroupLayout, Hierarchy, Version, detect_cgroups

_NS_PER_USEC = 1000


class UsageSource(StrEnum):
    """Which interface file a reading came from."""

    CPUACCT = "cpuacct.usage"  # v1 cpuacct, ns
    CPU_STAT = "cpu.stat"  # v2, usage_usec


class NoUsageReason(StrEnum):
    """Why a cgroup gave no CPU time."""

    NO_ACCOUNTING = "no-accounting-hierarchy"  # no cpuacct hierarchy and no cgroup2 mount
    NOT_LOCATED = "not-located"  # the workload's cgroup is not known (container not found)
    CGROUP_MISSING = "cgroup-missing"  # not created yet, removed, or vanished mid-read
    NO_COUNTER = "no-counter"  # the cgroup exists but offers no usage file
    UNREADABLE = "unreadable"  # the kernel refused the read (errno given)
    MALFORMED = "malformed"  # the file did not hold a number


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """The cumulative CPU time of ``cgroup``: ``ns`` nanoseconds, read from ``path``."""

    cgroup: str
    ns: int
    source: UsageSource
    path: str


@dataclass(frozen=True, slots=True)
class NoUsage:
    """No CPU time for ``cgroup``, with the reason, a sentence naming the files, and the
    errno when the kernel refused the read."""

    cgroup: str | None
    reason: NoUsageReason
    detail: str
    errno: int | None = None


UsageResult = CpuUsage | NoUsage


def parse_cpuacct_usage(text: str) -> int:
    """Nanoseconds from a v1 ``cpuacct.usage``; `ValueError` when it is not a number."""
    value = int(text.strip())
    if value < 0:
        raise ValueError(f"negative usage {value}")
    return value


def parse_cpu_stat_usage(text: str) -> int | None:
    """Nanoseconds from the ``usage_usec`` line of a ``cpu.stat`` (v2), None when it has no
    such line (a v1 cpu.stat); `ValueError` when the line does not hold a number."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "usage_usec":
            usec = int(value.strip())
            if usec < 0:
                raise ValueError(f"negative usage_usec {usec}")
            return usec * _NS_PER_USEC
    return None


@dataclass(frozen=True, slots=True)
class _Place:
    hierarchy: Hierarchy
    files: tuple[UsageSource, ...]


class UsageReader:
    """Reads CPU time of cgroups (paths relative to a hierarchy root, as the enforcer
    creates or locates them) on the layout it is given. Blocking file I/O: call it from a
    worker thread, never from the event loop. Stateless; safe to share between threads."""

    def __init__(self, layout: CgroupLayout) -> None:
        self.layout = layout
        self._places = _places(layout)

    @classmethod
    def at(cls, cgroup_root: Path | str = "/sys/fs/cgroup") -> UsageReader:
        """A reader for the hierarchies detected under ``cgroup_root``."""
        return cls(detect_cgroups(cgroup_root))

    def describe(self) -> str:
        """Where usage is read, in one line (for /status and the start-up log)."""
        if not self._places:
            return f"no CPU accounting under {self.layout.root}"
        return "; ".join(
            f"{'/'.join(str(f) for f in p.files)} under {p.hierarchy.path}" for p in self._places
        )

    def read(self, cgroup: str) -> UsageResult:
        """The CPU time ``cgroup`` has used, or why there is none. Never raises for a
        missing, vanished or unreadable cgroup."""
        rel = cgroup.strip("/")
        if not self._places:
            return NoUsage(
                rel,
                NoUsageReason.NO_ACCOUNTING,
                f"no cpuacct hierarchy and no cgroup2 mount under {self.layout.root}",
            )
        for place in self._places:
            result = _read_place(place, rel)
            if isinstance(result, CpuUsage) or result.reason is not NoUsageReason.CGROUP_MISSING:
                return result  # a reading, or a cgroup that is there but gives none
        searched = ", ".join(str(cgroup_dir(p.hierarchy.path, rel)) for p in self._places)
        return NoUsage(rel, NoUsageReason.CGROUP_MISSING, f"no cgroup at {searched}")


def _places(layout: CgroupLayout) -> tuple[_Place, ...]:
    """The accounting hierarchy, then the cgroup2 mount when it is another one."""
    places: list[_Place] = []
    home = layout.accounting()
    if home is not None:
        files = (
            (UsageSource.CPUACCT, UsageSource.CPU_STAT)
            if home.version is Version.V1
            else (UsageSource.CPU_STAT,)
        )
        places.append(_Place(home, files))
    unified = layout.unified
    if unified is not None and (home is None or unified.path != home.path):
        places.append(_Place(unified, (UsageSource.CPU_STAT,)))
    return tuple(places)


def _read_place(place: _Place, rel: str) -> UsageResult:
    directory = cgroup_dir(place.hierarchy.path, rel)
    for source in place.files:
        path = f"{directory}/{source}"
        try:
            text = read_file(path)
        except CgroupFsError as err:
            return NoUsage(
                rel,
                NoUsageReason.UNREADABLE,
                f"{path}: {err.failure.message}",
                errno=err.failure.errno,
            )
        if text is None:
            if not os.path.isdir(directory):
                return NoUsage(rel, NoUsageReason.CGROUP_MISSING, f"no cgroup at {directory}")
            continue  # the cgroup is there but this file is not: try the next one
        try:
            ns = (
                parse_cpuacct_usage(text)
                if source is UsageSource.CPUACCT
                else parse_cpu_stat_usage(text)
            )
        except ValueError as err:
            return NoUsage(rel, NoUsageReason.MALFORMED, f"{path}: {err}")
        if ns is not None:
            return CpuUsage(rel, ns, source, path)
    names = " or ".join(
        f"{s} usage_usec" if s is UsageSource.CPU_STAT else str(s) for s in place.files
    )
    return NoUsage(rel, NoUsageReason.NO_COUNTER, f"{directory} has no {names}")
