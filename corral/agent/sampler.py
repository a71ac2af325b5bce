"""CPU usage sampling: read each workload's cumulative CPU time from its cgroup, turn
deltas into cores, and average them into windows the predictor reads from SQLite.

Readers: cgroup v1 ``cpuacct/<path>/cpuacct.usage`` (nanoseconds), else cgroup v2
``<path>/cpu.stat`` ``usage_usec`` (microseconds) under the unified mount, or under the
root itself when the root is a pure v2 mount.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from corral.agent.state import UsageRow


def read_usage_ns(cgroup_root: Path, cgroup: str) -> int | None:
    """Cumulative CPU time of ``cgroup`` in ns, or None when no reader finds it (a cgroup
    that does not exist yet, or vanished mid-read, is normal)."""
    rel = cgroup.strip("/")
    v1 = cgroup_root / "cpuacct" / rel / "cpuacct.usage"
    try:
        return int(v1.read_text().strip())
    except (OSError, ValueError):
        pass
    for base in (cgroup_root / "unified", cgroup_root):
        try:
            text = (base / rel / "cpu.stat").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                try:
                    return int(value) * 1000
                except ValueError:
                    return None
    return None


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
    window opened, holding the mean cores over the window.
    """

    downsample_s: float
    latest: dict[str, float] = field(default_factory=dict)
    _series: dict[str, _Series] = field(default_factory=dict)

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
