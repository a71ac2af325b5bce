"""The controller's warnings during a benchmark run, shown as progress notes with their
fields (a bare ``control.signal_lost`` line on stderr says nothing of which source or why).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from corral.bench.colocation.progress import BenchProgress

CONTROL_LOGGER = "corral.control"
FIELDS = ("source", "status", "reason", "action", "error", "workload", "why")
"""The ``extra`` fields the control loop's records carry, shown in this order."""


class NoteHandler(logging.Handler):
    """Each warning of the control loop as one progress note: ``control: <event> (k=v)``."""

    def __init__(self, progress: BenchProgress) -> None:
        super().__init__(logging.WARNING)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        """Hand the record to the progress as a note."""
        fields = ", ".join(
            f"{name}={getattr(record, name)}" for name in FIELDS if hasattr(record, name)
        )
        self.progress.note(f"control: {record.getMessage()}" + (f" ({fields})" if fields else ""))


@contextlib.contextmanager
def control_warnings_as_notes(progress: BenchProgress) -> Iterator[None]:
    """While inside, the control loop's warnings go to ``progress`` (and on to any handler
    the application set up; Python's bare last-resort output no longer shows them)."""
    logger = logging.getLogger(CONTROL_LOGGER)
    handler = NoteHandler(progress)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


class _NotBeforeTheFirstWindow(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "control.signal_lost"


@contextlib.contextmanager
def before_the_first_window() -> Iterator[None]:
    """The tick that applies BE's initial state runs before the client wrote a window:
    its lost signal is expected and not worth a warning."""
    logger = logging.getLogger(f"{CONTROL_LOGGER}.runtime")
    quiet = _NotBeforeTheFirstWindow()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)
