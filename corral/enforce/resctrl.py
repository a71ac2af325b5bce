"""resctrl (Intel RDT / AMD PQoS): cache ways (CAT) and memory bandwidth (MBA) per group.

The kernel's interface under ``/sys/fs/resctrl`` (Documentation/arch/x86/resctrl.rst):

* ``info/<RES>/`` per resource: for caches (``L3``, ``L2``, CDP's ``L3CODE``/``L3DATA``)
  ``cbm_mask`` (hex, all usable ways), ``min_cbm_bits``, ``num_closids``, ``shareable_bits``
  and, on newer kernels, ``sparse_masks``; for ``MB`` ``min_bandwidth``, ``bandwidth_gran``,
  ``delay_linear``, ``num_closids``. ``info/last_cmd_status`` explains the last refusal.
* the root directory is the default group; each control group is a directory with
  ``schemata``, ``tasks`` and ``cpus``/``cpus_list``. ``mkdir`` allocates a CLOSID and fails
  with ENOSPC when none is left (the usable count is the minimum over the resources).
* schemata lines: ``L3:0=ff0;1=ff0`` (a hex mask per cache id) and ``MB:0=50;1=50``
  (percent per domain); a write may carry only the lines it changes.

Everything here is validated against ``info/`` before writing, so a bad mask is refused
with the rule it breaks rather than the kernel's bare EINVAL. The colocation controller
writes its LLC-way, MBA and per-workload (dCat) allocations through this module
(`corral.control.llc`). NOTE: this host has no resctrl; this module was tested only on
directory trees shaped like the kernel's, never on RDT hardware.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.enforce.cgroupfs import CgroupFsError, make_dir, read_file, remove_dir, write_file
from corral.errors import EnforcementError, InputError
from corral.topology.cpuset import CpuSet

_RESERVED = frozenset({"info", "mon_groups", "mon_data"})
_MB = "MB"


class ResctrlError(EnforcementError):
    """resctrl refused an operation; ``errno`` is set when the kernel gave one."""

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        self.errno = errno
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """A cache resource (``L3``, ``L2``, ``L3CODE``...): its mask rules and cache ids."""

    resource: str
    cbm_mask: int
    min_cbm_bits: int
    num_closids: int
    shareable_bits: int = 0
    sparse_masks: bool = False
    ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class MbInfo:
    """Memory bandwidth allocation: percent steps and domain ids."""

    min_bandwidth: int
    bandwidth_gran: int
    num_closids: int
    delay_linear: bool = True
    ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class ResctrlInfo:
    """What ``info/`` says, plus the domain ids of the default group's schemata."""

    caches: Mapping[str, CacheInfo] = field(default_factory=dict)
    mb: MbInfo | None = None

    @property
    def num_closids(self) -> int:
        """Usable CLOSIDs: the minimum over every resource (the default group holds one)."""
        counts = [c.num_closids for c in self.caches.values()]
        if self.mb is not None:
            counts.append(self.mb.num_closids)
        return min(counts) if counts else 0


@dataclass(frozen=True)
class Schemata:
    """Allocation of one group: cache masks per resource and id, MB percent per id."""

    caches: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    mb: Mapping[int, int] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Schemata:
        """Parse the kernel's schemata (leading blanks and ``MB:0= 50`` padding allowed).

        Raises `ValueError` naming the bad line.
        """
        caches: dict[str, dict[int, int]] = {}
        mb: dict[int, int] = {}
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            resource, sep, body = line.partition(":")
            if not sep:
                raise ValueError(f"schemata line {raw!r} has no 'RESOURCE:' prefix")
            values: dict[int, int] = {}
            for entry in body.split(";"):
                ident, eq, value = entry.partition("=")
                if not eq:
                    raise ValueError(f"schemata entry {entry!r} in {raw!r} is not id=value")
                try:
                    values[int(ident.strip())] = (
                        int(value.strip()) if resource == _MB else int(value.strip(), 16)
                    )
                except ValueError as err:
                    raise ValueError(f"schemata entry {entry!r} in {raw!r}: {err}") from err
            if resource == _MB:
                mb.update(values)
            else:
                caches[resource] = values
        return cls(caches=caches, mb=mb)

    def lines(self) -> dict[str, str]:
        """Resource -> the line the kernel accepts (``L3:0=ff0;1=ff0``)."""
        out = {
            res: f"{res}:" + ";".join(f"{i}={mask:x}" for i, mask in sorted(masks.items()))
            for res, masks in sorted(self.caches.items())
        }
        if self.mb:
            out[_MB] = f"{_MB}:" + ";".join(f"{i}={pct}" for i, pct in sorted(self.mb.items()))
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines().values()) + "\n"

    def validate(self, info: ResctrlInfo) -> None:
        """Check every mask and percentage against ``info``; `InputError` names the rule."""
        for res, masks in self.caches.items():
            cache = info.caches.get(res)
            if cache is None:
                raise InputError(
                    f"schemata.{res}",
                    "this host has no such resctrl resource",
                    f"use one of {', '.join(sorted(info.caches)) or 'none'}",
                )
            for ident, mask in masks.items():
                where = f"schemata.{res}.{ident}"
                if cache.ids and ident not in cache.ids:
                    raise InputError(where, f"no cache id {ident}", f"ids are {list(cache.ids)}")
                if mask <= 0 or mask & ~cache.cbm_mask:
                    raise InputError(
                        where, f"mask {mask:x} is empty or outside cbm_mask {cache.cbm_mask:x}"
                    )
                if not cache.sparse_masks and not _contiguous(mask):
                    raise InputError(
                        where,
                        f"mask {mask:x} is not one contiguous run of ways",
                        "the hardware needs contiguous masks like 0ff0",
                    )
                if mask.bit_count() < cache.min_cbm_bits:
                    raise InputError(
                        where,
                        f"mask {mask:x} has {mask.bit_count()} ways, fewer than min_cbm_bits "
                        f"{cache.min_cbm_bits}",
                    )
        if self.mb:
            bandwidth = info.mb
            if bandwidth is None:
                raise InputError("schemata.MB", "this host has no memory bandwidth allocation")
            for ident, pct in self.mb.items():
                where = f"schemata.MB.{ident}"
                if bandwidth.ids and ident not in bandwidth.ids:
                    raise InputError(
                        where, f"no MB domain {ident}", f"ids are {list(bandwidth.ids)}"
                    )
                if not bandwidth.min_bandwidth <= pct <= 100:
                    raise InputError(where, f"{pct}% is outside {bandwidth.min_bandwidth}..100")
                if pct % bandwidth.bandwidth_gran:
                    up = -(-pct // bandwidth.bandwidth_gran) * bandwidth.bandwidth_gran
                    raise InputError(
                        where,
                        f"{pct}% is not a multiple of bandwidth_gran {bandwidth.bandwidth_gran}",
                        f"use {up} (the kernel would round to it)",
                    )


def _contiguous(mask: int) -> bool:
    low = mask & -mask
    return (mask + low) & mask == 0


class Resctrl:
    """resctrl groups under ``resctrl_root`` (``/sys/fs/resctrl`` on a real host)."""

    def __init__(self, resctrl_root: Path | str = "/sys/fs/resctrl") -> None:
        self.root = Path(resctrl_root)

    def available(self) -> bool:
        """Whether resctrl is mounted here (``info/`` exists)."""
        return (self.root / "info").is_dir()

    def info(self) -> ResctrlInfo:
        """Read ``info/`` and the default group's domain ids; `ResctrlError` if unmounted."""
        if not self.available():
            raise ResctrlError(
                f"resctrl is not mounted at {self.root} (no info/): the CPU lacks RDT, or "
                "mount it with 'mount -t resctrl resctrl /sys/fs/resctrl'"
            )
        default = self.read_schemata("")
        caches: dict[str, CacheInfo] = {}
        mb: MbInfo | None = None
        for entry in sorted((self.root / "info").iterdir()):
            if not entry.is_dir() or entry.name.endswith("_MON"):
                continue
            if entry.name == _MB:
                mb = MbInfo(
                    min_bandwidth=_int(entry / "min_bandwidth"),
                    bandwidth_gran=_int(entry / "bandwidth_gran"),
                    num_closids=_int(entry / "num_closids"),
                    delay_linear=_int(entry / "delay_linear", default=1) == 1,
                    ids=tuple(sorted(default.mb)),
                )
            elif (entry / "cbm_mask").exists():
                caches[entry.name] = CacheInfo(
                    resource=entry.name,
                    cbm_mask=_int(entry / "cbm_mask", base=16),
                    min_cbm_bits=_int(entry / "min_cbm_bits"),
                    num_closids=_int(entry / "num_closids"),
                    shareable_bits=_int(entry / "shareable_bits", base=16, default=0),
                    sparse_masks=_int(entry / "sparse_masks", default=0) == 1,
                    ids=tuple(sorted(default.caches.get(entry.name, {}))),
                )
        return ResctrlInfo(caches=caches, mb=mb)

    def groups(self) -> tuple[str, ...]:
        """Control groups other than the default (root) group."""
        try:
            return tuple(
                sorted(
                    e.name
                    for e in os.scandir(self.root)
                    if e.is_dir(follow_symlinks=False) and e.name not in _RESERVED
                )
            )
        except FileNotFoundError:
            return ()

    def create_group(self, name: str, *, info: ResctrlInfo | None = None) -> bool:
        """Create a control group (False if it exists). Out of CLOSIDs -> `ResctrlError`."""
        _check_name(name)
        if (self.root / name).is_dir():
            return False
        info = info or self.info()
        in_use = len(self.groups()) + 1  # the default group holds CLOSID 0
        if info.num_closids and in_use >= info.num_closids:
            raise self._out_of_closids(name, info)
        try:
            make_dir(self.root / name)
        except CgroupFsError as err:
            if err.failure.errno == errno.ENOSPC:
                raise self._out_of_closids(name, info) from err
            raise ResctrlError(
                f"cannot create resctrl group {name}: {err}{self._status()}",
                errno=err.failure.errno,
            ) from err
        return True

    def _out_of_closids(self, name: str, info: ResctrlInfo) -> ResctrlError:
        used = ", ".join(self.groups()) or "none"
        return ResctrlError(
            f"cannot create resctrl group {name}: no free CLOSID (num_closids="
            f"{info.num_closids}, the default group and {len(self.groups())} others in use: "
            f"{used}); remove an unused group or put workloads with equal allocations in one",
            errno=errno.ENOSPC,
        )

    def remove_group(self, name: str) -> bool:
        """Remove a control group (its tasks fall back to the default group)."""
        _check_name(name)
        try:
            return remove_dir(self.root / name)
        except CgroupFsError as err:
            raise ResctrlError(
                f"cannot remove resctrl group {name}: {err}", errno=err.failure.errno
            ) from err

    def read_schemata(self, name: str) -> Schemata:
        """The current schemata of a group ('' for the default group)."""
        path = self._dir(name) / "schemata"
        text = read_file(path)
        if text is None:
            raise ResctrlError(f"{path} does not exist: no such resctrl group", errno=errno.ENOENT)
        try:
            return Schemata.parse(text)
        except ValueError as err:
            raise ResctrlError(f"{path}: {err}") from err

    def write_schemata(
        self, name: str, wanted: Schemata, *, info: ResctrlInfo | None = None
    ) -> tuple[str, ...]:
        """Validate, then write only the lines that differ; returns the lines written."""
        info = info or self.info()
        wanted.validate(info)
        current = self.read_schemata(name).lines()
        changed = [line for res, line in wanted.lines().items() if current.get(res) != line]
        path = self._dir(name) / "schemata"
        for line in changed:
            try:
                write_file(path, line + "\n")
            except CgroupFsError as err:
                raise ResctrlError(
                    f"{path}: {line!r} refused: {err}{self._status()}", errno=err.failure.errno
                ) from err
        return tuple(changed)

    def assign_tasks(self, name: str, pids: Iterable[int]) -> None:
        """Move tasks into a group, one pid per write as the kernel requires."""
        path = self._dir(name) / "tasks"
        for pid in pids:
            try:
                write_file(path, str(pid))
            except CgroupFsError as err:
                if err.failure.errno == errno.ESRCH:
                    continue  # the task exited meanwhile: nothing to move
                raise ResctrlError(f"{path}: pid {pid}: {err}", errno=err.failure.errno) from err

    def assign_cpus(self, name: str, cpus: CpuSet) -> None:
        """Make ``cpus`` use this group's allocation for tasks of the default group."""
        directory = self._dir(name)
        path = directory / "cpus_list"
        value = str(cpus)
        if not path.exists():
            path, value = directory / "cpus", _hex_mask(cpus)
        try:
            write_file(path, value)
        except CgroupFsError as err:
            raise ResctrlError(f"{path}: {err}{self._status()}", errno=err.failure.errno) from err

    def tasks(self, name: str) -> tuple[int, ...]:
        """Pids in a group."""
        text = read_file(self._dir(name) / "tasks") or ""
        return tuple(int(t) for t in text.split())

    def cpus(self, name: str) -> CpuSet:
        """CPUs assigned to a group."""
        directory = self._dir(name)
        listed = read_file(directory / "cpus_list")
        if listed is not None:
            return CpuSet.parse(listed)
        mask = int((read_file(directory / "cpus") or "0").strip().replace(",", "") or "0", 16)
        return CpuSet(i for i in range(mask.bit_length()) if mask >> i & 1)

    def drift(self, name: str, wanted: Schemata) -> dict[str, tuple[str, str | None]]:
        """Resource -> (wanted line, current line) for every line that differs."""
        current = self.read_schemata(name).lines()
        return {
            res: (line, current.get(res))
            for res, line in wanted.lines().items()
            if current.get(res) != line
        }

    def _dir(self, name: str) -> Path:
        return self.root / name if name else self.root

    def _status(self) -> str:
        status = read_file(self.root / "info" / "last_cmd_status")
        return f" (kernel: {status.strip()})" if status and status.strip() != "ok" else ""


def _check_name(name: str) -> None:
    if not name or "/" in name or name in _RESERVED or name.startswith("."):
        raise InputError(
            "resctrl group",
            f"{name!r} is not a usable group name",
            "use a plain name other than info, mon_groups or mon_data",
        )


def _int(path: Path, *, base: int = 10, default: int | None = None) -> int:
    text = read_file(path)
    if text is None:
        if default is not None:
            return default
        raise ResctrlError(f"{path} is missing: not a resctrl info directory")
    try:
        return int(text.strip(), base)
    except ValueError as err:
        raise ResctrlError(f"{path}: expected a number, found {text.strip()!r}") from err


def _hex_mask(cpus: CpuSet) -> str:
    mask = 0
    for cpu in cpus:
        mask |= 1 << cpu
    return f"{mask:x}"
