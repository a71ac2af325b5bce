"""The open-loop load generator: due times, latency counted from them (a stalled server or
a late sender shows as growing latency, never as fewer requests), the connection bound and
client drops, timeouts, the HTTP/1.1 client on a real loopback server, and a quick
``corral bench agent --mode open`` against a real agent subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
import math
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest

from corral.bench.openloop import (
    Arrivals,
    Connection,
    HttpConnection,
    Outcome,
    StaleConnectionError,
    arrival_offsets,
    encode_request,
    outcome_of,
    run_open_loop,
    summarize,
)
from corral.errors import InputError

# --- a fake clock that jumps to the next timer once everything runnable has run ---------


class FakeClock:
    """Virtual time for `run_open_loop`: `drive` advances to the earliest timer whenever
    every task is blocked on this clock."""

    def __init__(self) -> None:
        self.t = 0.0
        self._timers: list[list[Any]] = []  # [when, seq, callback, active]
        self._seq = itertools.count()

    def now(self) -> float:
        return self.t

    def _at(self, when: float, callback: Callable[[], None]) -> list[Any]:
        entry = [when, next(self._seq), callback, True]
        heapq.heappush(self._timers, entry)
        return entry

    async def sleep_until(self, when: float) -> None:
        if when <= self.t:
            await asyncio.sleep(0)
            return
        future = asyncio.get_running_loop().create_future()
        self._at(when, lambda: future.done() or future.set_result(None))
        await future

    @asynccontextmanager
    async def timeout_at(self, when: float) -> AsyncIterator[None]:
        task = asyncio.current_task()
        assert task is not None
        fired = [False]

        def fire() -> None:
            fired[0] = True
            task.cancel()

        entry = self._at(when, fire)
        try:
            yield
        except asyncio.CancelledError:
            if fired[0]:
                task.uncancel()
                raise TimeoutError from None
            raise
        finally:
            entry[3] = False

    def drive(self, coro: Coroutine[Any, Any, Any]) -> Any:
        async def main() -> Any:
            task = asyncio.ensure_future(coro)
            while not task.done():
                for _ in range(50):  # let every runnable task run until it blocks
                    await asyncio.sleep(0)
                while self._timers and not self._timers[0][3]:
                    heapq.heappop(self._timers)
                if task.done():
                    break
                assert self._timers, "deadlock: nothing runnable and no timer"
                self.t = max(self.t, self._timers[0][0])
                while self._timers and self._timers[0][0] <= self.t:
                    entry = heapq.heappop(self._timers)
                    if entry[3]:
                        entry[2]()
            return task.result()

        return asyncio.run(main())


class LateClock(FakeClock):
    """Wakes the sender ``stall_s`` late once, from the first sleep aimed at ``stall_at``
    or later (a host that descheduled the generator)."""

    def __init__(self, stall_at: float, stall_s: float) -> None:
        super().__init__()
        self.stall_at, self.stall_s, self.stalled = stall_at, stall_s, False

    async def sleep_until(self, when: float) -> None:
        if not self.stalled and when >= self.stall_at:
            self.stalled = True
            when += self.stall_s
        await super().sleep_until(when)


class SerialServer:
    """One worker: each request takes ``service_s`` after the previous one is done."""

    def __init__(self, clock: FakeClock, service_s: float, status: int = 200) -> None:
        self.clock, self.service_s, self.status = clock, service_s, status
        self.free_at = 0.0
        self.connections = 0
        self.closed = 0

    async def connect(self) -> Connection:
        self.connections += 1
        return _FakeConnection(self)


class _FakeConnection:
    def __init__(self, server: SerialServer) -> None:
        self.server = server

    async def exchange(self, request: bytes) -> tuple[int, bool]:
        s = self.server
        done = max(s.clock.now(), s.free_at) + s.service_s
        s.free_at = done
        await s.clock.sleep_until(done)
        return s.status, True

    async def aclose(self) -> None:
        self.server.closed += 1


def _run(clock: FakeClock, server: SerialServer, rate: float, seconds: float, **kw: Any) -> Any:
    offsets = arrival_offsets(rate, seconds)
    return clock.drive(
        run_open_loop([b"x"] * len(offsets), offsets, connect=server.connect, clock=clock, **kw)
    )


# --- the schedule ----------------------------------------------------------------------


def test_fixed_arrivals_are_evenly_spaced_and_exactly_rate_times_seconds() -> None:
    offsets = arrival_offsets(200, 1.5)
    assert len(offsets) == 300
    assert offsets[0] == 0.0
    assert offsets[1] == pytest.approx(0.005)
    assert offsets[-1] == pytest.approx(1.495)


def test_poisson_arrivals_are_seeded_ascending_and_near_the_rate() -> None:
    offsets = arrival_offsets(1000, 2.0, arrivals=Arrivals.POISSON, seed=3)
    assert offsets == arrival_offsets(1000, 2.0, arrivals=Arrivals.POISSON, seed=3)
    assert list(offsets) == sorted(offsets) and offsets[-1] < 2.0
    assert 1800 < len(offsets) < 2200  # 2000 expected, sd about 45
    assert len({round(b - a, 9) for a, b in itertools.pairwise(offsets)}) > 100


@pytest.mark.parametrize(("rate", "seconds"), [(0, 1), (-1, 1), (math.inf, 1), (10, 0)])
def test_a_rate_or_duration_that_is_not_positive_is_refused(rate: float, seconds: float) -> None:
    with pytest.raises(InputError):
        arrival_offsets(rate, seconds)


# --- latency is counted from the due time ----------------------------------------------


def test_a_stalled_server_shows_latency_growing_from_the_scheduled_time() -> None:
    clock = FakeClock()
    server = SerialServer(clock, service_s=0.020)  # 50/s capacity, offered 100/s
    run = _run(clock, server, rate=100, seconds=1.0)
    latencies = [r.latency for r in run.records]
    # Request i is due at 10 ms * i and done at 20 ms * (i + 1): latency 20 ms + 10 ms * i.
    assert latencies == pytest.approx([0.020 + 0.010 * i for i in range(100)])
    assert all(r.sent == r.due for r in run.records)  # the sender was never late
    assert server.closed == server.connections == run.connections_opened  # none leaked
    result = summarize(run, scenario="s", target_rate=100, seconds=1.0)
    assert result.max_ms == pytest.approx(1010.0)
    assert result.p50_ms is not None and result.p50_ms > 500  # not the 20 ms service time
    assert result.count(Outcome.OK) == 100
    assert result.achieved_rate == pytest.approx(100 / 2.0)  # done at 2.0 s


def test_a_late_sender_charges_its_lateness_to_the_requests_it_delayed() -> None:
    clock = LateClock(stall_at=0.1, stall_s=0.3)
    server = SerialServer(clock, service_s=0.001)
    run = _run(clock, server, rate=100, seconds=1.0)
    delayed = run.records[10]  # due at 0.1 s, sent at 0.4 s with everything due meanwhile
    assert delayed.sent == pytest.approx(0.4)
    assert delayed.latency == pytest.approx(0.301)
    burst = [r for r in run.records if r.sent == pytest.approx(0.4)]
    assert len(burst) == 31  # due at 0.10 ... 0.40 s, all sent at once when it woke
    assert run.records[9].latency == pytest.approx(0.001)
    result = summarize(run, scenario="s", target_rate=100, seconds=1.0)
    assert result.send_lag_max_ms == pytest.approx(300.0)
    assert result.max_ms is not None and result.max_ms > 300


def test_requests_beyond_the_connection_bound_are_dropped_and_counted() -> None:
    clock = FakeClock()
    server = SerialServer(clock, service_s=1.0)
    run = _run(clock, server, rate=10, seconds=1.0, max_connections=2, warm_connections=0)
    outcomes = [r.outcome for r in run.records]
    assert outcomes[:2] == [Outcome.OK, Outcome.OK]
    assert outcomes[2:] == [Outcome.DROPPED] * 8
    assert server.connections == server.closed == 2 and run.connections_peak == 2
    result = summarize(run, scenario="s", target_rate=10, seconds=1.0)
    assert sum(n for _, n in result.counts) == result.planned == 10
    assert result.count(Outcome.DROPPED) == 8


def test_a_request_not_answered_in_time_is_a_timeout_and_the_run_still_ends() -> None:
    clock = FakeClock()
    server = SerialServer(clock, service_s=5.0)
    run = _run(clock, server, rate=10, seconds=0.5, timeout_s=1.0)
    assert [r.outcome for r in run.records] == [Outcome.TIMEOUT] * 5
    assert all(r.latency is None for r in run.records)
    assert clock.t == pytest.approx(1.4)  # the last request's deadline, not the server's
    result = summarize(run, scenario="s", target_rate=10, seconds=0.5)
    assert result.p99_ms is None and result.count(Outcome.TIMEOUT) == 5


def test_status_codes_fall_into_the_reported_classes() -> None:
    assert [outcome_of(c) for c in (200, 202, 429, 500, 503, 404, 301)] == [
        Outcome.OK,
        Outcome.OK,
        Outcome.OVERLOADED,
        Outcome.SERVER_ERROR,
        Outcome.SERVER_ERROR,
        Outcome.OTHER_STATUS,
        Outcome.OTHER_STATUS,
    ]
    clock = FakeClock()
    run = _run(clock, SerialServer(clock, 0.001, status=429), rate=50, seconds=0.2)
    result = summarize(run, scenario="s", target_rate=50, seconds=0.2)
    assert result.count(Outcome.OVERLOADED) == 10 and result.p99_ms is None
    assert result.p99_429_ms == pytest.approx(1.0)


# --- the HTTP/1.1 client on a real loopback server -------------------------------------


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            length = 0
            for line in head.split("\r\n")[1:]:
                if line.lower().startswith("content-length:"):
                    length = int(line.split(":")[1])
            await reader.readexactly(length)
            path = head.split(" ")[1]
            if path == "/hang":
                await asyncio.sleep(30)
            if path == "/chunked":
                writer.write(
                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"3\r\nabc\r\n4;x=y\r\ndefg\r\n0\r\n\r\n"
                )
            elif path == "/close":
                writer.write(
                    b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno"
                )
            else:
                writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
            await writer.drain()
            if path in {"/close", "/idle-close"}:
                break  # /idle-close: the server's keep-alive timeout, no header said so
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, asyncio.CancelledError):
            await writer.wait_closed()


@asynccontextmanager
async def _server() -> AsyncIterator[int]:
    handlers: set[asyncio.Task[None]] = set()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await _handle(reader, writer)
        except asyncio.CancelledError:
            pass  # the test server is shutting down
        finally:
            handlers.discard(task)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()
        await asyncio.sleep(0)


def test_the_client_reads_sized_and_chunked_bodies_and_honours_connection_close() -> None:
    async def main() -> list[Any]:
        async with _server() as port:
            conn = await HttpConnection.open("127.0.0.1", port)
            got = [
                await conn.exchange(encode_request("GET", "/len", host="h")),
                await conn.exchange(encode_request("GET", "/chunked", host="h")),
                await conn.exchange(encode_request("PUT", "/len", b'{"a": 1}', host="h")),
                await conn.exchange(encode_request("GET", "/close", host="h")),
            ]
            await conn.aclose()
            conn = await HttpConnection.open("127.0.0.1", port)
            await conn.exchange(encode_request("GET", "/idle-close", host="h"))
            try:
                await conn.exchange(encode_request("GET", "/len", host="h"))
            except StaleConnectionError:
                got.append("stale")
            await conn.aclose()
            return got

    assert asyncio.run(main()) == [(201, True), (200, True), (201, True), (503, False), "stale"]


def test_a_connection_the_server_closed_while_idle_is_reopened_and_the_request_resent() -> None:
    async def main() -> Any:
        async with _server() as port:
            request = encode_request("GET", "/idle-close", host="h")

            async def connect() -> Connection:
                return await HttpConnection.open("127.0.0.1", port)

            return await run_open_loop(
                [request] * 3, [0.0, 0.2, 0.4], connect=connect, max_connections=1
            )

    run = asyncio.run(main())
    assert [r.outcome for r in run.records] == [Outcome.OK] * 3
    assert run.retried_stale >= 1  # at least the warm connection went stale before use


def test_a_hung_server_gives_timeouts_and_the_run_stops_by_itself() -> None:
    async def main() -> Any:
        async with _server() as port:

            async def connect() -> Connection:
                return await HttpConnection.open("127.0.0.1", port)

            request = encode_request("GET", "/hang", host="h")
            return await run_open_loop([request] * 2, [0.0, 0.05], connect=connect, timeout_s=0.2)

    run = asyncio.run(main())
    assert [r.outcome for r in run.records] == [Outcome.TIMEOUT] * 2


def test_the_client_only_talks_to_loopback() -> None:
    with pytest.raises(InputError, match="loopback"):
        asyncio.run(HttpConnection.open("10.0.0.1", 80))


# --- the bench against a real agent ----------------------------------------------------


@pytest.mark.slow
def test_the_open_loop_bench_of_a_real_agent_is_complete_and_consistent() -> None:
    seconds = 1.5
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral.cli",
            "bench",
            "agent",
            "--mode=open",
            "--topology=toy-16",
            "--allocator=greedy",
            "--workloads=10",
            "--rates=50,100",
            f"--seconds={seconds}",
            "--overload-rate=0",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)  # stdout is one JSON document and nothing else
    assert doc["mode"] == "open" and "scenarios" not in doc
    results = doc["open_loop"]["results"]
    assert [(r["scenario"], r["target_rate"]) for r in results] == [
        (kind, rate)
        for kind in (
            "GET /workloads/{id}",
            "GET /workloads",
            "PUT /workloads/{id}",
            "PUT /workloads/{id}?wait=true",
        )
        for rate in (50.0, 100.0)
    ]
    for r in results:
        counts = r["counts"]
        assert set(counts) == {"2xx", "429", "5xx", "other", "timeout", "error", "dropped"}
        assert sum(counts.values()) == r["planned"] == int(r["target_rate"] * seconds)
        answered = counts["2xx"] + counts["429"] + counts["5xx"] + counts["other"]
        assert r["achieved_rate"] == pytest.approx(answered / r["window_s"], abs=0.1)
        assert r["achieved_rate"] <= r["target_rate"] * 1.2
        assert r["ok_rate"] <= r["achieved_rate"]
        assert r["window_s"] >= seconds
        assert counts["2xx"] > 0, r
        assert 0 < r["p50_ms"] <= r["p99_ms"] <= r["max_ms"]
        assert r["p99_all_ms"] >= r["p50_ms"]
        assert r["agent_cpu_cores"] > 0 and r["generator_cpu_cores"] > 0
        assert 1 <= r["connections_peak"] <= doc["open_loop"]["config"]["max_connections"]
    assert doc["open_loop"]["targets"] == []  # 200/s was not run


# --- issue 12's targets ----------------------------------------------------------------


def test_a_target_needs_p99_below_the_bound_and_99_percent_2xx_and_a_stall_is_flagged() -> None:
    from corral.bench.agent_openloop import Kind, TargetCheck

    assert TargetCheck(Kind.GET_ONE, 200, 50, 49.9, 1.0).met
    assert not TargetCheck(Kind.GET_ONE, 200, 50, 50.0, 1.0).met
    assert not TargetCheck(Kind.PUT, 200, 100, 5.0, 0.98).met  # fast because most refused
    assert not TargetCheck(Kind.PUT, 200, 100, None, 0.0).met
    stalled = TargetCheck(Kind.PUT, 200, 100, 5.0, 1.0, send_lag_max_ms=60.0)
    assert stalled.host_stalled and stalled.met
    assert not TargetCheck(Kind.PUT, 200, 100, 5.0, 1.0, send_lag_max_ms=2.0).host_stalled


def test_targets_are_checked_on_the_200_per_second_runs_only() -> None:
    from corral.bench.agent_openloop import Kind, check_targets

    results = []
    for rate in (100, 200, 400):
        clock = FakeClock()
        run = _run(clock, SerialServer(clock, 0.004), rate=rate, seconds=0.5)
        results.append(summarize(run, scenario=Kind.GET_LIST.value, target_rate=rate, seconds=0.5))
    (check,) = check_targets(tuple(results))
    assert (check.scenario, check.rate, check.bound_ms) == (Kind.GET_LIST, 200, 50.0)
    assert check.p99_ms == pytest.approx(results[1].p99_ms) and check.met
