"""Load schedules and the C generator's per-window records."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Segment = tuple[float, float]  # (seconds, requests/s)


def steps(peak: float, fractions: tuple[float, ...], step_s: float) -> list[Segment]:
    """Constant-rate steps at ``fractions`` of ``peak``."""
    return [(step_s, peak * f) for f in fractions]


def diurnal(peak: float, low: float, high: float, period_s: float) -> list[Segment]:
    """One compressed day in 1 s segments: a raised cosine from ``low`` up to ``high``
    (fractions of peak) and back."""
    out = []
    for i in range(max(1, round(period_s))):
        phase = (i + 0.5) / period_s
        frac = low + (high - low) * (1 - math.cos(2 * math.pi * phase)) / 2
        out.append((1.0, peak * frac))
    return out


def schedule_arg(segments: list[Segment]) -> str:
    """The generator's SCHEDULE argument."""
    return ",".join(f"{d:g}:{r:.0f}" for d, r in segments)


@dataclass(frozen=True, slots=True)
class GenWindow:
    """One window as the generator reported it."""

    index: int
    t: float
    rate: float
    sent: int
    done: int
    dropped: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    lag_max_ms: float
    lag_mean_ms: float
    cpu: float

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> GenWindow:
        """Parse one window line."""

        def ms(key: str) -> float | None:
            value = float(doc[key])
            return None if value < 0 else value

        return cls(
            index=int(doc["window"]),
            t=float(doc["t"]),
            rate=float(doc["rate"]),
            sent=int(doc["sent"]),
            done=int(doc["done"]),
            dropped=int(doc["dropped"]),
            p50_ms=ms("p50_ms"),
            p99_ms=ms("p99_ms"),
            max_ms=ms("max_ms"),
            lag_max_ms=float(doc["lag_max_ms"]),
            lag_mean_ms=float(doc["lag_mean_ms"]),
            cpu=float(doc["cpu"]),
        )


class GenOutput:
    """Tails the generator's stdout file, returning complete new records."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self.windows: list[GenWindow] = []
        self.end: dict[str, Any] | None = None

    def poll(self) -> list[GenWindow]:
        """Windows written since the last poll."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self._offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        cut = data.rfind(b"\n") + 1
        self._offset += cut
        new = []
        for line in data[:cut].splitlines():
            if not line.strip():
                continue
            doc = json.loads(line)
            if "end" in doc:
                self.end = doc
            else:
                window = GenWindow.from_json(doc)
                self.windows.append(window)
                new.append(window)
        return new
