"""Write the node's NodeResourceTopology and its batch resources, coalesced.

`Publisher` writes when asked (`request`), at most once per ``min_interval_s`` and after a
short settle delay, so a burst of placement changes becomes one or two writes; it also
writes every ``period_s``. The NRT is written with its ``resourceVersion`` (PUT), so a
concurrent writer makes the apiserver answer 409 Conflict instead of one update being lost:
the publisher then reads the object again and retries. An unchanged object is not written.
Node ``status.capacity``/``allocatable`` get ``corral.io/batch-cpu``, ``batch-memory`` (and
``gpu-mem`` when the node has GPUs) by a merge patch of the status subresource, which only
touches those keys.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.client import ApiError, ConnectionFailedError, KubeClient, node_status_path

log = logging.getLogger(__name__)

MAX_CONFLICT_RETRIES = 5


@dataclass(frozen=True, slots=True)
class NodeResources:
    """The extended resources written on the node's status."""

    batch_cpu_millis: int
    batch_memory: int
    gpu_mem_mib: int = 0

    def to_json(self) -> dict[str, str]:
        """The capacity/allocatable entries."""
        values = {
            ann.BATCH_CPU: str(self.batch_cpu_millis),
            ann.BATCH_MEMORY: str(self.batch_memory),
        }
        if self.gpu_mem_mib:
            values[ann.GPU_MEM] = str(self.gpu_mem_mib)
        return values


class NrtWriter:
    """Create or update one NodeResourceTopology, never losing a concurrent update."""

    def __init__(self, client: KubeClient, name: str) -> None:
        self.client = client
        self.name = name
        self.writes = 0
        self.conflicts = 0
        self._last: nrt.NodeResourceTopology | None = None

    @property
    def path(self) -> str:
        """The object's URL path."""
        return f"{nrt.PATH}/{self.name}"

    async def _current(self) -> nrt.NodeResourceTopology | None:
        try:
            return nrt.nrt_from_json(await self.client.get(self.path))
        except ApiError as err:
            if (
                err.status == 404
                and err.reason == "NotFound"
                and "noderesourcetopolog" in err.message
            ):
                return None
            raise

    async def write(self, wanted: nrt.NodeResourceTopology) -> bool:
        """Make the stored object hold ``wanted``'s content; True when it wrote."""
        last = self._last
        if last is not None and last.same_content(wanted):
            return False
        for _ in range(MAX_CONFLICT_RETRIES):
            current = last if last is not None else await self._current()
            try:
                if current is None:
                    stored = await self.client.create(
                        nrt.PATH, replace(wanted, resource_version=None).to_json()
                    )
                else:
                    if current.same_content(wanted) and current.resource_version is not None:
                        self._last = current
                        return False
                    body = replace(wanted, resource_version=current.resource_version).to_json()
                    stored = await self.client.replace(self.path, body)
            except ApiError as err:
                if err.status in (409,):  # Conflict / AlreadyExists: read it again
                    self.conflicts += 1
                    last = None
                    continue
                raise
            self._last = nrt.nrt_from_json(stored)
            self.writes += 1
            return True
        raise ApiError(
            409, "Conflict", f"{self.path}: still conflicting after {MAX_CONFLICT_RETRIES} tries"
        )

    def forget(self) -> None:
        """Read the object again before the next write (someone else may have changed it)."""
        self._last = None


class NodeStatusWriter:
    """Patch corral's extended resources into the node's status."""

    def __init__(self, client: KubeClient, name: str) -> None:
        self.client = client
        self.name = name
        self.writes = 0
        self._last: NodeResources | None = None

    async def write(self, resources: NodeResources) -> bool:
        """Write ``resources`` unless they are what was last written; True when it wrote."""
        if resources == self._last:
            return False
        values = resources.to_json()
        patch = {"status": {"capacity": values, "allocatable": values}}
        await self.client.patch(node_status_path(self.name), patch)
        self._last = resources
        self.writes += 1
        return True

    def forget(self) -> None:
        """Write again next time, even if unchanged."""
        self._last = None


class Publisher:
    """Coalesces publish requests into writes made by ``write`` (an async callable)."""

    def __init__(
        self,
        write: Callable[[], Any],
        *,
        min_interval_s: float,
        period_s: float,
        settle_s: float = 0.3,
    ) -> None:
        self._write = write
        self.min_interval_s = min_interval_s
        self.period_s = period_s
        self.settle_s = settle_s
        self.failures = 0
        self.last_error: str | None = None
        self._dirty = asyncio.Event()
        self._last_s = -float("inf")

    def request(self) -> None:
        """Ask for a write soon (never blocks)."""
        self._dirty.set()

    async def run(self) -> None:
        """Write on request (coalesced) and every ``period_s``, until cancelled."""
        while True:
            try:
                await asyncio.wait_for(self._dirty.wait(), timeout=self.period_s)
                await asyncio.sleep(self.settle_s)
            except TimeoutError:
                pass
            wait = self._last_s + self.min_interval_s - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._dirty.clear()
            self._last_s = time.monotonic()
            try:
                await self._write()
                self.failures = 0
            except (ApiError, ConnectionFailedError) as err:
                self.failures += 1
                self.last_error = str(err)
                log.warning("kube.publish_failed", extra={"error": str(err)})
                self._dirty.set()
                await asyncio.sleep(min(30.0, 0.5 * 2 ** min(self.failures, 6)))
