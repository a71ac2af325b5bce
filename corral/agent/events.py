"""Agent events and the queue that coalesces bursts of them into one decision.

A burst of container starts (hundreds within a second on a serverless host) must become one
placement decision, not hundreds. `CoalescingQueue.next_batch` waits for a first event, then
keeps collecting while events keep arriving within ``window_s`` of each other, but never
longer than ``max_s`` after the first one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from corral.placement.workload import Workload


class EventKind(StrEnum):
    """What happened (design.md section 1, plus update and reconcile)."""

    ADD = "add"
    UPDATE = "update"
    REMOVE = "remove"
    REBALANCE = "rebalance"
    RECONCILE = "reconcile"


@dataclass(eq=False)
class Event:
    """One event. ``reply`` is set when a caller waits for the decision that handles it
    (``waiter`` is its token for the pure core); ``stored`` says whether the workload was
    already committed (as pending) before it was queued. ``revision`` orders writes of one
    workload."""

    kind: EventKind
    workload_id: str | None = None
    workload: Workload | None = None
    revision: int = 0
    stored: bool = False
    reply: asyncio.Future[Any] | None = None
    waiter: int | None = None
    detail: str = ""
    created_s: float | None = None
    at: float = field(default=0.0)


class CoalescingQueue:
    """An unbounded FIFO of events whose consumer takes them in coalesced batches.

    Single consumer; any number of producers on the same event loop. ``clock`` returns
    seconds (the loop's monotonic clock by default).
    """

    def __init__(
        self,
        *,
        window_s: float,
        max_s: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._items: deque[Event] = deque()
        self._arrived = asyncio.Event()
        self._window_s = window_s
        self._max_s = max_s
        self._clock = clock
        self._last_arrival = 0.0

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        """Queue an event (never blocks)."""
        now = self._now()
        event.at = event.at or now
        self._last_arrival = now
        self._items.append(event)
        self._arrived.set()

    async def next_batch(self) -> list[Event]:
        """Wait for at least one event, then coalesce: return every event that arrived until
        the queue has been quiet for ``window_s`` or ``max_s`` passed since the first."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._items[0].at
        while True:
            now = self._now()
            deadline = min(self._last_arrival + self._window_s, first + self._max_s)
            if now >= deadline:
                break
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=deadline - now)
            except TimeoutError:
                break
        batch = list(self._items)
        self._items.clear()
        return batch

    def drain(self) -> list[Event]:
        """Take every queued event at once (at shutdown)."""
        batch = list(self._items)
        self._items.clear()
        return batch
