"""How the colocation benchmark reports progress: notes, and windows done out of expected.

The benchmark only calls these three methods; the CLI draws them (a rich progress bar
with ETA on a terminal) and tests collect them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol


class BenchProgress(Protocol):
    """Receives the benchmark's progress."""

    def note(self, message: str) -> None:
        """A line worth showing (a phase result)."""

    def expect(self, windows: int) -> None:
        """``windows`` more windows are planned (adds to the total)."""

    def advance(self, windows: int, phase: str) -> None:
        """``windows`` windows of ``phase`` are done."""


class NoteProgress:
    """Passes notes to ``sink`` and ignores window counts (tests, plain logs)."""

    def __init__(self, sink: Callable[[str], None] = lambda _: None) -> None:
        self.sink = sink
        self.expected = 0
        self.done = 0

    def note(self, message: str) -> None:
        """Forward ``message`` to the sink."""
        self.sink(message)

    def expect(self, windows: int) -> None:
        """Count the planned windows."""
        self.expected += windows

    def advance(self, windows: int, phase: str) -> None:
        """Count the windows done."""
        self.done += windows
