"""The Enforcer on a cgroup v2 tree: writes, refusals with errno, retries, drift, hygiene."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from corral.enforce.desired import DesiredState, EnforceSettings, desired_states
from corral.enforce.enforcer import Enforcer
from corral.enforce.hygiene import reclaim
from corral.errors import EnforcementError, InputError
from corral.placement.allocate import allocate
from corral.placement.workload import parse_workloads_document
from corral.topology.cpuset import CpuSet
from corral.topology.model import Cpu, Topology
from tests.fixtures.cgroup_trees import add_v2_cgroup, read_only, write_v2_root

CID = "ab12" * 16
REFUSED = {errno.EROFS, errno.EACCES, errno.EPERM}


def topology(n: int = 4) -> Topology:
    return Topology.from_records([Cpu(id=i, core=i, socket=0, numa=0, l3=0) for i in range(n)])


WORKLOADS = [
    {"id": "web", "qos": "LC", "cpus": 2, "policy": "exclusive", "memory_limit": "1Gi"},
    {"id": "agent", "qos": "system", "cpus": 0.5, "memory_limit": "256Mi"},
    {"id": "batch", "qos": "BE", "cpus": 1, "memory_limit": "512Mi", "memory_request": "256Mi"},
]


def setup(
    tmp_path: Path, docs: list[dict[str, object]] = WORKLOADS
) -> tuple[Enforcer, tuple[DesiredState, ...]]:
    write_v2_root(tmp_path)
    for rel in ("corral/web", "corral/agent", "corral/be/batch"):
        add_v2_cgroup(tmp_path, rel)
    workloads = parse_workloads_document({"workloads": docs})
    enforcer = Enforcer(cgroup_root=tmp_path)
    topo = topology()
    states = desired_states(
        topo, workloads, allocate(topo, workloads), locations=enforcer.locate(workloads)
    )
    return enforcer, states


def read(tmp_path: Path, rel: str) -> str:
    return (tmp_path / rel).read_text().strip()


def test_v2_apply_enables_controllers_and_writes_every_file(tmp_path: Path) -> None:
    enforcer, states = setup(tmp_path)
    report = enforcer.apply(states)
    assert report.ok, report.failures
    for parent in ("", "corral/", "corral/be/"):
        assert set(read(tmp_path, parent + "cgroup.subtree_control").split()) == {
            "+cpu",
            "+cpuset",
            "+memory",
        }
    web = {s.name: s for s in states}["web"]
    assert read(tmp_path, "corral/web/cpuset.cpus") == str(web.cpus)
    assert read(tmp_path, "corral/web/cpuset.mems") == "0"
    assert read(tmp_path, "corral/web/cpu.weight") == "174"  # 2048 shares, runc's quadratic map
    assert read(tmp_path, "corral/web/cpu.max") == "max 100000"
    assert read(tmp_path, "corral/web/memory.max") == str(1 << 30)
    assert read(tmp_path, "corral/agent/cpu.max") == "50000 100000"
    assert read(tmp_path, "corral/be/cpu.idle") == "1"
    assert read(tmp_path, "corral/be/batch/cpu.idle") == "1"
    assert read(tmp_path, "corral/be/batch/cpu.weight") == "100"  # idle: weight untouched
    assert read(tmp_path, "corral/be/batch/memory.high") == str(
        int((256 + 0.9 * 256) * 2**20) // 4096 * 4096
    )
    assert read(tmp_path, "corral/be/memory.max") == str(512 * 2**20)
    assert read(tmp_path, "corral/cpuset.cpus") == "0-3"
    again = enforcer.apply(states)
    assert again.writes == () and again.ok and again.unchanged > 0


def test_a_dry_run_plans_without_writing(tmp_path: Path) -> None:
    enforcer, states = setup(tmp_path)
    before = read(tmp_path, "corral/web/cpu.weight")
    report = enforcer.apply(states, dry_run=True)
    assert report.dry_run and report.writes
    assert read(tmp_path, "corral/web/cpu.weight") == before
    assert read(tmp_path, "cgroup.subtree_control") == ""


def test_a_read_only_file_is_reported_with_path_and_errno_and_the_rest_lands(
    tmp_path: Path,
) -> None:
    enforcer, states = setup(tmp_path)
    target = tmp_path / "corral/web/memory.max"
    with read_only(target):
        report = enforcer.apply(states)
    assert not report.ok
    [failure] = report.failures
    assert failure.path == str(target) and failure.errno in REFUSED
    assert failure.errno_name in {"EROFS", "EACCES", "EPERM"}
    assert read(tmp_path, "corral/web/cpu.weight") == "174"  # later files still written
    retry = enforcer.apply(states)
    assert retry.ok and [w.path for w in retry.writes] == [str(target)]


def test_a_refused_release_stops_before_the_cpu_is_granted_and_a_retry_finishes(
    tmp_path: Path,
) -> None:
    small = [
        {"id": "web", "qos": "LC", "cpus": 1, "policy": "exclusive"},
        {"id": "batch", "qos": "BE", "cpus": 1},
    ]
    enforcer, before = setup(tmp_path, small)
    assert enforcer.apply(before).ok
    web_before = CpuSet.parse(read(tmp_path, "corral/web/cpuset.cpus"))
    batch_before = CpuSet.parse(read(tmp_path, "corral/be/batch/cpuset.cpus"))
    bigger = [{"id": "web", "qos": "LC", "cpus": 2, "policy": "exclusive"}, small[1]]
    workloads = parse_workloads_document({"workloads": bigger})
    topo = topology()
    after = desired_states(topo, workloads, allocate(topo, workloads))
    web_after = {s.name: s for s in after}["web"].cpus
    assert web_after is not None
    taken = web_after - web_before
    assert taken and taken <= batch_before  # web grows onto a CPU the BE pool must give up
    batch_file = tmp_path / "corral/be/batch/cpuset.cpus"
    with read_only(batch_file):
        report = enforcer.apply(after)
        assert [f.path for f in report.failures] == [str(batch_file)]
        web_now = CpuSet.parse(read(tmp_path, "corral/web/cpuset.cpus"))
        batch_now = CpuSet.parse(read(tmp_path, "corral/be/batch/cpuset.cpus"))
        assert web_now.isdisjoint(batch_now)  # never granted twice
        box = CpuSet.parse(read(tmp_path, "corral/be/cpuset.cpus"))
        assert batch_now <= box <= CpuSet.parse(read(tmp_path, "corral/cpuset.cpus"))
    retry = enforcer.apply(after)
    assert retry.ok
    assert CpuSet.parse(read(tmp_path, "corral/web/cpuset.cpus")) == web_after
    assert enforcer.drift(after).clean


def test_drift_lists_each_difference_and_repair_fixes_it(tmp_path: Path) -> None:
    enforcer, states = setup(tmp_path)
    enforcer.apply(states)
    (tmp_path / "corral/web/cpu.weight").write_text("5\n")
    (tmp_path / "corral/be/batch/memory.max").write_text("max\n")
    drift = enforcer.drift(states)
    assert {(d.path.rsplit("/", 1)[1], d.expected, d.actual) for d in drift.differences} == {
        ("cpu.weight", "174", "5"),
        ("memory.max", str(512 * 2**20), "max"),
    }
    repaired = enforcer.repair(states)
    assert len(repaired.writes) == 2 and enforcer.drift(states).clean


def test_a_located_cgroup_is_written_and_a_vanished_one_is_reported_not_created(
    tmp_path: Path,
) -> None:
    docs = [{"id": "web", "qos": "LC", "cpus": 1, "container_id": CID}]
    write_v2_root(tmp_path)
    add_v2_cgroup(tmp_path, f"system.slice/docker-{CID}.scope")
    enforcer, states = setup(tmp_path, docs)
    web = states[-1]
    assert web.cgroup == f"system.slice/docker-{CID}.scope" and not web.create
    assert enforcer.apply(states).ok
    assert read(tmp_path, f"{web.cgroup}/cpu.weight") == "100"
    gone = DesiredState(
        name="old", cgroup="system.slice/docker-0000.scope", cpus=CpuSet([0]), create=False
    )
    report = enforcer.apply([gone])
    assert [f.errno for f in report.failures] == [errno.ENOENT]
    assert not (tmp_path / "system.slice/docker-0000.scope").exists()


def test_cpus_outside_the_host_are_refused_before_any_write(tmp_path: Path) -> None:
    enforcer, _ = setup(tmp_path)
    topo = topology(8)
    workloads = parse_workloads_document(
        {"workloads": [{"id": "web", "cpus": 6, "policy": "exclusive"}]}
    )
    states = desired_states(topo, workloads, allocate(topo, workloads))
    with pytest.raises(InputError, match="not all on this host"):
        enforcer.apply(states)
    assert read(tmp_path, "cgroup.subtree_control") == ""


def test_v2_reclaim_asks_for_the_whole_usage_and_removal_refuses_live_cgroups(
    tmp_path: Path,
) -> None:
    enforcer, _ = setup(tmp_path)
    (tmp_path / "corral/be/batch/memory.current").write_text("81920\n")
    assert reclaim(enforcer.layout, "corral/be/batch") is None
    assert read(tmp_path, "corral/be/batch/memory.reclaim") == "81920"
    (tmp_path / "corral/be/batch/cgroup.procs").write_text("4242\n")
    with pytest.raises(EnforcementError, match="still holds tasks"):
        enforcer.remove("corral/be/batch")
    with pytest.raises(InputError, match="only removes cgroups it created"):
        enforcer.remove("system.slice")


def test_v2_dying_cgroups_come_from_cgroup_stat(tmp_path: Path) -> None:
    write_v2_root(tmp_path)
    (tmp_path / "cgroup.stat").write_text("nr_descendants 12\nnr_dying_descendants 3\n")
    report = Enforcer(cgroup_root=tmp_path).dying()
    assert (report.source, report.dying, report.live) == ("v2", 3, 12)


def test_stale_cgroups_are_found_and_settings_name_the_parent(tmp_path: Path) -> None:
    enforcer, states = setup(tmp_path)
    add_v2_cgroup(tmp_path, "corral/be/old-batch")
    add_v2_cgroup(tmp_path, "corral/old-web")
    assert set(enforcer.stale(states)) == {"corral/be/old-batch", "corral/old-web"}
    custom = Enforcer(cgroup_root=tmp_path, settings=EnforceSettings(parent="elsewhere"))
    assert custom.stale(states) == ()


def test_a_stale_child_gives_up_cpus_a_new_exclusive_workload_needs(tmp_path: Path) -> None:
    enforcer, states = setup(tmp_path)
    old = add_v2_cgroup(tmp_path, "corral/old-web", procs="4242\n")
    (old / "cpuset.cpus").write_text("0-3\n")
    (old / "cpuset.mems").write_text("0\n")
    report = enforcer.apply(states)
    assert report.ok, report.failures
    web = {s.name: s for s in states}["web"].cpus
    assert web is not None
    left = CpuSet.parse((old / "cpuset.cpus").read_text())
    assert left and left.isdisjoint(web)
    assert enforcer.stale(states) == ("corral/old-web",)
