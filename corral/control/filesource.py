"""LC latency from a file the service (or its load balancer) writes.

The file holds JSON: one object, or JSON lines of which the last complete one counts. The
field names are configured: ``latency_field`` (milliseconds at the SLO percentile over the
SLO window), ``rps_field`` (requests/s, optional), ``noisy_field`` (optional boolean, e.g.
the client saw the host stall). A file not updated within ``stale_s`` gives no latency:
the controller then holds instead of trusting an old number.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from corral.control.signals import Observation
from corral.errors import InputError


@dataclass(frozen=True, slots=True)
class FileSource:
    """Reads the latest latency record from ``path`` (see the module docstring)."""

    path: Path
    latency_field: str = "p99_ms"
    rps_field: str | None = "rps"
    noisy_field: str | None = "noisy"
    stale_s: float = 5.0
    wall_clock: Callable[[], float] = field(default=time.time)

    def __post_init__(self) -> None:
        if not self.latency_field:
            raise InputError("latency.field", "is empty", "name the JSON field, e.g. p99_ms")

    def read(self, now: float) -> Observation:
        """The observation in the file's last record (empty when missing or stale).

        ``now`` is the controller's monotonic time and is not used: staleness compares the
        file's mtime with ``wall_clock``."""
        try:
            stat = os.stat(self.path)
            data = self.path.read_bytes()
        except FileNotFoundError:
            return Observation()
        if self.wall_clock() - stat.st_mtime > self.stale_s:
            return Observation()
        record = _last_record(data)
        if record is None:
            return Observation()
        latency = _number(record.get(self.latency_field))
        rps = _number(record.get(self.rps_field)) if self.rps_field else None
        noisy = bool(record.get(self.noisy_field)) if self.noisy_field else False
        samples = _number(record.get("samples"))
        return Observation(
            latency_ms=latency if latency is not None and latency >= 0 else None,
            load_rps=rps,
            samples=int(samples) if samples is not None else 0,
            noisy=noisy,
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
