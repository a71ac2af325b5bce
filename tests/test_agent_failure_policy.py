"""The agent's one failure policy: expected failures are retried with backoff and shown in
/status and the metrics; programming errors end the agent with one clear log line."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from corral.agent.config import AgentSettings
from corral.agent.enforcer import DryRunEnforcer
from corral.agent.faults import Backoff, Faults, is_expected
from corral.agent.metrics import AgentMetrics
from corral.agent.service import AgentService
from corral.agent.state import StateStore
from corral.errors import CorralError, PlacementError
from corral.placement.workload import Workload
from corral.topology.presets import toy_16


def _service(tmp_path: Path, **overrides: Any) -> AgentService:
    settings = AgentSettings(
        state_path=tmp_path / "state.db",
        topology="toy-16",
        dry_run=True,
        coalesce_window_s=0.005,
        sample_period_s=0.05,
        **overrides,
    )
    service = AgentService(
        settings=settings,
        topology=toy_16(),
        store=StateStore(settings.state_path),
        enforcer=DryRunEnforcer(toy_16()),
    )
    service.faults = Faults(Backoff(base_s=0.01, cap_s=0.05))
    return service


def test_the_boundary_between_expected_and_programming_errors() -> None:
    assert is_expected(OSError(5, "EIO"))
    assert is_expected(sqlite3.OperationalError("database is locked"))
    assert is_expected(CorralError("source timed out"))
    assert is_expected(TimeoutError())
    assert not is_expected(TypeError("bug"))
    assert not is_expected(KeyError("bug"))


def test_backoff_doubles_and_is_capped() -> None:
    backoff = Backoff(base_s=0.5, cap_s=4.0)
    assert [backoff.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_a_failing_sampler_is_retried_shown_in_status_and_metrics_and_then_cleared(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path)
    registry = CollectorRegistry()
    service.observer = AgentMetrics(registry, service.gauges)
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise OSError(28, "No space left on device")

    service.sample = flaky  # type: ignore[method-assign]

    async def main() -> tuple[list[dict[str, Any]], str, list[dict[str, Any]]]:
        await service.start()
        runner = asyncio.create_task(service.run())
        while calls < 2:
            await asyncio.sleep(0.01)
        failing = service.status()["faults"]
        metrics = generate_latest(registry).decode()
        while calls < 5:
            await asyncio.sleep(0.01)
        healed = service.status()["faults"]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return failing, metrics, healed

    try:
        failing, metrics, healed = asyncio.run(main())
    finally:
        service.close()
    (fault,) = failing
    assert fault["task"] == "sampler" and "No space left" in fault["error"]
    assert fault["count"] >= 1 and fault["retry_in_s"] > 0
    assert 'corral_task_failures_in_a_row{task="sampler"}' in metrics
    assert healed == []


def test_a_commit_that_fails_refuses_its_waiters_and_the_next_batch_succeeds(
    tmp_path: Path,
) -> None:
    service = _service(tmp_path)
    real = service.store.commit_decision
    failures = 1

    def commit(**kwargs: Any) -> Any:
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real(**kwargs)

    async def run() -> tuple[str, str, list[str]]:
        await service.start()
        service.store.commit_decision = commit  # type: ignore[method-assign]
        runner = asyncio.create_task(service.run())
        try:
            await service.put(Workload(id="a", cpus=2, policy="exclusive"), wait=True)
            first = "placed"
        except sqlite3.OperationalError as err:
            first = str(err)
        fault = [f["task"] for f in service.status()["faults"]]
        second = await service.put(Workload(id="b", cpus=2, policy="exclusive"), wait=True)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return first, second.view.stored.status.value, fault

    try:
        first, second, fault = asyncio.run(run())
    finally:
        service.close()
    assert first == "disk I/O error"
    assert fault == ["decisions"]
    assert second == "placed"
    assert _stored_ids(tmp_path) == {"b"}  # the refused request left nothing behind


def _stored_ids(tmp_path: Path) -> set[str]:
    store = StateStore(tmp_path / "state.db")
    try:
        return set(store.load_workloads())
    finally:
        store.close()


def test_a_programming_error_ends_the_agent_with_one_clear_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = _service(tmp_path)

    async def broken() -> None:
        raise TypeError("a bug in the sampler")

    service.sample = broken  # type: ignore[method-assign]

    async def main() -> None:
        await service.start()
        await service.run()

    caplog.set_level(logging.CRITICAL, logger="corral.agent.service")
    try:
        with pytest.raises(ExceptionGroup) as group:
            asyncio.run(main())
    finally:
        service.close()
    assert group.group_contains(TypeError, match="a bug in the sampler")
    crashed = [r for r in caplog.records if r.getMessage() == "agent.crashed"]
    assert len(crashed) == 1
    assert "TypeError: a bug in the sampler" in crashed[0].__dict__["error"]


def test_a_refused_placement_is_not_a_fault(tmp_path: Path) -> None:
    service = _service(tmp_path)

    async def main() -> list[dict[str, Any]]:
        await service.start()
        runner = asyncio.create_task(service.run())
        with pytest.raises(PlacementError):
            await service.put(Workload(id="big", cpus=64, policy="exclusive"), wait=True)
        faults = service.status()["faults"]
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return faults

    try:
        assert asyncio.run(main()) == []
    finally:
        service.close()


def test_a_store_that_stalls_never_stalls_healthz_status_or_reads(tmp_path: Path) -> None:
    """A filesystem that freezes for seconds: the write waits, the loop does not."""
    import time

    import httpx
    from prometheus_client import CollectorRegistry

    from corral.agent.api import create_app

    service = _service(tmp_path)
    real = service.store.put_pending_many

    def frozen(*args: Any, **kwargs: Any) -> Any:
        time.sleep(3.0)  # on the effect executor's thread
        return real(*args, **kwargs)

    service.store.put_pending_many = frozen  # type: ignore[method-assign]

    async def main() -> tuple[int, list[float]]:
        await service.start()
        runner = asyncio.create_task(service.run())
        app = create_app(service, registry=CollectorRegistry())
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            put = asyncio.create_task(client.put("/workloads/a", json={"cpus": 1}))
            await asyncio.sleep(0.1)
            waits: list[float] = []
            while not put.done():
                started = time.perf_counter()
                for path in ("/healthz", "/status", "/workloads"):
                    assert (await client.get(path)).status_code == 200
                waits.append(time.perf_counter() - started)
                await asyncio.sleep(0.05)
            code = (await put).status_code
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return code, waits

    try:
        code, waits = asyncio.run(main())
    finally:
        service.close()
    assert code == 202
    assert len(waits) >= 5  # reads kept being answered while the write was stuck
    assert max(waits) < 1.5  # far below the 3 s the store took: the loop never waited


def test_puts_that_arrive_together_share_one_commit(tmp_path: Path) -> None:
    service = _service(tmp_path)
    real = service.store.put_pending_many
    batches: list[int] = []

    def counted(items: Any) -> Any:
        batches.append(len(items))
        return real(items)

    service.store.put_pending_many = counted  # type: ignore[method-assign]

    async def main() -> list[int]:
        await service.start()
        runner = asyncio.create_task(service.run())
        results = await asyncio.gather(
            *(service.put(Workload(id=f"w{i}", cpus=0.1), wait=False) for i in range(50))
        )
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        return [1 for r in results if r.queued]

    try:
        queued = asyncio.run(main())
    finally:
        service.close()
    assert len(queued) == 50
    assert sum(batches) == 50 and len(batches) < 50  # grouped: fewer transactions than PUTs
    assert _stored_ids(tmp_path) == {f"w{i}" for i in range(50)}
