"""The controller's actuator on cgroup v1 (plus resctrl and v2 PSI where present).

Layout, relative to ``cgroup_root`` (``/sys/fs/cgroup`` on a v1 host):

* ``<ctl>/<be_group>`` in cpu, cpuacct, cpuset, memory and freezer: the BE box; each BE
  workload is a child ``<be_group>/<workload id>`` (frozen, thawed, evicted one by one);
* ``cpuset/<lc_group>`` (optional): the LC box, confined when LC and BE must not share
  cores;
* ``unified/<be_group>/memory.pressure``: per-cgroup PSI through the v2 mount (v1 has no
  per-cgroup PSI; the BE tasks are also placed in that v2 group for it).

Writes go through ``writer`` (default: one ``write(2)`` per file); the benchmark passes
corral.enforce's cgroupfs writer so errors carry the file and errno the same way.
cpuset order matters on v1: a parent may not lose CPUs a child still uses, so children
shrink before their parent and the parent grows before its children.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
from collections.abc import Callable
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
    Thaw,
)
from corral.errors import EnforcementError
from corral.topology.cpuset import CpuSet

logger = logging.getLogger(__name__)

CFS_PERIOD_US = 100_000
MIN_SHARES = 2  # the kernel's floor for cpu.shares

Writer = Callable[[str, str], None]
Reader = Callable[[str], str | None]


def write_text(path: str, value: str) -> None:
    """Write ``value`` to an existing cgroup file in one write (``EnforcementError``)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
    except OSError as err:
        raise EnforcementError(f"{path}: cannot open for writing: {err.strerror}") from err
    try:
        os.write(fd, value.encode() if value else b"\n")
    except OSError as err:
        raise EnforcementError(
            f"{path}: writing {value!r} refused: {err.strerror} (errno {err.errno})"
        ) from err
    finally:
        os.close(fd)


def read_text(path: str) -> str | None:
    """A cgroup file's content, None if it (or its group) does not exist."""
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as err:
        if err.errno == errno.ENODEV:
            return None
        raise EnforcementError(f"{path}: cannot read: {err.strerror}") from err


class CgroupV1Actuator:
    """Applies controller actions to a v1 BE box (see the module docstring)."""

    def __init__(
        self,
        *,
        cgroup_root: Path,
        be_group: str,
        lc_group: str | None = None,
        resctrl_root: Path | None = None,
        writer: Writer = write_text,
        reader: Reader = read_text,
    ) -> None:
        self.root = cgroup_root
        self.be_group = be_group
        self.lc_group = lc_group
        self.resctrl_root = resctrl_root
        self._write = writer
        self._read = reader

    def path(self, controller: str, group: str, name: str) -> str:
        """The path of interface file ``name`` of ``group`` in ``controller``'s hierarchy."""
        return f"{self.root}/{controller}/{group}/{name}"

    def workloads(self) -> tuple[str, ...]:
        """BE workload ids: the child groups of the BE box (cpu or freezer hierarchy)."""
        names = set(_children(self.root / "cpu" / self.be_group))
        names.update(_children(self.root / "freezer" / self.be_group))
        return tuple(sorted(names))

    def frozen(self) -> tuple[str, ...]:
        """BE workloads whose freezer group is frozen now (e.g. left so by a crash)."""
        out = []
        for name in _children(self.root / "freezer" / self.be_group):
            state = self._read(self.path("freezer", f"{self.be_group}/{name}", "freezer.state"))
            if state is not None and state.strip() in ("FROZEN", "FREEZING"):
                out.append(name)
        return tuple(out)

    def _freezer_state(self, workload: str) -> str:
        """The workload's ``freezer.state`` file, creating its freezer group and moving its
        processes there when corral.enforce placed it only in cpu/cpuset/memory."""
        group = f"{self.be_group}/{workload}"
        directory = self.root / "freezer" / group
        if not directory.is_dir() and (self.root / "cpu" / group).is_dir():
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as err:
                raise EnforcementError(f"{directory}: cannot create: {err.strerror}") from err
            procs = self._read(self.path("cpu", group, "cgroup.procs")) or ""
            for pid in procs.split():
                try:
                    self._write(self.path("freezer", group, "cgroup.procs"), pid)
                except EnforcementError:
                    continue  # the process exited meanwhile: a normal race
        return self.path("freezer", group, "freezer.state")

    def apply(self, action: Action) -> None:
        """Apply one action; `EnforcementError` names the file when the kernel refuses."""
        match action:
            case SetCpus(be=be, lc=lc):
                self._set_cpus(be, lc)
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
                self._set_memory_high(size)
            case SetCache():
                self._set_cache(action)
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
        children = _children(self.root / "cpuset" / group)
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

    def _set_memory_high(self, size: int) -> None:
        high = self.path("memory", self.be_group, "memory.high")
        if self._read(high) is not None:
            self._write(high, str(size))
            return
        # v1 has no memory.high; the soft limit is the closest file that never OOM-kills
        # (reclaim towards it happens under global pressure only). The hard limit stays
        # the BE box's limit.
        self._write(self.path("memory", self.be_group, "memory.soft_limit_in_bytes"), str(size))

    def _set_cache(self, action: SetCache) -> None:
        if self.resctrl_root is None:
            return
        root_schemata = self._read(f"{self.resctrl_root}/schemata") or ""
        ids = {kind: _cache_ids(root_schemata, kind) for kind in ("L3", "MB")}
        for group, mask in (("corral-lc", action.lc_mask), ("corral-be", action.be_mask)):
            if mask is not None and ids["L3"]:
                line = "L3:" + ";".join(f"{i}={mask:x}" for i in ids["L3"])
                self._write(f"{self.resctrl_root}/{group}/schemata", line + "\n")
        if action.be_mb_percent is not None and ids["MB"]:
            line = "MB:" + ";".join(f"{i}={action.be_mb_percent}" for i in ids["MB"])
            self._write(f"{self.resctrl_root}/corral-be/schemata", line + "\n")

    def _evict(self, workload: str) -> None:
        self._freezer_state(workload)  # the freezer group then holds all its processes
        group = f"{self.be_group}/{workload}"
        pids = [
            int(p) for p in (self._read(self.path("freezer", group, "cgroup.procs")) or "").split()
        ]
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

    def be_psi_some_us(self) -> int | None:
        """The BE box's cumulative memory PSI ``some`` total (us) through the v2 mount."""
        text = self._read(f"{self.root}/unified/{self.be_group}/memory.pressure")
        return parse_psi_total(text, "some") if text else None


def parse_psi_total(text: str, kind: str) -> int | None:
    """``total=`` of the ``some``/``full`` line of a PSI file, None when absent."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == kind:
            for part in parts[1:]:
                key, _, value = part.partition("=")
                if key == "total" and value.isdigit():
                    return int(value)
    return None


def _children(directory: Path) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(directory) if e.is_dir())
    except FileNotFoundError:
        return []


def _cache_ids(schemata: str, kind: str) -> list[str]:
    for line in schemata.splitlines():
        name, _, rest = line.strip().partition(":")
        if name.strip() == kind:
            return [entry.split("=")[0].strip() for entry in rest.split(";") if "=" in entry]
    return []
