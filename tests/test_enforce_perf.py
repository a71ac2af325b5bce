"""The perf counter adapter on this host: the syscall path with a software counter, and a
truthful answer about hardware counters (none on this VM)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from corral.enforce.perf import (
    PERF_TYPE_SOFTWARE,
    SW_TASK_CLOCK,
    CgroupCounters,
    CounterStatus,
    counters_status,
    open_event,
    read_scaled,
)
from corral.topology.cpuset import CpuSet


def test_the_syscall_path_counts_a_software_event_on_this_thread() -> None:
    fd = open_event(PERF_TYPE_SOFTWARE, SW_TASK_CLOCK, pid=0, cpu=-1)
    try:
        before = read_scaled(fd)
        sum(i * i for i in range(200_000))
        assert read_scaled(fd) > before
    finally:
        os.close(fd)


def test_hardware_counters_are_reported_as_perf_stat_sees_them() -> None:
    status = counters_status()
    done = (
        subprocess.run(
            ["perf", "stat", "-x,", "-e", "cycles", "true"],
            capture_output=True,
            text=True,
            check=False,
        )
        if Path("/usr/bin/perf").exists()
        else None
    )
    if done is not None and done.returncode == 0:
        supported = "<not supported>" not in done.stderr
        assert status.available is supported, (status, done.stderr)
    if not status.available:
        assert "counter" in status.reason and "errno" in status.reason


def test_cgroup_counters_say_why_when_they_cannot_be_opened(tmp_path: Path) -> None:
    missing = CgroupCounters.open(tmp_path / "nowhere", CpuSet([0]))
    assert isinstance(missing, CounterStatus) and not missing.available
    assert "nowhere" in missing.reason
    if not counters_status().available:
        result = CgroupCounters.open(tmp_path, CpuSet([0]))  # not a cgroup, and no PMU
        assert isinstance(result, CounterStatus) and not result.available
