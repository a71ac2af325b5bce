"""The agent client repeats a request the agent refused with 429, after its Retry-After,
until the agent takes it or the retry budget is spent."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from corral.agent.client import AgentClient
from corral.errors import CorralError


class _Refusing(BaseHTTPRequestHandler):
    refusals = 0
    seen = 0

    def do_GET(self) -> None:
        type(self).seen += 1
        if type(self).seen <= type(self).refusals:
            body = b'{"detail": "the agent is 500 ms behind (limit 100 ms)"}'
            self.send_response(429)
            self.send_header("Retry-After", "0")
        else:
            body = b'{"workloads": []}'
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _url(httpd: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{httpd.server_address[1]}"


def test_a_429_is_retried_until_the_agent_takes_the_request(
    server: ThreadingHTTPServer,
) -> None:
    _Refusing.refusals, _Refusing.seen = 3, 0
    with AgentClient(_url(server)) as client:
        assert client.workloads() == []
    assert _Refusing.seen == 4


def test_a_429_past_the_retry_budget_is_raised_with_the_agents_reason(
    server: ThreadingHTTPServer,
) -> None:
    _Refusing.refusals, _Refusing.seen = 10**6, 0
    with (
        AgentClient(_url(server), retry_429_s=0.3) as client,
        pytest.raises(CorralError, match="429: the agent is 500 ms behind"),
    ):
        client.workloads()
    assert _Refusing.seen >= 2
