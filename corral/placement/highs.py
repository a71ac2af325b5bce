"""A HiGHS solver that never writes to stdout.

highspy 1.16 prints a two-line banner on the process's stdout (file descriptor 1, from
C++) the first time a ``Highs()`` is constructed, before any option such as
``output_flag`` can be set; every ``--json`` command then printed it ahead of its JSON.
`quiet_highs` constructs that first solver with descriptor 1 pointed at /dev/null, once
per process and under a lock, then hands out solvers with ``output_flag`` off. This is
the only place the placement package touches the process (its file descriptors): the
solver library gives no other way to keep its banner off stdout.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from typing import Any

import highspy

_lock = threading.Lock()
_primed = threading.Event()


def _flush_c_stdout() -> None:
    # Without a libc to flush through, the banner was written unbuffered already.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).fflush(None)


def _prime() -> None:
    """Construct the process's first ``Highs()`` with stdout discarded."""
    with _lock:
        if _primed.is_set():
            return
        sys.stdout.flush()
        saved = os.dup(1)
        sink = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(sink, 1)
            first = highspy.Highs()  # type: ignore[no-untyped-call]
            first.setOptionValue("output_flag", False)
            _flush_c_stdout()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            os.close(sink)
        _primed.set()


def quiet_highs() -> Any:
    """A new ``highspy.Highs`` with all output off; nothing of HiGHS reaches stdout."""
    if not _primed.is_set():
        _prime()
    solver = highspy.Highs()  # type: ignore[no-untyped-call]
    solver.setOptionValue("output_flag", False)
    return solver
