"""The agent's one failure policy.

Two kinds of failure, and one rule for each:

* **Expected** failures are the world misbehaving: a cgroup file refused or gone
  (`OSError`, `CorralError` from an adapter), the state database busy, full or read-only,
  a latency source timing out, the apiserver unreachable. The task that met one records it
  here (`Faults.failed`), waits a capped exponential backoff and tries again; /status and
  the metrics show every open fault with its count and last error, and it closes when the
  same task next succeeds (`Faults.ok`).
* **Programming** errors (anything else: a `TypeError`, a broken invariant) end the agent
  with one clear log line; systemd or the DaemonSet restarts it, and restart is the path
  the crash tests exercise.

`is_expected` is the boundary between the two.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from corral.errors import CorralError

log = logging.getLogger(__name__)


class Task(StrEnum):
    """The agent's root tasks that can meet an expected failure."""

    DECISIONS = "decisions"
    RECONCILE = "reconcile"
    SAMPLER = "sampler"
    STORE = "store"
    CONTROL = "control"


def is_expected(error: BaseException) -> bool:
    """True for failures of the world (retried), False for programming errors (fatal)."""
    return isinstance(error, CorralError | OSError | sqlite3.Error | TimeoutError)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: ``base_s * 2**(n-1)`` after the n-th failure in a row,
    at most ``cap_s``. Defaults: a transient error is retried within a second; a lasting
    one is retried twice a minute, often enough to notice recovery, rarely enough not to
    flood the log."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row (0 for none)."""
        if failures <= 0:
            return 0.0
        return float(min(self.cap_s, self.base_s * 2 ** min(failures - 1, 30)))


@dataclass(frozen=True, slots=True)
class Fault:
    """An open fault of one task."""

    task: Task
    error: str
    since_s: float
    last_s: float
    count: int
    retry_in_s: float

    def to_json(self) -> dict[str, Any]:
        """The /status form."""
        return {
            "task": str(self.task),
            "error": self.error,
            "since_s": self.since_s,
            "last_s": self.last_s,
            "count": self.count,
            "retry_in_s": self.retry_in_s,
        }


class Faults:
    """Open faults by task, and totals for the metrics. Used from the event loop only."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self.backoff = backoff or Backoff()
        self._open: dict[Task, Fault] = {}
        self.totals: dict[Task, int] = {}

    def failed(self, task: Task, error: BaseException, now: float) -> float:
        """Record an expected failure of ``task``; returns the seconds to wait before the
        retry. Logs ``agent.fault`` on the first failure and every tenth after it."""
        current = self._open.get(task)
        count = 1 if current is None else current.count + 1
        delay = self.backoff.delay(count)
        text = f"{type(error).__name__}: {error}"
        since = now if current is None else current.since_s
        self._open[task] = Fault(task, text, since, now, count, delay)
        self.totals[task] = self.totals.get(task, 0) + 1
        if count == 1 or count % 10 == 0:
            log.warning(
                "agent.fault",
                extra={"task": str(task), "error": text, "count": count, "retry_in_s": delay},
            )
        return delay

    def ok(self, task: Task, now: float) -> None:
        """``task`` succeeded: close its fault (logged as ``agent.fault_cleared``)."""
        fault = self._open.pop(task, None)
        if fault is not None:
            log.info(
                "agent.fault_cleared",
                extra={"task": str(task), "count": fault.count, "for_s": now - fault.since_s},
            )

    def open(self) -> list[Fault]:
        """The open faults, by task name."""
        return [self._open[t] for t in sorted(self._open)]

    def count(self, task: Task) -> int:
        """Failures in a row of ``task`` (0 when it is healthy)."""
        fault = self._open.get(task)
        return 0 if fault is None else fault.count
