"""An open-loop latency prober built into corral: TCP connect, HTTP, memcached, redis.

Probes leave on a Poisson schedule at a low fixed rate (default 20/s) whether or not the
previous ones have answered - each in-flight probe has its own connection, taken from a
pool of idle ones or freshly opened - so a stalled service shows up as latency instead of
as fewer samples. Latency is measured from the moment a probe is written; how late the
asyncio timer fired (typically 0.5-1 ms, tens of ms when the host deschedules the VM) is
recorded as the prober's own lag, and a window whose lag exceeds ``noisy_lag_ms`` is
flagged noisy instead of being read as the service's fault.

A probe that is refused, reset, answered wrongly or not answered within ``timeout_s`` is a
*failure*, never a latency sample (a made-up 1000 ms would read as an SLO breach and
disable BE when the service is merely down). The window's percentile is taken with each
failure ranked above every answer (its true latency, if it has one, is at least the
timeout): when the percentile's rank still falls on an answer, that answer is the exact
nearest-rank percentile and the signal is ``ok``; when it falls on a failure the percentile
is unknown and the signal is ``slow`` (every failure was a timeout) or ``failed`` (naming
the last error, e.g. connection refused). Fewer than ``min_samples`` finished probes in the
window (the first seconds) are ``no_data``.

Requests: ``tcp`` - a connect; ``http`` - ``GET <path>`` with keep-alive (the body is read
by Content-Length); ``memcached`` - ``version``; ``redis`` - ``PING``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from corral.control.signals import Observation, Signal, SignalStatus, no_signal
from corral.control.slo import nearest_rank
from corral.errors import InputError

logger = logging.getLogger(__name__)


class ProbeKind(StrEnum):
    """What a probe sends."""

    TCP = "tcp"
    HTTP = "http"
    MEMCACHED = "memcached"
    REDIS = "redis"


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    """Where and how often to probe."""

    kind: ProbeKind
    port: int
    host: str = "127.0.0.1"
    path: str = "/"
    rate_hz: float = 20.0
    """Mean probes per second: enough for a p99 over a 15 s window (300 samples), little
    enough to be no load at all."""
    timeout_s: float = 1.0
    window_s: float = 15.0
    """The SLO window the percentile is computed over."""
    percentile: float = 99.0
    noisy_lag_ms: float = 10.0
    """Prober timer lag above which the window is flagged noisy (the host stalled)."""
    min_samples: int = 10
    """Finished probes (answers and failures) a window needs to be judged: fewer say
    nothing about a tail percentile (at 20/s this is the first half second)."""
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise InputError("probe.port", f"{self.port} is not a TCP port", "use 1..65535")
        if not 0 < self.rate_hz <= 1000:
            raise InputError("probe.rate_hz", f"{self.rate_hz} not in (0, 1000]", "e.g. 20")
        if self.min_samples < 1:
            raise InputError("probe.min_samples", f"{self.min_samples} is below 1", "e.g. 10")
        if self.timeout_s <= 0 or self.window_s <= 0:
            raise InputError(
                "probe.timeout_s", "timeout and window must be positive", "e.g. 1 and 15"
            )
        if self.kind is ProbeKind.HTTP and not self.path.startswith("/"):
            raise InputError("probe.path", f"{self.path!r} must start with /", "e.g. /healthz")


Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class Prober:
    """Runs the probes in a task of its own; `read` summarises the last window."""

    def __init__(
        self,
        settings: ProbeSettings,
        *,
        name: str = "probe",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.name = name
        self._clock = clock
        self._sleep = sleep
        self._samples: deque[tuple[float, float]] = deque()  # (done at, latency ms)
        self._failures: deque[tuple[float, str, bool]] = deque()  # (done at, error, timeout)
        self._lags: deque[tuple[float, float]] = deque()  # (sent at, lag ms)
        self._idle: list[Connection] = []
        self._inflight: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.failed = 0

    async def start(self) -> None:
        """Start probing (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="corral-prober")

    async def stop(self) -> None:
        """Stop probing and close every connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()
        for _, writer in idle:
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def read(self, now: float) -> Observation:
        """The last window's percentile latency and signal status (see `window`)."""
        return self.window(now)

    def window(self, now: float) -> Observation:
        """The percentile latency of the probes finished in the last window, with failures
        ranked above every answer (see the module docstring); cheap, never blocks."""
        s = self.settings
        horizon = now - s.window_s
        for queue in (self._samples, self._failures, self._lags):
            while queue and queue[0][0] < horizon:
                queue.popleft()
        latencies = sorted(lat for _, lat in self._samples)
        failures = len(self._failures)
        total = len(latencies) + failures
        noisy = any(lag > s.noisy_lag_ms for _, lag in self._lags)
        if total < s.min_samples:
            why = (
                f"{total} probes finished in the last {s.window_s:g} s "
                f"(min_samples {s.min_samples})"
            )
            return no_signal(self.name, SignalStatus.NO_DATA, why, noisy=noisy, samples=total)
        rank = nearest_rank(total, s.percentile)
        if rank <= len(latencies):
            latency = latencies[rank - 1]
            return Observation(
                latency_ms=latency,
                samples=total,
                noisy=noisy,
                signals=(Signal(self.name, latency_ms=latency),),
            )
        timeouts = sum(1 for _, _, timed_out in self._failures if timed_out)
        _, error, _ = self._failures[-1]
        where = f"{s.host}:{s.port}"
        if timeouts == failures:
            why = (
                f"p{s.percentile:g} unknown: {failures} of {total} probes of {where} got no "
                f"answer within {s.timeout_s:g} s"
            )
            return no_signal(self.name, SignalStatus.SLOW, why, noisy=noisy, samples=total)
        why = (
            f"{failures} of {total} probes of {where} failed in the last {s.window_s:g} s: {error}"
        )
        return no_signal(self.name, SignalStatus.FAILED, why, noisy=noisy, samples=total)

    async def _run(self) -> None:
        rng = random.Random(self.settings.seed)
        due = self._clock()
        while True:
            due += rng.expovariate(self.settings.rate_hz)
            delay = due - self._clock()
            if delay > 0:
                await self._sleep(delay)
            sent = self._clock()
            self._lags.append((sent, max(0.0, (sent - due) * 1000.0)))
            task = asyncio.create_task(self._probe())
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _probe(self) -> None:
        s = self.settings
        start = self._clock()
        self.sent += 1
        try:
            async with asyncio.timeout(s.timeout_s):
                if s.kind is ProbeKind.TCP:
                    _, writer = await asyncio.open_connection(s.host, s.port)
                    latency = self._clock() - start
                    writer.close()
                else:
                    latency = await self._request()
        except TimeoutError:
            self._fail(f"no answer within {s.timeout_s:g} s", timed_out=True)
            return
        except (OSError, asyncio.IncompleteReadError, ValueError) as err:
            self._fail(str(err) or type(err).__name__, timed_out=False)
            return
        self._samples.append((self._clock(), latency * 1000.0))

    def _fail(self, error: str, *, timed_out: bool) -> None:
        """Count a failed probe (not a latency sample)."""
        self.failed += 1
        self._failures.append((self._clock(), error, timed_out))
        logger.debug("control.probe_failed", extra={"error": error})

    async def _request(self) -> float:
        s = self.settings
        if self._idle:
            reader, writer = self._idle.pop()
        else:
            reader, writer = await asyncio.open_connection(s.host, s.port)
        start = self._clock()
        try:
            reusable = True
            if s.kind is ProbeKind.MEMCACHED:
                writer.write(b"version\r\n")
                line = await reader.readline()
                if not line.startswith(b"VERSION"):
                    raise ValueError(f"memcached answered {line[:40]!r}")
            elif s.kind is ProbeKind.REDIS:
                writer.write(b"PING\r\n")
                line = await reader.readline()
                if not line.startswith(b"+PONG"):
                    raise ValueError(f"redis answered {line[:40]!r}")
            else:
                writer.write(
                    f"GET {s.path} HTTP/1.1\r\nHost: {s.host}\r\n".encode()
                    + b"Connection: keep-alive\r\n\r\n"
                )
                head = await reader.readuntil(b"\r\n\r\n")
                status = head.split(b" ", 2)
                if len(status) < 2 or not status[1].isdigit():
                    raise ValueError(f"not an HTTP response: {head[:40]!r}")
                length = None
                for line in head.split(b"\r\n")[1:]:
                    key, _, value = line.partition(b":")
                    if key.strip().lower() == b"content-length":
                        length = int(value.strip())
                if length is None:
                    reusable = False  # no length: the body runs to close; do not reuse
                elif length:
                    await reader.readexactly(length)
        except BaseException:
            writer.close()  # a half-read connection cannot be reused
            raise
        latency = self._clock() - start
        if reusable:
            self._idle.append((reader, writer))
        else:
            writer.close()
        return latency
