"""The built-in open-loop prober against real servers on 127.0.0.1 (TCP, HTTP,
memcached- and redis-protocol servers written here, and a real memcached if installed)."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest

from corral.control.probe import ProbeKind, Prober, ProbeSettings
from corral.control.signals import SignalStatus
from corral.errors import InputError


class _LineHandler(socketserver.StreamRequestHandler):
    reply = b""
    delay = 0.0

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):
            while self.rfile.readline():
                time.sleep(self.delay)
                self.wfile.write(self.reply)


class _HttpHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def _server(handler: type[socketserver.BaseRequestHandler]) -> Iterator[int]:
    """A real threaded TCP server on 127.0.0.1, shut down and closed afterwards."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _lines(reply: bytes, delay: float) -> type[socketserver.BaseRequestHandler]:
    return type("Handler", (_LineHandler,), {"reply": reply, "delay": delay})


async def _probe(kind: ProbeKind, port: int, seconds: float = 0.6, **kw: object) -> Prober:
    prober = Prober(ProbeSettings(kind=kind, port=port, rate_hz=100, window_s=5, **kw))  # type: ignore[arg-type]
    await prober.start()
    await asyncio.sleep(seconds)
    await prober.stop()
    return prober


@pytest.mark.parametrize(
    ("kind", "reply"),
    [(ProbeKind.MEMCACHED, b"VERSION 1.6.0\r\n"), (ProbeKind.REDIS, b"+PONG\r\n")],
)
def test_protocol_probes_measure_the_service_delay(kind: ProbeKind, reply: bytes) -> None:
    with _server(_lines(reply, 0.02)) as port:
        prober = asyncio.run(_probe(kind, port))
    obs = prober.window(time.monotonic())
    assert obs.samples >= 20 and prober.failed == 0
    assert obs.latency_ms is not None and obs.latency_ms >= 20.0


def test_http_probe_reuses_connections_and_reads_the_body() -> None:
    with _server(_HttpHandler) as port:
        prober = asyncio.run(_probe(ProbeKind.HTTP, port, path="/healthz"))
    obs = prober.window(time.monotonic())
    assert obs.samples >= 20 and prober.failed == 0
    assert obs.latency_ms is not None and obs.latency_ms < 500


def _dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_dead_port_is_a_failed_signal_never_a_latency_sample() -> None:
    port = _dead_port()
    prober = asyncio.run(_probe(ProbeKind.TCP, port, seconds=0.4, timeout_s=0.05))
    obs = prober.window(time.monotonic())
    assert prober.failed >= 10
    assert obs.latency_ms is None  # no made-up sample at the timeout (the old 1000 ms)
    assert obs.status is SignalStatus.FAILED
    reason = obs.no_signal_reason()
    assert reason.startswith(f"probe: {prober.failed} of {prober.failed} probes of 127.0.0.1:")
    assert "refused" in reason.lower() or "connect call failed" in reason.lower()


def test_a_service_that_never_answers_is_a_slow_signal() -> None:
    with _server(_lines(b"VERSION 1\r\n", 1.0)) as port:
        prober = asyncio.run(
            _probe(ProbeKind.MEMCACHED, port, seconds=0.4, timeout_s=0.05, min_samples=5)
        )
    obs = prober.window(time.monotonic())
    assert obs.latency_ms is None and obs.status is SignalStatus.SLOW
    assert "got no answer within 0.05 s" in obs.no_signal_reason()


class _SometimesWrong(socketserver.StreamRequestHandler):
    """A redis-protocol server that answers every tenth request with an error."""

    count = 0
    lock = threading.Lock()

    def handle(self) -> None:
        with contextlib.suppress(ConnectionError):
            while self.rfile.readline():
                with self.lock:
                    type(self).count += 1
                    wrong = self.count % 10 == 0
                self.wfile.write(b"-ERR\r\n" if wrong else b"+PONG\r\n")


def test_a_few_failures_rank_above_every_answer_and_a_tail_of_them_is_no_signal() -> None:
    """One probe in ten fails: the median is an answer (ok), the p99 falls among the
    failures (unknown, so failed) - never a number made up from the failures."""
    with _server(_SometimesWrong) as port:
        prober = asyncio.run(_probe(ProbeKind.REDIS, port, seconds=0.6, percentile=50))
    median = prober.window(time.monotonic())
    assert prober.failed >= 3
    assert median.status is SignalStatus.OK and median.latency_ms is not None
    assert median.latency_ms < 500
    prober.settings = ProbeSettings(kind=ProbeKind.REDIS, port=port, window_s=5, percentile=99)
    tail = prober.window(time.monotonic())
    assert tail.status is SignalStatus.FAILED and tail.latency_ms is None
    assert "redis answered b'-ERR" in tail.no_signal_reason()


def test_too_few_probes_in_the_window_is_no_data() -> None:
    prober = Prober(ProbeSettings(kind=ProbeKind.TCP, port=9, min_samples=10), name="cache")
    obs = prober.window(time.monotonic())
    assert obs.status is SignalStatus.NO_DATA and obs.latency_ms is None
    assert obs.no_signal_reason().startswith("cache: 0 probes finished")


def test_open_loop_probes_do_not_wait_for_a_stalled_service() -> None:
    async def main(port: int) -> int:
        prober = Prober(ProbeSettings(kind=ProbeKind.REDIS, port=port, rate_hz=100, window_s=5))
        await prober.start()
        await asyncio.sleep(0.4)
        sent = prober.sent
        await prober.stop()
        return sent

    with _server(_lines(b"+PONG\r\n", 0.3)) as port:
        sent = asyncio.run(main(port))
    # Closed loop would have sent about 2 probes in 0.4 s at 0.3 s each.
    assert sent >= 15


@pytest.mark.skipif(shutil.which("memcached") is None, reason="memcached is not installed")
def test_probe_against_a_real_memcached() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-u", "root"]
    )
    try:
        deadline = time.monotonic() + 5
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "memcached did not start"
                time.sleep(0.05)

        async def main() -> Prober:
            return await _probe(ProbeKind.MEMCACHED, port)

        prober = asyncio.run(main())
        obs = prober.window(time.monotonic())
        assert obs.samples >= 20 and prober.failed == 0 and obs.latency_ms is not None
    finally:
        proc.kill()
        proc.wait()


def test_probe_settings_name_the_bad_field() -> None:
    with pytest.raises(InputError, match=r"probe\.port"):
        ProbeSettings(kind=ProbeKind.TCP, port=0)
    with pytest.raises(InputError, match=r"probe\.path"):
        ProbeSettings(kind=ProbeKind.HTTP, port=80, path="healthz")
    with pytest.raises(InputError, match=r"probe\.min_samples"):
        ProbeSettings(kind=ProbeKind.TCP, port=80, min_samples=0)
