"""`corral doctor` on this real host, its findings checked against what the host is, read
independently of corral (/proc/mounts, /proc/cpuinfo, lscpu, /proc/pressure, sysfs)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from corral.doctor.findings import Status
from corral.doctor.run import diagnose
from tests.real_cgroups import CGROUP_ROOT, v1_skip_reason

WANTED = ("cpu", "cpuacct", "cpuset", "memory", "freezer")

pytestmark = pytest.mark.skipif(
    v1_skip_reason(["cpuset", "cpu", "cpuacct", "memory"]) is not None,
    reason=str(v1_skip_reason(["cpuset", "cpu", "cpuacct", "memory"])),
)


def mounts() -> list[list[str]]:
    return [line.split() for line in Path("/proc/mounts").read_text().splitlines()]


def expected_mode() -> str:
    v1 = any(m[2] == "cgroup" for m in mounts())
    v2 = [m[1] for m in mounts() if m[2] == "cgroup2"]
    if v1 and v2:
        return "hybrid"
    if v2:
        return "v2"
    return "v1" if v1 else "none"


def v1_mount_of(controller: str) -> str | None:
    return next(
        (m[1] for m in mounts() if m[2] == "cgroup" and controller in m[3].split(",")), None
    )


def threads_per_core() -> int:
    out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("Thread(s) per core:"))
    return int(line.split(":")[1])


def cpu_flags() -> set[str]:
    line = next(
        ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")
    )
    return set(line.split(":")[1].split())


def leftovers() -> list[Path]:
    return [p for h in CGROUP_ROOT.iterdir() if h.is_dir() for p in h.glob("corral-doctor-*")]


def test_on_this_host_the_findings_match_the_kernel_and_nothing_is_left_behind() -> None:
    report = diagnose(Path("/"))
    found = {f.check: f for f in report.findings}
    assert report.mode == expected_mode()  # this VM: v1 hierarchies + a cgroup2 at unified
    for controller in WANTED:
        mount = v1_mount_of(controller)
        finding = found[f"cgroup.controller.{controller}"]
        if mount is not None:
            assert finding.status is Status.OK and finding.data == {"path": mount, "version": "v1"}
            assert found[f"cgroup.write.{Path(mount).name}"].status is Status.OK
    # root with writable cpuset and cpu hierarchies (the module's skip says otherwise)
    assert report.can_enforce and report.blockers == ()
    assert leftovers() == []

    rdt = {"cat_l3", "cat_l2", "mba"} & cpu_flags()
    assert found["rdt.cpu"].status is (Status.OK if rdt else Status.MISSING)
    assert (found["rdt.resctrl"].status is Status.OK) == Path("/sys/fs/resctrl/info").is_dir()

    smt = threads_per_core()
    assert found["cpu.smt"].summary.startswith("SMT on" if smt > 1 else "no SMT")
    assert found["cpu.topology"].data["cpus"] == os.cpu_count()

    psi = Path("/proc/pressure/memory").exists()
    assert found["psi.system"].status is (Status.OK if psi else Status.MISSING)
    if expected_mode() == "hybrid" and psi:
        assert found["psi.cgroup"].status is Status.OK
        assert "memory.pressure" in found["psi.cgroup"].data["files"]

    kubelet = shutil.which("kubelet") is not None or Path("/var/lib/kubelet").exists()
    if not kubelet:
        assert found["kubelet.cpu_manager"].status is Status.OK
        assert found["kubelet.cpu_manager"].summary.startswith("no kubelet here")

    source = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    assert found["clock.source"].data["current"] == source.read_text().strip()
    assert found["clock.vm"].data["hypervisor"] == ("hypervisor" in cpu_flags())
    for tool in ("memcached", "stress-ng", "etcd", "chromium"):
        status = Status.OK if shutil.which(tool) else Status.MISSING
        assert found[f"tool.{tool}"].status is status
