"""Kubernetes Events about pods (core/v1), written in the background.

`EventRecorder.record` never blocks and never raises: events are queued (at most
`MAX_QUEUED`; past that the oldest are dropped and counted) and one task writes them. A
repeat of the same (object, reason, message) bumps the count of the Event already written,
as kubelet's recorder does, instead of creating another.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from corral.kube.client import ApiError, ConnectionFailedError, KubeClient, events_path

log = logging.getLogger(__name__)

MAX_QUEUED: Final = 1000
MAX_REMEMBERED: Final = 4096
MAX_MESSAGE: Final = 1024


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Involved:
    """The object an Event is about."""

    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str = "v1"

    @classmethod
    def of(cls, obj: Mapping[str, Any], kind: str = "Pod") -> Involved:
        """The reference to ``obj`` (a Pod by default)."""
        meta = obj.get("metadata") or {}
        return cls(
            kind,
            str(meta.get("namespace") or "default"),
            str(meta.get("name")),
            str(meta.get("uid") or ""),
        )


@dataclass(frozen=True, slots=True)
class _Pending:
    involved: Involved
    reason: str
    message: str
    type: str


class EventRecorder:
    """Writes Events as ``component`` on ``host``. Run `run` as a task."""

    def __init__(self, client: KubeClient, *, component: str, host: str) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.written = 0
        self.dropped = 0
        self.failed = 0
        self._queue: deque[_Pending] = deque()
        self._wake = asyncio.Event()
        self._seen: OrderedDict[tuple[str, str, str, str], tuple[str, int]] = OrderedDict()

    def record(
        self, involved: Involved, reason: str, message: str, *, type: str = "Normal"
    ) -> None:
        """Queue an Event (``type`` Normal or Warning)."""
        if len(self._queue) >= MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(_Pending(involved, reason, message[:MAX_MESSAGE], type))
        self._wake.set()

    async def flush(self) -> None:
        """Return once every queued Event was written (or given up)."""
        while self._queue:
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        """Write queued Events until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                pending = self._queue[0]
                try:
                    await self._write(pending)
                    self.written += 1
                except (ApiError, ConnectionFailedError) as err:
                    self.failed += 1
                    log.warning(
                        "kube.event_failed", extra={"reason": pending.reason, "error": str(err)}
                    )
                self._queue.popleft()

    async def _write(self, p: _Pending) -> None:
        inv = p.involved
        key = (inv.uid or f"{inv.namespace}/{inv.name}", p.reason, p.message, p.type)
        now = _now()
        seen = self._seen.get(key)
        if seen is not None:
            name, count = seen
            try:
                await self.client.patch(
                    f"{events_path(inv.namespace)}/{name}",
                    {"count": count + 1, "lastTimestamp": now},
                )
                self._remember(key, name, count + 1)
                return
            except ApiError as err:
                if err.status != 404:
                    raise
        name = f"{inv.name}.{secrets.token_hex(8)}"[:253]
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": inv.namespace},
            "involvedObject": {
                "kind": inv.kind,
                "namespace": inv.namespace,
                "name": inv.name,
                "uid": inv.uid,
                "apiVersion": inv.api_version,
            },
            "reason": p.reason,
            "message": p.message,
            "type": p.type,
            "source": {"component": self.component, "host": self.host},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.host,
        }
        await self.client.create(events_path(inv.namespace), body)
        self._remember(key, name, 1)

    def _remember(self, key: tuple[str, str, str, str], name: str, count: int) -> None:
        self._seen[key] = (name, count)
        self._seen.move_to_end(key)
        while len(self._seen) > MAX_REMEMBERED:
            self._seen.popitem(last=False)
