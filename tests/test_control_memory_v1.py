"""senpai's knob on cgroup v1, on the real kernel: lowering ``memory.limit_in_bytes`` makes
the BE box's per-cgroup PSI (read through the cgroup2 mount) rise, while the soft limit
does not; the guard keeps the limit above the box's unreclaimable memory.

Skipped without root, without v1 cpu and memory hierarchies or without a cgroup2 mount.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from corral.control.actions import SetMemoryHigh
from corral.control.cgroupv1 import CgroupV1Actuator, MemoryGuardError

ROOT = Path("/sys/fs/cgroup")
MIB = 1 << 20
FILE_MIB = 192

READER = f"""
import os, sys
sys.stdin.readline()
fd = os.open(sys.argv[1], os.O_RDONLY)
while True:
    os.lseek(fd, 0, 0)
    while os.read(fd, {MIB}):
        pass
"""


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    for probe in ("cpu/cpu.shares", "memory/memory.limit_in_bytes", "unified/cgroup.controllers"):
        if not (ROOT / probe).exists():
            return f"needs {ROOT / probe} (v1 cpu and memory, a cgroup2 mount for PSI)"
    return None


SKIP = _skip_reason()


@dataclass
class Box:
    name: str
    proc: subprocess.Popen[bytes]
    actuator: CgroupV1Actuator

    def usage(self) -> int:
        return int((ROOT / "memory" / self.name / "memory.usage_in_bytes").read_text())

    def psi(self) -> int:
        value = self.actuator.be_psi_some_us()
        assert value is not None
        return value


def _rmdir(path: Path) -> None:
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Box]:
    name = f"corral-test-senpai-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    with data.open("wb") as handle:
        for _ in range(FILE_MIB):
            handle.write(os.urandom(MIB))
        handle.flush()
        os.fsync(handle.fileno())
        # Drop the pages this process charged to its own cgroup: the reader recharges them.
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    groups = [ROOT / "cpu" / name, ROOT / "memory" / name]
    proc: subprocess.Popen[bytes] | None = None
    try:
        for group in groups:
            group.mkdir()
        proc = subprocess.Popen([sys.executable, "-c", READER, str(data)], stdin=subprocess.PIPE)
        for group in groups:
            (group / "cgroup.procs").write_text(str(proc.pid))
        assert proc.stdin is not None
        proc.stdin.write(b"go\n")
        proc.stdin.close()
        yield Box(name, proc, CgroupV1Actuator(cgroup_root=ROOT, be_group=name))
    finally:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        groups.append(ROOT / "unified" / name)
        for group in groups:
            _rmdir(group)


def _stall_over(box: Box, seconds: float) -> int:
    before = box.psi()
    time.sleep(seconds)
    return box.psi() - before


def _wait_cached(box: Box, at_least: int) -> None:
    deadline = time.monotonic() + 60
    while box.usage() < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    assert box.usage() >= at_least, f"the reader cached only {box.usage() >> 20} MiB"


@pytest.mark.root
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_lowering_the_v1_hard_limit_raises_the_box_memory_pressure(box: Box) -> None:
    act = box.actuator
    act.apply(SetMemoryHigh(1024 * MIB, "test: room for the whole file"))
    assert (ROOT / "memory" / box.name / "memory.limit_in_bytes").read_text().strip() == str(
        1024 * MIB
    )
    box.psi()  # moves the reader into the v2 group that carries its PSI
    assert str(box.proc.pid) in (ROOT / "unified" / box.name / "cgroup.procs").read_text()
    _wait_cached(box, (FILE_MIB - 8) * MIB)
    roomy = _stall_over(box, 3.0)
    # The soft limit (what v1 used to get) does nothing without global pressure.
    (ROOT / "memory" / box.name / "memory.soft_limit_in_bytes").write_text(str(64 * MIB))
    soft = _stall_over(box, 3.0)
    floor, _ = act.memory_guard()
    tight = max(floor, 96 * MIB)
    act.apply(SetMemoryHigh(tight, "test: half the file"))
    squeezed = _stall_over(box, 3.0)
    print(
        f"PSI some over 3 s: roomy {roomy} us, soft limit {soft} us, limit {tight >> 20} MiB "
        f"{squeezed} us; usage {box.usage() >> 20} MiB"
    )
    assert box.usage() <= tight
    assert squeezed > 10 * max(roomy, soft, 100)


@pytest.mark.root
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_the_v1_guard_never_sets_the_limit_below_unreclaimable_memory(box: Box) -> None:
    act = box.actuator
    floor, cap = act.memory_guard()
    assert floor >= act.memory_headroom_bytes and cap > floor
    with pytest.raises(MemoryGuardError, match="guard"):
        act.apply(SetMemoryHigh(4 * MIB, "test: far too low"))
    limit = int((ROOT / "memory" / box.name / "memory.limit_in_bytes").read_text())
    # The guard is the reader's unreclaimable memory at the write, which moves while the
    # reader runs: the limit is the floor read just before or just after it, or between.
    after, _ = act.memory_guard()
    assert min(floor, after) <= limit <= max(floor, after)
    assert box.proc.poll() is None  # the reader lives on: no OOM kill
