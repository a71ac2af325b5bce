"""The agent's one effect executor: every kernel and SQLite write, in order, off the loop.

The event loop never blocks on a file, a cgroup or the database: it hands each write to
`EffectExecutor`, a single worker thread that runs them one after another in submission
order. One thread means one writer: the enforcer's cgroup writes, the controller's
actuator and the state store can never interleave inside a file or a transaction, and the
store (a SQLite connection) is only ever used from that thread.

`run` awaits the result (a write whose outcome the caller needs: a commit before an
acknowledgement); `submit` queues a write whose outcome only matters to the log (an event
record), keeping submission order with everything else. A failure of a submitted write is
logged and counted, never lost silently.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class EffectExecutor:
    """One ordered worker thread for the agent's writes (see the module docstring)."""

    def __init__(self, name: str = "corral-effects") -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._lock = threading.Lock()
        self._in_flight = 0
        self.submitted_failures = 0
        self.last_submitted_error = ""

    @property
    def depth(self) -> int:
        """Effects queued or running now."""
        return self._in_flight

    def _wrap(self, fn: Callable[[], T]) -> Callable[[], T]:
        def call() -> T:
            try:
                return fn()
            finally:
                with self._lock:
                    self._in_flight -= 1

        with self._lock:
            self._in_flight += 1
        return call

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the worker after every effect submitted before it; its result or
        its exception comes back to the awaiting coroutine."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._wrap(fn))

    def submit(self, fn: Callable[[], object], *, what: str) -> None:
        """Queue ``fn`` after everything submitted so far without waiting for it; a failure
        is logged as ``agent.effect_failed`` naming ``what`` and counted."""
        future = self._pool.submit(self._wrap(fn))

        def done(f: concurrent.futures.Future[object]) -> None:
            error = f.exception()
            if error is not None:
                self.submitted_failures += 1
                self.last_submitted_error = f"{what}: {error}"
                log.warning("agent.effect_failed", extra={"what": what, "error": str(error)})

        future.add_done_callback(done)

    def close(self) -> None:
        """Finish every queued effect, then stop the worker."""
        self._pool.shutdown(wait=True)
