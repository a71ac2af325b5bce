"""Admission control: above a bound the agent answers 429 at once instead of queueing.

`AdmissionMiddleware` is a plain ASGI middleware in front of the API: it counts requests
in progress and refuses a new one beyond ``limit`` with 429, ``Retry-After`` and the API's
error body, so an overloaded agent keeps its latency flat for the requests it takes.
Liveness and readiness (``/healthz``, ``/readyz``) are never refused: a liveness probe must
not kill a healthy agent because it is busy.

Counting requests in progress misses the common overload: handlers that never yield
finish one by one while the backlog waits in the sockets. So the middleware also refuses
while the event loop runs late: `LoopLag` wakes every ``interval_s`` and keeps a moving
average of how late it woke; above ``max_lag_s`` new requests get the 429 (cheap to send,
so the loop catches up) instead of queueing behind the backlog.

`OverloadedError` is what the service raises when its own queue is full (PUT and DELETE
beyond ``max_queued_requests``); the API maps it to the same 429.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from corral.errors import CorralError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

ALWAYS_ADMITTED = frozenset({"/healthz", "/readyz"})


class OverloadedError(CorralError):
    """The agent is at its bound; retry after ``retry_after_s``."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The ``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(self.retry_after_s)))


def overloaded_body(message: str) -> bytes:
    """The API's error body for a 429."""
    fix = "retry after the Retry-After delay, or spread the requests out"
    return json.dumps({"detail": message, "field": None, "fix": fix}).encode()


class LoopLag:
    """The event loop's lateness: a moving average of how late a periodic wake-up runs."""

    def __init__(self, *, interval_s: float = 0.01, smoothing: float = 0.2) -> None:
        self.interval_s = interval_s
        self.smoothing = smoothing
        self.lag_s = 0.0

    def observe(self, late_s: float) -> None:
        """Fold in one wake-up that came ``late_s`` after it was due."""
        self.lag_s += self.smoothing * (max(late_s, 0.0) - self.lag_s)

    async def run(self) -> None:
        """Measure until cancelled (a root task of the agent)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(loop.time() - due)


class AdmissionMiddleware:
    """Refuses HTTP requests beyond ``limit`` in progress (see the module docstring)."""

    def __init__(
        self,
        app: App,
        *,
        limit: int,
        lag: LoopLag | None = None,
        max_lag_s: float = 0.1,
        retry_after_s: float = 1.0,
    ) -> None:
        self.app = app
        self.limit = limit
        self.lag = lag
        self.max_lag_s = max_lag_s
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 429 when ``limit`` requests are in progress."""
        if scope["type"] != "http" or scope.get("path") in ALWAYS_ADMITTED:
            await self.app(scope, receive, send)
            return
        why = self._overloaded()
        if why is not None:
            self.refused += 1
            await _refuse(send, OverloadedError(why, retry_after_s=self.retry_after_s))
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    def _overloaded(self) -> str | None:
        if self.in_flight >= self.limit:
            return f"the agent has {self.in_flight} requests in progress (limit {self.limit})"
        if self.lag is not None and self.lag.lag_s > self.max_lag_s:
            lag_ms, max_ms = self.lag.lag_s * 1000, self.max_lag_s * 1000
            return f"the agent is {lag_ms:.0f} ms behind (limit {max_ms:.0f} ms)"
        return None


async def _refuse(send: Send, error: OverloadedError) -> None:
    body = overloaded_body(str(error))
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", error.retry_after.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
