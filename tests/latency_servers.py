"""Real latency sources on 127.0.0.1 for the controller's tests: a Prometheus endpoint
that answers after a delay, and a port nothing listens on."""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

HISTOGRAM = (
    "# TYPE rpc_latency_seconds histogram\n"
    'rpc_latency_seconds_bucket{le="0.001"} 90\n'
    'rpc_latency_seconds_bucket{le="0.005"} 100\n'
    'rpc_latency_seconds_bucket{le="+Inf"} 100\n'
    "rpc_latency_seconds_count 100\n"
    "rpc_latency_seconds_sum 0.05\n"
)


@dataclass
class SlowEndpoint:
    """A running slow endpoint: its URL and how many scrapes it received."""

    url: str
    requests: int = 0
    release: threading.Event = field(default_factory=threading.Event)


@contextlib.contextmanager
def slow_prometheus(delay_s: float) -> Iterator[SlowEndpoint]:
    """A threaded HTTP server on 127.0.0.1 serving `HISTOGRAM` at ``/metrics`` after
    ``delay_s`` seconds. On exit every waiting handler is released at once, the server is
    shut down and its socket closed (no thread or port left behind)."""
    endpoint = SlowEndpoint(url="")
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            with lock:
                endpoint.requests += 1
            endpoint.release.wait(delay_s)
            body = HISTOGRAM.encode()
            with contextlib.suppress(OSError):  # the client gave up long ago
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")  # one request per handler thread
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    try:
        yield endpoint
    finally:
        endpoint.release.set()
        server.shutdown()
        server.server_close()  # joins the handler threads (block_on_close)
        thread.join()


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
