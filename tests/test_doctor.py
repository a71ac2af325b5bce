"""`corral doctor`'s probes on directory trees shaped like a host, and its pure evaluation.

The trees are small: the files each probe reads, written as the kernel shows them. The write
probe really creates and removes a directory in them, so its clean-up is tested too.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from corral.doctor.evaluate import evaluate, kubelet_findings
from corral.doctor.findings import Area, Finding, Report, Status
from corral.doctor.observations import KubeletObservation
from corral.doctor.run import diagnose, observe
from corral.errors import InputError
from corral.topology.presets import preset
from tests.sysfs_tree import write_sysfs_tree

V1_CONTROLLERS = {
    "cpu": "cpu.shares",
    "cpuacct": "cpuacct.usage",
    "cpuset": "cpuset.cpus",
    "memory": "memory.limit_in_bytes",
}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_host(root: Path, *, cpu_idle: bool = True, freezer: bool = True) -> Path:
    """A cgroup v1 host as this project's VM mounts it (cpu and cpuacct separate; the freezer
    known only from /proc/mounts), plus sysfs for one socket of two cores."""
    cgroup = root / "sys/fs/cgroup"
    mounts = []
    for name, marker in V1_CONTROLLERS.items():
        _write(cgroup / name / "cgroup.procs", "")
        _write(cgroup / name / marker, "1024\n")
        mounts.append(f"cgroup /sys/fs/cgroup/{name} cgroup rw,relatime,{name} 0 0")
    if cpu_idle:
        _write(cgroup / "cpu/cpu.idle", "0\n")
    if freezer:
        _write(cgroup / "freezer/cgroup.procs", "")
        mounts.append("cgroup /sys/fs/cgroup/freezer cgroup rw,relatime,freezer 0 0")
    _write(root / "proc/mounts", "\n".join(mounts) + "\n")
    write_sysfs_tree(root / "sys", preset("xeon-e2288g"))
    return root


def v2_host(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    """A cgroup v2-only host whose root offers ``controllers``."""
    cgroup = root / "sys/fs/cgroup"
    _write(cgroup / "cgroup.controllers", controllers + "\n")
    _write(cgroup / "cgroup.subtree_control", "memory\n")
    _write(cgroup / "cgroup.procs", "")
    write_sysfs_tree(root / "sys", preset("toy-16"))
    return root


def by_check(report: Report) -> dict[str, Finding]:
    return {f.check: f for f in report.findings}


def leftovers(root: Path) -> list[Path]:
    return sorted(root.rglob("corral-doctor-*"))


# --- cgroups ---------------------------------------------------------------------------


def test_a_v1_host_with_every_controller_can_enforce_and_the_probes_leave_nothing(
    tmp_path: Path,
) -> None:
    report = diagnose(v1_host(tmp_path), shared_k8s=tmp_path / "none")
    found = by_check(report)
    assert report.can_enforce and report.exit_code() == 0 and report.blockers == ()
    assert report.mode == "v1"
    for name in ("cpu", "cpuacct", "cpuset", "memory", "freezer"):
        finding = found[f"cgroup.controller.{name}"]
        assert finding.status is Status.OK, finding
        assert finding.data["path"] == str(tmp_path / "sys/fs/cgroup" / name)
        assert found[f"cgroup.write.{name}"].status is Status.OK
    assert found["cgroup.cpu_idle"].status is Status.OK
    assert leftovers(tmp_path) == []


def test_a_v1_host_without_a_freezer_warns_and_still_enforces(
    tmp_path: Path,
) -> None:
    report = diagnose(v1_host(tmp_path, freezer=False), shared_k8s=tmp_path)
    freezer = by_check(report)["cgroup.controller.freezer"]
    assert freezer.status is Status.WARN
    assert "cannot be frozen" in freezer.summary
    assert "mount -t cgroup -o freezer" in freezer.fix
    assert report.can_enforce  # the freezer narrows what corral does, it does not block


def test_no_cgroups_at_all_is_a_blocker_with_the_mount_command(tmp_path: Path) -> None:
    report = diagnose(tmp_path, shared_k8s=tmp_path)
    found = by_check(report)
    assert not report.can_enforce and report.exit_code() == 1
    assert report.mode == "none"
    assert found["cgroup.mode"].status is Status.ERROR
    assert "mount -t cgroup2" in found["cgroup.mode"].fix
    assert any("no cgroup hierarchy" in b for b in report.blockers)
    assert found["cgroup.controller.cpuset"].status is Status.MISSING


def test_v2_without_cpu_and_cpuset_in_cgroup_controllers_cannot_enforce(tmp_path: Path) -> None:
    report = diagnose(v2_host(tmp_path, controllers="io memory pids"), shared_k8s=tmp_path)
    found = by_check(report)
    assert report.mode == "v2" and not report.can_enforce
    assert sorted(b for b in report.blockers if "controller" in b) == [
        "the cpu controller is not available",
        "the cpuset controller is not available",
    ]
    assert found["cgroup.controller.cpuset"].status is Status.MISSING
    assert "cgroup.controllers" in found["cgroup.controller.cpuset"].fix
    assert found["cgroup.controller.memory"].status is Status.OK


def test_v2_with_controllers_can_enforce_and_says_it_enables_them_below_the_root(
    tmp_path: Path,
) -> None:
    report = diagnose(v2_host(tmp_path), shared_k8s=tmp_path)
    found = by_check(report)
    assert report.mode == "v2" and report.can_enforce
    assert "subtree_control" in found["cgroup.controller.cpuset"].summary
    assert "subtree_control" not in found["cgroup.controller.memory"].summary  # enabled
    assert found["cgroup.controller.cpuacct"].status is Status.OK  # cpu.stat instead
    assert "cgroup.freeze" in found["cgroup.controller.freezer"].summary
    # A plain directory is no cgroup: the probe child has no memory.pressure.
    assert found["psi.cgroup"].status is Status.MISSING
    assert "cgroup.cpu_idle" not in found  # unknown without cpu in subtree_control
    assert leftovers(tmp_path) == []


def test_a_refused_mkdir_in_the_cpuset_hierarchy_blocks_and_names_the_errno(
    tmp_path: Path,
) -> None:
    v1_host(tmp_path)
    squatter = tmp_path / f"sys/fs/cgroup/cpuset/corral-doctor-{os.getpid()}"
    squatter.write_text("not a cgroup")  # mkdir now fails with EEXIST
    report = diagnose(tmp_path, shared_k8s=tmp_path)
    write = by_check(report)["cgroup.write.cpuset"]
    assert write.status is Status.ERROR
    assert "EEXIST" in write.summary and str(squatter) in write.summary
    assert not report.can_enforce
    assert any("cpuset" in b and "EEXIST" in b for b in report.blockers)
    assert squatter.is_file()  # not ours: left alone
    squatter.unlink()
    assert leftovers(tmp_path) == []


def test_the_write_probe_goes_where_a_nested_cgroup_parent_would_be_created(
    tmp_path: Path,
) -> None:
    v1_host(tmp_path)
    (tmp_path / "sys/fs/cgroup/cpuset/system.slice").mkdir()
    obs = observe(tmp_path, cgroup_parent="system.slice/corral", shared_k8s=tmp_path)
    cpuset = obs.cgroups.write_of(str(tmp_path / "sys/fs/cgroup/cpuset"))
    cpu = obs.cgroups.write_of(str(tmp_path / "sys/fs/cgroup/cpu"))
    assert cpuset is not None and cpu is not None
    assert Path(cpuset.probe).parent.name == "system.slice"
    assert Path(cpu.probe).parent.name == "cpu"  # no system.slice there: the deepest level
    assert leftovers(tmp_path) == []


def test_a_kernel_without_cpu_idle_is_a_warning_with_the_kernel_version_needed(
    tmp_path: Path,
) -> None:
    report = diagnose(v1_host(tmp_path, cpu_idle=False), shared_k8s=tmp_path)
    idle = by_check(report)["cgroup.cpu_idle"]
    assert idle.status is Status.WARN and "5.15" in idle.fix
    assert report.can_enforce


def test_a_root_that_is_not_a_directory_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--root"):
        diagnose(tmp_path / "absent")


def test_non_root_refusal_fix_says_run_as_root_or_delegate(tmp_path: Path) -> None:
    obs = observe(v1_host(tmp_path), shared_k8s=tmp_path)
    refused = tuple(
        replace(w, created=False, removed=False, error=f"mkdir {w.probe}: Permission (EACCES)")
        for w in obs.cgroups.writes
    )
    host = replace(obs, cgroups=replace(obs.cgroups, writes=refused, euid=1000))
    report = evaluate(host)
    write = by_check(report)["cgroup.write.cpu"]
    assert write.status is Status.ERROR and "run as root" in write.fix
    assert by_check(report)["cgroup.write.cpuacct"].status is Status.WARN  # not required
    assert len(report.blockers) == 2 and not report.can_enforce


# --- pressure, RDT, CPU ----------------------------------------------------------------


def test_psi_files_are_read_and_their_absence_says_how_to_boot(tmp_path: Path) -> None:
    v1_host(tmp_path)
    assert by_check(diagnose(tmp_path, shared_k8s=tmp_path))["psi.system"].status is (
        Status.MISSING
    )
    for resource in ("cpu", "memory", "io"):
        _write(
            tmp_path / "proc/pressure" / resource,
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
        )
    system = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["psi.system"]
    assert system.status is Status.OK
    assert system.data["lines"]["memory"].endswith("total=7")
    # v1 only: no per-cgroup PSI, and the fix mounts cgroup2 beside the v1 hierarchies.
    cgroup_psi = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["psi.cgroup"]
    assert cgroup_psi.status is Status.MISSING and "mount -t cgroup2" in cgroup_psi.fix


def _rdt_cpu(root: Path) -> None:
    _write(root / "proc/cpuinfo", "processor\t: 0\nflags\t\t: fpu rdt_a cat_l3 cdp_l3 mba\n")
    _write(root / "proc/filesystems", "nodev\tcgroup2\nnodev\tresctrl\n")


def test_rdt_in_the_cpu_without_a_resctrl_mount_gives_the_mount_command(tmp_path: Path) -> None:
    _rdt_cpu(v1_host(tmp_path))
    found = by_check(diagnose(tmp_path, shared_k8s=tmp_path))
    assert found["rdt.cpu"].status is Status.OK
    assert "CAT L3" in found["rdt.cpu"].summary and "MBA" in found["rdt.cpu"].summary
    assert found["rdt.resctrl"].status is Status.MISSING
    assert found["rdt.resctrl"].fix == (f"mount -t resctrl resctrl {tmp_path / 'sys/fs/resctrl'}")
    assert "perf.counters" not in found  # the perf syscall is only asked on the real root


def test_a_mounted_resctrl_lists_its_resources_and_closids(tmp_path: Path) -> None:
    _rdt_cpu(v1_host(tmp_path))
    info = tmp_path / "sys/fs/resctrl/info"
    for name, text in {
        "L3/cbm_mask": "7ff\n",
        "L3/min_cbm_bits": "1\n",
        "L3/num_closids": "16\n",
        "MB/min_bandwidth": "10\n",
        "MB/bandwidth_gran": "10\n",
        "MB/num_closids": "8\n",
    }.items():
        _write(info / name, text)
    _write(tmp_path / "sys/fs/resctrl/schemata", "L3:0=7ff\nMB:0=100\n")
    resctrl = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["rdt.resctrl"]
    assert resctrl.status is Status.OK
    assert "L3 (16 CLOSIDs), MB (8 CLOSIDs)" in resctrl.summary


def test_no_rdt_flags_is_missing_without_a_mount_command(tmp_path: Path) -> None:
    v1_host(tmp_path)
    _write(tmp_path / "proc/cpuinfo", "flags\t\t: fpu hypervisor\n")
    found = by_check(diagnose(tmp_path, shared_k8s=tmp_path))
    assert found["rdt.cpu"].status is Status.MISSING
    assert found["rdt.resctrl"].fix == ""  # nothing to mount


def test_smt_and_numa_come_from_sysfs_and_corral_topology_loader(tmp_path: Path) -> None:
    v2_host(tmp_path)  # toy-16: 2 sockets, 2 NUMA nodes, 2 threads per core
    _write(tmp_path / "sys/devices/system/cpu/smt/active", "1\n")
    _write(tmp_path / "sys/devices/system/cpu/smt/control", "on\n")
    found = by_check(diagnose(tmp_path, shared_k8s=tmp_path))
    assert found["cpu.smt"].status is Status.OK
    assert "SMT on (2 threads per core)" in found["cpu.smt"].summary
    assert found["cpu.topology"].data == {
        "cpus": 16,
        "cores": 8,
        "sockets": 2,
        "numa_nodes": 2,
        "l3_domains": 2,
    }
    assert found["cpu.numa"].summary.startswith("2 NUMA nodes")


def test_an_unreadable_topology_is_an_error_and_a_blocker(tmp_path: Path) -> None:
    v1_host(tmp_path)
    (tmp_path / "sys/devices/system/cpu/online").unlink()
    report = diagnose(tmp_path, shared_k8s=tmp_path)
    assert by_check(report)["cpu.topology"].status is Status.ERROR
    assert any("topology" in b for b in report.blockers)


# --- kubelet ---------------------------------------------------------------------------


def test_no_kubelet_is_said_as_an_ok_finding_not_an_error(tmp_path: Path) -> None:
    found = by_check(diagnose(v1_host(tmp_path), shared_k8s=tmp_path))
    kubelet = found["kubelet.cpu_manager"]
    assert kubelet.status is Status.OK and kubelet.summary.startswith("no kubelet here")
    assert "kubelet.cpu_manager_state" not in found


def test_kubelet_static_policy_with_exclusive_cpus_warns_with_both_fixes(tmp_path: Path) -> None:
    v1_host(tmp_path)
    _write(tmp_path / "var/lib/kubelet/config.yaml", "cpuManagerPolicy: static\n")
    _write(
        tmp_path / "var/lib/kubelet/cpu_manager_state",
        '{"policyName":"static","defaultCpuSet":"0,3-15",'
        '"entries":{"pod-1":{"app":"1-2"}},"checksum":1}',
    )
    report = diagnose(tmp_path, shared_k8s=tmp_path)
    found = by_check(report)
    manager = found["kubelet.cpu_manager"]
    assert manager.status is Status.WARN
    assert "--cpu-manager-policy=none" in manager.fix
    assert "kube.static_cpu_manager: avoid" in manager.fix
    state = found["kubelet.cpu_manager_state"]
    assert state.data["defaultCpuSet"] == "0,3-15" and state.data["exclusive"] == "1-2"
    assert state.status is Status.WARN and "1 container(s) hold 1-2" in state.summary
    assert report.can_enforce  # cgroups are writable: kubelet is the agent's decision


def test_kubelet_flags_win_over_the_default_config_and_a_stale_checkpoint_warns(
    tmp_path: Path,
) -> None:
    v1_host(tmp_path)
    _write(
        tmp_path / "proc/4242/cmdline",
        "/usr/bin/kubelet\0--config=/etc/kubernetes/kubelet.yaml\0--cpu-manager-policy\0none\0",
    )
    _write(tmp_path / "etc/kubernetes/kubelet.yaml", "cpuManagerPolicy: static\n")
    _write(
        tmp_path / "var/lib/kubelet/cpu_manager_state",
        '{"policyName":"static","defaultCpuSet":"0-15"}',
    )
    found = by_check(diagnose(tmp_path, shared_k8s=tmp_path))
    manager = found["kubelet.cpu_manager"]
    assert manager.status is Status.OK and "--cpu-manager-policy" in manager.summary
    assert manager.data["pid"] == 4242
    assert manager.data["config"] == str(tmp_path / "etc/kubernetes/kubelet.yaml")
    assert manager.data["config_policy"] == "static"
    stale = found["kubelet.cpu_manager_state"]
    assert stale.status is Status.WARN and "refuses to start" in stale.summary


def test_a_malformed_checkpoint_is_an_error_finding_naming_the_file(tmp_path: Path) -> None:
    v1_host(tmp_path)
    state = tmp_path / "var/lib/kubelet/cpu_manager_state"
    _write(state, "{not json")
    found = [f for f in diagnose(tmp_path, shared_k8s=tmp_path).findings if f.area is Area.KUBELET]
    errors = [f for f in found if f.status is Status.ERROR]
    assert len(errors) == 1 and str(state) in errors[0].summary


def test_kubelet_evaluation_with_only_a_checkpoint_reports_its_policy() -> None:
    obs = KubeletObservation(
        config_path="/c",
        config_policy=None,
        process_pid=None,
        process_policy=None,
        state_path="/s",
        state_policy="none",
        default_cpus="0-1",
    )
    found = {f.check: f for f in kubelet_findings(obs)}
    assert found["kubelet.cpu_manager"].status is Status.OK
    assert found["kubelet.cpu_manager_state"].summary == "checkpoint policy none, shared pool 0-1"


# --- tools and clock -------------------------------------------------------------------


def test_tools_are_found_under_the_root_and_missing_ones_name_the_debian_package(
    tmp_path: Path,
) -> None:
    v1_host(tmp_path)
    memcached = tmp_path / "usr/bin/memcached"
    _write(memcached, "#!/bin/sh\n")
    memcached.chmod(0o755)
    _write(tmp_path / "usr/bin/stress-ng", "not executable")
    k8s = tmp_path / "k8s"
    _write(k8s / "bin/kube-apiserver.xz", "")
    found = by_check(diagnose(tmp_path, shared_k8s=k8s))
    assert found["tool.memcached"].status is Status.OK
    assert found["tool.memcached"].data["path"] == str(memcached)
    assert found["tool.stress-ng"].status is Status.MISSING
    assert found["tool.stress-ng"].fix == "apt-get install stress-ng"
    assert found["tool.etcd"].fix == "apt-get install etcd-server"
    assert found["tool.chromium"].fix == "apt-get install chromium"
    assert "web-view" in found["tool.chromium"].summary
    assert found["tool.k8s"].status is Status.OK and "kube-apiserver" in found["tool.k8s"].summary
    assert by_check(diagnose(tmp_path, shared_k8s=tmp_path / "x"))["tool.k8s"].status is (
        Status.MISSING
    )


def test_a_clock_source_other_than_tsc_warns_with_the_switch(tmp_path: Path) -> None:
    v1_host(tmp_path)
    source = tmp_path / "sys/devices/system/clocksource/clocksource0"
    _write(source / "current_clocksource", "hpet\n")
    _write(source / "available_clocksource", "tsc hpet acpi_pm\n")
    clock = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["clock.source"]
    assert clock.status is Status.WARN and "timing noise" in clock.summary
    assert clock.fix.startswith("echo tsc > ")
    _write(source / "available_clocksource", "kvm-clock\n")
    _write(source / "current_clocksource", "kvm-clock\n")
    clock = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["clock.source"]
    assert "tsc=reliable" in clock.fix


def test_steal_time_on_a_vm_is_a_warning_with_its_share(tmp_path: Path) -> None:
    v1_host(tmp_path)
    _write(tmp_path / "proc/cpuinfo", "flags\t\t: fpu hypervisor\n")
    _write(tmp_path / "proc/stat", "cpu  600 0 200 150 0 0 0 50 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    vm = by_check(diagnose(tmp_path, shared_k8s=tmp_path))["clock.vm"]
    assert vm.status is Status.WARN
    assert vm.data["steal_percent"] == 5.0 and "5.00%" in vm.summary
    _write(tmp_path / "proc/stat", "cpu  600 0 200 200 0 0 0 0 0 0\n")
    assert by_check(diagnose(tmp_path, shared_k8s=tmp_path))["clock.vm"].status is Status.OK


def test_the_document_has_every_finding_with_enum_statuses_and_groups_by_area_order(
    tmp_path: Path,
) -> None:
    report = diagnose(v1_host(tmp_path), shared_k8s=tmp_path)
    doc = report.to_document()
    assert set(doc) == {"can_enforce", "mode", "blockers", "findings"}
    assert len(doc["findings"]) == len(report.findings)
    assert {f["status"] for f in doc["findings"]} <= {s.value for s in Status}
    areas = [area for area, _ in report.by_area()]
    assert areas == [a for a in Area if a in areas]
    assert all(
        set(f) == {"area", "check", "status", "summary", "fix", "data"} for f in doc["findings"]
    )


def test_a_hybrid_host_names_what_v1_serves_and_probes_the_cgroup2_mount_too(
    tmp_path: Path,
) -> None:
    v1_host(tmp_path)
    _write(tmp_path / "sys/fs/cgroup/unified/cgroup.controllers", "\n")
    report = diagnose(tmp_path, shared_k8s=tmp_path)
    found = by_check(report)
    assert report.mode == "hybrid" and report.can_enforce
    assert found["cgroup.mode"].summary.startswith(
        "hybrid: cpu, cpuacct, cpuset, freezer, memory on v1; cgroup2 at "
    )
    assert found["cgroup.write.unified"].status is Status.OK
    assert found["psi.cgroup"].status is Status.MISSING  # a plain directory has no PSI files
    assert leftovers(tmp_path) == []
