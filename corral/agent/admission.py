"""Admission control: above a bound the agent answers 429 at once instead of queueing.

`AdmissionMiddleware` is a plain ASGI middleware in front of the API: it counts requests
in progress and refuses a new one beyond ``limit`` with 429, ``Retry-After`` and the API's
error body, so an overloaded agent keeps its latency flat for the requests it takes.
Liveness and readiness (``/healthz``, ``/readyz``) are never refused: a liveness probe must
not kill a healthy agent because it is busy.

`OverloadedError` is what the service raises when its own queue is full (PUT and DELETE
beyond ``max_queued_requests``); the API maps it to the same 429.
"""

from __future__ import annotations

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


class AdmissionMiddleware:
    """Refuses HTTP requests beyond ``limit`` in progress (see the module docstring)."""

    def __init__(self, app: App, *, limit: int, retry_after_s: float = 1.0) -> None:
        self.app = app
        self.limit = limit
        self.retry_after_s = retry_after_s
        self.in_flight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or answer 429 when ``limit`` requests are in progress."""
        if scope["type"] != "http" or scope.get("path") in ALWAYS_ADMITTED:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            self.refused += 1
            error = OverloadedError(
                f"the agent has {self.in_flight} requests in progress (limit {self.limit})",
                retry_after_s=self.retry_after_s,
            )
            await _refuse(send, error)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


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
