"""The controller's actuator on a cgroup v2 host (plus resctrl where present).

Layout, relative to ``cgroup_root`` (the cgroup2 mount whose ``cgroup.controllers`` lists
cpu, cpuset and memory; ``/sys/fs/cgroup`` on a unified host):

* ``<be_group>``: the BE box; each BE workload is a child ``<be_group>/<workload id>``;
* ``<lc_group>`` (optional): the LC box, confined to the CPUs BE does not get.

Files: `SetCpus` writes ``cpuset.cpus`` of the box and of each child that has its own
(v2 intersects a child's with its parent's, so the order does not matter as on v1), and of
the LC box; with ``exclusive_lc`` and LC and BE on disjoint CPUs the LC box becomes a
partition root (``cpuset.cpus.partition`` = ``root``: its CPUs are taken out of every other
cgroup's effective set), turned back to ``member`` before LC and BE overlap again, and a
partition the kernel marks ``invalid`` is refused with the kernel's reason. `SetWeight`
writes ``cpu.idle`` = 1 (Linux 5.15+; else ``cpu.weight`` 1) or ``cpu.idle`` = 0 then
``cpu.weight`` from the shares (the enforcer's quadratic map, `corral.enforce.weights`).
`SetQuota` writes ``cpu.max`` ("QUOTA PERIOD" or "max PERIOD"). `SetMemoryHigh` writes
``memory.high``, senpai's own knob (it throttles and reclaims, never OOM-kills). `Freeze`
and `Thaw` write ``cgroup.freeze`` of the workload; `Evict` writes ``cgroup.kill``
(Linux 5.14+) or, without it, freezes, sends SIGKILL to every pid and thaws. The BE box's
memory use is ``memory.current`` and its PSI ``memory.pressure``.

NOTE: this project's VM has cgroup v1 controllers and a controller-less cgroup2 mount (a
controller bound to v1 cannot be enabled in any cgroup2 hierarchy); this module was tested
only on directory trees shaped like the kernel's (tests/test_control_cgroupv2.py).
"""

from __future__ import annotations

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
from corral.control.cgroupv1 import describe_cache, fit_cache
from corral.control.llc import CacheUnavailableError, ResctrlActuator, no_resctrl_message
from corral.enforce.cgroupfs import child_dirs, read_file, write_file
from corral.enforce.resctrl import Resctrl
from corral.enforce.weights import shares_to_weight
from corral.errors import EnforcementError
from corral.topology.cpuset import CpuSet

logger = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_WEIGHT = 1


class CgroupV2Actuator:
    """Applies controller actions to a v2 BE box (see the module docstring)."""

    def __init__(
        self,
        *,
        cgroup_root: Path,
        be_group: str,
        lc_group: str | None = None,
        resctrl_root: Path | None = None,
        exclusive_lc: bool = True,
        writer: Writer = write_file,
        reader: Reader = read_file,
    ) -> None:
        self.root = Path(cgroup_root)
        self.be_group = be_group
        self.lc_group = lc_group
        self.resctrl_root = resctrl_root
        self.exclusive_lc = exclusive_lc
        self._write = writer
        self._read = reader
        self.cache: ResctrlActuator | None = None
        if resctrl_root is not None:
            self.cache = ResctrlActuator(
                Resctrl(resctrl_root),
                be_pids=lambda: tree_pids(self.root / self.be_group),
                lc_pids=None if lc_group is None else (lambda: tree_pids(self.root / lc_group)),
                workload_pids=lambda w: tree_pids(self.root / self.be_group / w),
            )

    def path(self, group: str, name: str) -> str:
        """The path of interface file ``name`` of ``group``."""
        return f"{self.root}/{group}/{name}"

    def workloads(self) -> tuple[str, ...]:
        """BE workload ids: the child cgroups of the BE box."""
        return child_dirs(self.root / self.be_group)

    def frozen(self) -> tuple[str, ...]:
        """BE workloads whose ``cgroup.freeze`` is 1 (e.g. left so by a crash)."""
        out = []
        for name in self.workloads():
            text = self._read(self.path(f"{self.be_group}/{name}", "cgroup.freeze"))
            if text is not None and text.strip() == "1":
                out.append(name)
        return tuple(out)

    def describe(self) -> ActuatorDescription:
        """What this actuator writes on this host, and what it cannot do and why."""
        be = self.be_group
        can = {
            Capability.CPUS: f"{be}/cpuset.cpus (and its children's)",
            Capability.WEIGHT: f"{be}/cpu.weight",
            Capability.QUOTA: f"{be}/cpu.max",
            Capability.MEMORY: f"{be}/memory.high",
            Capability.PSI: f"{be}/memory.pressure",
            Capability.FREEZE: f"{be}/<workload>/cgroup.freeze",
        }
        cannot: dict[Capability, str] = {}
        if (self.root / be / "cpu.idle").exists():
            can[Capability.IDLE] = f"{be}/cpu.idle"
        else:
            cannot[Capability.IDLE] = "no cpu.idle (Linux 5.15+): cpu.weight 1 instead"
        if (self.root / be / "cgroup.kill").exists():
            can[Capability.EVICT] = f"{be}/<workload>/cgroup.kill"
        else:
            can[Capability.EVICT] = "freeze, SIGKILL each pid, thaw (no cgroup.kill before 5.14)"
        if self.lc_group is None or not self.exclusive_lc:
            cannot[Capability.EXCLUSIVE_CPUS] = "no LC cgroup given (or exclusive_lc off)"
        elif (self.root / self.lc_group / "cpuset.cpus.partition").exists():
            can[Capability.EXCLUSIVE_CPUS] = f"{self.lc_group}/cpuset.cpus.partition = root"
        else:
            cannot[Capability.EXCLUSIVE_CPUS] = "no cpuset.cpus.partition (Linux 5.11+)"
        describe_cache(self.cache, self.resctrl_root, can, cannot)
        return ActuatorDescription("cgroup-v2", can, cannot)

    def fit_cache(self, settings: CacheSettings) -> CacheSettings:
        """Cache settings this host can honour (both ladders off without resctrl)."""
        return fit_cache(self.cache, settings)

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
                quota = "max" if cpus is None else str(max(1000, int(cpus * CFS_PERIOD_US)))
                self._write(self.path(self.be_group, "cpu.max"), f"{quota} {CFS_PERIOD_US}")
            case SetMemoryHigh(bytes=size):
                self._write(self.path(self.be_group, "memory.high"), str(size))
            case SetCache() | SetWorkloadWays():
                if self.cache is None:
                    raise CacheUnavailableError(
                        no_resctrl_message(self.resctrl_root or Path("(none)"))
                    )
                self.cache.apply(action)
            case Freeze(workload=w):
                self._write(self.path(f"{self.be_group}/{w}", "cgroup.freeze"), "1")
            case Thaw(workload=w):
                self._write(self.path(f"{self.be_group}/{w}", "cgroup.freeze"), "0")
            case Evict(workload=w):
                self._evict(w)

    def _set_cpus(self, be: CpuSet, lc: CpuSet) -> None:
        exclusive = self.exclusive_lc and self.lc_group is not None and not (be & lc)
        if self.lc_group is not None and not exclusive:
            self._set_partition(self.lc_group, "member")  # before LC and BE overlap
        self._write(self.path(self.be_group, "cpuset.cpus"), str(be))
        for child in child_dirs(self.root / self.be_group):
            own = self._read(self.path(f"{self.be_group}/{child}", "cpuset.cpus"))
            if own is not None and own.strip():
                self._write(self.path(f"{self.be_group}/{child}", "cpuset.cpus"), str(be))
        if self.lc_group is not None:
            self._write(self.path(self.lc_group, "cpuset.cpus"), str(lc))
            if exclusive:
                self._set_partition(self.lc_group, "root")

    def _set_partition(self, group: str, kind: str) -> None:
        file = self.path(group, "cpuset.cpus.partition")
        current = self._read(file)
        if current is None:
            if kind == "member":
                return  # no partitions on this kernel: every group is a member
            raise EnforcementError(f"{file} is missing: exclusive CPUs need Linux 5.11+")
        if current.split()[0] != kind:
            self._write(file, kind)
        after = (self._read(file) or "").strip()
        if "invalid" in after:
            raise EnforcementError(f"{file}: the kernel made the partition {after!r}")

    def _set_weight(self, idle: bool, shares: int | None) -> None:
        idle_file = self.path(self.be_group, "cpu.idle")
        has_idle = self._read(idle_file) is not None
        if idle and has_idle:
            self._write(idle_file, "1")
            return
        if has_idle:
            self._write(idle_file, "0")
        weight = MIN_WEIGHT if idle else shares_to_weight(shares or 1024)
        self._write(self.path(self.be_group, "cpu.weight"), str(weight))

    def _evict(self, workload: str) -> None:
        group = f"{self.be_group}/{workload}"
        kill = self.path(group, "cgroup.kill")
        if os.path.exists(kill):  # write-only: its presence is the check
            self._write(kill, "1")
            logger.info("control.evicted", extra={"workload": workload, "via": "cgroup.kill"})
            return
        self._write(self.path(group, "cgroup.freeze"), "1")
        pids = tree_pids(self.root / group)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue  # already gone: a normal race
        self._write(self.path(group, "cgroup.freeze"), "0")  # frozen tasks cannot die
        logger.info("control.evicted", extra={"workload": workload, "pids": len(pids)})

    def be_memory_bytes(self) -> int | None:
        """The BE box's memory use (``memory.current``), None if unreadable."""
        text = self._read(self.path(self.be_group, "memory.current"))
        return int(text) if text and text.strip().isdigit() else None

    def be_oom_kills(self, workloads: Sequence[str]) -> dict[str, int | None]:
        """Each BE workload's OOM kills so far: ``oom_kill`` of its ``memory.events``
        (its own kills and its children's)."""
        return {
            wid: parse_oom_kills(self._read(self.path(f"{self.be_group}/{wid}", "memory.events")))
            for wid in workloads
        }

    def be_psi_some_us(self) -> int | None:
        """The BE box's cumulative memory PSI ``some`` total (us), None if unavailable."""
        text = self._read(self.path(self.be_group, "memory.pressure"))
        return parse_psi_total(text, "some") if text else None
