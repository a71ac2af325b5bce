"""Waiting in tests for something a real process does in its own time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_for(
    what: str, probe: Callable[[], Any], *, timeout_s: float = 60.0, interval_s: float = 0.1
) -> Any:
    """The first truthy value ``probe`` returns, polled every ``interval_s``; an
    `AssertionError` naming ``what`` and the last value after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
