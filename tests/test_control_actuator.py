"""The controller's v1 actuator: on a directory tree, and on the real v1 hierarchies with
a real sleeping process (skipped without root or without the v1 controllers)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.control.actions import (
    Evict,
    Freeze,
    SetCache,
    SetCpus,
    SetMemoryHigh,
    SetQuota,
    SetWeight,
    Thaw,
)
from corral.control.actuator import Capability
from corral.control.cache import CacheSettings
from corral.control.cgroupv1 import CgroupV1Actuator, MemoryGuardError, parse_psi_total
from corral.control.llc import CacheUnavailableError
from corral.errors import EnforcementError
from corral.topology.cpuset import CpuSet

ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "cpuset", "memory", "freezer")


def _tree(tmp_path: Path) -> Path:
    files = {
        "cpu/box": {
            "cpu.idle": "0",
            "cpu.shares": "1024",
            "cpu.cfs_quota_us": "-1",
            "cpu.cfs_period_us": "100000",
        },
        "cpuset/box": {"cpuset.cpus": "0-3"},
        "cpuset/box/w1": {"cpuset.cpus": "0-3"},
        "cpuset/lc": {"cpuset.cpus": "0-3"},
        "memory/box": {
            "memory.soft_limit_in_bytes": "9223372036854771712",
            "memory.limit_in_bytes": str(4 << 30),
            "memory.usage_in_bytes": "4096",
            "memory.stat": f"cache 1000\nrss 10\ntotal_cache {1 << 30}\n"
            f"total_rss {100 << 20}\ntotal_shmem {10 << 20}\ntotal_unevictable 0\n",
        },
        "freezer/box/w1": {"freezer.state": "THAWED", "cgroup.procs": ""},
        "unified": {"cgroup.controllers": "\n"},
        "unified/box": {
            "memory.pressure": "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=99\n"
        },
    }
    for directory, content in files.items():
        (tmp_path / directory).mkdir(parents=True, exist_ok=True)
        for name, value in content.items():
            (tmp_path / directory / name).write_text(value)
    return tmp_path


def test_actuator_writes_each_action_to_its_file_on_a_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    act = CgroupV1Actuator(cgroup_root=root, be_group="box", lc_group="lc")
    act.apply(SetCpus(CpuSet([3]), CpuSet([0, 1, 2]), "r"))
    assert (root / "cpuset/box/cpuset.cpus").read_text() == "3"
    assert (root / "cpuset/box/w1/cpuset.cpus").read_text() == "3"
    assert (root / "cpuset/lc/cpuset.cpus").read_text() == "0-2"
    act.apply(SetWeight(True, None, "r"))
    assert (root / "cpu/box/cpu.idle").read_text() == "1"
    act.apply(SetWeight(False, 64, "r"))
    assert (root / "cpu/box/cpu.idle").read_text() == "0"
    assert (root / "cpu/box/cpu.shares").read_text() == "64"
    act.apply(SetQuota(0.5, "r"))
    assert (root / "cpu/box/cpu.cfs_quota_us").read_text() == "50000"
    act.apply(SetQuota(None, "r"))
    assert (root / "cpu/box/cpu.cfs_quota_us").read_text() == "-1"
    act.apply(SetMemoryHigh(1 << 30, "r"))  # v1: the hard limit (the soft one would not act)
    assert (root / "memory/box/memory.limit_in_bytes").read_text() == str(1 << 30)
    act.apply(Freeze("w1", "r"))
    assert (root / "freezer/box/w1/freezer.state").read_text() == "FROZEN"
    act.apply(Thaw("w1", "r"))
    assert (root / "freezer/box/w1/freezer.state").read_text() == "THAWED"
    assert act.workloads() == ("w1",)
    assert act.be_memory_bytes() == 4096
    assert act.be_psi_some_us() == 1234


def test_the_v1_memory_limit_is_guarded_above_unreclaimable_memory_and_below_the_box(
    tmp_path: Path,
) -> None:
    root = _tree(tmp_path)
    act = CgroupV1Actuator(cgroup_root=root, be_group="box", memory_headroom_bytes=64 << 20)
    assert act.memory_guard() == ((100 + 10 + 64) << 20, 4 << 30)
    with pytest.raises(MemoryGuardError, match="asked 50 MiB, set 174 MiB"):
        act.apply(SetMemoryHigh(50 << 20, "r"))
    assert (root / "memory/box/memory.limit_in_bytes").read_text() == str(174 << 20)
    with pytest.raises(MemoryGuardError, match="box limit 4096 MiB"):
        act.apply(SetMemoryHigh(8 << 30, "r"))  # the first limit found stays the cap
    assert (root / "memory/box/memory.limit_in_bytes").read_text() == str(4 << 30)


def test_without_memory_stat_the_v1_limit_is_refused_not_guessed(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "memory/box/memory.stat").unlink()
    act = CgroupV1Actuator(cgroup_root=root, be_group="box")
    with pytest.raises(EnforcementError, match=r"memory\.stat is missing"):
        act.apply(SetMemoryHigh(1 << 30, "r"))
    assert (root / "memory/box/memory.limit_in_bytes").read_text() == str(4 << 30)


def test_a_cache_action_without_resctrl_is_refused_and_described(tmp_path: Path) -> None:
    act = CgroupV1Actuator(
        cgroup_root=_tree(tmp_path), be_group="box", resctrl_root=tmp_path / "resctrl"
    )
    with pytest.raises(CacheUnavailableError, match=r"no resctrl at .*LLC ways and MBA cannot"):
        act.apply(SetCache(0xFF0, 0x00F, 30, "r"))
    description = act.describe()
    assert "no resctrl at" in description.cannot[Capability.LLC_WAYS]
    assert Capability.MEMORY_BANDWIDTH in description.cannot
    assert "memory.limit_in_bytes" in description.can[Capability.MEMORY]
    off = act.fit_cache(CacheSettings(total_ways=12, min_ways=2, mb_ladder=(30, 60)))
    assert (off.total_ways, off.mb_ladder) == (0, ())
    bare = CgroupV1Actuator(cgroup_root=tmp_path, be_group="box")
    with pytest.raises(CacheUnavailableError):
        bare.apply(SetCache(None, None, 30, "r"))
    assert "no resctrl root given" in bare.describe().cannot[Capability.LLC_WAYS]


def test_the_psi_group_is_created_and_filled_from_the_be_box(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    (root / "cpu/box/cgroup.procs").write_text("41\n42\n")
    (root / "unified/box/cgroup.procs").write_text("42\n")
    written: list[tuple[str, str]] = []

    def writer(path: str, value: str) -> None:
        written.append((path, value))

    act = CgroupV1Actuator(cgroup_root=root, be_group="box", writer=writer)
    assert act.be_psi_some_us() == 1234
    assert written == [(f"{root}/unified/box/cgroup.procs", "41")]


def test_a_missing_interface_file_is_a_clear_error(tmp_path: Path) -> None:
    act = CgroupV1Actuator(cgroup_root=tmp_path, be_group="nowhere")
    with pytest.raises(EnforcementError, match=r"nowhere/x/freezer\.state"):
        act.apply(Freeze("x", "r"))


def test_psi_total_parsing() -> None:
    assert parse_psi_total("some avg10=1.00 total=42\nfull total=7\n", "full") == 7
    assert parse_psi_total("garbage", "some") is None


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    for controller, probe in (
        ("cpu", "cpu.idle"),
        ("cpuset", "cpuset.cpus"),
        ("memory", "memory.limit_in_bytes"),
        ("freezer", "tasks"),
    ):
        if not (ROOT / controller / probe).exists():
            return f"needs a v1 {controller} hierarchy with {probe} under {ROOT}"
    if len(CpuSet.parse((ROOT / "cpuset/cpuset.effective_cpus").read_text())) < 2:
        return "needs at least 2 CPUs"
    return None


SKIP = _skip_reason()


@pytest.fixture
def real_box() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    name = f"corral-test-ctl-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        mems = (ROOT / "cpuset/cpuset.mems").read_text().strip()
        cpus = (ROOT / "cpuset/cpuset.effective_cpus").read_text().strip()
        for controller in CONTROLLERS:
            for group in (name, f"{name}/w1"):
                path = ROOT / controller / group
                path.mkdir()
                made.append(path)
                if controller == "cpuset":
                    (path / "cpuset.mems").write_text(mems)
                    (path / "cpuset.cpus").write_text(cpus)
        proc = subprocess.Popen(["sleep", "60"])
        for controller in CONTROLLERS:
            (ROOT / controller / name / "w1" / "cgroup.procs").write_text(str(proc.pid))
        yield name, proc
    finally:
        with contextlib.suppress(OSError):
            (ROOT / "freezer" / name / "w1" / "freezer.state").write_text("THAWED")
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        for path in reversed(made):
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def _status(pid: int, key: str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(key)


@pytest.mark.root
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_actuator_confines_idles_freezes_and_evicts_a_real_process(
    real_box: tuple[str, subprocess.Popen[bytes]],
) -> None:
    name, proc = real_box
    act = CgroupV1Actuator(cgroup_root=ROOT, be_group=name)
    all_cpus = CpuSet.parse((ROOT / "cpuset/cpuset.effective_cpus").read_text())
    last = CpuSet([max(all_cpus)])
    act.apply(SetCpus(last, all_cpus, "test"))
    assert _status(proc.pid, "Cpus_allowed_list") == str(last)
    act.apply(SetCpus(all_cpus, all_cpus, "test"))  # growing: parent first, then child
    assert CpuSet.parse(_status(proc.pid, "Cpus_allowed_list")) == all_cpus
    act.apply(SetWeight(True, None, "test"))
    assert (ROOT / "cpu" / name / "cpu.idle").read_text().strip() == "1"
    act.apply(SetWeight(False, 2, "test"))
    assert (ROOT / "cpu" / name / "cpu.shares").read_text().strip() == "2"
    act.apply(Freeze("w1", "test"))
    for _ in range(100):
        if (ROOT / "freezer" / name / "w1" / "freezer.state").read_text().strip() == "FROZEN":
            break
        time.sleep(0.01)
    assert _status(proc.pid, "State").startswith(("D", "S"))
    assert (ROOT / "freezer" / name / "w1" / "freezer.state").read_text().strip() == "FROZEN"
    act.apply(Evict("w1", "test"))
    assert proc.wait(timeout=5) == -signal.SIGKILL


@pytest.mark.root
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_freezing_a_workload_placed_only_in_the_cpu_hierarchy_moves_it_to_a_freezer_group() -> None:
    name = f"corral-test-ctl-{uuid.uuid4().hex[:8]}"
    cpu_group = ROOT / "cpu" / name / "w2"
    proc: subprocess.Popen[bytes] | None = None
    try:
        cpu_group.mkdir(parents=True)
        proc = subprocess.Popen(["sleep", "60"])
        (cpu_group / "cgroup.procs").write_text(str(proc.pid))
        act = CgroupV1Actuator(cgroup_root=ROOT, be_group=name)
        assert act.workloads() == ("w2",)
        act.apply(Freeze("w2", "test"))
        state = ROOT / "freezer" / name / "w2" / "freezer.state"
        assert state.read_text().strip() in ("FREEZING", "FROZEN")
        assert str(proc.pid) in (ROOT / "freezer" / name / "w2" / "cgroup.procs").read_text()
        act.apply(Thaw("w2", "test"))
        assert state.read_text().strip() == "THAWED"
    finally:
        with contextlib.suppress(OSError):
            (ROOT / "freezer" / name / "w2" / "freezer.state").write_text("THAWED")
        if proc is not None:
            proc.kill()
            proc.wait()
        for path in (
            ROOT / "freezer" / name / "w2",
            ROOT / "freezer" / name,
            cpu_group,
            ROOT / "cpu" / name,
        ):
            for _ in range(100):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)
