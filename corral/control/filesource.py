"""LC latency from a file the service (or its load balancer) writes.

The file holds JSON: one object, or JSON lines of which the last complete one counts. The
field names are configured: ``latency_field`` (milliseconds at the SLO percentile over the
SLO window), ``rps_field`` (requests/s, optional), ``noisy_field`` (optional boolean, e.g.
the client saw the host stall), and an optional ``samples`` count. A missing, unreadable
or unparsable file, or one not updated within ``stale_s``, is a ``failed`` signal; a record
without a latency (or with fewer than ``min_samples`` samples) is ``no_data``: the
controller then holds instead of trusting an old number.

The file is read in a worker thread (`asyncio.to_thread`), never on the event loop. A read
that takes longer than ``timeout_s`` (a hung network file system) is ``slow``; the thread
cannot be cancelled, so no second read is started while it still runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from corral.control.signals import Observation, Signal, SignalStatus, no_signal
from corral.errors import InputError


@dataclass
class FileSource:
    """Reads the latest latency record from ``path`` (see the module docstring)."""

    path: Path
    latency_field: str = "p99_ms"
    rps_field: str | None = "rps"
    noisy_field: str | None = "noisy"
    stale_s: float = 5.0
    """A file older than this (by its mtime) is the writer's silence, not a latency."""
    timeout_s: float = 1.0
    """Longest a read may take before the signal counts as slow."""
    min_samples: int = 0
    """Samples a record with a ``samples`` field must hold to be judged (0: any)."""
    name: str = "file"
    wall_clock: Callable[[], float] = field(default=time.time)
    _pending: asyncio.Future[Observation] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.latency_field:
            raise InputError("latency.field", "is empty", "name the JSON field, e.g. p99_ms")
        if not self.timeout_s > 0:
            raise InputError("latency.timeout_s", f"{self.timeout_s} is not positive", "e.g. 1")

    async def read(self, now: float) -> Observation:
        """The observation in the file's last record, read in a worker thread.

        ``now`` is the controller's monotonic time and is not used: staleness compares the
        file's mtime with ``wall_clock``."""
        pending = self._pending
        if pending is None or pending.get_loop() is not asyncio.get_running_loop():
            pending = self._pending = asyncio.ensure_future(asyncio.to_thread(self.read_now))
        try:
            async with asyncio.timeout(self.timeout_s):
                obs = await asyncio.shield(pending)
        except TimeoutError:
            return no_signal(
                self.name, SignalStatus.SLOW, f"no answer within {self.timeout_s:.1f} s"
            )
        self._pending = None
        return obs

    def read_now(self) -> Observation:
        """The observation in the file's last record, read in the calling thread (blocks)."""
        try:
            stat = os.stat(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            return no_signal(self.name, SignalStatus.FAILED, f"{self.path} does not exist")
        except OSError as err:
            return no_signal(
                self.name, SignalStatus.FAILED, f"cannot read {self.path}: {err.strerror or err}"
            )
        age = self.wall_clock() - stat.st_mtime
        if age > self.stale_s:
            why = f"{self.path} not updated for {age:.0f} s (stale_s {self.stale_s:g})"
            return no_signal(self.name, SignalStatus.FAILED, why)
        record = _last_record(data)
        if record is None:
            return no_signal(self.name, SignalStatus.FAILED, f"{self.path} holds no JSON record")
        latency = _number(record.get(self.latency_field))
        rps = _number(record.get(self.rps_field)) if self.rps_field else None
        noisy = bool(record.get(self.noisy_field)) if self.noisy_field else False
        counted = _number(record.get("samples"))
        samples = int(counted) if counted is not None else 0
        if latency is None or latency < 0:
            why = f"no {self.latency_field} in the last record"
            lost = no_signal(self.name, SignalStatus.NO_DATA, why, noisy=noisy)
            return replace(lost, load_rps=rps)
        if counted is not None and samples < self.min_samples:
            why = f"{samples} samples in the last record (min_samples {self.min_samples})"
            lost = no_signal(self.name, SignalStatus.NO_DATA, why, noisy=noisy, samples=samples)
            return replace(lost, load_rps=rps)
        return Observation(
            latency_ms=latency,
            load_rps=rps,
            samples=samples,
            noisy=noisy,
            signals=(Signal(self.name, latency_ms=latency),),
        )


def _last_record(data: bytes) -> dict[str, object] | None:
    text = data.decode(errors="replace").strip()
    if not text:
        return None
    candidates = [text, *reversed(text.splitlines())]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue  # a line being written: take the one before
        if isinstance(value, dict):
            return value
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
