"""The ownership marker of a corral cgroup tree: which process, with which state, owns it.

The corral parent cgroup carries an extended attribute, ``trusted.corral.owner`` (cgroupfs
keeps ``trusted.*`` attributes for root on v1 and v2), holding the owner's pid, the start
time of that process (so a recycled pid is not mistaken for the owner) and the state file
it writes. A second agent, or ``corral apply``, reads it before writing anything and
refuses while the owner is alive; a marker whose process is gone is stale and is taken
over, with a log line saying from whom.

`OwnerMark` and `is_alive` are pure over their inputs; `read_mark` / `write_mark` are the
adapters (they take the directory, so tests run them on any filesystem with xattrs).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from corral.errors import CorralError

ATTRIBUTE = "trusted.corral.owner"


class TreeOwnedError(CorralError):
    """Another live process owns the cgroup tree."""


@dataclass(frozen=True, slots=True)
class OwnerMark:
    """Who owns a tree: a process (pid and its start time in clock ticks) and what for."""

    pid: int
    started: int
    role: str
    """``agent`` or ``apply``."""
    state: str
    """The owner's state file (agents), or ``""``."""

    def to_bytes(self) -> bytes:
        """The attribute's value."""
        doc = {"pid": self.pid, "started": self.started, "role": self.role, "state": self.state}
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def parse(cls, raw: bytes) -> OwnerMark | None:
        """The mark in ``raw``, None when it is not one (treated as no mark)."""
        try:
            doc = json.loads(raw)
            return cls(int(doc["pid"]), int(doc["started"]), str(doc["role"]), str(doc["state"]))
        except (ValueError, KeyError, TypeError):
            return None

    def describe(self) -> str:
        """For error messages: ``the agent pid 12 (state /var/lib/corral/state.db)``."""
        state = f" (state {self.state})" if self.state else ""
        return f"the {self.role} pid {self.pid}{state}"


def process_start(pid: int, proc_root: Path = Path("/proc")) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22),
    None when the process does not exist."""
    try:
        text = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = text.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def mark_for(role: str, state: str, *, proc_root: Path = Path("/proc")) -> OwnerMark:
    """The mark of this process."""
    pid = os.getpid()
    return OwnerMark(pid, process_start(pid, proc_root) or 0, role, state)


def is_alive(mark: OwnerMark, proc_root: Path = Path("/proc")) -> bool:
    """True when the marked process still runs (same pid and the same start time)."""
    return process_start(mark.pid, proc_root) == mark.started


def read_mark(directory: Path) -> OwnerMark | None:
    """The mark on ``directory``, None when it has none (or the filesystem has no xattrs)."""
    try:
        return OwnerMark.parse(os.getxattr(directory, ATTRIBUTE))
    except OSError:
        return None


def write_mark(directory: Path, mark: OwnerMark) -> None:
    """Put ``mark`` on ``directory``; `CorralError` naming the directory when refused."""
    try:
        os.setxattr(directory, ATTRIBUTE, mark.to_bytes())
    except OSError as err:
        raise CorralError(
            f"{directory}: cannot set the ownership marker {ATTRIBUTE}: {err.strerror}"
        ) from err


def check_owner(
    directory: Path, me: OwnerMark, proc_root: Path = Path("/proc")
) -> OwnerMark | None:
    """Raise `TreeOwnedError` when another live process owns ``directory``; returns the
    stale mark of a dead owner (to be taken over), else None."""
    mark = read_mark(directory)
    if mark is None or mark.pid == me.pid:
        return None
    if is_alive(mark, proc_root):
        raise TreeOwnedError(
            f"{directory} is owned by {mark.describe()}, which is running; two writers on "
            "one cgroup tree would undo each other's placements"
        )
    return mark
