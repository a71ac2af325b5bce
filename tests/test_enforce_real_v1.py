"""The Enforcer on this host's real cgroup v1 hierarchies, with real sleeping processes.

Each test works under a unique parent (``corral-test-<random>``) in the cpuset, cpu and
memory hierarchies; a fixture kills the processes it started and removes every cgroup it
created, also when the test fails. Skipped without root or without writable v1 cpuset,
cpu and memory hierarchies at /sys/fs/cgroup.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.enforce.desired import CpuMax, DesiredState, EnforceSettings, desired_states
from corral.enforce.detect import Version, detect_cgroups
from corral.enforce.enforcer import Enforcer
from corral.errors import EnforcementError
from corral.placement.allocate import allocate
from corral.placement.workload import parse_workloads_document
from corral.topology.cpuset import CpuSet
from corral.topology.model import Topology
from corral.topology.sysfs import load_sysfs

ROOT = Path("/sys/fs/cgroup")
HIERARCHIES = ("cpuset", "cpu", "memory")
REPO = Path(__file__).resolve().parents[1]


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    layout = detect_cgroups(ROOT)
    for name in HIERARCHIES:
        home = layout.hierarchy_of(name)
        if home is None or home.version is not Version.V1:
            return f"needs a v1 {name} hierarchy under {ROOT}"
        if not home.writable:
            return f"{home.path} is not writable"
    if len(CpuSet.parse((ROOT / "cpuset/cpuset.effective_cpus").read_text())) < 2:
        return "needs at least 2 CPUs in the root cpuset"
    return None


SKIP = _skip_reason()
pytestmark = [pytest.mark.root, pytest.mark.skipif(SKIP is not None, reason=SKIP or "")]


@dataclass
class Host:
    """A unique corral parent on the real hierarchies, and the processes a test started."""

    parent: str
    enforcer: Enforcer
    topology: Topology
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def sleeper(self) -> int:
        proc = subprocess.Popen(["sleep", "300"])
        self.processes.append(proc)
        return proc.pid

    def states(self, docs: list[dict[str, object]]) -> tuple[DesiredState, ...]:
        workloads = parse_workloads_document({"workloads": docs})
        placement = allocate(self.topology, workloads)
        assert not placement.refusals
        return desired_states(
            self.topology,
            workloads,
            placement,
            settings=self.enforcer.settings,
            locations=self.enforcer.locate(workloads),
        )

    def read(self, hierarchy: str, rel: str) -> str:
        return (ROOT / hierarchy / self.parent / rel).read_text().strip()


def allowed_cpus(pid: int) -> CpuSet:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return CpuSet.parse(line.split(":", 1)[1])
    raise AssertionError("no Cpus_allowed_list")


def _remove_tree(top: Path) -> None:
    if not top.is_dir():
        return
    for dirpath, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
        directory = Path(dirpath)
        for pid in (directory / "cgroup.procs").read_text().split():
            with contextlib.suppress(OSError):  # the process may have exited meanwhile
                (top.parent / "cgroup.procs").write_text(pid)  # the hierarchy root
        directory.rmdir()


@pytest.fixture
def host() -> Iterator[Host]:
    parent = f"corral-test-{uuid.uuid4().hex[:10]}"
    enforcer = Enforcer(cgroup_root=ROOT, settings=EnforceSettings(parent=parent))
    made = Host(parent=parent, enforcer=enforcer, topology=load_sysfs())
    try:
        yield made
    finally:
        for proc in made.processes:
            proc.kill()
            proc.wait()
        for hierarchy in (*HIERARCHIES, "cpuacct"):  # the enforcer accounts in cpuacct too
            _remove_tree(ROOT / hierarchy / parent)
        leftovers = [h for h in (*HIERARCHIES, "cpuacct") if (ROOT / h / parent).exists()]
        assert not leftovers, f"cgroups left behind in {leftovers}"


MIXED = [
    {"id": "web", "qos": "LC", "cpus": 1, "policy": "exclusive", "memory_limit": "64Mi"},
    {"id": "agent", "qos": "system", "cpus": 0.2, "memory_limit": "32Mi"},
    {"id": "batch", "qos": "BE", "cpus": 0.5, "memory_request": "16Mi", "memory_limit": "32Mi"},
]


def test_the_kernel_enforces_placement_weights_quota_idle_and_memory(host: Host) -> None:
    states = host.states(MIXED)
    report = host.enforcer.apply(states)
    assert report.ok, report.failures
    by_name = {s.name: s for s in states}
    for state in (by_name["web"], by_name["agent"], by_name["batch"]):
        pid = host.sleeper()
        host.enforcer.attach(state.cgroup, pid)
        assert allowed_cpus(pid) == state.cpus
        rel = state.cgroup.removeprefix(host.parent + "/")
        for hierarchy in HIERARCHIES:
            assert str(pid) in host.read(hierarchy, f"{rel}/cgroup.procs").split()
    web_cpus, batch_cpus = by_name["web"].cpus, by_name["batch"].cpus
    assert web_cpus is not None and batch_cpus is not None and web_cpus.isdisjoint(batch_cpus)
    assert host.read("cpu", "web/cpu.shares") == "1024"
    assert host.read("cpu", "web/cpu.cfs_quota_us") == "-1"
    assert host.read("cpu", "agent/cpu.shares") == "204"
    assert host.read("cpu", "agent/cpu.cfs_quota_us") == "20000"
    assert host.read("cpu", "agent/cpu.cfs_period_us") == "100000"
    assert host.read("cpu", "be/cpu.idle") == "1"
    assert host.read("cpu", "be/batch/cpu.idle") == "1"
    assert host.read("cpu", "be/batch/cpu.shares") == "3"  # the kernel's idle weight
    assert host.read("memory", "web/memory.limit_in_bytes") == str(64 << 20)
    assert host.read("memory", "be/memory.limit_in_bytes") == str(32 << 20)
    assert host.read("memory", "be/batch/memory.soft_limit_in_bytes") == str(
        int((16 + 0.9 * 16) * 2**20) // 4096 * 4096
    )
    assert host.read("cpuset", "be/cpuset.cpus") == str(batch_cpus)
    again = host.enforcer.apply(states)
    assert again.ok and again.writes == ()
    assert host.enforcer.drift(states).clean


def test_a_growing_lc_workload_takes_cpus_only_after_the_be_workload_released_them(
    host: Host,
) -> None:
    alone = host.states([MIXED[2]])
    assert host.enforcer.apply(alone).ok
    batch_pid = host.sleeper()
    host.enforcer.attach(f"{host.parent}/be/batch", batch_pid)
    assert allowed_cpus(batch_pid) == host.topology.all_cpus
    both = host.states([MIXED[0], MIXED[2]])
    report = host.enforcer.apply(both)
    assert report.ok, report.failures
    by_name = {s.name: s for s in both}
    assert allowed_cpus(batch_pid) == by_name["batch"].cpus
    paths = [w.path for w in report.writes]
    release = paths.index(str(ROOT / "cpuset" / host.parent / "be/batch/cpuset.cpus"))
    grant = paths.index(str(ROOT / "cpuset" / host.parent / "web/cpuset.cpus"))
    assert release < grant
    web_pid = host.sleeper()
    host.enforcer.attach(f"{host.parent}/web", web_pid)
    assert allowed_cpus(web_pid).isdisjoint(allowed_cpus(batch_pid))


def test_drift_is_found_on_the_kernel_and_repaired(host: Host) -> None:
    states = host.states(MIXED)
    host.enforcer.apply(states)
    pid = host.sleeper()
    host.enforcer.attach(f"{host.parent}/web", pid)
    (ROOT / "cpu" / host.parent / "web/cpu.shares").write_text("5000")
    (ROOT / "cpuset" / host.parent / "web/cpuset.cpus").write_text(str(host.topology.all_cpus))
    drift = host.enforcer.drift(states)
    assert {Path(d.path).name for d in drift.differences} == {"cpu.shares", "cpuset.cpus"}
    repaired = host.enforcer.repair(states)
    assert repaired.ok and len(repaired.writes) == 2
    assert host.enforcer.drift(states).clean
    assert allowed_cpus(pid) == {s.name: s for s in states}["web"].cpus


def test_an_exclusive_swap_without_a_spare_cpu_is_refused_before_any_write(host: Host) -> None:
    cpus = host.topology.all_cpus.ids()[:2]
    a, b = CpuSet([cpus[0]]), CpuSet([cpus[1]])

    def pair(first: CpuSet, second: CpuSet) -> list[DesiredState]:
        return [
            DesiredState(name="p", cgroup=host.parent, cpus=a | b, mems=(0,)),
            DesiredState(
                name="a", cgroup=f"{host.parent}/a", cpus=first, mems=(0,), exclusive=True
            ),
            DesiredState(
                name="b", cgroup=f"{host.parent}/b", cpus=second, mems=(0,), exclusive=True
            ),
        ]

    assert host.enforcer.apply(pair(a, b)).ok
    for name in ("a", "b"):
        host.enforcer.attach(f"{host.parent}/{name}", host.sleeper())
    with pytest.raises(EnforcementError, match="cycle"):
        host.enforcer.apply(pair(b, a))
    assert host.read("cpuset", "a/cpuset.cpus") == str(a)
    assert host.read("cpuset", "b/cpuset.cpus") == str(b)


def test_a_kernel_refusal_names_the_file_and_errno_and_the_rest_still_lands(host: Host) -> None:
    bad = DesiredState(
        name="w",
        cgroup=f"{host.parent}/w",
        cpus=host.topology.all_cpus,
        mems=(0,),
        shares=512,
        idle=False,
        cpu_max=CpuMax(quota_us=500),  # below the kernel's 1 ms minimum
    )
    report = host.enforcer.apply([bad])
    [failure] = report.failures
    assert failure.path.endswith("/w/cpu.cfs_quota_us") and failure.errno == errno.EINVAL
    assert host.read("cpu", "w/cpu.shares") == "512"


def test_a_runtime_owned_cgroup_named_by_path_is_written_not_created(host: Host) -> None:
    rel = f"{host.parent}/runtime/ctr"
    for hierarchy in HIERARCHIES:
        (ROOT / hierarchy / rel).mkdir(parents=True)
    for level in (host.parent, f"{host.parent}/runtime", rel):  # as a runtime sets them up
        (ROOT / "cpuset" / level / "cpuset.mems").write_text("0")
        (ROOT / "cpuset" / level / "cpuset.cpus").write_text(str(host.topology.all_cpus))
    states = host.states(
        [{"id": "web", "qos": "LC", "cpus": 1, "policy": "exclusive", "cgroup": rel}]
    )
    report = host.enforcer.apply(states)
    assert report.ok and not any(path.endswith("/runtime/ctr") for path in report.created)
    web = states[-1]
    assert host.read("cpuset", "runtime/ctr/cpuset.cpus") == str(web.cpus)


def test_removing_a_be_cgroup_reclaims_its_page_cache_first(host: Host, tmp_path: Path) -> None:
    states = host.states([MIXED[2] | {"memory_limit": "256Mi", "memory_request": "256Mi"}])
    assert host.enforcer.apply(states).ok
    procs = ROOT / "memory" / host.parent / "be/batch/cgroup.procs"
    subprocess.run(
        [
            "sh",
            "-c",
            f"echo $$ > {procs} && echo $$ > {ROOT}/cpuset/{host.parent}/be/batch/cgroup.procs"
            f" && dd if=/dev/zero of={tmp_path}/cache bs=1M count=16 conv=fsync status=none",
        ],
        check=True,
    )
    report = host.enforcer.remove(f"{host.parent}/be/batch")
    assert report.ok, report.failures
    assert report.usage_before is not None and report.usage_before >= 8 << 20
    assert report.usage_after is not None and report.usage_after < report.usage_before // 2
    assert not (ROOT / "memory" / host.parent / "be/batch").exists()
    assert not (ROOT / "cpuset" / host.parent / "be/batch").exists()


def test_removal_refuses_a_cgroup_with_live_tasks(host: Host) -> None:
    states = host.states([MIXED[2]])
    host.enforcer.apply(states)
    host.enforcer.attach(f"{host.parent}/be/batch", host.sleeper())
    with pytest.raises(EnforcementError, match="still holds tasks"):
        host.enforcer.remove(f"{host.parent}/be/batch")
    assert (ROOT / "cpu" / host.parent / "be/batch").is_dir()


def test_the_dying_report_compares_proc_cgroups_with_the_memory_tree(host: Host) -> None:
    report = host.enforcer.dying()
    assert report.source == "v1" and report.dying is not None and report.dying >= 0
    assert report.live is not None and report.live >= 1
    assert "num_cgroups=" in report.detail


@pytest.mark.slow
def test_cli_apply_prints_the_writes_and_drift_reports_changes(host: Host, tmp_path: Path) -> None:
    workloads = tmp_path / "w.yaml"
    workloads.write_text(json.dumps({"workloads": MIXED}))
    cli = [sys.executable, "-m", "corral.cli"]
    common = ["--workloads", str(workloads), "--parent", host.parent, "--json"]
    applied = subprocess.run([*cli, "apply", *common], capture_output=True, text=True, check=False)
    assert applied.returncode == 0, applied.stderr
    out = json.loads(applied.stdout)
    assert out["report"]["ok"] and out["report"]["writes"]
    assert out["layout"]["controllers"]["cpuset"]["version"] == "v1"
    clean = subprocess.run([*cli, "drift", *common], capture_output=True, text=True, check=False)
    assert clean.returncode == 0 and json.loads(clean.stdout)["drift"]["clean"]
    (ROOT / "cpu" / host.parent / "web/cpu.shares").write_text("77")
    drifted = subprocess.run([*cli, "drift", *common], capture_output=True, text=True, check=False)
    assert drifted.returncode == 1
    [diff] = json.loads(drifted.stdout)["drift"]["differences"]
    assert diff["expected"] == "1024" and diff["actual"] == "77"
    fixed = subprocess.run(
        [*cli, "drift", *common, "--repair"], capture_output=True, text=True, check=False
    )
    assert fixed.returncode == 0 and json.loads(fixed.stdout)["after"]["clean"]


def test_the_enforce_benchmark_reports_consistent_figures_and_cleans_up() -> None:
    from corral.bench.enforce import run_enforce_bench

    result = run_enforce_bench(load_sysfs(), cgroup_root=ROOT, workloads=10, repeats=1)
    assert result.workloads == 10 and result.cgroups == 12
    assert result.first_writes > 0 and result.reapply_writes == 0
    assert min(result.first_apply_s, result.reapply_s, result.blind_rewrite_s) > 0
    assert any("re-apply / blind rewrite" in line for line in result.lines())
    for hierarchy in HIERARCHIES:
        assert not [p for p in (ROOT / hierarchy).iterdir() if p.name.startswith("corral-bench-")]
