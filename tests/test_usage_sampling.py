"""CPU usage sampling on every cgroup layout: the reader on trees shaped like the kernel's,
the enforcer creating and joining the accounting hierarchy, the sampler's coverage and its
one-time warning, and on this host's real v1 hierarchies (cpu and cpuacct separate) a busy
process whose usage the reader, the sampler, the agent and its predictor all see."""

from __future__ import annotations

import errno
import logging
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from corral.agent.cgroups import CgroupEnforcer
from corral.agent.sampler import (
    Coverage,
    UsageSampler,
    coverage_counts,
    read_usages,
)
from corral.bench.agent_process import AgentProcess, cpu_seconds
from corral.enforce.desired import DesiredState, EnforceSettings, desired_states
from corral.enforce.detect import Version, detect_cgroups
from corral.enforce.enforcer import Enforcer
from corral.enforce.usage import (
    CpuUsage,
    NoUsage,
    NoUsageReason,
    UsageReader,
    UsageSource,
    parse_cpu_stat_usage,
)
from corral.errors import EnforcementError
from corral.placement.allocate import allocate
from corral.placement.workload import parse_workloads_document
from corral.topology.presets import toy_16
from corral.topology.sysfs import load_sysfs
from tests.fixtures.cgroup_trees import (
    CPUACCT_COMOUNTED,
    add_bare_v2_cgroup,
    add_v1_cgroup,
    add_v2_cgroup,
    write_bare_v2,
    write_v1_root,
    write_v2_root,
)

# --- the reader on trees ------------------------------------------------------------------


def _usage(result: object) -> CpuUsage:
    assert isinstance(result, CpuUsage), result
    return result


def _no_usage(result: object) -> NoUsage:
    assert isinstance(result, NoUsage), result
    return result


def test_separate_cpuacct_is_read_not_the_cpu_hierarchy(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    write_bare_v2(tmp_path / "unified")
    add_v1_cgroup(tmp_path, "corral/web")
    (tmp_path / "cpuacct/corral/web/cpuacct.usage").write_text("1500000000\n")
    reading = _usage(UsageReader.at(tmp_path).read("/corral/web"))
    assert reading.ns == 1_500_000_000 and reading.source is UsageSource.CPUACCT
    assert reading.path == f"{tmp_path}/cpuacct/corral/web/cpuacct.usage"


def test_comounted_cpu_cpuacct_is_one_hierarchy_read_through_its_real_directory(
    tmp_path: Path,
) -> None:
    write_v1_root(tmp_path, cpuacct=CPUACCT_COMOUNTED)
    add_v1_cgroup(tmp_path, "corral/web")
    (tmp_path / "cpu,cpuacct/corral/web/cpuacct.usage").write_text("7\n")
    layout = detect_cgroups(tmp_path)
    assert layout.accounting() == layout.hierarchy_of("cpu")
    assert layout.separate_accounting() is None  # the cpu hierarchy already holds it
    reading = _usage(UsageReader(layout).read("corral/web"))
    assert reading.ns == 7 and "/cpu,cpuacct/corral/web/" in reading.path


def test_a_named_hierarchy_holding_cpuacct_is_found_by_its_files(tmp_path: Path) -> None:
    write_v1_root(tmp_path, cpuacct="acct")  # mount -t cgroup -o name=acct,cpuacct
    (tmp_path / "systemd").mkdir()  # a named hierarchy with no controller: not a source
    (tmp_path / "systemd/cgroup.procs").write_text("")
    add_v1_cgroup(tmp_path, "corral/web", hierarchies=("cpuset", "cpu", "acct", "memory"))
    (tmp_path / "acct/corral/web/cpuacct.usage").write_text("42\n")
    assert _usage(UsageReader.at(tmp_path).read("corral/web")).path.startswith(f"{tmp_path}/acct/")


def test_pure_v2_reads_usage_usec_as_nanoseconds(tmp_path: Path) -> None:
    write_v2_root(tmp_path)
    add_v2_cgroup(tmp_path, "corral/web")
    stat = tmp_path / "corral/web/cpu.stat"
    stat.write_text(stat.read_text().replace("usage_usec 0", "usage_usec 2500"))
    reading = _usage(UsageReader.at(tmp_path).read("corral/web"))
    assert reading.ns == 2_500_000 and reading.source is UsageSource.CPU_STAT


def test_hybrid_without_cpuacct_reads_the_controllerless_cgroup2(tmp_path: Path) -> None:
    write_v1_root(tmp_path, cpuacct=None)
    write_bare_v2(tmp_path / "unified")
    add_bare_v2_cgroup(tmp_path / "unified", "corral/web", usage_usec=3)
    layout = detect_cgroups(tmp_path)
    assert layout.accounting() == layout.unified
    assert layout.describe()["accounting"] == str(tmp_path / "unified")
    reading = _usage(UsageReader(layout).read("corral/web"))
    assert reading.ns == 3000 and reading.path.startswith(f"{tmp_path}/unified/")


def test_a_cgroup_only_in_the_cgroup2_mount_is_read_there_on_a_hybrid_host(
    tmp_path: Path,
) -> None:
    write_v1_root(tmp_path)
    write_bare_v2(tmp_path / "unified")
    add_bare_v2_cgroup(tmp_path / "unified", "system.slice/app.service", usage_usec=9)
    reading = _usage(UsageReader.at(tmp_path).read("system.slice/app.service"))
    assert reading.ns == 9000 and reading.source is UsageSource.CPU_STAT


def test_a_missing_cgroup_names_every_place_searched(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    write_bare_v2(tmp_path / "unified")
    missing = _no_usage(UsageReader.at(tmp_path).read("corral/gone"))
    assert missing.reason is NoUsageReason.CGROUP_MISSING
    assert f"{tmp_path}/cpuacct/corral/gone" in missing.detail
    assert f"{tmp_path}/unified/corral/gone" in missing.detail


def test_no_accounting_hierarchy_is_a_reason_and_a_stated_limitation(tmp_path: Path) -> None:
    write_v1_root(tmp_path, cpuacct=None)
    layout = detect_cgroups(tmp_path)
    assert layout.accounting() is None
    assert any("CPU usage cannot be sampled" in note for note in layout.limitations())
    reader = UsageReader(layout)
    assert reader.describe() == f"no CPU accounting under {tmp_path}"
    result = _no_usage(reader.read("corral/web"))
    assert result.reason is NoUsageReason.NO_ACCOUNTING


def test_a_v2_cgroup_without_cpu_stat_has_no_counter(tmp_path: Path) -> None:
    write_v2_root(tmp_path)
    add_v2_cgroup(tmp_path, "old")
    (tmp_path / "old/cpu.stat").unlink()  # kernels before 4.20 without the cpu controller
    result = _no_usage(UsageReader.at(tmp_path).read("old"))
    assert result.reason is NoUsageReason.NO_COUNTER and "cpu.stat usage_usec" in result.detail


def test_a_v1_cpu_stat_is_not_a_usage_counter() -> None:
    v1 = "nr_periods 0\nnr_throttled 0\nthrottled_time 0\nnr_bursts 0\nburst_time 0\n"
    assert parse_cpu_stat_usage(v1) is None
    assert parse_cpu_stat_usage("usage_usec 12\nuser_usec 10\n") == 12_000


def test_unreadable_and_malformed_counters_say_which_file_and_errno(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    add_v1_cgroup(tmp_path, "corral/a")
    add_v1_cgroup(tmp_path, "corral/b")
    usage = tmp_path / "cpuacct/corral/a/cpuacct.usage"
    usage.unlink()
    usage.mkdir()  # read(2) on it fails with EISDIR, as root cannot be refused by modes
    (tmp_path / "cpuacct/corral/b/cpuacct.usage").write_text("lots\n")
    reader = UsageReader.at(tmp_path)
    refused = _no_usage(reader.read("corral/a"))
    assert refused.reason is NoUsageReason.UNREADABLE and refused.errno == errno.EISDIR
    assert str(usage) in refused.detail
    malformed = _no_usage(reader.read("corral/b"))
    assert malformed.reason is NoUsageReason.MALFORMED and "cpuacct/corral/b" in malformed.detail


def test_read_usages_flags_a_workload_whose_cgroup_is_not_located(tmp_path: Path) -> None:
    write_v1_root(tmp_path)
    add_v1_cgroup(tmp_path, "corral/web")
    results = read_usages(UsageReader.at(tmp_path), {"web": "corral/web", "ctr": None})
    assert isinstance(results["web"], CpuUsage)
    assert _no_usage(results["ctr"]).reason is NoUsageReason.NOT_LOCATED


# --- the enforcer and the accounting hierarchy, on trees ----------------------------------


def _states(enforcer: Enforcer, docs: list[dict[str, object]]) -> tuple[DesiredState, ...]:
    topology = toy_16()
    workloads = parse_workloads_document({"workloads": docs})
    placement = allocate(topology, workloads)
    assert not placement.refusals
    return desired_states(
        topology,
        workloads,
        placement,
        settings=enforcer.settings,
        locations=enforcer.locate(workloads),
    )


WEB = {"id": "web", "qos": "LC", "cpus": 1, "policy": "exclusive"}
BATCH = {"id": "batch", "qos": "BE", "cpus": 0.5}


MANAGED = ("cpuset", "cpu", "memory")
OWNED = ("corral", "corral/web", "corral/be", "corral/be/batch")


def _v1_host(root: Path, *, cpuacct: str | None = "cpuacct") -> Path:
    """A v1 tree for toy-16 whose managed hierarchies already hold corral's cgroups with
    the kernel's files (a tree's mkdir makes none); the accounting hierarchy has none."""
    write_v1_root(root, cpus="0-15", mems="0-1", cpuacct=cpuacct)
    for rel in OWNED:
        add_v1_cgroup(root, rel, hierarchies=MANAGED)
    return root


def _kernel_fills(root: Path, hierarchy: str) -> None:
    """Give the directories corral made in ``hierarchy`` the files the kernel would."""
    for directory in (root / hierarchy / "corral").rglob("*"):
        if directory.is_dir():
            (directory / "cgroup.procs").touch()
            (directory / "cpuacct.usage").write_text("0\n")
    (root / hierarchy / "corral/cgroup.procs").touch()


def test_corral_cgroups_are_created_in_a_separate_cpuacct_and_removed_from_it(
    tmp_path: Path,
) -> None:
    _v1_host(tmp_path)
    enforcer = Enforcer(cgroup_root=tmp_path)
    report = enforcer.apply(_states(enforcer, [WEB, BATCH]))
    assert report.ok, report.failures
    assert sorted(report.created) == sorted(str(tmp_path / "cpuacct" / rel) for rel in OWNED)
    _kernel_fills(tmp_path, "cpuacct")
    enforcer.attach("corral/web", 4242)
    for hierarchy in (*MANAGED, "cpuacct"):
        procs = tmp_path / hierarchy / "corral/web/cgroup.procs"
        assert procs.read_text() == "4242"
        procs.write_text("")  # the process exited
    # Removal from every hierarchy is shown on the real kernel below (a tree's rmdir
    # refuses directories holding files); here the busy check covers cpuacct too.
    (tmp_path / "cpuacct/corral/web/cgroup.procs").write_text("4242")
    with pytest.raises(EnforcementError, match="cpuacct: pids 4242"):
        enforcer.remove("corral/web")


def test_comounted_cpuacct_is_the_cpu_hierarchy_and_gets_nothing_extra(tmp_path: Path) -> None:
    write_v1_root(tmp_path, cpus="0-15", mems="0-1", cpuacct=CPUACCT_COMOUNTED)
    for rel in OWNED:
        add_v1_cgroup(tmp_path, rel)  # cpuset, cpu -> cpu,cpuacct, memory
    enforcer = Enforcer(cgroup_root=tmp_path)
    report = enforcer.apply(_states(enforcer, [WEB]))
    assert report.ok, report.failures
    assert report.created == ()
    assert not any(w.step == "join" for w in report.writes)
    enforcer.attach("corral/web", 4242)
    assert (tmp_path / "cpu,cpuacct/corral/web/cgroup.procs").read_text() == "4242"


def test_without_cpuacct_a_hybrid_host_accounts_in_the_cgroup2_mount(tmp_path: Path) -> None:
    _v1_host(tmp_path, cpuacct=None)
    write_bare_v2(tmp_path / "unified")
    enforcer = Enforcer(cgroup_root=tmp_path)
    assert enforcer.layout.separate_accounting() == enforcer.layout.unified
    report = enforcer.apply(_states(enforcer, [WEB]))
    assert report.ok, report.failures
    assert str(tmp_path / "unified/corral/web") in report.created
    enforcer.remove("corral/web")
    assert not (tmp_path / "unified/corral/web").exists()


def test_a_pure_v2_host_needs_no_separate_accounting(tmp_path: Path) -> None:
    write_v2_root(tmp_path, cpus="0-15", mems="0-1")
    layout = detect_cgroups(tmp_path)
    assert layout.accounting() == layout.unified and layout.separate_accounting() is None
    assert layout.owned() == (layout.unified,)


def test_a_process_put_in_one_hierarchy_only_is_drift_and_joins_every_other(
    tmp_path: Path,
) -> None:
    _v1_host(tmp_path)
    enforcer = Enforcer(cgroup_root=tmp_path)
    states = _states(enforcer, [WEB])
    enforcer.apply(states)
    _kernel_fills(tmp_path, "cpuacct")
    (tmp_path / "cpuset/corral/web/cgroup.procs").write_text("4242\n")
    drift = enforcer.drift(states)
    joined = [f"{tmp_path}/{h}/corral/web/cgroup.procs" for h in ("cpu", "cpuacct", "memory")]
    assert sorted(d.path for d in drift.differences) == joined
    assert {d.expected for d in drift.differences} == {"holds pids 4242"}
    report = enforcer.apply(states)
    moves = sorted((w.path, w.new, w.step) for w in report.writes)
    assert moves == [(path, "4242", "join") for path in joined]
    assert enforcer.drift(states).differences == ()
    assert enforcer.join_accounting(states).writes == ()  # nothing left to move


def test_a_cpuacct_cgroup_removed_behind_corrals_back_is_drift_and_recreated(
    tmp_path: Path,
) -> None:
    _v1_host(tmp_path)
    enforcer = Enforcer(cgroup_root=tmp_path)
    states = _states(enforcer, [WEB])
    enforcer.apply(states)
    acct = tmp_path / "cpuacct/corral/web"
    for file in acct.iterdir():
        file.unlink()
    acct.rmdir()
    assert [d.path for d in enforcer.drift(states).differences] == [str(acct)]
    assert str(acct) in enforcer.apply(states).created


def test_a_located_cgroup_is_not_created_or_joined_in_cpuacct(tmp_path: Path) -> None:
    _v1_host(tmp_path)
    add_v1_cgroup(tmp_path, "kubepods/pod1/ctr", hierarchies=MANAGED)
    (tmp_path / "cpuset/kubepods/pod1/ctr/cgroup.procs").write_text("4242\n")
    enforcer = Enforcer(cgroup_root=tmp_path)
    states = _states(enforcer, [{**BATCH, "cgroup": "kubepods/pod1/ctr"}])
    report = enforcer.apply(states)
    assert report.ok, report.failures
    assert not (tmp_path / "cpuacct/kubepods").exists()
    assert not any(w.step == "join" for w in report.writes)
    reason = _no_usage(UsageReader(enforcer.layout).read("kubepods/pod1/ctr")).reason
    assert reason is NoUsageReason.CGROUP_MISSING


# --- the sampler's coverage ---------------------------------------------------------------


def _reading(ns: int, path: str = "/a/cpuacct.usage") -> CpuUsage:
    return CpuUsage("corral/w", ns, UsageSource.CPUACCT, path)


def test_a_workload_without_data_is_flagged_and_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sampler = UsageSampler(downsample_s=10.0)
    gone = NoUsage("corral/w", NoUsageReason.CGROUP_MISSING, "no cgroup at /x")
    with caplog.at_level(logging.WARNING, logger="corral.agent.sampler"):
        for step in range(3):
            assert sampler.record(step * 5.0, {"w": gone}, {"w": 1.0}) == []
    warnings = [r for r in caplog.records if r.getMessage() == "agent.usage_missing"]
    assert len(warnings) == 1
    assert warnings[0].__dict__["workload"] == "w"
    assert warnings[0].__dict__["reason"] == "cgroup-missing"
    flagged = sampler.coverage()["w"]
    assert flagged.state is Coverage.NO_DATA and flagged.reason is NoUsageReason.CGROUP_MISSING
    assert flagged.to_json()["reason"] == "cgroup-missing" and flagged.cores is None


def test_coverage_goes_pending_then_sampled_with_cores_and_time() -> None:
    sampler = UsageSampler(downsample_s=10.0)
    sampler.record(0.0, {"w": _reading(0)}, {"w": 2.0})
    assert sampler.coverage()["w"].state is Coverage.PENDING
    rows = sampler.record(10.0, {"w": _reading(5 * 10**9)}, {"w": 2.0})
    covered = sampler.coverage()["w"]
    assert covered.sampled and covered.cores == pytest.approx(0.5)
    assert covered.sampled_at_s == 10.0 and covered.source == "/a/cpuacct.usage"
    assert [(r.workload_id, r.usage_cores, r.capacity_cores) for r in rows] == [("w", 0.5, 2.0)]
    lost = NoUsage("corral/w", NoUsageReason.UNREADABLE, "EIO", errno.EIO)
    sampler.record(20.0, {"w": lost}, {"w": 2.0})
    after = sampler.coverage()["w"]
    assert after.state is Coverage.NO_DATA and after.sampled_at_s == 10.0
    assert "w" not in sampler.latest
    assert coverage_counts(sampler.coverage()) == {
        Coverage.SAMPLED: 0,
        Coverage.PENDING: 0,
        Coverage.NO_DATA: 1,
    }
    sampler.record(30.0, {}, {})
    assert sampler.coverage() == {}


def test_a_change_of_source_restarts_the_series_instead_of_a_spike() -> None:
    sampler = UsageSampler(downsample_s=100.0)
    sampler.record(0.0, {"w": _reading(0, "/v1")}, {"w": 1.0})
    sampler.record(1.0, {"w": _reading(10**9 // 2, "/v1")}, {"w": 1.0})
    assert sampler.latest["w"] == pytest.approx(0.5)
    sampler.record(2.0, {"w": _reading(10**13, "/v2")}, {"w": 1.0})  # another counter
    assert sampler.coverage()["w"].state is Coverage.PENDING and "w" not in sampler.latest
    sampler.record(3.0, {"w": _reading(10**13 + 10**9 // 4, "/v2")}, {"w": 1.0})
    assert sampler.latest["w"] == pytest.approx(0.25)


# --- this host's real cgroups -------------------------------------------------------------

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _real_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    layout = detect_cgroups(CGROUP_ROOT)
    home = layout.hierarchy_of("cpuacct")
    if home is None or home.version is not Version.V1:
        return f"needs a v1 cpuacct hierarchy under {CGROUP_ROOT}"
    for name in ("cpuset", "cpu", "memory"):
        managed = layout.hierarchy_of(name)
        if managed is None or managed.version is not Version.V1 or not managed.writable:
            return f"needs a writable v1 {name} hierarchy under {CGROUP_ROOT}"
    return None


REAL_SKIP = _real_skip_reason()


@pytest.fixture
def busy() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for proc in started:
            proc.kill()
            proc.wait()


def _spin(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    started.append(proc)
    return proc


@pytest.mark.root
@pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")
def test_a_busy_process_in_a_corral_cgroup_is_sampled_within_two_periods(
    parent: str, busy: list[subprocess.Popen[bytes]]
) -> None:
    topology = load_sysfs()
    agent_enforcer = CgroupEnforcer(
        topology, cgroup_root=CGROUP_ROOT, proc_root=Path("/proc"), parent=parent
    )
    workloads = parse_workloads_document(
        {"workloads": [{"id": "web", "qos": "LC", "cpus": 1, "policy": "shared"}]}
    )
    placement = allocate(topology, workloads)
    report = agent_enforcer.apply(workloads, placement)
    assert not report.errors, report.errors
    cgroup = agent_enforcer.cgroup_of(workloads[0])
    assert cgroup == f"{parent}/web"
    assert (CGROUP_ROOT / "cpuacct" / cgroup).is_dir()  # created by the enforcer

    attacher = Enforcer(cgroup_root=CGROUP_ROOT, settings=EnforceSettings(parent=parent))
    proc = _spin(busy)
    attacher.attach(cgroup, proc.pid)
    assert str(proc.pid) in (CGROUP_ROOT / "cpuacct" / cgroup / "cgroup.procs").read_text()

    reader = UsageReader.at(CGROUP_ROOT)
    period = 0.5
    sampler = UsageSampler(downsample_s=period)
    assert reader.describe().startswith(f"cpuacct.usage/cpu.stat under {CGROUP_ROOT}/cpuacct")
    rows = []
    first = _usage(reader.read(cgroup))  # the process's window lies inside the cgroup's
    started_cpu = cpu_seconds(proc.pid)
    assert first.source is UsageSource.CPUACCT
    rows += sampler.record(time.monotonic(), read_usages(reader, {"web": cgroup}), {"web": 1.0})
    for _ in range(2):  # two sampling periods
        time.sleep(period)
        rows += sampler.record(time.monotonic(), read_usages(reader, {"web": cgroup}), {"web": 1.0})
    process_ns = (cpu_seconds(proc.pid) - started_cpu) * 1e9
    last = _usage(reader.read(cgroup))
    assert last.ns > first.ns
    # The cgroup counts the process's CPU time (ticks of 10 ms in /proc: allow two).
    assert last.ns - first.ns >= process_ns - 2e7
    assert rows and all(r.workload_id == "web" and r.capacity_cores == 1.0 for r in rows)
    assert max(r.usage_cores for r in rows) > 0.05
    assert sampler.coverage()["web"].sampled

    proc.kill()
    proc.wait()
    release = agent_enforcer.release(workloads)
    assert not release.errors, release.errors
    assert not (CGROUP_ROOT / "cpuacct" / cgroup).exists()
    vanished = _no_usage(reader.read(cgroup))
    assert vanished.reason is NoUsageReason.CGROUP_MISSING


@pytest.mark.root
@pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")
def test_a_process_written_into_the_cpuset_only_is_joined_by_reconcile(
    parent: str, busy: list[subprocess.Popen[bytes]]
) -> None:
    topology = load_sysfs()
    agent_enforcer = CgroupEnforcer(
        topology, cgroup_root=CGROUP_ROOT, proc_root=Path("/proc"), parent=parent
    )
    workloads = parse_workloads_document(
        {"workloads": [{"id": "web", "qos": "LC", "cpus": 1, "policy": "shared"}]}
    )
    placement = allocate(topology, workloads)
    assert not agent_enforcer.apply(workloads, placement).errors
    proc = _spin(busy)
    (CGROUP_ROOT / "cpuset" / parent / "web" / "cgroup.procs").write_text(str(proc.pid))
    drift = agent_enforcer.drift(workloads, placement)
    assert any(d.file.endswith(f"cpuacct/{parent}/web/cgroup.procs") for d in drift)
    agent_enforcer.repair(workloads, placement)
    assert str(proc.pid) in (CGROUP_ROOT / "cpuacct" / parent / "web" / "cgroup.procs").read_text()
    assert agent_enforcer.drift(workloads, placement) == []
    reader = UsageReader.at(CGROUP_ROOT)
    before = _usage(reader.read(f"{parent}/web")).ns
    time.sleep(0.3)
    assert _usage(reader.read(f"{parent}/web")).ns > before


@pytest.mark.root
@pytest.mark.skipif(REAL_SKIP is not None, reason=REAL_SKIP or "")
def test_the_agent_shows_a_busy_workloads_usage_and_its_predictor_uses_it(
    tmp_path: Path, parent: str, busy: list[subprocess.Popen[bytes]]
) -> None:
    period = 1.0
    settings = {
        "topology": "sysfs",
        "cgroup_parent": parent,
        "coalesce_window_s": 0.01,
        "sample_period_s": period,
        "downsample_s": period,
        "reconcile_period_s": 0.5,
        "rebalance_period_s": 1.0,
        "predictor": {"min_history_s": 1.0, "window_s": 600.0, "refresh_s": 0.5},
    }
    with AgentProcess(tmp_path, settings) as agent, httpx.Client(base_url=agent.url) as http:
        status = http.get("/status").json()
        assert status["dry_run"] is False, status["enforcer"]
        placed = http.put(
            "/workloads/web?wait=true", json={"qos": "LC", "cpus": 1, "policy": "shared"}
        )
        assert placed.status_code in {200, 201}, placed.text
        assert (CGROUP_ROOT / "cpuacct" / parent / "web").is_dir(), agent.log_tail()
        proc = _spin(busy)
        # As a test or an operator puts a process into a workload: its cpuset cgroup only.
        (CGROUP_ROOT / "cpuset" / parent / "web" / "cgroup.procs").write_text(str(proc.pid))
        # The target is two sampling periods; the reconcile that joins cpuacct
        # (0.5 s) and a busy 2-CPU host get a generous margin on top.
        started = time.monotonic()
        deadline = started + 2 * period + 0.5 + 5.0
        usage = None
        while time.monotonic() < deadline:
            rows = {w["id"]: w for w in http.get("/workloads").json()["workloads"]}
            usage = rows["web"]["usage_cores"]
            if usage is not None and usage > 0.3:
                break
            time.sleep(0.1)
        assert usage is not None and usage > 0.3, agent.log_tail()
        print(f"\nusage {usage:.2f} cores shown {time.monotonic() - started:.2f} s after start")

        deadline = time.monotonic() + 15.0  # a rebalance (1 s) refreshes the predictor
        prediction: dict[str, object] = {}
        while time.monotonic() < deadline:
            predictions = http.get("/status").json()["predictions"]["workloads"]
            prediction = predictions.get("web", {})
            if prediction.get("source") == "recent-peak":
                break
            time.sleep(0.2)
        assert prediction.get("source") == "recent-peak", prediction
        cores = prediction.get("cores")
        assert isinstance(cores, float) and cores > 0.3
    with closing(sqlite3.connect(tmp_path / "state.db")) as db:
        stored = db.execute(
            "SELECT usage_cores, capacity_cores FROM usage WHERE workload_id = 'web'"
        ).fetchall()
    assert stored and max(r[0] for r in stored) > 0.3 and stored[0][1] == 1.0
