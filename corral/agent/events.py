"""Agent events and the queue that coalesces bursts of them into one decision.

A burst of container starts (hundreds within a second on a serverless host) must become one
placement decision, not hundreds, while a steady stream of API writes must not wait for the
longest window. `CoalescingQueue.next_batch` waits for a first event and collects for
``window_s`` after it; a burst (events less than ``burst_gap_s`` apart) keeps extending the
collection, but never beyond ``max_s`` after the first event. A trickle (a PUT every few
milliseconds or slower) is decided ``window_s`` after its first event instead of being held
to ``max_s`` by each newcomer.
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
        burst_gap_s: float = 0.002,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._items: deque[Event] = deque()
        self._arrived = asyncio.Event()
        self._window_s = window_s
        self._max_s = max_s
        self._burst_gap_s = burst_gap_s
        self._clock = clock
        self._last_arrival = 0.0
        self._burst_until = 0.0  # the window's end as extended by a burst

    def retune(self, *, window_s: float, max_s: float, burst_gap_s: float) -> None:
        """Use these coalescing times (s) from the next batch on (a config reload)."""
        self._window_s, self._max_s, self._burst_gap_s = window_s, max_s, burst_gap_s

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, event: Event) -> None:
        """Queue an event (never blocks)."""
        now = self._now()
        event.at = event.at or now
        if now - self._last_arrival <= self._burst_gap_s:
            self._burst_until = now + self._window_s
        self._last_arrival = now
        self._items.append(event)
        self._arrived.set()

    async def next_batch(self) -> list[Event]:
        """Wait for at least one event, then coalesce: return every event that arrived until
        ``window_s`` after the first (later while a burst goes on, never past ``max_s``)."""
        while not self._items:
            self._arrived.clear()
            await self._arrived.wait()
        first = self._items[0].at
        while True:
            now = self._now()
            window_end = max(first + self._window_s, self._burst_until)
            deadline = min(window_end, first + self._max_s)
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
