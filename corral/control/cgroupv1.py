"""The controller's actuator on cgroup v1 (plus resctrl, and v2 PSI where present).

Layout, relative to ``cgroup_root`` (``/sys/fs/cgroup`` on a v1 host):

* ``<ctl>/<be_group>`` in cpu, cpuset, memory and freezer: the BE box; each BE workload is
  a child ``<be_group>/<workload id>`` (frozen, thawed, evicted one by one);
* ``cpuset/<lc_group>`` (optional): the LC box, confined when LC and BE must not share
  cores;
* ``unified/<be_group>/memory.pressure``: per-cgroup PSI through the controller-less
  cgroup2 mount of a hybrid host (v1 has no per-cgroup PSI). Reading it first makes sure
  the group exists and holds every BE pid (moving a task there changes no resource).

Every read and write goes through `corral.enforce.cgroupfs` (errors name the file and the
errno); ``writer``/``reader`` default to its `write_file`/`read_file` and exist so a caller
can count or fake writes. cpuset order matters on v1: a parent may not lose CPUs a child
still uses, so children shrink before their parent and the parent grows before its
children.

**Memory (senpai) on v1.** v1 has no ``memory.high``; ``memory.soft_limit_in_bytes`` only
acts under global memory pressure, so the PSI signal would not answer it. `SetMemoryHigh`
is therefore written to the BE box's ``memory.limit_in_bytes``, which reclaims at once
(verified on this host: tests/test_control_memory_v1.py shows the box's PSI rising when the
limit is lowered below its page cache). The risk: a hard limit the box cannot reclaim down
to makes the kernel OOM-kill inside the box (a write below what reclaim can free fails with
EBUSY instead). The guard: the limit is never set below the box's unreclaimable memory -
``total_rss + total_shmem + total_unevictable`` from ``memory.stat``, none of it
reclaimable on a host without swap (this one); the counters overlap, so the sum errs high
- plus ``memory_headroom_bytes``, nor above
the box's hard limit (``memory_max_bytes``, else the limit found before the first write). A
request outside is written at the guard and refused with `MemoryGuardError`, so the
runtime reports it. BE anonymous memory that grows faster than one controller period can
still reach the limit and be OOM-killed inside the box: that is the documented cost of
running senpai on v1, and why it is off by default (``memory.enabled``). The agent must
treat the box's ``memory.limit_in_bytes`` as the controller's file while senpai runs.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Sequence
from pathlib import Path

from corral.control.actions import (
    Action,
    Evict,
    Freeze,
    SetCache,
    SetCpus,
    SetMemoryHigh,
    SetQuota,
    SetWeight,
    SetWorkloadWays,
    Thaw,
)
from corral.control.actuator import (
    ActuatorDescription,
    Capability,
    Reader,
    Writer,
    parse_oom_kills,
    parse_psi_total,
    tree_pids,
)
from corral.control.cache import CacheSettings
from corral.control.llc import CacheUnavailableError, ResctrlActuator, no_resctrl_message
from corral.enforce.cgroupfs import CgroupFsError, child_dirs, make_dir, read_file, write_file
from corral.enforce.detect import CgroupLayout, detect_cgroups
from corral.enforce.resctrl import Resctrl
from corral.errors import EnforcementError
from corral.topology.cpuset import CpuSet

__all__ = ["CgroupV1Actuator", "MemoryGuardError", "parse_psi_total"]

logger = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_SHARES = 2  # the kernel's floor for cpu.shares
MIB = 1 << 20
PAGE = 4096
UNRECLAIMABLE = ("total_rss", "total_shmem", "total_unevictable")
"""``memory.stat`` counters of memory reclaim cannot free without swap."""


class MemoryGuardError(EnforcementError):
    """A memory limit outside the v1 guard: the guard value was written instead."""


class CgroupV1Actuator:
    """Applies controller actions to a v1 BE box (see the module docstring)."""

    def __init__(
        self,
        *,
        cgroup_root: Path,
        be_group: str,
        lc_group: str | None = None,
        resctrl_root: Path | None = None,
        layout: CgroupLayout | None = None,
        writer: Writer = write_file,
        reader: Reader = read_file,
        memory_headroom_bytes: int = 64 * MIB,
        memory_max_bytes: int | None = None,
    ) -> None:
        self.root = Path(cgroup_root)
        self.be_group = be_group
        self.lc_group = lc_group
        self.resctrl_root = resctrl_root
        self._write = writer
        self._read = reader
        self.memory_headroom_bytes = memory_headroom_bytes
        self._memory_cap = memory_max_bytes
        self._layout = layout
        self.cache: ResctrlActuator | None = None
        if resctrl_root is not None:
            self.cache = ResctrlActuator(
                Resctrl(resctrl_root),
                be_pids=lambda: tree_pids(self.root / "cpu" / self.be_group),
                lc_pids=None
                if lc_group is None
                else (lambda: tree_pids(self.root / "cpuset" / lc_group)),
                workload_pids=lambda w: tree_pids(self.root / "cpu" / self.be_group / w),
            )

    def path(self, controller: str, group: str, name: str) -> str:
        """The path of interface file ``name`` of ``group`` in ``controller``'s hierarchy."""
        return f"{self.root}/{controller}/{group}/{name}"

    def workloads(self) -> tuple[str, ...]:
        """BE workload ids: the child groups of the BE box (cpu or freezer hierarchy)."""
        names = set(child_dirs(self.root / "cpu" / self.be_group))
        names.update(child_dirs(self.root / "freezer" / self.be_group))
        return tuple(sorted(names))

    def frozen(self) -> tuple[str, ...]:
        """BE workloads whose freezer group is frozen now (e.g. left so by a crash)."""
        out = []
        for name in child_dirs(self.root / "freezer" / self.be_group):
            state = self._read(self.path("freezer", f"{self.be_group}/{name}", "freezer.state"))
            if state is not None and state.strip() in ("FROZEN", "FREEZING"):
                out.append(name)
        return tuple(out)

    def describe(self) -> ActuatorDescription:
        """What this actuator writes on this host, and what it cannot do and why."""
        be = self.be_group
        can = {
            Capability.CPUS: f"cpuset/{be}/cpuset.cpus (and its children's)",
            Capability.WEIGHT: f"cpu/{be}/cpu.shares",
            Capability.QUOTA: f"cpu/{be}/cpu.cfs_quota_us",
            Capability.MEMORY: f"memory/{be}/memory.limit_in_bytes, never below the box's "
            f"unreclaimable memory + {self.memory_headroom_bytes >> 20} MiB (v1 has no "
            "memory.high; a hard limit can OOM-kill inside the box)",
            Capability.FREEZE: f"freezer/{be}/<workload>/freezer.state",
            Capability.EVICT: "SIGKILL to each pid of freezer/<box>/<workload>, then thaw",
        }
        cannot: dict[Capability, str] = {
            Capability.EXCLUSIVE_CPUS: "v1 cpuset.cpu_exclusive is not used: the enforcer "
            "keeps exclusive CPUs out of the BE pool instead",
        }
        if (self.root / "cpu" / be / "cpu.idle").exists() or (self.root / "cpu/cpu.idle").exists():
            can[Capability.IDLE] = f"cpu/{be}/cpu.idle"
        else:
            cannot[Capability.IDLE] = "no cpu.idle (Linux 5.15+): cpu.shares 2 instead"
        layout = self._layout or detect_cgroups(self.root)
        if layout.unified is not None:
            psi = f"{layout.unified.path}/{be}/memory.pressure"
            can[Capability.PSI] = f"{psi} (the BE pids are moved there)"
        else:
            cannot[Capability.PSI] = "no cgroup2 mount: no per-cgroup PSI, senpai cannot run"
        describe_cache(self.cache, self.resctrl_root, can, cannot)
        return ActuatorDescription("cgroup-v1", can, cannot)

    def fit_cache(self, settings: CacheSettings) -> CacheSettings:
        """Cache settings this host can honour (both ladders off without resctrl)."""
        return fit_cache(self.cache, settings)

    def _freezer_state(self, workload: str) -> str:
        """The workload's ``freezer.state`` file, creating its freezer group and moving its
        processes there when corral.enforce placed it only in cpu/cpuset/memory."""
        group = f"{self.be_group}/{workload}"
        directory = self.root / "freezer" / group
        if not directory.is_dir() and (self.root / "cpu" / group).is_dir():
            for level in _levels(self.root / "freezer", group):
                make_dir(level)
            procs = self._read(self.path("cpu", group, "cgroup.procs")) or ""
            for pid in procs.split():
                try:
                    self._write(self.path("freezer", group, "cgroup.procs"), pid)
                except EnforcementError:
                    continue  # the process exited meanwhile: a normal race
        return self.path("freezer", group, "freezer.state")

    def apply(self, action: Action) -> None:
        """Apply one action; `EnforcementError` names the file when the kernel refuses,
        `CacheUnavailableError` for a cache action on a host without resctrl."""
        match action:
            case SetCpus(be=be, lc=lc):
                self._set_cpus(be, lc)
                if self.cache is not None:
                    self.cache.apply(action)
            case SetWeight(idle=idle, shares=shares):
                self._set_weight(idle, shares)
            case SetQuota(cpus=cpus):
                quota = -1 if cpus is None else max(1000, int(cpus * CFS_PERIOD_US))
                if quota > 0:
                    self._write(
                        self.path("cpu", self.be_group, "cpu.cfs_period_us"), str(CFS_PERIOD_US)
                    )
                self._write(self.path("cpu", self.be_group, "cpu.cfs_quota_us"), str(quota))
            case SetMemoryHigh(bytes=size):
                self._set_memory_limit(size)
            case SetCache() | SetWorkloadWays():
                if self.cache is None:
                    raise CacheUnavailableError(
                        no_resctrl_message(self.resctrl_root or Path("(none)"))
                    )
                self.cache.apply(action)
            case Freeze(workload=w):
                self._write(self._freezer_state(w), "FROZEN")
            case Thaw(workload=w):
                self._write(self._freezer_state(w), "THAWED")
            case Evict(workload=w):
                self._evict(w)

    def _set_cpus(self, be: CpuSet, lc: CpuSet) -> None:
        self._set_group_cpus(self.be_group, be)
        if self.lc_group is not None:
            self._set_group_cpus(self.lc_group, lc)

    def _set_group_cpus(self, group: str, cpus: CpuSet) -> None:
        parent = self.path("cpuset", group, "cpuset.cpus")
        current = CpuSet.parse((self._read(parent) or "").strip())
        children = child_dirs(self.root / "cpuset" / group)
        child_files = [self.path("cpuset", f"{group}/{c}", "cpuset.cpus") for c in children]
        if cpus <= current:  # shrinking: children first
            for f in child_files:
                self._write(f, str(cpus))
            self._write(parent, str(cpus))
        else:
            self._write(parent, str(cpus))
            for f in child_files:
                self._write(f, str(cpus))

    def _set_weight(self, idle: bool, shares: int | None) -> None:
        idle_file = self.path("cpu", self.be_group, "cpu.idle")
        has_idle = self._read(idle_file) is not None
        if idle and has_idle:
            self._write(idle_file, "1")
            return
        if has_idle:
            self._write(idle_file, "0")  # cpu.shares refuses writes while idle
        value = MIN_SHARES if idle else (shares or 1024)
        self._write(self.path("cpu", self.be_group, "cpu.shares"), str(value))

    def memory_guard(self) -> tuple[int, int]:
        """``(floor, cap)`` of the v1 limit now: unreclaimable memory + headroom, and the
        box's hard limit (read before the first write when not given)."""
        stat = self._read(self.path("memory", self.be_group, "memory.stat"))
        if stat is None:
            raise EnforcementError(
                f"{self.path('memory', self.be_group, 'memory.stat')} is missing: without it "
                "the v1 memory limit cannot be guarded against OOM kills, so it is not set"
            )
        counters = _stat(stat)
        unreclaimable = sum(counters.get(k, 0) for k in UNRECLAIMABLE)
        floor = -(-(unreclaimable + self.memory_headroom_bytes) // PAGE) * PAGE
        if self._memory_cap is None:
            limit = self._read(self.path("memory", self.be_group, "memory.limit_in_bytes"))
            self._memory_cap = int(limit.strip()) if limit and limit.strip().isdigit() else 0
        return floor, self._memory_cap

    def _set_memory_limit(self, size: int) -> None:
        floor, cap = self.memory_guard()
        target = max(size, floor)
        if cap:
            target = min(target, cap)
        self._write(self.path("memory", self.be_group, "memory.limit_in_bytes"), str(target))
        if target != size:
            raise MemoryGuardError(
                f"{self.path('memory', self.be_group, 'memory.limit_in_bytes')}: asked "
                f"{size >> 20} MiB, set {target >> 20} MiB (guard: unreclaimable + headroom "
                f"= {floor >> 20} MiB, box limit {cap >> 20} MiB); set memory.max_bytes to "
                "the box limit, or turn senpai off on v1 if BE memory is mostly anonymous"
            )

    def _evict(self, workload: str) -> None:
        self._freezer_state(workload)  # the freezer group then holds all its processes
        group = f"{self.be_group}/{workload}"
        pids = tree_pids(self.root / "freezer" / group)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # already gone: a normal race
        # A frozen task cannot die until it is thawed.
        self._write(self.path("freezer", group, "freezer.state"), "THAWED")
        logger.info("control.evicted", extra={"workload": workload, "pids": len(pids)})

    def be_memory_bytes(self) -> int | None:
        """The BE box's memory use (``memory.usage_in_bytes``), None if unreadable."""
        text = self._read(self.path("memory", self.be_group, "memory.usage_in_bytes"))
        return int(text) if text and text.strip().isdigit() else None

    def be_oom_kills(self, workloads: Sequence[str]) -> dict[str, int | None]:
        """Each BE workload's OOM kills so far: ``oom_kill`` of its own
        ``memory.oom_control`` (v1 counts a kill in the victim's cgroup, not in the box
        whose limit was hit)."""
        return {
            wid: parse_oom_kills(
                self._read(self.path("memory", f"{self.be_group}/{wid}", "memory.oom_control"))
            )
            for wid in workloads
        }

    def be_psi_some_us(self) -> int | None:
        """The BE box's cumulative memory PSI ``some`` total (us) through the v2 mount,
        after moving BE pids that are not there yet into ``unified/<be_group>``; None
        without a cgroup2 mount."""
        unified = self.root / "unified"
        if not (unified / "cgroup.controllers").exists():
            return None
        self.sync_psi_group()
        text = self._read(f"{unified}/{self.be_group}/memory.pressure")
        return parse_psi_total(text, "some") if text else None

    def sync_psi_group(self) -> None:
        """Create ``unified/<be_group>`` and move every BE pid there (a controller-less v2
        group: per-cgroup PSI only)."""
        unified = self.root / "unified"
        for level in _levels(unified, self.be_group):
            make_dir(level)
        there = set(tree_pids(unified / self.be_group))
        procs = f"{unified}/{self.be_group}/cgroup.procs"
        for pid in tree_pids(self.root / "cpu" / self.be_group):
            if pid in there:
                continue
            try:
                self._write(procs, str(pid))
            except CgroupFsError as err:
                if err.failure.errno != errno.ESRCH:  # the task exited meanwhile
                    raise


def describe_cache(
    cache: ResctrlActuator | None,
    resctrl_root: Path | None,
    can: dict[Capability, str],
    cannot: dict[Capability, str],
) -> None:
    """Fill the cache capabilities of an actuator's description."""
    if cache is None:
        why = "no resctrl root given: LLC ways and MBA are not managed"
        for cap in (Capability.LLC_WAYS, Capability.MEMORY_BANDWIDTH, Capability.WORKLOAD_WAYS):
            cannot[cap] = why
        return
    info = cache.capability()
    if not info.mounted or not info.ways:
        for cap in (Capability.LLC_WAYS, Capability.WORKLOAD_WAYS):
            cannot[cap] = info.why_not
    else:
        where = f"{resctrl_root}/corral-be and {cache.lc_group or 'the default group'}"
        can[Capability.LLC_WAYS] = (
            f"{where} schemata L3 ({info.ways} ways, at least {info.min_ways}, "
            f"{info.num_closids} CLOSIDs)"
        )
        can[Capability.WORKLOAD_WAYS] = f"{resctrl_root}/corral-w-<workload> schemata L3"
    if info.mounted and info.mba:
        can[Capability.MEMORY_BANDWIDTH] = (
            f"{resctrl_root}/corral-be schemata MB (steps of {info.bandwidth_gran}%, "
            f"at least {info.min_bandwidth}%)"
        )
    else:
        cannot[Capability.MEMORY_BANDWIDTH] = info.why_not or "resctrl has no MB resource"


def fit_cache(cache: ResctrlActuator | None, settings: CacheSettings) -> CacheSettings:
    """``settings`` with both cache ladders off when there is no resctrl actuator."""
    if cache is None:
        return CacheSettings(total_ways=0, min_ways=1, mb_ladder=())
    return cache.fit_cache(settings)


def _stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _levels(hierarchy: Path, group: str) -> list[Path]:
    """Each directory from the hierarchy root down to ``group`` (for mkdir one by one)."""
    out = []
    current = hierarchy
    for part in group.split("/"):
        current = current / part
        out.append(current)
    return out
