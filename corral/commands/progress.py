"""Progress of long commands: rich bars with ETA on a terminal, nothing otherwise.

The pure packages (placement benchmarks, the predictor) report progress through a plain
callback ``on_progress(step, done, total)``: ``step`` names the phase (one bar each),
``done`` of ``total`` units of that phase are finished. `progress_reporter` binds that
callback to rich on stderr when stderr is a terminal and the command is not printing JSON;
otherwise the callback does nothing, so piped output and ``--json`` stay clean.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

#: What the pure packages call: (phase name, units done, units in the phase).
OnProgress = Callable[[str, int, int], None]


def progress_wanted(*, as_json: bool, stream: TextIO | None = None) -> bool:
    """Whether to draw bars: not under ``--json`` and only when ``stream`` (stderr) is a TTY."""
    target = sys.stderr if stream is None else stream
    if as_json:
        return False
    isatty = getattr(target, "isatty", None)
    return bool(isatty is not None and isatty())


def _ignore(step: str, done: int, total: int) -> None:
    """The callback when no bars are drawn."""


class _Bars:
    """One rich task per phase, created when the phase first reports."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, step: str, done: int, total: int) -> None:
        task = self._tasks.get(step)
        if task is None:
            task = self._progress.add_task(step, total=max(total, 1))
            self._tasks[step] = task
        self._progress.update(task, completed=min(done, total), total=max(total, 1))


@contextmanager
def progress_reporter(*, as_json: bool, stream: TextIO | None = None) -> Iterator[OnProgress]:
    """Yield an ``on_progress(step, done, total)`` callback for the duration of a command.

    On a terminal (``stream``, default stderr, is a TTY) and without ``--json`` it draws one
    bar per step with units done, elapsed time and the estimated time left; bars stay on the
    screen when the block ends, as a record of where the time went. Otherwise the callback
    is a no-op and nothing is written.
    """
    if not progress_wanted(as_json=as_json, stream=stream):
        yield _ignore
        return
    # rich.progress only when bars are drawn: `corral --help` never pays for it.
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    target = sys.stderr if stream is None else stream
    console = Console(file=target, highlight=False)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("elapsed"),
        TimeElapsedColumn(),
        TextColumn("left"),
        TimeRemainingColumn(),
        console=console,
        refresh_per_second=4,
    )
    with progress:
        yield _Bars(progress)
