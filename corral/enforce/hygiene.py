"""Hygiene: reclaim a cgroup's page cache before removing it, and count dying cgroups.

A removed memory cgroup that still owns page cache lingers as a "dying" cgroup until the
cache is reclaimed; thousands of them slow every later reclaim (design.md s6). So a BE
cgroup is emptied first (v1 ``memory.force_empty``, v2 ``memory.reclaim`` of its whole
``memory.current``) and only then removed, children before parents, in every hierarchy.
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from corral.enforce.cgroupfs import (
    CgroupFsError,
    cgroup_dir,
    list_pids,
    read_file,
    remove_dir,
    write_file,
)
from corral.enforce.detect import CgroupLayout, Version
from corral.enforce.report import Failure
from corral.errors import EnforcementError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoveReport:
    """What removing one cgroup did: bytes of memory it held before and after reclaim,
    directories removed, and refused operations."""

    cgroup: str
    usage_before: int | None
    usage_after: int | None
    removed: tuple[str, ...]
    failures: tuple[Failure, ...]

    @property
    def ok(self) -> bool:
        """True when every directory is gone and nothing was refused."""
        return not self.failures

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "cgroup": self.cgroup,
            "usage_before": self.usage_before,
            "usage_after": self.usage_after,
            "removed": list(self.removed),
            "failures": [f.to_json() for f in self.failures],
        }


@dataclass(frozen=True, slots=True)
class DyingReport:
    """Dying cgroups: removed but still pinned by charged memory.

    v2: ``nr_dying_descendants`` of the root's ``cgroup.stat``. v1: the memory controller's
    ``num_cgroups`` in /proc/cgroups minus the directories present in its hierarchy.
    """

    source: str
    dying: int | None
    live: int | None
    detail: str

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "source": self.source,
            "dying": self.dying,
            "live": self.live,
            "detail": self.detail,
        }


def _usage(layout: CgroupLayout, cgroup: str) -> int | None:
    memory = layout.hierarchy_of("memory")
    if memory is None:
        return None
    name = "memory.usage_in_bytes" if memory.version is Version.V1 else "memory.current"
    text = read_file(cgroup_dir(memory.path, cgroup) / name)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def reclaim(layout: CgroupLayout, cgroup: str) -> Failure | None:
    """Ask the kernel to drop the page cache charged to ``cgroup``; a refusal is returned.

    v1 ``memory.force_empty`` fails with EBUSY while tasks remain; v2 ``memory.reclaim``
    answers EAGAIN when it could not reclaim everything, which is not an error here.
    """
    memory = layout.hierarchy_of("memory")
    if memory is None:
        return None
    directory = cgroup_dir(memory.path, cgroup)
    try:
        if memory.version is Version.V1:
            write_file(directory / "memory.force_empty", "0")
        else:
            current = _usage(layout, cgroup) or 0
            if current:
                write_file(directory / "memory.reclaim", str(current))
    except CgroupFsError as err:
        if err.failure.errno == errno.EAGAIN:
            return None
        return err.failure
    return None


def _mounted(layout: CgroupLayout) -> list[Path]:
    """Every cgroup hierarchy under the layout's root, known controllers or not (freezer's
    root, for one, has no file detection recognises)."""
    found = [h.path for h in layout.hierarchies]
    try:
        entries = sorted(layout.root.iterdir())
    except OSError:
        return found
    found.extend(e for e in entries if (e / "cgroup.procs").is_file())
    return found


def remove_cgroup(layout: CgroupLayout, cgroup: str, *, reclaim_first: bool = True) -> RemoveReport:
    """Reclaim, then remove ``cgroup`` and its children from every hierarchy corral
    creates cgroups in (managed ones and a separate accounting one: `CgroupLayout.owned`)
    and from any other hierarchy where one was made for it (the controller's freezer
    group, the v2 group it reads per-cgroup PSI from on a hybrid host).

    Raises `EnforcementError` (and removes nothing) while any of them holds tasks.
    """
    dirs = sorted({h.path for h in layout.owned()} | set(_mounted(layout)))
    busy = {
        str(d): pids
        for d in dirs
        for sub in _subtree(cgroup_dir(d, cgroup))
        if (pids := list_pids(sub))
    }
    if busy:
        where = "; ".join(f"{d}: pids {', '.join(map(str, p[:5]))}" for d, p in busy.items())
        raise EnforcementError(
            f"cgroup {cgroup} still holds tasks ({where}); stop them or move them out first"
        )
    failures: list[Failure] = []
    before = _usage(layout, cgroup)
    if reclaim_first:
        refused = reclaim(layout, cgroup)
        if refused is not None:
            failures.append(refused)
    after = _usage(layout, cgroup)
    removed: list[str] = []
    for hierarchy in dirs:
        for sub in reversed(_subtree(cgroup_dir(hierarchy, cgroup))):
            try:
                if remove_dir(sub):
                    removed.append(str(sub))
            except CgroupFsError as err:
                failures.append(err.failure)
    log.info(
        "cgroup.removed",
        extra={
            "cgroup": cgroup,
            "usage_before": before,
            "usage_after": after,
            "dirs": len(removed),
        },
    )
    return RemoveReport(cgroup, before, after, tuple(removed), tuple(failures))


def _subtree(top: Path) -> list[Path]:
    """``top`` and every cgroup below it, parents before children (empty if missing)."""
    if not top.is_dir():
        return []
    out = [top]
    for dirpath, dirnames, _ in os.walk(top):
        dirnames.sort()
        out.extend(Path(dirpath) / name for name in dirnames)
    return out


def dying_cgroups(layout: CgroupLayout, proc_root: Path | str = "/proc") -> DyingReport:
    """How many memory cgroups are dying on this host (see `DyingReport`)."""
    memory = layout.hierarchy_of("memory")
    if memory is not None and memory.version is Version.V1:
        table = read_file(Path(proc_root) / "cgroups")
        total: int | None = None
        for line in (table or "").splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[0] == "memory":
                total = int(fields[2])
        live = len(_subtree(memory.path))
        if total is None:
            return DyingReport("v1", None, live, f"no memory line in {proc_root}/cgroups")
        return DyingReport(
            "v1",
            max(0, total - live),
            live,
            f"/proc/cgroups memory num_cgroups={total}, directories={live}",
        )
    unified = layout.unified
    if unified is None:
        return DyingReport("none", None, None, "no memory controller and no cgroup2 mount")
    stat = read_file(unified.path / "cgroup.stat") or ""
    values = dict(line.split(maxsplit=1) for line in stat.splitlines() if " " in line)
    dying = int(values["nr_dying_descendants"]) if "nr_dying_descendants" in values else None
    descendants = int(values["nr_descendants"]) if "nr_descendants" in values else None
    return DyingReport("v2", dying, descendants, f"{unified.path}/cgroup.stat")
