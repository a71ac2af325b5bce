"""The controller's v2 actuator and the actuator factory on directory trees shaped like a
cgroup2 mount with controllers (this VM's cgroup2 mount has none: its controllers are bound
to v1), and the factory on this host's real layout."""

from __future__ import annotations

import os
import subprocess
import time
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
from corral.control.cgroupv1 import CgroupV1Actuator
from corral.control.cgroupv2 import CgroupV2Actuator
from corral.control.factory import make_actuator
from corral.control.llc import CacheUnavailableError
from corral.enforce.detect import detect_cgroups
from corral.errors import EnforcementError, InputError
from corral.topology.cpuset import CpuSet
from tests.fixtures.cgroup_trees import add_v2_cgroup, write_resctrl, write_v1_root, write_v2_root


def tree(tmp_path: Path) -> Path:
    root = write_v2_root(tmp_path / "cg")
    for rel in ("corral/be/batch", "corral/be/video", "corral/lc"):
        add_v2_cgroup(root, rel)
    for rel in ("corral/be/batch", "corral/be/video"):
        (root / rel / "cgroup.freeze").write_text("0\n")
        (root / rel / "cgroup.kill").write_text("")
    (root / "corral/be/memory.pressure").write_text(
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=777\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"
    )
    (root / "corral/be/memory.current").write_text("8192\n")
    (root / "corral/be/batch/cpuset.cpus").write_text("0-3\n")
    (root / "corral/lc/cpuset.cpus.partition").write_text("member\n")
    return root


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text().strip()


def test_each_action_goes_to_its_v2_file(tmp_path: Path) -> None:
    root = tree(tmp_path)
    act = CgroupV2Actuator(cgroup_root=root, be_group="corral/be", lc_group="corral/lc")
    act.apply(SetCpus(CpuSet([2, 3]), CpuSet([0, 1, 2, 3]), "r"))
    assert read(root, "corral/be/cpuset.cpus") == "2-3"
    assert read(root, "corral/be/batch/cpuset.cpus") == "2-3"  # it had its own
    assert read(root, "corral/be/video/cpuset.cpus") == ""  # it inherits: left alone
    assert read(root, "corral/lc/cpuset.cpus.partition") == "member"  # LC and BE overlap
    act.apply(SetWeight(True, None, "r"))
    assert read(root, "corral/be/cpu.idle") == "1"
    act.apply(SetWeight(False, 2048, "r"))
    assert (read(root, "corral/be/cpu.idle"), read(root, "corral/be/cpu.weight")) == ("0", "174")
    act.apply(SetQuota(0.5, "r"))
    assert read(root, "corral/be/cpu.max") == "50000 100000"
    act.apply(SetQuota(None, "r"))
    assert read(root, "corral/be/cpu.max") == "max 100000"
    act.apply(SetMemoryHigh(256 << 20, "r"))
    assert read(root, "corral/be/memory.high") == str(256 << 20)
    act.apply(Freeze("video", "r"))
    assert read(root, "corral/be/video/cgroup.freeze") == "1"
    assert act.frozen() == ("video",)
    act.apply(Thaw("video", "r"))
    assert read(root, "corral/be/video/cgroup.freeze") == "0"
    act.apply(Evict("batch", "r"))
    assert read(root, "corral/be/batch/cgroup.kill") == "1"
    assert act.workloads() == ("batch", "video")
    assert act.be_memory_bytes() == 8192
    assert act.be_psi_some_us() == 777


def test_disjoint_lc_and_be_make_the_lc_box_a_partition_root_and_back(tmp_path: Path) -> None:
    root = tree(tmp_path)
    act = CgroupV2Actuator(cgroup_root=root, be_group="corral/be", lc_group="corral/lc")
    act.apply(SetCpus(CpuSet([3]), CpuSet([0, 1, 2]), "r"))
    assert read(root, "corral/lc/cpuset.cpus") == "0-2"
    assert read(root, "corral/lc/cpuset.cpus.partition") == "root"
    act.apply(SetCpus(CpuSet([2, 3]), CpuSet([0, 1, 2, 3]), "r"))
    assert read(root, "corral/lc/cpuset.cpus.partition") == "member"


def test_an_invalid_partition_is_refused_with_the_kernels_reason(tmp_path: Path) -> None:
    root = tree(tmp_path)
    written: list[str] = []

    def writer(path: str, value: str) -> None:
        written.append(path)
        if path.endswith("cpuset.cpus.partition"):  # what the kernel shows after a bad write
            Path(path).write_text("root invalid (Cpu list in cpuset.cpus not exclusive)\n")
        else:
            Path(path).write_text(value)

    act = CgroupV2Actuator(
        cgroup_root=root, be_group="corral/be", lc_group="corral/lc", writer=writer
    )
    with pytest.raises(EnforcementError, match="not exclusive"):
        act.apply(SetCpus(CpuSet([3]), CpuSet([0, 1, 2]), "r"))


def test_without_cpu_idle_or_cgroup_kill_the_fallbacks_are_used_and_described(
    tmp_path: Path,
) -> None:
    root = tree(tmp_path)
    (root / "corral/be/cpu.idle").unlink()
    (root / "corral/be/batch/cgroup.kill").unlink()
    act = CgroupV2Actuator(cgroup_root=root, be_group="corral/be")
    act.apply(SetWeight(True, None, "r"))
    assert read(root, "corral/be/cpu.weight") == "1"
    act.apply(Evict("batch", "r"))  # freeze, kill (no pids here), thaw
    assert read(root, "corral/be/batch/cgroup.freeze") == "0"
    description = act.describe()
    assert "cpu.weight 1" in description.cannot[Capability.IDLE]
    assert "no resctrl root" in description.cannot[Capability.LLC_WAYS]
    assert "memory.high" in description.can[Capability.MEMORY]
    with pytest.raises(CacheUnavailableError):
        act.apply(SetCache(0xF0, 0x0F, None, "r"))


def test_the_factory_picks_v2_for_a_cgroup2_mount_with_cpu(tmp_path: Path) -> None:
    root = tree(tmp_path)
    resctrl = write_resctrl(tmp_path / "resctrl")
    act = make_actuator(
        cgroup_root=root, resctrl_root=resctrl, be_group="corral/be", lc_group="corral/lc"
    )
    assert isinstance(act, CgroupV2Actuator)
    description = act.describe().to_json()
    assert description["kind"] == "cgroup-v2"
    assert "12 ways" in description["can"]["llc_ways"]
    assert "exclusive_cpus" in description["can"]


def test_the_factory_picks_v1_and_refuses_a_host_without_cpu(tmp_path: Path) -> None:
    v1 = write_v1_root(tmp_path / "v1")
    act = make_actuator(cgroup_root=v1, resctrl_root=None, be_group="corral/be", lc_group=None)
    assert isinstance(act, CgroupV1Actuator)
    empty = write_v2_root(tmp_path / "bare")
    (empty / "cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(InputError, match="no cpu controller"):
        make_actuator(cgroup_root=empty, resctrl_root=None, be_group="be", lc_group=None)


@pytest.mark.skipif(not Path("/sys/fs/cgroup/cpu/cpu.shares").exists(), reason="needs v1 cpu")
def test_on_this_host_the_factory_gives_v1_and_says_the_cache_knobs_are_unavailable() -> None:
    root = Path("/sys/fs/cgroup")
    if not detect_cgroups(root).hierarchy_of("cpu") or os.geteuid() != 0:
        pytest.skip("needs root and a cpu controller")
    act = make_actuator(
        cgroup_root=root, resctrl_root=Path("/sys/fs/resctrl"), be_group="corral/be", lc_group=None
    )
    assert isinstance(act, CgroupV1Actuator)
    cannot = act.describe().cannot
    if not Path("/sys/fs/resctrl/info").is_dir():
        assert "no resctrl at /sys/fs/resctrl" in cannot[Capability.LLC_WAYS]


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/sys/fs/cgroup/unified/cgroup.controllers").exists(),
    reason="needs root and this host's controller-less cgroup2 mount",
)
def test_a_real_cgroup2_group_freezes_and_kills_even_without_controllers() -> None:
    """cgroup.freeze and cgroup.kill are core v2 files: they work in a controller-less
    mount, so the v2 actuator's freezer and eviction run on the real kernel here."""
    unified = Path("/sys/fs/cgroup/unified")
    box = unified / f"corral-test-v2-{os.getpid()}"
    child = box / "w1"
    proc = subprocess.Popen(["sleep", "60"])
    try:
        child.mkdir(parents=True)
        (child / "cgroup.procs").write_text(str(proc.pid))
        act = CgroupV2Actuator(cgroup_root=unified, be_group=box.name)
        act.apply(Freeze("w1", "test"))
        for _ in range(200):
            if "frozen 1" in (child / "cgroup.events").read_text():
                break
            time.sleep(0.01)
        assert "frozen 1" in (child / "cgroup.events").read_text()
        assert act.frozen() == ("w1",)
        act.apply(Thaw("w1", "test"))
        act.apply(Evict("w1", "test"))
        assert proc.wait(timeout=10) == -9
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for path in (child, box):
            for _ in range(200):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def test_oom_kill_counts_come_from_each_workloads_memory_events(tmp_path: Path) -> None:
    """On a directory tree (this host has no v2 memory controller): ``oom_kill`` of each
    workload's ``memory.events``; None where the file is missing."""
    root = tree(tmp_path)
    (root / "corral/be/batch/memory.events").write_text(
        "low 0\nhigh 12\nmax 40\noom 7\noom_kill 6\noom_group_kill 0\n"
    )
    act = CgroupV2Actuator(cgroup_root=root, be_group="corral/be")
    assert act.be_oom_kills(["batch", "video"]) == {"batch": 6, "video": None}
