"""Map a `DesiredState` onto the interface files of cgroup v1 or v2, in write order.

Pure: no file is touched here. The order inside one cgroup matters to the kernel:

* ``cpu.idle`` = 1 makes ``cpu.shares``/``cpu.weight`` refuse writes (EINVAL) and read back
  as 3 (the idle weight); going back to ``cpu.idle`` = 0 resets the weight to the default.
  So an idle group gets only ``cpu.idle``; a non-idle group gets ``cpu.idle`` = 0 first,
  then its weight. (Verified on Linux 6.18, v1.)
* v1 bandwidth: the period is written before the quota (runc's order); when the quota
  goes back to unlimited it is written first, so no transient quota/period pair is invalid.
* memory: the soft limit / ``memory.high`` before the hard limit, so reclaim starts by
  throttling before the hard limit can trigger the OOM killer.

`canonical` normalises what the kernel prints (unlimited as ``9223372036854771712``,
``max`` or ``-1``; CPU lists in any order) so comparisons ignore spelling.
"""

from __future__ import annotations

from dataclasses import dataclass

from corral.enforce.desired import DesiredState
from corral.enforce.detect import Version
from corral.enforce.weights import MIN_SHARES, Conversion, shares_to_weight
from corral.topology.cpuset import CpuSet

_UNLIMITED_BYTES = 1 << 62  # v1 prints "unlimited" as PAGE_COUNTER_MAX * PAGE_SIZE
_BYTE_FILES = frozenset(
    {"memory.limit_in_bytes", "memory.soft_limit_in_bytes", "memory.max", "memory.high"}
)
_LIST_FILES = frozenset({"cpuset.cpus", "cpuset.mems"})


@dataclass(frozen=True, slots=True)
class FileSetting:
    """One value for one interface file of a cgroup, written through ``controller``."""

    controller: str
    file: str
    value: str

    @property
    def expected(self) -> str:
        """The canonical form the kernel should print once the value is written."""
        return canonical(self.file, self.value)


def canonical(file: str, text: str) -> str:
    """The comparable form of a value as written or as read back from ``file``."""
    raw = text.strip()
    if file in _LIST_FILES:
        try:
            return str(CpuSet.parse(raw))
        except ValueError:
            return raw
    if file in _BYTE_FILES:
        if raw in {"max", "-1"}:
            return "max"
        try:
            number = int(raw)
        except ValueError:
            return raw
        return "max" if number >= _UNLIMITED_BYTES else str(number)
    if file == "cpu.max":
        parts = raw.split()
        if len(parts) == 2:
            return f"{parts[0]} {parts[1]}"
        return raw
    if file == "cpu.cfs_quota_us":
        try:
            return "-1" if int(raw) < 0 else str(int(raw))
        except ValueError:
            return raw
    try:
        return str(int(raw))
    except ValueError:
        return raw


def cpuset_files(state: DesiredState) -> tuple[FileSetting, ...]:
    """``cpuset.cpus`` and ``cpuset.mems`` (same names on v1 and v2); empty if unmanaged."""
    out: list[FileSetting] = []
    if state.mems is not None:
        out.append(FileSetting("cpuset", "cpuset.mems", state.mems_text()))
    if state.cpus is not None:
        out.append(FileSetting("cpuset", "cpuset.cpus", str(state.cpus)))
    return tuple(out)


def cpu_files(
    state: DesiredState,
    version: Version,
    *,
    has_idle: bool,
    conversion: Conversion = Conversion.QUADRATIC,
) -> tuple[FileSetting, ...]:
    """Weight, idle and bandwidth files of ``state`` in the order the kernel accepts."""
    out: list[FileSetting] = []
    shares = state.shares
    if state.idle and not has_idle:
        shares = MIN_SHARES  # the closest v1/v2 approximation without cpu.idle
    if state.idle and has_idle:
        out.append(FileSetting("cpu", "cpu.idle", "1"))
    else:
        if has_idle and state.idle is not None:
            out.append(FileSetting("cpu", "cpu.idle", "0"))
        if shares is not None:
            if version is Version.V1:
                out.append(FileSetting("cpu", "cpu.shares", str(shares)))
            else:
                out.append(
                    FileSetting("cpu", "cpu.weight", str(shares_to_weight(shares, conversion)))
                )
    if state.cpu_max is not None:
        quota, period = state.cpu_max.quota_us, state.cpu_max.period_us
        if version is Version.V2:
            out.append(
                FileSetting("cpu", "cpu.max", f"{'max' if quota is None else quota} {period}")
            )
        elif quota is None:
            out.append(FileSetting("cpu", "cpu.cfs_quota_us", "-1"))
            out.append(FileSetting("cpu", "cpu.cfs_period_us", str(period)))
        else:
            out.append(FileSetting("cpu", "cpu.cfs_period_us", str(period)))
            out.append(FileSetting("cpu", "cpu.cfs_quota_us", str(quota)))
    return tuple(out)


def memory_files(state: DesiredState, version: Version) -> tuple[FileSetting, ...]:
    """High then max (v1: soft limit then limit); ``-1``/``max`` for unlimited."""
    if state.memory is None:
        return ()
    high, hard = state.memory.high, state.memory.max
    if version is Version.V1:
        return (
            FileSetting(
                "memory", "memory.soft_limit_in_bytes", "-1" if high is None else str(high)
            ),
            FileSetting("memory", "memory.limit_in_bytes", "-1" if hard is None else str(hard)),
        )
    return (
        FileSetting("memory", "memory.high", "max" if high is None else str(high)),
        FileSetting("memory", "memory.max", "max" if hard is None else str(hard)),
    )
