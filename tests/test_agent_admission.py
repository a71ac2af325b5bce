"""Admission control: beyond its bound the agent answers 429 with Retry-After at once, and
/healthz and /readyz are always answered."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from corral.agent.admission import AdmissionMiddleware, OverloadedError


def _slow_app(gate: asyncio.Event) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/slow":
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def test_requests_beyond_the_bound_get_429_with_retry_after_and_health_is_always_served() -> None:
    async def main() -> tuple[list[int], httpx.Response, int, int, int]:
        gate = asyncio.Event()
        admission = AdmissionMiddleware(_slow_app(gate), limit=3, retry_after_s=2.2)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            held = [asyncio.create_task(client.get("/slow")) for _ in range(3)]
            while admission.in_flight < 3:
                await asyncio.sleep(0.001)
            refused = await client.get("/workloads")
            health = (await client.get("/healthz")).status_code
            ready = (await client.get("/readyz")).status_code
            gate.set()
            codes = [(await t).status_code for t in held]
            after = (await client.get("/workloads")).status_code
        return codes, refused, health, ready, after

    codes, refused, health, ready, after = asyncio.run(main())
    assert codes == [200, 200, 200]
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "3"
    body = json.loads(refused.content)
    assert "limit 3" in body["detail"] and body["fix"]
    assert (health, ready, after) == (200, 200, 200)


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    assert OverloadedError("x", retry_after_s=0.01).retry_after == "1"
    assert OverloadedError("x", retry_after_s=1.5).retry_after == "2"


def test_a_loop_running_late_refuses_new_requests_until_it_catches_up() -> None:
    from corral.agent.admission import LoopLag

    async def main() -> tuple[int, str, int, int]:
        lag = LoopLag(smoothing=1.0)
        admission = AdmissionMiddleware(_slow_app(asyncio.Event()), limit=100, lag=lag)
        transport = httpx.ASGITransport(app=admission)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            lag.observe(0.4)  # the loop woke 400 ms late: it is saturated
            refused = await client.get("/workloads")
            health = (await client.get("/healthz")).status_code
            lag.observe(0.0)
            after = (await client.get("/workloads")).status_code
        return refused.status_code, refused.json()["detail"], health, after

    code, detail, health, after = asyncio.run(main())
    assert code == 429 and "400 ms behind" in detail
    assert (health, after) == (200, 200)


def test_the_lag_monitor_sees_a_blocked_loop() -> None:
    import time

    from corral.agent.admission import LoopLag

    async def main() -> float:
        lag = LoopLag(interval_s=0.05, smoothing=1.0)
        task = asyncio.create_task(lag.run())
        await asyncio.sleep(0.01)
        time.sleep(0.3)  # a handler that never yields
        await asyncio.sleep(0.01)  # the monitor's overdue wake-up runs first
        task.cancel()
        return lag.lag_s

    assert asyncio.run(main()) > 0.2
