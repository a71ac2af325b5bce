"""Hardware performance counters per cgroup (cycles, instructions, LLC misses) for dCat.

Uses ``perf_event_open(2)`` through ctypes (x86-64 and arm64 syscall numbers): in cgroup
mode (``PERF_FLAG_PID_CGROUP``) one event per CPU and counter, the cgroup given as an open
directory of the perf_event hierarchy (the cgroup2 mount, or a v1 ``perf_event``
hierarchy). Counts are scaled by enabled/running time when the PMU multiplexes.

`counters_status` says whether the host has them, with the reason when not: this
project's VM (KVM guest, ``perf_event_paranoid`` 2, running as root) has no hardware PMU -
``perf_event_open`` of ``PERF_COUNT_HW_CPU_CYCLES`` fails with ENOENT, as ``perf stat -e
cycles`` shows "<not supported>" - so dCat falls back to the controller's latency and
throughput signals (`corral.control.dcat.from_latency`, ``from_throughput``). The syscall
path itself is verified here with a software counter (task-clock); the hardware and
cgroup-mode paths were never run on a host with a PMU.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

from corral.topology.cpuset import CpuSet

_SYSCALL = {"x86_64": 298, "aarch64": 241}
PERF_TYPE_HARDWARE = 0
PERF_TYPE_SOFTWARE = 1
PERF_FLAG_PID_CGROUP = 1 << 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
_READ_FORMAT = 1 | 2  # TOTAL_TIME_ENABLED | TOTAL_TIME_RUNNING
_EXCLUDE_HV = 1 << 6


class HwCounter(IntEnum):
    """The hardware events dCat reads (``PERF_COUNT_HW_*``)."""

    CYCLES = 0
    INSTRUCTIONS = 1
    CACHE_MISSES = 3  # last-level cache misses on x86


SW_TASK_CLOCK = 1  # PERF_COUNT_SW_TASK_CLOCK


class _Attr(ctypes.Structure):
    """``struct perf_event_attr`` up to PERF_ATTR_SIZE_VER0 (64 bytes)."""

    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
    ]


@dataclass(frozen=True, slots=True)
class CounterStatus:
    """Whether hardware counters can be read here, and why not."""

    available: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CounterReading:
    """Counts since the counters were opened (scaled for multiplexing)."""

    cycles: int
    instructions: int
    llc_misses: int


def open_event(type_: int, config: int, *, pid: int, cpu: int, flags: int = 0) -> int:
    """A perf event file descriptor; `OSError` with the kernel's errno on refusal."""
    number = _SYSCALL.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"perf_event_open: no syscall number for {platform.machine()}")
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    attr = _Attr(
        type=type_,
        size=ctypes.sizeof(_Attr),
        config=config,
        read_format=_READ_FORMAT,
        flags=_EXCLUDE_HV,
    )
    fd = libc.syscall(number, ctypes.byref(attr), pid, cpu, -1, flags | PERF_FLAG_FD_CLOEXEC)
    if fd < 0:
        code = ctypes.get_errno()
        raise OSError(code, f"perf_event_open(type {type_}, config {config}): {os.strerror(code)}")
    return int(fd)


def read_scaled(fd: int) -> int:
    """An event's count, scaled by enabled/running time."""
    value, enabled, running = struct.unpack("QQQ", os.read(fd, 24))
    if running == 0:
        return 0
    return value if running >= enabled else int(value * enabled / running)


def counters_status(proc_root: Path = Path("/proc")) -> CounterStatus:
    """Try each hardware counter on the calling thread; the first refusal is the reason."""
    paranoid = (
        (proc_root / "sys/kernel/perf_event_paranoid").read_text().strip()
        if (proc_root / "sys/kernel/perf_event_paranoid").exists()
        else "?"
    )
    for counter in HwCounter:
        try:
            fd = open_event(PERF_TYPE_HARDWARE, counter, pid=0, cpu=-1)
        except OSError as err:
            return CounterStatus(
                False,
                f"no {counter.name.lower()} counter: {err.strerror or err} (errno {err.errno}, "
                f"perf_event_paranoid {paranoid}); a VM without a virtual PMU has none",
            )
        os.close(fd)
    return CounterStatus(True, f"cycles, instructions, cache misses (paranoid {paranoid})")


class CgroupCounters:
    """Cycles, instructions and LLC misses of one cgroup on ``cpus`` (close when done)."""

    def __init__(self, fds: dict[HwCounter, list[int]]) -> None:
        self._fds = fds

    @classmethod
    def open(cls, cgroup_dir: Path, cpus: CpuSet) -> CgroupCounters | CounterStatus:
        """The counters of ``cgroup_dir`` (a perf_event cgroup), or why they cannot be had."""
        try:
            group = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            return CounterStatus(False, f"{cgroup_dir}: {err.strerror}")
        fds: dict[HwCounter, list[int]] = {c: [] for c in HwCounter}
        try:
            for counter in HwCounter:
                for cpu in cpus:
                    fds[counter].append(
                        open_event(
                            PERF_TYPE_HARDWARE,
                            counter,
                            pid=group,
                            cpu=cpu,
                            flags=PERF_FLAG_PID_CGROUP,
                        )
                    )
        except OSError as err:
            for opened in fds.values():
                for fd in opened:
                    os.close(fd)
            return CounterStatus(False, f"{cgroup_dir}: {err.strerror or err} (errno {err.errno})")
        finally:
            os.close(group)
        return cls(fds)

    def read(self) -> CounterReading:
        """The counts so far, summed over CPUs."""
        total = {c: sum(read_scaled(fd) for fd in fds) for c, fds in self._fds.items()}
        return CounterReading(
            total[HwCounter.CYCLES], total[HwCounter.INSTRUCTIONS], total[HwCounter.CACHE_MISSES]
        )

    def close(self) -> None:
        """Close every event."""
        for fds in self._fds.values():
            for fd in fds:
                os.close(fd)
        self._fds = {}
