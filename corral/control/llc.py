"""The controller's LLC-way and memory-bandwidth actuator: resctrl groups for LC and BE.

It turns `SetCache` (the Heracles ways and MBA ladders) and `SetWorkloadWays` (the dCat
manager's per-workload masks, `corral.control.dcat`) into resctrl writes through
`corral.enforce.resctrl`:

* groups: ``corral-be`` for the BE box; ``corral-lc`` for the LC cgroup when one is
  configured, else the **default group** (every task not in BE: LC and the system), since
  an LC left in the default group would not see a mask written to ``corral-lc``; one
  ``corral-w-<workload>`` group per BE workload that dCat manages (a `SetWorkloadWays`
  removes the groups of workloads it no longer names, freeing their CLOSIDs, and moves
  their tasks back to ``corral-be``). ``mkdir`` takes a CLOSID; when none is left the
  error says how many there are and which groups hold them.
* tasks: every pid of the BE box (and of the LC cgroup) is written to its group's
  ``tasks`` at each cache action and at `sync` - the pids of a dCat-managed workload to
  its own group, never back to ``corral-be``; children inherit the group at fork, so a
  BE workload started later joins at the next sync. When LC and BE are CPU-partitioned
  (`SetCpus` with disjoint sets) each group also gets its CPUs (``cpus_list``), which covers
  tasks of the default group running there between two syncs.
* schemata: the L3 mask on every cache id (L3CODE and L3DATA too under CDP), validated
  against ``info/L3`` (inside ``cbm_mask``, contiguous, at least ``min_cbm_bits``); BE's MB
  percent rounded up to ``info/MB/bandwidth_gran`` and kept within
  ``min_bandwidth..100``, on every MB domain. LC's bandwidth is left at 100%.

No resctrl (this project's VM has no RDT: no ``/sys/fs/resctrl``): `available` is False,
`fit_cache` turns the cache ladders off and `apply` refuses a cache action with
`CacheUnavailableError`. Verified only on directory trees shaped like the kernel's
(tests/test_control_llc.py), never on RDT hardware.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from corral.control.actions import SetCache, SetCpus, SetWorkloadWays
from corral.control.cache import CacheSettings
from corral.enforce.resctrl import Resctrl, ResctrlError, ResctrlInfo, Schemata
from corral.errors import EnforcementError, InputError
from corral.topology.cpuset import CpuSet

BE_GROUP = "corral-be"
LC_GROUP = "corral-lc"
WORKLOAD_PREFIX = "corral-w-"
_L3 = ("L3", "L3CODE", "L3DATA")

Pids = Callable[[], Iterable[int]]


class CacheUnavailableError(EnforcementError):
    """A cache action on a host without resctrl (or without the resource asked for)."""


@dataclass(frozen=True, slots=True)
class CacheCapability:
    """What the host's resctrl offers, for `describe` and the controller's settings."""

    mounted: bool
    ways: int
    min_ways: int
    mba: bool
    min_bandwidth: int
    bandwidth_gran: int
    num_closids: int
    why_not: str = ""


def no_resctrl_message(root: Path) -> str:
    """The refusal for a host without resctrl at ``root``."""
    return (
        f"no resctrl at {root}: LLC ways and MBA cannot be set on this host "
        "(the CPU lacks RDT, or mount it: mount -t resctrl resctrl /sys/fs/resctrl)"
    )


def round_mb(percent: int, info: ResctrlInfo) -> int:
    """``percent`` as the hardware takes it: up to ``bandwidth_gran``, within
    ``min_bandwidth..100`` (`CacheUnavailableError` without MBA)."""
    mb = info.mb
    if mb is None:
        raise CacheUnavailableError("this host's resctrl has no MB resource: MBA cannot be set")
    gran = max(1, mb.bandwidth_gran)
    up = -(-percent // gran) * gran
    return max(mb.min_bandwidth, min(100, up))


class ResctrlActuator:
    """Writes LC/BE (and per-workload) cache allocations; see the module docstring."""

    def __init__(
        self,
        resctrl: Resctrl,
        *,
        be_pids: Pids,
        lc_pids: Pids | None = None,
        workload_pids: Callable[[str], Iterable[int]] | None = None,
    ) -> None:
        self.resctrl = resctrl
        self._be_pids = be_pids
        self._lc_pids = lc_pids
        self._workload_pids = workload_pids
        self._info: ResctrlInfo | None = None
        self._cpus: tuple[CpuSet, CpuSet] | None = None
        self._managed: tuple[str, ...] = ()
        """The workloads of the last `SetWorkloadWays` (each in its own group)."""

    @property
    def lc_group(self) -> str:
        """The group LC's mask is written to ('' is the default group)."""
        return LC_GROUP if self._lc_pids is not None else ""

    def available(self) -> bool:
        """Whether resctrl is mounted at the root."""
        return self.resctrl.available()

    def info(self) -> ResctrlInfo:
        """``info/`` (read once); `CacheUnavailableError` without resctrl."""
        if self._info is None:
            if not self.available():
                raise CacheUnavailableError(no_resctrl_message(self.resctrl.root))
            self._info = self.resctrl.info()
        return self._info

    def capability(self) -> CacheCapability:
        """What can be set here (never raises; ``why_not`` says what is missing)."""
        if not self.available():
            why = no_resctrl_message(self.resctrl.root)
            return CacheCapability(False, 0, 0, False, 0, 0, 0, why)
        try:
            info = self.info()
        except ResctrlError as err:
            return CacheCapability(False, 0, 0, False, 0, 0, 0, str(err))
        l3 = next((info.caches[r] for r in _L3 if r in info.caches), None)
        mb = info.mb
        return CacheCapability(
            mounted=True,
            ways=l3.cbm_mask.bit_count() if l3 else 0,
            min_ways=l3.min_cbm_bits if l3 else 0,
            mba=mb is not None,
            min_bandwidth=mb.min_bandwidth if mb else 0,
            bandwidth_gran=mb.bandwidth_gran if mb else 0,
            num_closids=info.num_closids,
            why_not="" if l3 else "resctrl has no L3 resource: LLC ways cannot be set",
        )

    def fit_cache(self, settings: CacheSettings) -> CacheSettings:
        """``settings`` as this host can do them: both ladders off without resctrl (so the
        controller never emits `SetCache`), ways off without L3 CAT, MBA off without MB,
        MB rungs rounded like the kernel. A configured ``total_ways`` that is not the
        host's ``cbm_mask`` width is refused with the field named."""
        cap = self.capability()
        ways, min_ways = settings.total_ways, settings.min_ways
        if not cap.mounted or not cap.ways:
            ways, min_ways = 0, 1
        elif ways and ways != cap.ways:
            raise InputError(
                "cache.total_ways",
                f"{ways} is not this host's L3 width ({cap.ways} ways in info/L3/cbm_mask)",
                f"use {cap.ways}, or 0 to leave the LLC alone",
            )
        elif ways:
            min_ways = max(min_ways, cap.min_ways)
        ladder: tuple[int, ...] = ()
        if cap.mounted and cap.mba and settings.mb_ladder:
            info = self.info()
            ladder = tuple(round_mb(mb, info) for mb in settings.mb_ladder)
        return replace(settings, total_ways=ways, min_ways=min_ways, mb_ladder=ladder)

    def apply(self, action: SetCache | SetWorkloadWays | SetCpus) -> None:
        """Apply a cache action (or record a CPU split); `EnforcementError` on refusal."""
        if isinstance(action, SetCpus):
            self._cpus = (action.be, action.lc)
            if self.available() and (action.be & action.lc) == CpuSet():
                self._assign_cpus()
            return
        info = self.info()
        if isinstance(action, SetCache):
            self._set_cache(action, info)
        else:
            self._set_workload_ways(action, info)

    def sync(self) -> None:
        """Move the current BE (and LC) pids into their groups (new tasks since the last
        cache action); does nothing without resctrl or before the first cache action."""
        if self.available() and BE_GROUP in self.resctrl.groups():
            self._assign_tasks()

    def _set_cache(self, action: SetCache, info: ResctrlInfo) -> None:
        self._ensure(BE_GROUP, info)
        if self.lc_group:
            self._ensure(self.lc_group, info)
        masked = action.lc_mask is not None or action.be_mask is not None
        if masked and not any(r in info.caches for r in _L3):
            raise CacheUnavailableError(
                "this host's resctrl has no L3 resource: ways cannot be set"
            )
        be_mb: dict[int, int] = {}
        if action.be_mb_percent is not None:
            pct = round_mb(action.be_mb_percent, info)
            be_mb = dict.fromkeys(info.mb.ids if info.mb else (), pct)
        if action.lc_mask is not None:
            self.resctrl.write_schemata(self.lc_group, _masks(info, action.lc_mask), info=info)
        be = _masks(info, action.be_mask) if action.be_mask is not None else Schemata()
        if be.caches or be_mb:
            self.resctrl.write_schemata(BE_GROUP, Schemata(caches=be.caches, mb=be_mb), info=info)
        self._assign_tasks()
        if self._cpus is not None and (self._cpus[0] & self._cpus[1]) == CpuSet():
            self._assign_cpus()

    def _set_workload_ways(self, action: SetWorkloadWays, info: ResctrlInfo) -> None:
        if self._workload_pids is None:
            raise CacheUnavailableError("per-workload ways need the BE workloads' cgroups")
        pids = self._workload_pids
        named = {grant.workload for grant in action.grants}
        for grant in action.grants:
            group = WORKLOAD_PREFIX + grant.workload
            self._ensure(group, info)
            self.resctrl.write_schemata(group, _masks(info, grant.mask), info=info)
            self.resctrl.assign_tasks(group, pids(grant.workload))
        self._managed = tuple(sorted(named))
        groups = self.resctrl.groups()
        for group in groups:
            workload = group.removeprefix(WORKLOAD_PREFIX)
            if group.startswith(WORKLOAD_PREFIX) and workload not in named:
                left = tuple(pids(workload))
                self.resctrl.remove_group(group)  # its tasks fall to the default group
                if BE_GROUP in groups:
                    self.resctrl.assign_tasks(BE_GROUP, left)

    def _ensure(self, group: str, info: ResctrlInfo) -> None:
        if group:
            self.resctrl.create_group(group, info=info)  # False: it exists already

    def _assign_tasks(self) -> None:
        own: dict[str, tuple[int, ...]] = {}
        if self._workload_pids is not None:
            own = {w: tuple(self._workload_pids(w)) for w in self._managed}
        managed = {pid for pids in own.values() for pid in pids}
        self.resctrl.assign_tasks(BE_GROUP, (p for p in self._be_pids() if p not in managed))
        for workload, pids in own.items():
            self.resctrl.assign_tasks(WORKLOAD_PREFIX + workload, pids)
        if self._lc_pids is not None:
            self.resctrl.assign_tasks(LC_GROUP, self._lc_pids())

    def _assign_cpus(self) -> None:
        if self._cpus is None or BE_GROUP not in self.resctrl.groups():
            return
        be, lc = self._cpus
        self.resctrl.assign_cpus(BE_GROUP, be)
        if self.lc_group:
            self.resctrl.assign_cpus(self.lc_group, lc)


def _masks(info: ResctrlInfo, mask: int) -> Schemata:
    caches = {res: dict.fromkeys(info.caches[res].ids, mask) for res in _L3 if res in info.caches}
    return Schemata(caches=caches)
