"""What an apply or a drift check did: values the CLI prints and the agent exports."""

from __future__ import annotations

import errno as errno_names
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Write:
    """One file written: its path, what it held before (None: new), what was written."""

    path: str
    old: str | None
    new: str
    step: str = "set"

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {"path": self.path, "old": self.old, "new": self.new, "step": self.step}


@dataclass(frozen=True, slots=True)
class Failure:
    """A refused operation: the file (or directory), the value, errno and its name."""

    path: str
    value: str
    errno: int
    message: str

    @property
    def errno_name(self) -> str:
        """The symbolic errno (``EINVAL``), or the number when unknown."""
        return errno_names.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        shown = f" {self.value!r}" if self.value else ""
        return f"{self.path}:{shown} {self.errno_name} ({self.message})"

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "path": self.path,
            "value": self.value,
            "errno": self.errno,
            "errno_name": self.errno_name,
            "message": self.message,
        }


@dataclass(frozen=True)
class ApplyReport:
    """Everything an apply did: directories created, files written, files already right,
    and failures. ``dry_run`` reports say what would have been written."""

    created: tuple[str, ...] = ()
    writes: tuple[Write, ...] = ()
    unchanged: int = 0
    failures: tuple[Failure, ...] = ()
    skipped: tuple[str, ...] = ()
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.failures

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "created": list(self.created),
            "writes": [w.to_json() for w in self.writes],
            "unchanged": self.unchanged,
            "failures": [f.to_json() for f in self.failures],
            "skipped": list(self.skipped),
        }


@dataclass(frozen=True, slots=True)
class Difference:
    """A managed file whose content differs from the desired state (actual None: missing)."""

    name: str
    path: str
    expected: str
    actual: str | None

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "name": self.name,
            "path": self.path,
            "expected": self.expected,
            "actual": self.actual,
        }


@dataclass(frozen=True)
class DriftReport:
    """The result of reading back every managed file."""

    checked: int = 0
    differences: tuple[Difference, ...] = ()
    failures: tuple[Failure, ...] = field(default=())

    @property
    def clean(self) -> bool:
        """True when every managed file holds its desired value and all could be read."""
        return not self.differences and not self.failures

    def to_json(self) -> dict[str, object]:
        """JSON form for ``--json`` and the agent API."""
        return {
            "clean": self.clean,
            "checked": self.checked,
            "differences": [d.to_json() for d in self.differences],
            "failures": [f.to_json() for f in self.failures],
        }
