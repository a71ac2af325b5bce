"""CPU usage sampling: read each workload's cumulative CPU time from its cgroup, turn
deltas into cores, and average them into windows the predictor reads from SQLite.

Reading is `corral.enforce.usage.UsageReader` (v1 ``cpuacct.usage`` wherever the layout
mounts cpuacct, else v2 ``cpu.stat`` ``usage_usec``); `read_usages` reads a round of
workloads (blocking: run it in a worker thread). `UsageSampler.record` takes that round:
it stores finished windows, keeps each workload's `UsageCoverage` (sampled, pending or
no data, with the reason) for /status and metrics, and logs ``agent.usage_missing`` once
per workload and reason when a placed workload yields no reading.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from corral.agent.state import UsageRow
from corral.enforce.usage import CpuUsage, NoUsage, NoUsageReason, UsageReader, UsageResult

log = logging.getLogger(__name__)


def read_usages(reader: UsageReader, targets: Mapping[str, str | None]) -> dict[str, UsageResult]:
    """One round of readings: ``{workload id: cgroup}`` -> each workload's `CpuUsage` or
    `NoUsage` (a None cgroup, a workload whose container is not found yet, gives
    `NoUsageReason.NOT_LOCATED`). Blocking file reads; never raises for cgroup races."""
    out: dict[str, UsageResult] = {}
    for wid, cgroup in targets.items():
        if cgroup is None:
            out[wid] = NoUsage(None, NoUsageReason.NOT_LOCATED, "its cgroup is not located yet")
        else:
            out[wid] = reader.read(cgroup)
    return out


class Coverage(StrEnum):
    """Whether a workload's usage is being sampled."""

    SAMPLED = "sampled"  # a rate was computed at the last reading
    PENDING = "pending"  # one reading so far: the rate comes with the next one
    NO_DATA = "no-data"  # no reading: see the reason


@dataclass(frozen=True, slots=True)
class UsageCoverage:
    """One workload's sampling state, for /status and metrics.

    ``cores`` is the latest rate (None unless sampled); ``sampled_at_s`` when the last rate
    was computed (kept through a no-data spell, for diagnosis); ``source`` the file read;
    ``reason`` and ``detail`` say why there is no data.
    """

    workload_id: str
    state: Coverage
    cores: float | None = None
    sampled_at_s: float | None = None
    source: str | None = None
    reason: NoUsageReason | None = None
    detail: str = ""

    @property
    def sampled(self) -> bool:
        """True when the workload has a current rate."""
        return self.state is Coverage.SAMPLED

    def to_json(self) -> dict[str, object]:
        """JSON for /status."""
        return {
            "state": str(self.state),
            "cores": None if self.cores is None else round(self.cores, 4),
            "sampled_at_s": self.sampled_at_s,
            "source": self.source,
            "reason": None if self.reason is None else str(self.reason),
            "detail": self.detail,
        }


def coverage_counts(coverage: Mapping[str, UsageCoverage]) -> dict[Coverage, int]:
    """How many workloads are in each `Coverage` state (every state present, 0 if none):
    the values of a ``corral_usage_workloads{state=...}`` gauge."""
    counts = Counter(c.state for c in coverage.values())
    return {state: counts.get(state, 0) for state in Coverage}


@dataclass
class _Series:
    last_t: float
    last_ns: int
    window_start: float
    busy_ns: int = 0
    span_s: float = 0.0


@dataclass
class UsageSampler:
    """Turns cumulative readings into utilisation. Pure: time and readings come in.

    `observe` takes ``{workload id: (usage_ns, capacity_cores)}`` at time ``now`` and returns
    the rows to store: one per workload each time ``downsample_s`` has passed since its
    window opened, holding the mean cores over the window. `record` does the same from a
    round of `UsageResult` values and also keeps `coverage`.
    """

    downsample_s: float
    latest: dict[str, float] = field(default_factory=dict)
    _series: dict[str, _Series] = field(default_factory=dict)
    _coverage: dict[str, UsageCoverage] = field(default_factory=dict)
    _sources: dict[str, str] = field(default_factory=dict)
    _warned: dict[str, set[NoUsageReason]] = field(default_factory=dict)

    def observe(self, now: float, readings: Mapping[str, tuple[int, float]]) -> list[UsageRow]:
        """Account one round of readings; forget workloads that are no longer read."""
        rows: list[UsageRow] = []
        for gone in set(self._series) - set(readings):
            del self._series[gone]
            self.latest.pop(gone, None)
        for wid, (usage_ns, capacity) in readings.items():
            series = self._series.get(wid)
            if series is None or usage_ns < series.last_ns or now <= series.last_t:
                # First reading, or the counter went back (cgroup re-created): restart.
                self._series[wid] = _Series(now, usage_ns, now)
                self.latest.pop(wid, None)
                continue
            delta_ns = usage_ns - series.last_ns
            delta_s = now - series.last_t
            self.latest[wid] = delta_ns / 1e9 / delta_s
            series.busy_ns += delta_ns
            series.span_s += delta_s
            series.last_t, series.last_ns = now, usage_ns
            if now - series.window_start >= self.downsample_s and series.span_s > 0:
                rows.append(UsageRow(wid, now, series.busy_ns / 1e9 / series.span_s, capacity))
                series.window_start, series.busy_ns, series.span_s = now, 0, 0.0
        return rows

    def record(
        self,
        now: float,
        results: Mapping[str, UsageResult],
        capacities: Mapping[str, float],
    ) -> list[UsageRow]:
        """Account one round from `read_usages` (``results`` should hold every placed
        workload; ``capacities`` their CPU requests, cores) and return the rows to store.

        A workload that changes source (another file) restarts its series instead of
        reading the jump as usage. Workloads absent from ``results`` are forgotten."""
        for gone in set(self._coverage) - set(results):
            self._forget(gone)
        readings: dict[str, tuple[int, float]] = {}
        for wid, result in results.items():
            if isinstance(result, CpuUsage):
                if self._sources.get(wid, result.path) != result.path:
                    self._series.pop(wid, None)
                self._sources[wid] = result.path
                readings[wid] = (result.ns, capacities.get(wid, 0.0))
            else:
                self._sources.pop(wid, None)
        rows = self.observe(now, readings)
        for wid, result in results.items():
            self._coverage[wid] = self._covered(wid, result, now)
        return rows

    def coverage(self) -> dict[str, UsageCoverage]:
        """Every recorded workload's `UsageCoverage`, by id."""
        return dict(sorted(self._coverage.items()))

    def _covered(self, wid: str, result: UsageResult, now: float) -> UsageCoverage:
        before = self._coverage.get(wid)
        last = None if before is None else before.sampled_at_s
        if isinstance(result, NoUsage):
            self._warn_once(wid, result)
            return UsageCoverage(
                wid, Coverage.NO_DATA, None, last, None, result.reason, result.detail
            )
        cores = self.latest.get(wid)
        if cores is None:
            return UsageCoverage(wid, Coverage.PENDING, None, last, result.path)
        if before is not None and before.state is Coverage.NO_DATA:
            log.info("agent.usage_recovered", extra={"workload": wid, "source": result.path})
        return UsageCoverage(wid, Coverage.SAMPLED, cores, now, result.path)

    def _warn_once(self, wid: str, result: NoUsage) -> None:
        seen = self._warned.setdefault(wid, set())
        if result.reason in seen:
            return
        seen.add(result.reason)
        log.warning(
            "agent.usage_missing",
            extra={
                "workload": wid,
                "reason": str(result.reason),
                "detail": result.detail,
                "errno": result.errno,
            },
        )

    def _forget(self, wid: str) -> None:
        self._coverage.pop(wid, None)
        self._sources.pop(wid, None)
        self._warned.pop(wid, None)
        self._series.pop(wid, None)
        self.latest.pop(wid, None)
