"""dCat in the control loop: the performance samplers and the manager the runtime drives.

`DcatRunner` holds the dCat state machine (`corral.control.dcat`) between periods and what
the actuator last wrote. Before the first period the runtime asks it to `check` the host:
dCat runs only when all of these hold, and otherwise says which are missing (``why``):

* the actuator can write per-workload ways (`Capability.WORKLOAD_WAYS` in its
  `describe()`: a mounted resctrl with L3 CAT; a dry-run actuator writes nothing);
* the Heracles ways ladder is on (``cache.total_ways`` > 0): BE's ways on it are dCat's
  budget, laid out from way 0 (BE's end of the mask, `corral.control.cache.masks`);
* a performance signal per BE workload: hardware counters (IPC and LLC MPKI per BE
  workload cgroup, `CounterSampler`) where `corral.enforce.perf.counters_status` says the
  host has them, else each BE workload's own throughput (`ThroughputSampler`, from a
  callable the caller supplies). The LC latency is not a per-workload signal of BE: it
  already drives the LC/BE split of the ways ladder, and dCat divides only BE's side.

Samplers are blocking (perf_event_open and read are syscalls): the runtime calls
``probe``, ``sample`` and ``close`` through its ``execute``. `status` and `snapshot` only
read memory, and report ways and masks only once the actuator wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from corral.control.actions import SetWorkloadWays, WayGrant
from corral.control.actuator import ActuatorDescription, Capability
from corral.control.cache import CacheSettings
from corral.control.dcat import (
    Category,
    DcatSettings,
    DcatState,
    PerfSample,
    dcat_actions,
    from_counters,
    from_throughput,
    layout,
)
from corral.enforce.perf import CgroupCounters, CounterReading, CounterStatus, counters_status
from corral.topology.cpuset import CpuSet

COUNTER_SIGNAL = "perf counters (IPC, LLC misses per kilo-instruction)"
THROUGHPUT_SIGNAL = "BE throughput (work per second per workload)"


@dataclass(frozen=True, slots=True)
class SamplerStatus:
    """Whether a sampler has a signal here: ``signal`` names it, ``reason`` says why not."""

    available: bool
    signal: str = ""
    reason: str = ""


class PerfSampler(Protocol):
    """Each BE workload's performance per period (blocking: called through ``execute``)."""

    def probe(self) -> SamplerStatus:
        """Whether this host gives the signal (once, before the first sample)."""
        ...

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        """One sample per workload since the last call (None: no reading this period)."""
        ...

    def close(self) -> None:
        """Release what sampling holds (counter file descriptors)."""
        ...


class Counters(Protocol):
    """Open counters of one cgroup (`corral.enforce.perf.CgroupCounters`)."""

    def read(self) -> CounterReading:
        """Counts since they were opened."""
        ...

    def close(self) -> None:
        """Close them."""
        ...


OpenCounters = Callable[[Path, CpuSet], Counters | CounterStatus]


def _open_counters(directory: Path, cpus: CpuSet) -> Counters | CounterStatus:
    return CgroupCounters.open(directory, cpus)


class CounterSampler:
    """IPC and LLC MPKI of each BE workload's cgroup from hardware counters.

    ``cgroup_dir`` maps a workload id to its directory in the perf_event hierarchy (see
    `perf_cgroup_dirs`); counters are opened at a workload's first sample (which gives no
    reading: a delta needs two) and closed when it leaves. A workload whose counters cannot
    be opened gets None, and the reason is kept in ``errors``."""

    def __init__(
        self,
        cgroup_dir: Callable[[str], Path],
        cpus: CpuSet,
        *,
        open_counters: OpenCounters = _open_counters,
        status: Callable[[], CounterStatus] = counters_status,
    ) -> None:
        self._dir = cgroup_dir
        self._cpus = cpus
        self._open = open_counters
        self._status = status
        self._counters: dict[str, Counters] = {}
        self._last: dict[str, CounterReading] = {}
        self.errors: dict[str, str] = {}

    def probe(self) -> SamplerStatus:
        """Available when the host's hardware counters open (`counters_status`)."""
        status = self._status()
        if not status.available:
            return SamplerStatus(False, reason=f"no hardware counters: {status.reason}")
        return SamplerStatus(True, COUNTER_SIGNAL, status.reason)

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        """IPC and MPKI over the last period for each workload (see the class docstring)."""
        out: dict[str, PerfSample | None] = {}
        for wid in workloads:
            out[wid] = self._sample_one(wid)
        for gone in set(self._counters) - set(workloads):
            self._counters.pop(gone).close()
            self._last.pop(gone, None)
            self.errors.pop(gone, None)
        return out

    def _sample_one(self, wid: str) -> PerfSample | None:
        counters = self._counters.get(wid)
        if counters is None:
            opened = self._open(self._dir(wid), self._cpus)
            if isinstance(opened, CounterStatus):
                self.errors[wid] = opened.reason
                return None
            self.errors.pop(wid, None)
            self._counters[wid] = counters = opened
        reading = counters.read()
        last = self._last.get(wid)
        self._last[wid] = reading
        if last is None:
            return None
        return from_counters(
            reading.cycles - last.cycles,
            reading.instructions - last.instructions,
            reading.llc_misses - last.llc_misses,
        )

    def close(self) -> None:
        """Close every workload's counters."""
        for counters in self._counters.values():
            counters.close()
        self._counters.clear()
        self._last.clear()


class ThroughputSampler:
    """Each BE workload's own throughput (work per second) from ``rates``, a blocking
    callable returning workload -> rate (None or missing: no reading)."""

    def __init__(self, rates: Callable[[], Mapping[str, float | None]]) -> None:
        self._rates = rates

    def probe(self) -> SamplerStatus:
        """Always available: the caller supplied the rates."""
        return SamplerStatus(True, THROUGHPUT_SIGNAL)

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        """``from_throughput`` of each workload's rate."""
        rates = self._rates()
        return {wid: from_throughput(rates.get(wid)) for wid in workloads}

    def close(self) -> None:
        """Nothing to release."""


class HostSampler:
    """Counters where the host has them, else the throughput fallback (when given).

    ``probe`` picks one (the counters' refusal is kept in the reason of the fallback, and
    both reasons are given when neither works); ``sample`` and ``close`` use that one.
    Without a `CounterSampler` (no perf_event cgroups given) the host's counters are still
    probed with ``status``, so the reason says whether the host has any."""

    def __init__(
        self,
        counters: CounterSampler | None,
        throughput: ThroughputSampler | None,
        *,
        status: Callable[[], CounterStatus] = counters_status,
    ) -> None:
        self._counters = counters
        self._throughput = throughput
        self._status = status
        self._chosen: PerfSampler | None = None

    def probe(self) -> SamplerStatus:
        """The counters' status when they work, else the fallback's, else why neither."""
        if self._counters is not None:
            status = self._counters.probe()
            if status.available:
                self._chosen = self._counters
                return status
            why = status.reason
        else:
            host = self._status()
            why = (
                "the host has hardware counters, but no perf_event cgroups of the BE "
                "workloads were given (runtime_from_config perf_cgroup)"
                if host.available
                else f"no hardware counters: {host.reason}"
            )
        if self._throughput is not None:
            self._chosen = self._throughput
            fallback = self._throughput.probe()
            return replace(fallback, reason=f"fallback: {why}")
        return SamplerStatus(False, reason=f"{why}; and no BE throughput signal to fall back on")

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        """The chosen sampler's samples (all None before a successful `probe`)."""
        if self._chosen is None:
            return dict.fromkeys(workloads)
        return self._chosen.sample(workloads)

    def close(self) -> None:
        """Close the counters (if they were opened)."""
        if self._counters is not None:
            self._counters.close()


def perf_cgroup_dirs(cgroup_root: Path, be_group: str) -> Callable[[str], Path]:
    """A BE workload's directory in the perf_event hierarchy under ``cgroup_root``: the v1
    ``perf_event`` hierarchy when mounted, else the cgroup2 mount (``unified`` on a hybrid
    host, the root itself on a v2 host), where perf_event is implicit. Resolved at each
    call (blocking: call it through ``execute``)."""

    def directory(workload: str) -> Path:
        base = cgroup_root
        for mount in (cgroup_root / "perf_event", cgroup_root / "unified"):
            if mount.is_dir():
                base = mount
                break
        return base / be_group / workload

    return directory


@dataclass(frozen=True, slots=True)
class DcatAvailability:
    """Whether dCat runs, which signal drives it, and why not."""

    running: bool
    why: str = ""
    signal: str = ""


@dataclass(frozen=True, slots=True)
class DcatWorkload:
    """One workload as /status and metrics show it: ``ways`` and ``mask`` are what the
    actuator wrote (None before the first write)."""

    workload: str
    category: Category
    reason: str
    ways: int | None
    mask: int | None


@dataclass(frozen=True, slots=True)
class DcatSnapshot:
    """dCat's part of the metrics."""

    enabled: bool
    running: bool
    workloads: tuple[DcatWorkload, ...] = ()
    refused: int = 0


def check(
    *,
    description: ActuatorDescription | None,
    cache: CacheSettings,
    sampler: SamplerStatus,
) -> DcatAvailability:
    """Whether dCat can run on this actuator, ladder and signal (see the module
    docstring); ``why`` lists every missing piece."""
    missing: list[str] = []
    if description is None:
        missing.append("the actuator does not say whether it can set per-workload ways")
    elif Capability.WORKLOAD_WAYS not in description.can:
        why = description.cannot.get(Capability.WORKLOAD_WAYS, "not offered")
        missing.append(f"per-workload ways cannot be set ({description.kind}): {why}")
    if not cache.total_ways:
        missing.append(
            "cache.total_ways is 0: BE has no LLC ways for dCat to divide (set it to the "
            "host's info/L3/cbm_mask width where resctrl is mounted)"
        )
    if not sampler.available:
        missing.append(f"no performance signal per BE workload: {sampler.reason}")
    if missing:
        return DcatAvailability(False, "; ".join(missing))
    return DcatAvailability(True, sampler.reason, sampler.signal)


@dataclass
class DcatRunner:
    """dCat's state between periods (see the module docstring). Not thread-safe: only the
    runtime's event loop touches it; the sampler runs through ``execute``."""

    settings: DcatSettings
    sampler: PerfSampler
    state: DcatState = field(default_factory=DcatState)
    availability: DcatAvailability | None = None
    """None until `set_availability` (the runtime checks before its first period)."""
    written: dict[str, int] = field(default_factory=dict)
    """Workload -> the mask the actuator last wrote."""
    refused: int = 0
    last_error: str | None = None

    @property
    def running(self) -> bool:
        """True once the check found everything dCat needs."""
        return self.availability is not None and self.availability.running

    def set_availability(self, availability: DcatAvailability, cache: CacheSettings) -> None:
        """Record the check; ``min_ways`` is raised to the host's (``cache.min_ways``)."""
        self.availability = availability
        if cache.total_ways and cache.min_ways > self.settings.min_ways:
            self.settings = replace(self.settings, min_ways=cache.min_ways)

    def step(
        self, *, budget: int, samples: Mapping[str, PerfSample | None]
    ) -> SetWorkloadWays | None:
        """One period on ``budget`` (BE's ways): the action due, if any (see
        `corral.control.dcat.dcat_actions`, compared with what was written)."""
        self.state, action = dcat_actions(
            self.settings, self.state, budget=budget, samples=samples, written=self.written
        )
        return action

    def confirm(self, action: SetWorkloadWays, error: str | None) -> None:
        """What the actuator did with ``action``: written (its grants replace the last
        ones) or refused (kept for /status; the next period writes again)."""
        if error is not None:
            self.refused += 1
            self.last_error = error
            return
        self.written = {g.workload: g.mask for g in action.grants}
        self.last_error = None

    def current(self, reason: str) -> SetWorkloadWays | None:
        """The last written masks as one action (to write them again), None if none."""
        if not self.written:
            return None
        grants = tuple(WayGrant(w, m) for w, m in sorted(self.written.items()))
        return SetWorkloadWays(grants, f"dcat: {reason}")

    def workloads(self) -> tuple[DcatWorkload, ...]:
        """Each workload's category and reason, with the ways and mask written for it."""
        out = []
        for wid, w in self.state.workloads:
            mask = self.written.get(wid)
            ways = None if mask is None else mask.bit_count()
            out.append(DcatWorkload(wid, w.category, w.reason, ways, mask))
        return tuple(out)

    def status(self) -> dict[str, Any]:
        """The JSON form for /status."""
        availability = self.availability
        if availability is None:
            return {"enabled": True, "running": False, "why": "not checked yet (first period)"}
        if not availability.running:
            return {"enabled": True, "running": False, "why": availability.why}
        shared = layout(self.settings, self.state).shared
        return {
            "enabled": True,
            "running": True,
            "signal": availability.signal,
            "note": availability.why,
            "budget_ways": self.state.budget,
            "shared": shared,
            "workloads": {
                w.workload: {
                    "category": str(w.category),
                    "ways": w.ways,
                    "mask": None if w.mask is None else f"{w.mask:#x}",
                    "reason": w.reason,
                }
                for w in self.workloads()
            },
            "refused": self.refused,
            "last_error": self.last_error,
        }

    def snapshot(self) -> DcatSnapshot:
        """Values for the metrics collector."""
        return DcatSnapshot(True, self.running, self.workloads(), self.refused)
