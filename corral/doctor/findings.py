"""The values ``corral doctor`` reports: a finding per check, and the verdict over them.

Pure data: no OS access here. A `Finding` says what one check saw (`status`), what that
means for corral in one line (`summary`) and how to change it (`fix`, a command or a config
line; empty when nothing needs doing). A `Report` adds the verdict the exit code carries:
whether corral can enforce cpusets and CPU isolation on the host, and what blocks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Status(StrEnum):
    """How one check came out."""

    OK = "ok"  # present and usable
    WARN = "warn"  # usable with a cost, or a feature corral does without
    MISSING = "missing"  # absent: the features that need it are off
    ERROR = "error"  # present but broken or refused (a read or write failed)


class Area(StrEnum):
    """The part of the host a check looks at (the table groups by it, in this order)."""

    CGROUPS = "cgroups"
    PRESSURE = "pressure"
    CACHE = "cache/RDT"
    CPU = "cpu"
    KUBELET = "kubelet"
    TOOLS = "tools"
    CLOCK = "clock"


@dataclass(frozen=True)
class Finding:
    """One check's result: its status, what it means for corral and its fix."""

    area: Area
    check: str
    """A stable dotted name, e.g. ``cgroup.controller.cpuset``."""
    status: Status
    summary: str
    """One line: what was seen and what it means for corral."""
    fix: str = ""
    """A command or config line that changes it; empty when nothing needs doing."""
    data: Mapping[str, Any] = field(default_factory=dict)
    """The facts behind the finding, JSON-ready (paths, values read)."""

    def to_document(self) -> dict[str, Any]:
        """The finding as a JSON object."""
        return {
            "area": str(self.area),
            "check": self.check,
            "status": str(self.status),
            "summary": self.summary,
            "fix": self.fix,
            "data": dict(self.data),
        }


@dataclass(frozen=True)
class Report:
    """Every finding plus the verdict: ``can_enforce`` is True when corral can write
    cpusets and CPU isolation here; otherwise ``blockers`` says what stops it."""

    can_enforce: bool
    mode: str
    """How cgroups are mounted: ``v1``, ``v2``, ``hybrid`` or ``none``."""
    findings: tuple[Finding, ...]
    blockers: tuple[str, ...] = ()

    def to_document(self) -> dict[str, Any]:
        """``{"can_enforce", "mode", "blockers", "findings"}`` as JSON-ready data."""
        return {
            "can_enforce": self.can_enforce,
            "mode": self.mode,
            "blockers": list(self.blockers),
            "findings": [f.to_document() for f in self.findings],
        }

    def by_area(self) -> list[tuple[Area, list[Finding]]]:
        """The findings grouped by area, areas in `Area` order, findings in check order."""
        groups = [(area, [f for f in self.findings if f.area is area]) for area in Area]
        return [(area, found) for area, found in groups if found]

    def exit_code(self) -> int:
        """0 when corral can enforce here, 1 when it cannot."""
        return 0 if self.can_enforce else 1
