"""The trace formats corral reads, importable without numpy or pandas (the CLI's options)."""

from __future__ import annotations

from enum import StrEnum


class TraceFormat(StrEnum):
    """Trace file formats corral reads."""

    CORRAL = "corral"
    BITBRAINS = "bitbrains"
    GOOGLE = "google"
    SQLITE = "sqlite"
