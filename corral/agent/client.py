"""A small synchronous HTTP client of the agent API (used by the CLI and benchmarks)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from corral.agent.config import DEFAULT_PORT
from corral.errors import CorralError, InputError, PlacementError

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


class AgentUnreachableError(CorralError):
    """No agent answers at the address."""


RETRY_429_BUDGET_S = 30.0
"""How long a client keeps retrying requests the agent refused with 429 (overloaded)."""
RETRY_429_MAX_WAIT_S = 2.0
"""The longest single wait between such retries, whatever ``Retry-After`` says."""


class AgentClient:
    """Talks to one agent over TCP (``url``) or a unix socket (``socket_path``).

    API errors become corral errors: 422 `InputError` (naming the field), 409
    `PlacementError`, anything else `CorralError` with the agent's message. A 429 (the
    agent is overloaded and did not take the request) is retried after its
    ``Retry-After`` (capped at ``RETRY_429_MAX_WAIT_S``) for up to ``retry_429_s``
    seconds: an admission refusal means nothing was done, so repeating is safe.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        socket_path: Path | None = None,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry_429_s: float = RETRY_429_BUDGET_S,
    ) -> None:
        self._retry_429_s = retry_429_s
        self.url = url or os.environ.get("CORRAL_AGENT_URL") or DEFAULT_URL
        token = token or os.environ.get("CORRAL_AGENT_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        transport = httpx.HTTPTransport(uds=str(socket_path)) if socket_path else None
        base = "http://agent" if socket_path else self.url
        self._where = str(socket_path) if socket_path else self.url
        self._http = httpx.Client(
            base_url=base, headers=headers, timeout=timeout_s, transport=transport
        )

    def __enter__(self) -> AgentClient:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises corral errors for API errors and an unreachable agent.

        Retries a 429 until the agent takes the request or the retry budget is spent
        (then the 429 is raised as a `CorralError` with the agent's reason).
        """
        deadline = time.monotonic() + self._retry_429_s
        response = self._send(method, path, **kwargs)
        while response.status_code == 429:
            wait = _retry_after(response)
            if time.monotonic() + wait > deadline:
                break
            time.sleep(wait)
            response = self._send(method, path, **kwargs)
        return self._checked(response)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.TransportError as err:
            raise AgentUnreachableError(
                f"no corral agent answers at {self._where} ({err}); start one with "
                "`corral agent` or point --agent / $CORRAL_AGENT_URL at it"
            ) from err

    @staticmethod
    def _checked(response: httpx.Response) -> httpx.Response:
        if response.status_code < 400:
            return response
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        detail = str(body.get("detail", response.reason_phrase))
        if response.status_code == 422:
            raise InputError(str(body.get("field") or ""), detail, str(body.get("fix") or ""))
        if response.status_code == 409:
            raise PlacementError(detail)
        raise CorralError(f"agent answered {response.status_code}: {detail}")

    def status(self) -> dict[str, Any]:
        """GET /status."""
        result: dict[str, Any] = self.request("GET", "/status").json()
        return result

    def workloads(self) -> list[dict[str, Any]]:
        """GET /workloads."""
        result: list[dict[str, Any]] = self.request("GET", "/workloads").json()["workloads"]
        return result

    def put(self, spec: dict[str, Any], *, wait: bool = True) -> tuple[int, dict[str, Any]]:
        """PUT /workloads/{id}: (status code, workload)."""
        workload_id = spec.get("id")
        if not isinstance(workload_id, str) or not workload_id:
            raise InputError("id", "every workload needs an id")
        response = self.request(
            "PUT",
            f"/workloads/{workload_id}",
            json=spec,
            params={"wait": "true" if wait else "false"},
        )
        body: dict[str, Any] = response.json()
        return response.status_code, body

    def delete(self, workload_id: str) -> None:
        """DELETE /workloads/{id}."""
        self.request("DELETE", f"/workloads/{workload_id}")

    def rebalance(self) -> dict[str, Any]:
        """POST /rebalance."""
        result: dict[str, Any] = self.request("POST", "/rebalance").json()
        return result

    def assignments(self) -> dict[str, Any]:
        """GET /assignments."""
        result: dict[str, Any] = self.request("GET", "/assignments").json()
        return result


def _retry_after(response: httpx.Response) -> float:
    """Seconds to wait before repeating a refused request: its ``Retry-After``, capped."""
    try:
        wait = float(response.headers.get("Retry-After", "0.1"))
    except ValueError:
        wait = 0.1
    return min(max(wait, 0.05), RETRY_429_MAX_WAIT_S)
