"""Open-loop HTTP/1.1 load on loopback that does not hide queueing (no coordinated omission).

Arrivals are planned before the run: with `Arrivals.FIXED` (the default) request ``i`` is
due at ``start + i / rate``; with `Arrivals.POISSON` the gaps are exponential with the same
mean (seeded). The sender sleeps until each due time and starts the request then, whatever
the earlier requests are doing; when it wakes late (a busy host) it starts every overdue
request at once. Each request's latency runs from its *due* time to the end of its
response, so time spent waiting for the sender, for a connection or for the server all
counts. Requests run concurrently over a pool of keep-alive connections: an idle one is
reused, otherwise a new one is opened up to ``max_connections``; a request that finds the
pool at its bound with none idle is not sent and counts as dropped by the client.

The run is bounded: ``rate * seconds`` requests, each abandoned ``timeout_s`` after its due
time (a timeout), so it stops by itself at most ``seconds + timeout_s`` after it starts.
The HTTP client is a small hand-written HTTP/1.1 one over `asyncio.open_connection` (much
cheaper per request than a general client, so that the generator is not the bottleneck);
it reads Content-Length and chunked bodies and honours ``Connection: close``. A reused
connection the server had closed while idle is reopened and the request sent again once.
Only 127.0.0.1 and ::1 are accepted as targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Protocol

import numpy as np

from corral.errors import CorralError, InputError

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})
_MAX_HEAD = 64 * 1024


class Arrivals(StrEnum):
    """How due times are spread over the run."""

    FIXED = "fixed"  # one request every 1/rate seconds
    POISSON = "poisson"  # exponential gaps of mean 1/rate (seeded)


class Outcome(StrEnum):
    """What became of one planned request (the classes the report counts)."""

    OK = "2xx"
    OVERLOADED = "429"
    SERVER_ERROR = "5xx"
    OTHER_STATUS = "other"  # any status but 2xx, 429 and 5xx
    TIMEOUT = "timeout"  # no full response within timeout_s of its due time
    ERROR = "error"  # connection refused or broken, or a malformed response
    DROPPED = "dropped"  # not sent: every connection busy and the pool at its bound


def outcome_of(status: int) -> Outcome:
    """The class of an HTTP status code."""
    if 200 <= status < 300:
        return Outcome.OK
    if status == 429:
        return Outcome.OVERLOADED
    if 500 <= status < 600:
        return Outcome.SERVER_ERROR
    return Outcome.OTHER_STATUS


def arrival_offsets(
    rate: float, seconds: float, *, arrivals: Arrivals = Arrivals.FIXED, seed: int = 0
) -> tuple[float, ...]:
    """Due times in seconds after the start, ascending, all below ``seconds``.

    FIXED gives exactly ``floor(rate * seconds)`` requests (``i / rate``); POISSON draws
    exponential gaps of mean ``1 / rate`` from ``seed`` until ``seconds``.
    """
    if not (math.isfinite(rate) and rate > 0):
        raise InputError("rate", f"{rate!r} is not a positive rate", "give requests per second")
    if not (math.isfinite(seconds) and seconds > 0):
        raise InputError("seconds", f"{seconds!r} is not a positive duration", "give seconds")
    if arrivals is Arrivals.FIXED:
        return tuple(i / rate for i in range(math.floor(rate * seconds + 1e-9)))
    rng = random.Random(seed)
    out: list[float] = []
    t = rng.expovariate(rate)
    while t < seconds:
        out.append(t)
        t += rng.expovariate(rate)
    return tuple(out)


def encode_request(method: str, path: str, body: bytes = b"", *, host: str) -> bytes:
    """The bytes of one keep-alive HTTP/1.1 request (JSON body when ``body`` is given)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    elif method in {"PUT", "POST"}:
        head += "Content-Length: 0\r\n"
    return (head + "\r\n").encode() + body


class Clock(Protocol):
    """Monotonic time in seconds and a sleep to an absolute time (injected for tests)."""

    def now(self) -> float:
        """The current time, s."""
        ...

    async def sleep_until(self, when: float) -> None:
        """Return at ``when`` or later."""
        ...

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        """A block that raises `TimeoutError` if it has not finished at ``when``."""
        ...


class LoopClock:
    """The real clock: `time.monotonic` and `asyncio.sleep`."""

    def now(self) -> float:
        """The event loop's monotonic time, s."""
        return asyncio.get_running_loop().time()

    async def sleep_until(self, when: float) -> None:
        """Sleep until ``when`` (returns at once if it has passed)."""
        delay = when - self.now()
        if delay > 0:
            await asyncio.sleep(delay)

    def timeout_at(self, when: float) -> AbstractAsyncContextManager[object]:
        """`asyncio.timeout_at` on the loop's clock."""
        return asyncio.timeout_at(when)


class StaleConnectionError(Exception):
    """A reused connection was closed by the server before it sent any byte of a response."""


class Connection(Protocol):
    """One HTTP/1.1 connection: send a request, return (status, may be reused)."""

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send ``request`` and read the whole response."""
        ...

    async def aclose(self) -> None:
        """Close the connection and wait until its socket is released (idempotent)."""
        ...


Connector = Callable[[], Awaitable[Connection]]


class MalformedResponseError(Exception):
    """The server's bytes are not an HTTP/1.1 response this client understands."""


class HttpConnection:
    """A keep-alive HTTP/1.1 connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.served = 0

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        """Connect to ``host:port`` (loopback only)."""
        if host not in LOOPBACK:
            raise InputError("host", f"{host!r} is not loopback", "use 127.0.0.1 or ::1")
        reader, writer = await asyncio.open_connection(host, port, limit=_MAX_HEAD)
        return cls(reader, writer)

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        """Send ``request``, read the response; `StaleConnectionError` if a reused
        connection turns out closed before any response byte."""
        try:
            self._writer.write(request)
            await self._writer.drain()
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if self.served and not err.partial:
                raise StaleConnectionError from err
            raise
        except (ConnectionResetError, BrokenPipeError) as err:
            if self.served:
                raise StaleConnectionError from err
            raise
        status, headers = _parse_head(head)
        keep = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            await self._read_chunked()
        elif "content-length" in headers:
            await self._reader.readexactly(int(headers["content-length"]))
        elif status not in {204, 304} and not 100 <= status < 200:
            await self._reader.read()  # the body runs to the end of the connection
            keep = False
        self.served += 1
        return status, keep

    async def _read_chunked(self) -> None:
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await self._reader.readuntil(b"\r\n") != b"\r\n":
                    pass  # trailer fields
                return
            await self._reader.readexactly(size + 2)

    async def aclose(self) -> None:
        """Close the socket and wait (at most 1 s) until the transport has let it go."""
        self._writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self._writer.wait_closed()


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise MalformedResponseError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class ConnectionPool:
    """Idle keep-alive connections plus a bound on how many may be open at once."""

    def __init__(self, connect: Connector, *, max_connections: int) -> None:
        if max_connections < 1:
            raise InputError("max_connections", f"{max_connections} < 1", "give at least 1")
        self._connect = connect
        self.max_connections = max_connections
        self._idle: list[Connection] = []
        self.open = 0  # connections open or being opened
        self.opened = 0  # connections opened over the pool's life
        self.peak = 0

    def reserve(self) -> Connection | bool:
        """An idle connection; else True when a new one may be opened (the slot is taken);
        else False (at the bound, none idle)."""
        if self._idle:
            return self._idle.pop()
        if self.open < self.max_connections:
            self.open += 1
            self.peak = max(self.peak, self.open)
            return True
        return False

    async def connect(self) -> Connection:
        """Open a connection for a slot taken by `reserve` (the slot is freed on failure)."""
        try:
            conn = await self._connect()
        except BaseException:
            self.open -= 1
            raise
        self.opened += 1
        return conn

    async def release(self, conn: Connection, *, reusable: bool) -> None:
        """Give a connection back: kept idle when ``reusable``, else closed."""
        if reusable:
            self._idle.append(conn)
        else:
            self.open -= 1
            await conn.aclose()

    async def warm(self, count: int) -> None:
        """Open idle connections before a run until ``count`` are open (within the bound)."""
        while self.open < min(count, self.max_connections):
            self.open += 1
            self.peak = max(self.peak, self.open)
            self._idle.append(await self.connect())

    async def close_all(self) -> None:
        """Close the idle connections."""
        idle, self._idle = self._idle, []
        self.open -= len(idle)
        await asyncio.gather(*(conn.aclose() for conn in idle))


@dataclass(frozen=True, slots=True)
class Record:
    """One planned request: when it was due, sent and done, and its outcome."""

    due: float
    sent: float | None
    done: float | None
    outcome: Outcome
    status: int | None = None

    @property
    def latency(self) -> float | None:
        """Due time to the end of the response, s (None if it never completed)."""
        return None if self.done is None else self.done - self.due


@dataclass(frozen=True, slots=True)
class RunRecords:
    """Everything one open-loop run observed."""

    start: float
    records: tuple[Record, ...]
    connections_opened: int
    connections_peak: int
    retried_stale: int


async def run_open_loop(
    requests: Sequence[bytes],
    offsets: Sequence[float],
    *,
    connect: Connector,
    clock: Clock | None = None,
    max_connections: int = 512,
    timeout_s: float = 10.0,
    warm_connections: int = 4,
) -> RunRecords:
    """Send ``requests[i]`` at ``start + offsets[i]`` (see the module docstring); return a
    record per request once every one has completed, failed, timed out or been dropped."""
    if len(requests) != len(offsets):
        raise InputError("requests", "one request per due time is needed", "pair them up")
    sender = _Sender(
        ConnectionPool(connect, max_connections=max_connections),
        clock or LoopClock(),
        timeout_s,
        len(offsets),
    )
    await sender.pool.warm(warm_connections)
    tasks: set[asyncio.Task[None]] = set()
    start = sender.clock.now()
    try:
        for i, offset in enumerate(offsets):
            due = start + offset
            if sender.clock.now() < due:
                await sender.clock.sleep_until(due)
            slot = sender.pool.reserve()
            if slot is False:
                sender.records[i] = Record(due, None, None, Outcome.DROPPED)
                continue
            conn = None if slot is True else slot
            task = asyncio.create_task(sender.send(i, due, requests[i], conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(set(tasks))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await sender.pool.close_all()
    done = tuple(r for r in sender.records if r is not None)
    if len(done) != len(offsets):
        raise CorralError(f"{len(offsets) - len(done)} planned requests left no record")
    return RunRecords(start, done, sender.pool.opened, sender.pool.peak, sender.stale)


class _Sender:
    """Sends one request on a pooled connection and records what became of it."""

    def __init__(self, pool: ConnectionPool, clock: Clock, timeout_s: float, n: int) -> None:
        self.pool = pool
        self.clock = clock
        self.timeout_s = timeout_s
        self.records: list[Record | None] = [None] * n
        self.stale = 0

    async def send(self, index: int, due: float, request: bytes, conn: Connection | None) -> None:
        """Send ``request`` (on ``conn``, or a new connection for the reserved slot)."""
        sent = self.clock.now()
        try:
            async with self.clock.timeout_at(due + self.timeout_s):
                if conn is None:
                    conn = await self.pool.connect()
                try:
                    status, keep = await conn.exchange(request)
                except StaleConnectionError:
                    stale_conn, conn = conn, None
                    await stale_conn.aclose()
                    self.stale += 1
                    conn = await self.pool.connect()  # same slot: the stale one is gone
                    status, keep = await conn.exchange(request)
        except TimeoutError:
            await self._failed(index, Record(due, sent, None, Outcome.TIMEOUT), conn)
            return
        except (OSError, asyncio.IncompleteReadError, MalformedResponseError, ValueError):
            await self._failed(index, Record(due, sent, None, Outcome.ERROR), conn)
            return
        self.records[index] = Record(due, sent, self.clock.now(), outcome_of(status), status)
        await self.pool.release(conn, reusable=keep)

    async def _failed(self, index: int, record: Record, conn: Connection | None) -> None:
        # Without a connection, ConnectionPool.connect has already given the slot back.
        self.records[index] = record
        if conn is not None:
            await self.pool.release(conn, reusable=False)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """The figures of one scenario at one rate (latencies in ms, of 2xx responses)."""

    scenario: str
    target_rate: float
    seconds: float  # planned length of the schedule
    window_s: float  # start to the last completion
    planned: int
    counts: tuple[tuple[Outcome, int], ...]
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    p99_all_ms: float | None  # every answered request, whatever its status
    p99_429_ms: float | None  # how fast refusals came back
    send_lag_p99_ms: float  # how late the sender started requests (generator health)
    send_lag_max_ms: float
    connections_opened: int
    connections_peak: int
    retried_stale: int
    agent_cpu_cores: float | None = None
    generator_cpu_cores: float | None = None

    def count(self, outcome: Outcome) -> int:
        """How many requests ended with ``outcome``."""
        return dict(self.counts).get(outcome, 0)

    @property
    def answered(self) -> int:
        """Requests that got a full HTTP response (any status)."""
        return sum(
            self.count(o)
            for o in (Outcome.OK, Outcome.OVERLOADED, Outcome.SERVER_ERROR, Outcome.OTHER_STATUS)
        )

    @property
    def achieved_rate(self) -> float:
        """Answered requests per second over the window."""
        return self.answered / self.window_s if self.window_s > 0 else 0.0

    @property
    def ok_rate(self) -> float:
        """2xx responses per second over the window."""
        return self.count(Outcome.OK) / self.window_s if self.window_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """JSON form (counts keyed by outcome class)."""
        return {
            "scenario": self.scenario,
            "target_rate": self.target_rate,
            "seconds": self.seconds,
            "window_s": round(self.window_s, 3),
            "planned": self.planned,
            "achieved_rate": round(self.achieved_rate, 1),
            "ok_rate": round(self.ok_rate, 1),
            "counts": {o.value: self.count(o) for o in Outcome},
            "p50_ms": _r(self.p50_ms),
            "p99_ms": _r(self.p99_ms),
            "max_ms": _r(self.max_ms),
            "p99_all_ms": _r(self.p99_all_ms),
            "p99_429_ms": _r(self.p99_429_ms),
            "send_lag_p99_ms": _r(self.send_lag_p99_ms),
            "send_lag_max_ms": _r(self.send_lag_max_ms),
            "connections_opened": self.connections_opened,
            "connections_peak": self.connections_peak,
            "retried_stale": self.retried_stale,
            "agent_cpu_cores": _r(self.agent_cpu_cores),
            "generator_cpu_cores": _r(self.generator_cpu_cores),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def summarize(run: RunRecords, *, scenario: str, target_rate: float, seconds: float) -> LoadResult:
    """Counts by outcome and latency percentiles (from each request's due time)."""
    records = run.records
    counts = tuple((o, sum(1 for r in records if r.outcome is o)) for o in Outcome)
    ok = _ms(r.latency for r in records if r.outcome is Outcome.OK)
    answered = _ms(r.latency for r in records if r.done is not None)
    refused = _ms(r.latency for r in records if r.outcome is Outcome.OVERLOADED)
    lag = _ms(r.sent - r.due for r in records if r.sent is not None)
    ends = [r.done for r in records if r.done is not None]
    ends += [r.due for r in records]  # a run where nothing completed still has a window
    window = max(ends) - run.start if ends else 0.0
    return LoadResult(
        scenario=scenario,
        target_rate=target_rate,
        seconds=seconds,
        window_s=max(window, seconds if ends else 0.0),
        planned=len(records),
        counts=counts,
        p50_ms=_pct(ok, 50),
        p99_ms=_pct(ok, 99),
        max_ms=float(ok.max()) if ok.size else None,
        p99_all_ms=_pct(answered, 99),
        p99_429_ms=_pct(refused, 99),
        send_lag_p99_ms=_pct(lag, 99) or 0.0,
        send_lag_max_ms=float(lag.max()) if lag.size else 0.0,
        connections_opened=run.connections_opened,
        connections_peak=run.connections_peak,
        retried_stale=run.retried_stale,
    )


def _ms(values: Any) -> np.ndarray[Any, np.dtype[np.float64]]:
    return np.fromiter((v * 1000.0 for v in values if v is not None), dtype=np.float64)


def _pct(values: np.ndarray[Any, np.dtype[np.float64]], q: float) -> float | None:
    return float(np.percentile(values, q)) if values.size else None


def measure(
    requests: Sequence[bytes],
    offsets: Sequence[float],
    *,
    host: str,
    port: int,
    scenario: str,
    target_rate: float,
    seconds: float,
    max_connections: int = 512,
    timeout_s: float = 10.0,
    server_cpu: Callable[[], float] | None = None,
) -> LoadResult:
    """Run one open-loop load against ``host:port`` in a fresh event loop and summarise it,
    with the server's CPU (``server_cpu()`` seconds before and after, as cores) and this
    process's own CPU over the same window (the generator's cost)."""
    if host not in LOOPBACK:
        raise InputError("host", f"{host!r} is not loopback", "use 127.0.0.1 or ::1")

    async def connect() -> Connection:
        return await HttpConnection.open(host, port)

    server_before = server_cpu() if server_cpu else 0.0
    cpu_before, wall_before = time.process_time(), time.monotonic()
    run = asyncio.run(
        run_open_loop(
            requests,
            offsets,
            connect=connect,
            max_connections=max_connections,
            timeout_s=timeout_s,
        )
    )
    wall = time.monotonic() - wall_before
    generator = (time.process_time() - cpu_before) / wall
    server = (server_cpu() - server_before) / wall if server_cpu else None
    result = summarize(run, scenario=scenario, target_rate=target_rate, seconds=seconds)
    return replace(result, agent_cpu_cores=server, generator_cpu_cores=generator)
