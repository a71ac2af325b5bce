"""Benchmark: how long enforcing N workloads' state takes on a real cgroup hierarchy.

Measures, under a unique throw-away parent cgroup that is removed afterwards:

* the first apply (creating every cgroup and writing every file);
* a no-change re-apply (read every file, write nothing): the agent's steady state;
* a drift check (read back and compare);
* the baseline, measured in the same run: a blind rewrite of every managed file without
  reading first, which is what runc-style "set everything" enforcement costs.

The ratio re-apply / blind rewrite says what idempotence buys on this kernel.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from corral.enforce.cgroupfs import cgroup_dir, write_file
from corral.enforce.desired import DesiredState, EnforceSettings, desired_states
from corral.enforce.enforcer import Enforcer
from corral.enforce.files import FileSetting, cpu_files, cpuset_files, memory_files
from corral.enforce.hygiene import remove_cgroup
from corral.errors import EnforcementError
from corral.placement.allocate import allocate
from corral.placement.workload import Policy, Qos, Workload
from corral.topology.model import Topology


@dataclass(frozen=True)
class EnforceBenchResult:
    """Seconds per phase (re-apply, drift and blind rewrite: medians over ``repeats``)."""

    workloads: int
    cgroups: int
    files: int
    first_apply_s: float
    first_writes: int
    reapply_s: float
    reapply_writes: int
    drift_s: float
    blind_rewrite_s: float
    repeats: int

    def lines(self) -> list[str]:
        """Human-readable figures, one per line."""
        per = 1000 / self.workloads
        return [
            f"{self.workloads} workloads, {self.cgroups} cgroups, {self.files} managed files",
            f"first apply:        {self.first_apply_s * 1000:8.1f} ms "
            f"({self.first_apply_s * per:.2f} ms/workload, {self.first_writes} writes)",
            f"no-change re-apply: {self.reapply_s * 1000:8.1f} ms "
            f"({self.reapply_s * per:.2f} ms/workload, {self.reapply_writes} writes)",
            f"drift check:        {self.drift_s * 1000:8.1f} ms",
            f"baseline, blind rewrite of every file: {self.blind_rewrite_s * 1000:8.1f} ms",
            f"re-apply / blind rewrite: {self.reapply_s / self.blind_rewrite_s:.2f}x; "
            f"first apply / re-apply: {self.first_apply_s / self.reapply_s:.1f}x",
        ]

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json``."""
        return asdict(self)


def bench_workloads(count: int, topology: Topology) -> tuple[Workload, ...]:
    """One exclusive LC workload (when the host has a CPU to spare) and a mix of shared
    LC, system and BE workloads, all with memory limits."""
    out: list[Workload] = []
    if len(topology.all_cpus) >= 2:
        out.append(
            Workload(id="lc-0", qos=Qos.LC, cpus=1, policy=Policy.EXCLUSIVE, memory_limit=1 << 28)
        )
    for index in range(len(out), count):
        qos = (Qos.LC, Qos.BE, Qos.BE, Qos.SYSTEM)[index % 4]
        out.append(
            Workload(
                id=f"{qos.value.lower()}-{index}",
                qos=qos,
                cpus=0.01,
                memory_request=1 << 24,
                memory_limit=1 << 26,
            )
        )
    return tuple(out)


def _all_files(
    enforcer: Enforcer, states: Sequence[DesiredState]
) -> list[tuple[Path, FileSetting]]:
    homes = enforcer.layout.managed()
    out: list[tuple[Path, FileSetting]] = []
    for state in states:
        settings: list[FileSetting] = []
        if "cpuset" in homes:
            settings.extend(cpuset_files(state))
        if "cpu" in homes:
            cpu = homes["cpu"]
            has_idle = (cgroup_dir(cpu.path, state.cgroup) / "cpu.idle").exists()
            settings.extend(cpu_files(state, cpu.version, has_idle=has_idle))
        if "memory" in homes:
            settings.extend(memory_files(state, homes["memory"].version))
        for setting in settings:
            home = homes[setting.controller]
            out.append((cgroup_dir(home.path, state.cgroup) / setting.file, setting))
    return out


def run_enforce_bench(
    topology: Topology,
    *,
    cgroup_root: Path | str = "/sys/fs/cgroup",
    workloads: int = 100,
    repeats: int = 5,
    clock: Callable[[], float] = time.perf_counter,
) -> EnforceBenchResult:
    """Run the benchmark under a unique parent cgroup, removed again even on failure."""
    settings = EnforceSettings(parent=f"corral-bench-{uuid.uuid4().hex[:10]}")
    enforcer = Enforcer(cgroup_root=cgroup_root, settings=settings)
    items = bench_workloads(workloads, topology)
    placement = allocate(topology, items)
    states = desired_states(topology, items, placement, settings=settings)
    try:
        started = clock()
        first = enforcer.apply(states)
        first_s = clock() - started
        if not first.ok:
            raise EnforcementError(f"benchmark apply failed: {first.failures[0]}")
        reapply: list[float] = []
        drift: list[float] = []
        blind: list[float] = []
        writes = 0
        files = _all_files(enforcer, states)
        for _ in range(repeats):
            started = clock()
            again = enforcer.apply(states)
            reapply.append(clock() - started)
            writes = max(writes, len(again.writes))
            started = clock()
            enforcer.drift(states)
            drift.append(clock() - started)
            started = clock()
            for path, setting in files:
                write_file(path, setting.value)
            blind.append(clock() - started)
        return EnforceBenchResult(
            workloads=len(items),
            cgroups=len(states),
            files=len(files),
            first_apply_s=first_s,
            first_writes=len(first.writes),
            reapply_s=statistics.median(reapply),
            reapply_writes=writes,
            drift_s=statistics.median(drift),
            blind_rewrite_s=statistics.median(blind),
            repeats=repeats,
        )
    finally:
        remove_cgroup(enforcer.layout, settings.parent, reclaim_first=False)
