"""List-and-watch of one collection, kept as a local cache (an informer).

* resumes from the last ``resourceVersion`` it saw (events and bookmarks) after the server
  ends a watch or the connection drops, reconnecting with jittered exponential backoff;
* relists when the server answers 410 Gone (the version was compacted away), emitting a
  ``DELETED`` change for every cached object that vanished meanwhile, so nothing is missed;
* asks for bookmarks (``allowWatchBookmarks``), which move the version forward on quiet
  collections so a resume rarely needs a relist;
* lists in pages (``limit``/``continue``), restarting the list when the continue token expired.

The consumer's ``on_change`` is called on the event loop for every change and must not block.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from corral.kube.client import ApiError, ConnectionFailedError, KubeClient

log = logging.getLogger(__name__)

GONE: Final = 410


class ChangeType(StrEnum):
    """What happened to an object (``SYNCED``: a full list was just applied)."""

    ADDED = "ADDED"
    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    SYNCED = "SYNCED"


@dataclass(frozen=True, slots=True)
class Change:
    """One change of the cache; ``obj`` is the object (the last known one for DELETED;
    empty for SYNCED)."""

    type: ChangeType
    key: str
    obj: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``initial_s`` doubling to ``max_s``, each drawn in [d/2, d]."""

    initial_s: float = 0.2
    max_s: float = 30.0

    def delay(self, attempt: int, rng: random.Random) -> float:
        """The delay before reconnect number ``attempt`` (0-based)."""
        ceiling = min(self.max_s, self.initial_s * 2 ** min(attempt, 30))
        return rng.uniform(ceiling / 2, ceiling)


def object_key(obj: Mapping[str, Any]) -> str:
    """``namespace/name`` (or ``name`` for cluster-scoped objects)."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def resource_version(obj: Mapping[str, Any]) -> str | None:
    """The object's ``metadata.resourceVersion``."""
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return None if value is None else str(value)


class Informer:
    """The cache of the collection at ``path`` (``params``: fieldSelector, labelSelector).
    Run `run` as a task; `synced` is set after the first full list."""

    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_change: Callable[[Change], None],
        *,
        params: Mapping[str, str] | None = None,
        backoff: Backoff | None = None,
        watch_timeout_s: int = 300,
        page_limit: int = 500,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.params = dict(params or {})
        self.cache: dict[str, Mapping[str, Any]] = {}
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.relists = 0
        self.reconnects = 0
        self.bookmarks = 0
        self.last_error: str | None = None
        self._on_change = on_change
        self._backoff = backoff or Backoff()
        self._watch_timeout_s = watch_timeout_s
        self._page_limit = page_limit
        self._rng = rng or random.Random()

    async def run(self) -> None:
        """List, then watch forever (until cancelled), resuming and relisting as needed."""
        failures = 0
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                await self._watch()
                failures = 0  # the server closed a healthy watch: resume at once
            except ApiError as err:
                if err.status == GONE:
                    log.info("kube.watch.gone", extra={"path": self.path, "why": err.message})
                    self.resource_version = None
                    continue
                failures = await self._pause(failures, str(err))
            except (ConnectionFailedError, ValueError) as err:
                failures = await self._pause(failures, str(err))

    async def _pause(self, failures: int, why: str) -> int:
        self.last_error = why
        self.reconnects += 1
        delay = self._backoff.delay(failures, self._rng)
        log.warning("kube.watch.retry", extra={"path": self.path, "why": why, "in_s": delay})
        await asyncio.sleep(delay)
        return failures + 1

    async def _list_all(self) -> tuple[list[Mapping[str, Any]], str]:
        items: list[Mapping[str, Any]] = []
        cont = ""
        while True:
            params: dict[str, str | int] = {**self.params, "limit": self._page_limit}
            if cont:
                params["continue"] = cont
            try:
                page = await self.client.get(self.path, **params)
            except ApiError as err:
                if err.status == GONE and cont:
                    items, cont = [], ""  # the continue token expired: list again
                    continue
                raise
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            cont = str(meta.get("continue") or "")
            if not cont:
                return items, str(meta.get("resourceVersion") or "")

    async def _relist(self) -> None:
        items, version = await self._list_all()
        self.relists += 1
        fresh = {object_key(obj): obj for obj in items}
        for key in [k for k in self.cache if k not in fresh]:
            gone = self.cache.pop(key)
            self._emit(Change(ChangeType.DELETED, key, gone))
        for key, obj in fresh.items():
            before = self.cache.get(key)
            self.cache[key] = obj
            if before is None:
                self._emit(Change(ChangeType.ADDED, key, obj))
            elif resource_version(before) != resource_version(obj):
                self._emit(Change(ChangeType.MODIFIED, key, obj))
        self.resource_version = version
        self.synced.set()
        self._emit(Change(ChangeType.SYNCED, "", {}))

    async def _watch(self) -> None:
        params: dict[str, str | int] = {
            **self.params,
            "resourceVersion": self.resource_version or "",
            "allowWatchBookmarks": "true",
        }
        async for event in self.client.watch(self.path, timeout_s=self._watch_timeout_s, **params):
            self._handle(event)

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            code = int(obj.get("code") or 0)
            raise ApiError(code, str(obj.get("reason") or ""), str(obj.get("message") or ""))
        version = resource_version(obj)
        if kind == "BOOKMARK":
            self.bookmarks += 1
            self.resource_version = version or self.resource_version
            return
        key = object_key(obj)
        if kind == "DELETED":
            self.cache.pop(key, None)
            self._emit(Change(ChangeType.DELETED, key, obj))
        elif kind in ("ADDED", "MODIFIED"):
            known = key in self.cache
            self.cache[key] = obj
            self._emit(Change(ChangeType.MODIFIED if known else ChangeType.ADDED, key, obj))
        self.resource_version = version or self.resource_version

    def _emit(self, change: Change) -> None:
        try:
            self._on_change(change)
        except Exception:
            log.exception("kube.watch.listener_failed", extra={"key": change.key})
