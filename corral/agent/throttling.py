"""CFS bandwidth throttling of a cgroup, read from ``cpu.stat`` of the hierarchy that
serves the cpu controller (`CgroupLayout.hierarchy_of("cpu")`):

* v1 (``cpu`` or ``cpu,cpuacct``): ``nr_periods``, ``nr_throttled``, ``throttled_time``
  (nanoseconds);
* v2 with the cpu controller enabled: ``nr_periods``, ``nr_throttled``, ``throttled_usec``
  (microseconds). A v2 cgroup without the cpu controller has only the ``usage_usec``
  lines: no throttling data, never zeros.

Counters are cumulative since the cgroup was made. `ThrottleReader.read` never raises for
a cgroup that is missing, vanishes or cannot be read (None); blocking file I/O, so it is
called from a worker thread with the usage round (`AgentService.sample`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from corral.enforce.cgroupfs import CgroupFsError, cgroup_dir, read_file
from corral.enforce.detect import CgroupLayout, Hierarchy

_NS_PER_S = 1e9
_US_PER_S = 1e6


@dataclass(frozen=True, slots=True)
class Throttling:
    """Cumulative CFS bandwidth counters of one cgroup: enforcement ``periods`` that
    elapsed with runnable tasks, ``throttled`` periods in which the quota ran out, and
    ``throttled_s`` seconds its tasks spent throttled."""

    periods: int
    throttled: int
    throttled_s: float


def parse_throttling(text: str) -> Throttling | None:
    """The throttling counters of a ``cpu.stat`` (v1 or v2), None when it has none (a v2
    cgroup without the cpu controller); `ValueError` for a line that is not a number."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in ("nr_periods", "nr_throttled", "throttled_time", "throttled_usec"):
            number = int(value.strip())
            if number < 0:
                raise ValueError(f"negative {key} {number}")
            values[key] = number
    if "nr_throttled" not in values or "nr_periods" not in values:
        return None
    if "throttled_time" in values:
        seconds = values["throttled_time"] / _NS_PER_S
    elif "throttled_usec" in values:
        seconds = values["throttled_usec"] / _US_PER_S
    else:
        return None
    return Throttling(values["nr_periods"], values["nr_throttled"], seconds)


class ThrottleReader:
    """Reads `Throttling` of cgroups (paths relative to a hierarchy root) on ``layout``.
    Stateless; blocking file I/O."""

    def __init__(self, layout: CgroupLayout) -> None:
        self._home: Hierarchy | None = layout.hierarchy_of("cpu")

    @property
    def available(self) -> bool:
        """True when some hierarchy serves the cpu controller."""
        return self._home is not None

    def read(self, cgroup: str) -> Throttling | None:
        """The counters of ``cgroup``, or None (no cpu controller, no such cgroup, an
        unreadable or malformed file)."""
        if self._home is None:
            return None
        path = f"{cgroup_dir(self._home.path, cgroup.strip('/'))}/cpu.stat"
        try:
            text = read_file(path)
        except CgroupFsError:
            return None
        if text is None:
            return None
        try:
            return parse_throttling(text)
        except ValueError:
            return None


def read_throttling(
    reader: ThrottleReader, targets: Mapping[str, str | None]
) -> dict[str, Throttling]:
    """``{workload id: cgroup}`` -> the counters of each workload that has them."""
    out: dict[str, Throttling] = {}
    if not reader.available:
        return out
    for wid, cgroup in targets.items():
        if cgroup is None:
            continue
        found = reader.read(cgroup)
        if found is not None:
            out[wid] = found
    return out
