"""Detect how cgroups are mounted: v2 unified, v1, or hybrid; which controller lives where.

Detection reads the tree under ``cgroup_root`` (``/sys/fs/cgroup`` on a real host, a
directory in tests) rather than ``/proc/self/mountinfo``, so fixture trees exercise the
same code. A directory holding ``cgroup.controllers`` is a cgroup2 mount; any other
directory is a v1 hierarchy whose controllers are recognised by their interface files
(a v1 hierarchy named ``cpu,cpuacct`` is one directory holding both sets of files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

#: The controllers corral writes. ``cpu`` carries weight, quota and idle; ``cpuset`` the
#: CPUs and memory nodes; ``memory`` the high/max limits.
MANAGED_CONTROLLERS: tuple[str, ...] = ("cpuset", "cpu", "memory")

#: The v1 controller that counts a cgroup's CPU time (``cpuacct.usage``, ns). corral writes
#: none of its files, but creates its cgroups there so their usage can be sampled.
ACCOUNTING_CONTROLLER = "cpuacct"

# A v1 hierarchy is recognised by one interface file per controller at its root.
_V1_MARKERS: dict[str, str] = {
    "cpuset": "cpuset.cpus",
    "cpu": "cpu.shares",
    "cpuacct": "cpuacct.usage",
    "memory": "memory.limit_in_bytes",
    "pids": "pids.max",
    "freezer": "freezer.state",
    "blkio": "blkio.weight",
    "devices": "devices.list",
}


class Mode(StrEnum):
    """How the host mounts cgroups."""

    UNIFIED = "unified"  # cgroup v2 only, mounted at the root
    LEGACY = "v1"  # only v1 hierarchies
    HYBRID = "hybrid"  # v1 hierarchies plus a cgroup2 mount (usually .../unified)
    NONE = "none"  # nothing mounted under the root


class Version(StrEnum):
    """The cgroup interface a hierarchy speaks."""

    V1 = "v1"
    V2 = "v2"


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """One mounted hierarchy: its path, version, controllers and whether we may write it."""

    path: Path
    version: Version
    controllers: frozenset[str]
    writable: bool


@dataclass(frozen=True)
class CgroupLayout:
    """Where each controller can be written, and what corral cannot do on this host.

    ``controllers`` maps a controller name to the hierarchy that serves it; a controller
    bound to a v1 hierarchy never appears in the v2 mount's ``cgroup.controllers``, so each
    controller has at most one home. ``unified`` is the cgroup2 mount, if any, even when it
    serves no controller (it still offers PSI files and ``cgroup.stat``).
    """

    root: Path
    mode: Mode
    hierarchies: tuple[Hierarchy, ...]
    controllers: dict[str, Hierarchy] = field(default_factory=dict)
    unified: Hierarchy | None = None

    def hierarchy_of(self, controller: str) -> Hierarchy | None:
        """The hierarchy serving ``controller``, or None when it is not available."""
        return self.controllers.get(controller)

    def managed(self) -> dict[str, Hierarchy]:
        """The subset of `MANAGED_CONTROLLERS` that is mounted here."""
        return {c: h for c, h in self.controllers.items() if c in MANAGED_CONTROLLERS}

    def accounting(self) -> Hierarchy | None:
        """The hierarchy whose counter says how much CPU a cgroup used, or None.

        The v1 hierarchy serving ``cpuacct`` (its own mount, as on this project's VM, or
        co-mounted as ``cpu,cpuacct``, or a named one: it is found by its files, not its
        name) comes first: container runtimes on v1 and hybrid hosts always create their
        cgroups there, and every kernel has it. Without one, the cgroup2 mount: every v2
        cgroup has ``cpu.stat`` with ``usage_usec``, with or without the cpu controller.
        """
        cpuacct = self.controllers.get(ACCOUNTING_CONTROLLER)
        if cpuacct is not None and cpuacct.version is Version.V1:
            return cpuacct
        return self.unified

    def separate_accounting(self) -> Hierarchy | None:
        """`accounting` when it is not one of the managed hierarchies, so corral must create
        its cgroups and move their processes there as well (None when a managed hierarchy
        already holds the counter, or there is no accounting hierarchy)."""
        home = self.accounting()
        if home is None or home.path in {h.path for h in self.managed().values()}:
            return None
        return home

    def owned(self) -> tuple[Hierarchy, ...]:
        """Every hierarchy in which corral creates (and removes) its cgroups: the managed
        ones plus a separate accounting hierarchy, each once, sorted by path."""
        homes = {h.path: h for h in self.managed().values()}
        extra = self.separate_accounting()
        if extra is not None:
            homes[extra.path] = extra
        return tuple(homes[p] for p in sorted(homes))

    def limitations(self) -> tuple[str, ...]:
        """Plain statements of what corral cannot enforce on this host, and why."""
        notes: list[str] = []
        if self.mode is Mode.NONE:
            notes.append(
                f"no cgroup hierarchy is mounted under {self.root}: nothing can be enforced"
            )
        for controller in MANAGED_CONTROLLERS:
            home = self.controllers.get(controller)
            if home is None:
                notes.append(f"the {controller} controller is not mounted: {_LOST[controller]}")
            elif not home.writable:
                notes.append(
                    f"{home.path} ({controller}, {home.version}) is not writable by this "
                    f"process: run as root or delegate the subtree"
                )
        if self.unified is not None and self.mode is Mode.HYBRID:
            served = sorted(self.unified.controllers & set(MANAGED_CONTROLLERS))
            if not served:
                notes.append(
                    f"the cgroup2 mount at {self.unified.path} has no cpu, cpuset or memory "
                    "controller (they are bound to v1): corral enforces through v1 and uses "
                    "cgroup2 only for PSI and cgroup.stat"
                )
        if self.mode is not Mode.NONE:
            notes.extend(self._accounting_limitations())
        cpu = self.controllers.get("cpu")
        if cpu is not None and cpu.version is Version.V1 and not (cpu.path / "cpu.idle").exists():
            notes.append(
                "this kernel has no cpu.idle (needs Linux 5.15+): best-effort work gets "
                "the minimum cpu.shares (2) instead of SCHED_IDLE-like treatment"
            )
        return tuple(notes)

    def _accounting_limitations(self) -> list[str]:
        home = self.accounting()
        if home is None:
            return [
                f"no cpuacct hierarchy and no cgroup2 mount under {self.root}: CPU usage "
                "cannot be sampled and the predictor uses each workload's request"
            ]
        if self.separate_accounting() is not None and not home.writable:
            return [
                f"{home.path} (CPU accounting) is not writable by this process: corral "
                "cannot create its cgroups there and reads usage only of cgroups others made"
            ]
        return []

    def describe(self) -> dict[str, object]:
        """A JSON-ready summary: mode, controllers and where, writability, limitations."""
        return {
            "root": str(self.root),
            "mode": str(self.mode),
            "controllers": {
                name: {"path": str(h.path), "version": str(h.version), "writable": h.writable}
                for name, h in sorted(self.controllers.items())
            },
            "unified": None if self.unified is None else str(self.unified.path),
            "accounting": None if (acct := self.accounting()) is None else str(acct.path),
            "limitations": list(self.limitations()),
        }


_LOST = {
    "cpuset": "workloads cannot be pinned to CPUs or memory nodes",
    "cpu": "no CPU weight, quota or idle class can be set",
    "memory": "no memory.high / memory.max (v1: soft limit / limit) can be set",
}


def detect_cgroups(cgroup_root: Path | str = "/sys/fs/cgroup") -> CgroupLayout:
    """Inspect ``cgroup_root`` and say where every controller is and whether it is writable.

    Never raises for a missing root: it reports `Mode.NONE`, and the caller decides.
    """
    root = Path(cgroup_root)
    if _is_v2(root):
        unified = _v2_hierarchy(root)
        return CgroupLayout(
            root=root,
            mode=Mode.UNIFIED,
            hierarchies=(unified,),
            controllers=dict.fromkeys(unified.controllers, unified),
            unified=unified,
        )
    hierarchies: list[Hierarchy] = []
    unified_mount: Hierarchy | None = None
    try:
        entries = sorted(root.iterdir()) if root.is_dir() else []
    except OSError:
        entries = []
    for entry in entries:
        if entry.is_symlink() or not entry.is_dir():
            continue  # "cpu,cpuacct" style links point at a directory we visit anyway
        if _is_v2(entry):
            unified_mount = _v2_hierarchy(entry)
            hierarchies.append(unified_mount)
            continue
        found = frozenset(c for c, marker in _V1_MARKERS.items() if (entry / marker).exists())
        if found:
            hierarchies.append(
                Hierarchy(
                    path=entry, version=Version.V1, controllers=found, writable=_writable(entry)
                )
            )
    controllers: dict[str, Hierarchy] = {}
    for hierarchy in hierarchies:
        if hierarchy.version is Version.V1:
            for name in hierarchy.controllers:
                controllers.setdefault(name, hierarchy)
    if unified_mount is not None:
        for name in unified_mount.controllers:
            controllers.setdefault(name, unified_mount)
    v1_present = any(h.version is Version.V1 for h in hierarchies)
    if v1_present and unified_mount is not None:
        mode = Mode.HYBRID
    elif v1_present:
        mode = Mode.LEGACY
    elif unified_mount is not None:
        mode = Mode.UNIFIED
    else:
        mode = Mode.NONE
    return CgroupLayout(
        root=root,
        mode=mode,
        hierarchies=tuple(hierarchies),
        controllers=controllers,
        unified=unified_mount,
    )


def _is_v2(path: Path) -> bool:
    return (path / "cgroup.controllers").is_file()


def _v2_hierarchy(path: Path) -> Hierarchy:
    try:
        names = frozenset((path / "cgroup.controllers").read_text().split())
    except OSError:
        names = frozenset()
    return Hierarchy(path=path, version=Version.V2, controllers=names, writable=_writable(path))


def _writable(path: Path) -> bool:
    # os.access honours read-only mounts (EROFS) as well as permissions.
    return os.access(path, os.W_OK | os.X_OK)
