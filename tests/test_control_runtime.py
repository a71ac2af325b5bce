"""The control loop: signals in, pure step, actions out; status, metrics, refusals; lost
signals held and reported; expected errors retried with backoff, programming errors fatal;
nothing blocking on the event loop (a real slow HTTP endpoint, a real dead port)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from corral.control.actions import Action, Freeze, SetCpus, SetWeight, Thaw
from corral.control.attribution import AttributionSettings
from corral.control.bands import BandSettings
from corral.control.baseline import BaselineSettings
from corral.control.config import parse_config, runtime_from_config
from corral.control.controller import Controller, ControllerSettings
from corral.control.evict import BeWorkload, EvictSettings
from corral.control.knobs import TrialSettings
from corral.control.metrics import register_metrics
from corral.control.runtime import ActionRecord, ColocationRuntime
from corral.control.signals import Observation, Signal, SignalStatus
from corral.control.top import TopSettings
from corral.errors import CorralError, EnforcementError
from corral.topology.cpuset import CpuSet
from tests.latency_servers import dead_port, slow_prometheus

CORES = (CpuSet([0]), CpuSet([1]), CpuSet([2]), CpuSet([3]))
T = TypeVar("T")


@dataclass
class Recorded:
    """A recorded latency sequence, one observation (or error to raise) per read."""

    samples: list[Observation | BaseException]
    reads: int = 0

    async def read(self, now: float) -> Observation:
        obs = self.samples[min(self.reads, len(self.samples) - 1)]
        self.reads += 1
        if isinstance(obs, BaseException):
            raise obs
        return obs


@dataclass
class Actuator:
    applied: list[Action] = field(default_factory=list)
    refuse: type | None = None

    def apply(self, action: Action) -> None:
        if self.refuse is not None and isinstance(action, self.refuse):
            self.refuse = None
            raise EnforcementError("cpu.idle: refused (errno 22)")
        self.applied.append(action)


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class CountingExecutor:
    """Runs each function inline and records how many calls there were."""

    calls: int = 0

    async def __call__(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        return fn()


def controller() -> Controller:
    """Heracles' plain rules (a cold start, every violation BE's): these tests pin the
    loop's plumbing; tests/test_control_attribution.py pins the default rules."""
    return Controller(
        ControllerSettings(
            top=TopSettings(period_s=1.0, cooldown_s=2.0),
            trial=TrialSettings(settle_s=1.0),
            evict=EvictSettings(freeze_after_periods=0),
            sub_period_s=1.0,
            peak_rps=1000.0,
            baseline=BaselineSettings(enabled=False),
            attribution=AttributionSettings(enabled=False),
            bands=BandSettings(enabled=False),
        ),
        CORES,
    )


def good(latency_ms: float, source: str = "api") -> Observation:
    return Observation(
        latency_ms=latency_ms, load_rps=100, signals=(Signal(source, latency_ms=latency_ms),)
    )


def lost(status: SignalStatus, reason: str, source: str = "api") -> Observation:
    return Observation(signals=(Signal(source, status, reason, read_s=1.0),))


def test_runtime_applies_actions_and_reports_them_in_status_and_metrics() -> None:
    clock = Clock()
    source = Recorded([good(0.2)] * 3 + [good(5.0)])
    actuator = Actuator()
    runtime = ColocationRuntime(
        controller(),
        source=source,
        actuator=actuator,
        workloads=lambda: (BeWorkload("batch"),),
        clock=clock,
    )
    registry = CollectorRegistry()
    register_metrics(registry, runtime.snapshot)

    async def main() -> None:
        for t in range(5):
            clock.now = float(t)
            await runtime.tick()

    asyncio.run(main())
    assert any(isinstance(a, SetCpus) for a in actuator.applied)
    assert any(isinstance(a, Freeze) for a in actuator.applied)  # slack < 0 at the floor
    status = runtime.status()
    assert status["mode"] == "disable"
    assert status["frozen"] == ["batch"]
    assert status["recent"] and all(r["reason"] for r in status["recent"])
    assert status["signals"][0]["status"] == "ok" and status["signals"][0]["latency_ms"] == 5.0
    text = generate_latest(registry).decode()
    assert 'corral_control_mode{mode="disable"} 1.0' in text
    assert "corral_control_slack -4.0" in text
    assert 'corral_control_actions_total{kind="Freeze"} 1.0' in text
    assert "corral_control_be_cores 1.0" in text
    assert 'corral_control_signal_ok{source="api"} 1.0' in text


def test_a_ticks_actions_are_applied_in_one_call_of_the_executor() -> None:
    """The agent's one ordered effect worker gets a tick's whole action list at once (and
    the memory readings): never one hop per action, never a write on the loop."""

    class Memory:
        def be_memory_bytes(self) -> int:
            return 1 << 30

        def be_psi_some_us(self) -> int:
            return 5

    execute = CountingExecutor()
    actuator = Actuator()
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.2)]),
        actuator=actuator,
        memory=Memory(),
        clock=Clock(),
        execute=execute,
    )
    actions = asyncio.run(runtime.tick())
    assert len(actions) >= 3  # the initial box: cpus, weight, quota
    assert actuator.applied == list(actions)
    assert execute.calls == 2  # one for the memory readings, one for every action
    assert runtime.last_observation.be_memory_bytes == 1 << 30


def test_a_refused_write_is_logged_counted_and_reapplied_next_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    actuator = Actuator(refuse=SetWeight)
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.9)]),  # slack 10%: hold
        actuator=actuator,
        clock=clock,
    )
    with caplog.at_level("WARNING", logger="corral.control.runtime"):
        asyncio.run(runtime.tick())
    assert runtime.failures == 1
    assert any(r.message == "control.action_failed" for r in caplog.records)
    assert not any(isinstance(a, SetWeight) for a in actuator.applied)
    clock.now = 1.0
    asyncio.run(runtime.tick())  # nothing changed, but the whole state is written again
    assert any(isinstance(a, SetWeight) for a in actuator.applied)


def test_a_lost_signal_holds_be_is_logged_once_each_way_and_shown_in_status_and_metrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    samples: list[Observation | BaseException] = [good(0.2)] * 4
    samples += [lost(SignalStatus.SLOW, "no answer within 1.0 s")] * 3 + [good(0.2)]
    actuator = Actuator()
    records: list[ActionRecord] = []
    runtime = ColocationRuntime(
        controller(),
        source=Recorded(samples),
        actuator=actuator,
        workloads=lambda: (BeWorkload("batch"),),
        clock=clock,
        listener=records.append,
    )
    registry = CollectorRegistry()
    register_metrics(registry, runtime.snapshot)
    levels = []
    metrics = ""

    async def main() -> None:
        nonlocal metrics
        for t in range(len(samples)):
            clock.now = float(t)
            await runtime.tick()
            levels.append(runtime.state.levels)
            if t == 6:
                metrics = generate_latest(registry).decode()
                status = runtime.status()
                api = status["signals"][0]
                assert api["status"] == "slow" and api["consecutive_failures"] == 3
                assert api["last_error"] == "api: no answer within 1.0 s"
                assert api["read_ms"] == 1000.0
                assert status["mode"] == "hold"
                assert status["reason"] == "no signal: api: no answer within 1.0 s"
                assert status["observation"]["no_signal"] == "api: no answer within 1.0 s"

    with caplog.at_level("INFO", logger="corral.control.runtime"):
        asyncio.run(main())
    assert levels[3].cores > levels[0].cores  # it grew while the signal was good
    assert levels[4] == levels[5] == levels[6] == levels[3]  # then held, exactly
    assert not any(isinstance(a, Freeze | Thaw) for a in actuator.applied)
    messages = [r.message for r in caplog.records]
    assert messages.count("control.signal_lost") == 1
    assert messages.count("control.signal_restored") == 1
    lost_line = next(r for r in caplog.records if r.message == "control.signal_lost")
    assert lost_line.__dict__["source"] == "api" and lost_line.__dict__["status"] == "slow"
    assert [r.what for r in records if r.kind == "signal"] == ["signal api slow", "signal api ok"]
    assert 'corral_control_signal_ok{source="api"} 0.0' in metrics
    assert 'corral_control_signal_status{source="api",status="slow"} 1.0' in metrics
    assert 'corral_control_signal_failures_total{source="api"} 3.0' in metrics
    assert runtime.status()["signals"][0]["failures"] == 3


def test_expected_tick_errors_are_counted_shown_and_retried_with_a_capped_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[Observation | BaseException] = [OSError(5, "Input/output error")] * 6
    delays: list[float] = []

    async def main() -> ColocationRuntime:
        clock = Clock()

        async def fake_sleep(seconds: float) -> None:
            delays.append(seconds)
            clock.now += seconds
            await asyncio.sleep(0)

        runtime = ColocationRuntime(
            controller(),
            source=Recorded([*errors, good(0.5)]),
            actuator=Actuator(),
            clock=clock,
            sleep=fake_sleep,
            max_backoff_periods=4,
        )
        await runtime.start()
        while len(delays) < 6:
            await asyncio.sleep(0)
        status = runtime.status()["loop"]
        assert status["consecutive_failures"] == 6 and status["failures"] == 6
        assert status["last_error"] == "OSError: [Errno 5] Input/output error"
        while len(delays) < 8:
            await asyncio.sleep(0)
        await runtime.stop()
        return runtime

    with caplog.at_level("INFO", logger="corral.control.runtime"):
        runtime = asyncio.run(main())
    assert delays[:8] == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 1.0, 1.0]  # doubling, capped, reset
    assert runtime.consecutive_tick_failures == 0 and runtime.tick_failures == 6
    assert [r.message for r in caplog.records].count("control.tick_failed") == 6
    assert any(r.message == "control.tick_recovered" for r in caplog.records)


def test_a_programming_error_ends_the_loop_with_a_clear_log_line_and_thaws(
    caplog: pytest.LogCaptureFixture,
) -> None:
    actuator = Actuator()
    clock = Clock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds
        await asyncio.sleep(0)

    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(5.0)] * 3 + [KeyError("a bug")]),
        actuator=actuator,
        workloads=lambda: (BeWorkload("batch"),),
        clock=clock,
        sleep=fake_sleep,
    )
    with caplog.at_level("ERROR", logger="corral.control.runtime"), pytest.raises(KeyError):
        asyncio.run(runtime.run())
    assert any(r.message == "control.crashed" and r.exc_info for r in caplog.records)
    assert any(isinstance(a, Freeze) for a in actuator.applied)
    assert isinstance(actuator.applied[-1], Thaw)  # what it froze is thawed on the way out
    assert runtime.state.evict.frozen == ()


def test_runtime_runs_as_an_asyncio_task_and_stops_cleanly() -> None:
    ticks: list[float] = []

    async def main() -> None:
        clock = Clock()

        async def fake_sleep(seconds: float) -> None:
            clock.now += seconds
            ticks.append(clock.now)
            await asyncio.sleep(0)

        runtime = ColocationRuntime(
            controller(),
            source=Recorded([good(0.2)]),
            actuator=Actuator(),
            clock=clock,
            sleep=fake_sleep,
        )
        await runtime.start()
        while len(ticks) < 5:
            await asyncio.sleep(0)
        await runtime.stop()
        assert runtime.state.levels.cores > 1  # it grew BE while slack allowed

    asyncio.run(main())
    assert ticks[:3] == [1.0, 2.0, 3.0]


def test_a_reapply_never_interleaves_with_a_ticks_writes() -> None:
    """Each write batch (a tick's, a reapply's) runs whole before the next starts, even
    with an executor that yields to the loop in the middle of a batch."""
    spans: list[tuple[str, str]] = []

    async def yielding(fn: Callable[[], T]) -> T:
        spans.append(("start", ""))
        await asyncio.sleep(0.01)
        result = fn()
        spans.append(("end", ""))
        return result

    runtime = ColocationRuntime(
        controller(), source=Recorded([good(0.2)]), actuator=Actuator(), execute=yielding
    )

    async def main() -> None:
        await asyncio.gather(runtime.tick(), runtime.reapply("another writer touched BE"))

    asyncio.run(main())
    assert [kind for kind, _ in spans] == ["start", "end", "start", "end"]


def _heartbeat_gaps(stop: asyncio.Event, gaps: list[float]) -> asyncio.Task[None]:
    """A task measuring how late each 10 ms sleep wakes up: the loop's stalls."""

    async def beat() -> None:
        last = time.monotonic()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    return asyncio.create_task(beat())


def _prometheus_config(url: str) -> dict[str, Any]:
    return {
        "top": {"period_s": 0.2, "cooldown_s": 1.0},
        "sub_period_s": 0.2,
        "workloads": [
            {
                "name": "api",
                "slo": {"target_ms": 5.0},
                "latency": {
                    "kind": "prometheus",
                    "url": url,
                    "metric": "rpc_latency_seconds",
                    "timeout_s": 1.0,
                },
            }
        ],
    }


def test_a_scrape_answering_after_3_s_is_slow_after_1_s_and_never_blocks_the_loop() -> None:
    """A real HTTP endpoint on loopback that answers after 3 s: the tick gives up at the
    source's 1 s timeout, says "no answer within 1.0 s", holds BE, and the event loop
    keeps running the whole time."""
    with slow_prometheus(3.0) as endpoint:
        actuator = Actuator()
        runtime = runtime_from_config(
            parse_config(_prometheus_config(endpoint.url)), cores=CORES, actuator=actuator
        )
        gaps: list[float] = []

        async def main() -> float:
            stop = asyncio.Event()
            beat = _heartbeat_gaps(stop, gaps)
            started = time.monotonic()
            await runtime.tick()
            took = time.monotonic() - started
            stop.set()
            await beat
            return took

        took = asyncio.run(main())
        assert endpoint.requests == 1
    assert 1.0 <= took < 2.9  # the source's timeout, not the server's 3 s
    assert max(gaps) < 0.5  # generous: the loop was never blocked for the scrape
    api = runtime.status()["signals"][0]
    assert api["status"] == "slow" and api["reason"] == "no answer within 1.0 s"
    assert runtime.state.top.reason == "no signal: api: no answer within 1.0 s"
    assert not any(isinstance(a, Freeze) for a in actuator.applied)


def test_a_running_loop_on_a_slow_scrape_keeps_be_held_and_closes_its_client() -> None:
    with slow_prometheus(3.0) as endpoint:
        runtime = runtime_from_config(
            parse_config(_prometheus_config(endpoint.url)), cores=CORES, actuator=Actuator()
        )

        async def main() -> None:
            await runtime.start()
            await asyncio.sleep(2.5)
            await runtime.stop()

        asyncio.run(main())
    status = runtime.status()
    assert status["mode"] == "hold" and status["reason"].startswith("no signal: api:")
    assert status["signals"][0]["consecutive_failures"] >= 2
    assert status["loop"]["failures"] == 0  # a slow source is no signal, not a failed tick
    assert runtime._services[0]._client is None  # type: ignore[attr-defined]


def test_a_dead_probe_port_is_a_failed_signal_and_never_disables_or_freezes_be() -> None:
    """The measured bug: memcached down gave a 1000 ms sentinel, slack -999, BE disabled
    and frozen. Now: a failed signal naming the refusal, BE held."""
    config = parse_config(
        {
            "top": {"period_s": 0.1, "cooldown_s": 1.0},
            "sub_period_s": 0.1,
            "evict": {"freeze_after_periods": 0},
            "workloads": [
                {
                    "name": "memcached",
                    "slo": {"target_ms": 1.0, "window_s": 1.0},
                    "latency": {
                        "kind": "probe",
                        "protocol": "memcached",
                        "port": dead_port(),
                        "rate_hz": 100,
                        "timeout_s": 0.05,
                        "min_samples": 5,
                    },
                }
            ],
        }
    )
    actuator = Actuator()
    runtime = runtime_from_config(
        config, cores=CORES, actuator=actuator, workloads=lambda: (BeWorkload("batch"),)
    )

    async def main() -> None:
        await runtime.start()
        await asyncio.sleep(1.0)
        await runtime.stop()

    asyncio.run(main())
    status = runtime.status()
    signal = status["signals"][0]
    assert signal["source"] == "memcached" and signal["status"] == "failed"
    assert "probes of 127.0.0.1:" in signal["reason"] and signal["latency_ms"] is None
    assert status["mode"] == "hold" and status["reason"].startswith("no signal: memcached:")
    assert runtime.last_observation.latency_ms is None
    assert not any(isinstance(a, Freeze) for a in actuator.applied)
    assert all(r["kind"] != "mode" or "disable" not in r["what"] for r in status["recent"])


def test_max_backoff_must_be_at_least_one_period() -> None:
    with pytest.raises(CorralError, match="max_backoff_periods"):
        ColocationRuntime(
            controller(), source=Recorded([good(0.2)]), actuator=Actuator(), max_backoff_periods=0
        )


def test_stopping_mid_batch_waits_for_the_batch_before_anything_else_writes() -> None:
    actuator = Actuator()

    async def slow_worker(fn: Callable[[], T]) -> T:
        def later() -> T:
            time.sleep(0.3)  # a slow cgroup write in the worker thread
            return fn()

        return await asyncio.to_thread(later)

    runtime = ColocationRuntime(
        controller(), source=Recorded([good(0.2)]), actuator=actuator, execute=slow_worker
    )

    async def main() -> int:
        await runtime.start()
        await asyncio.sleep(0.05)  # the first batch is in the worker now
        await runtime.stop()
        return len(actuator.applied)

    assert asyncio.run(main()) >= 3  # stop returned only after the whole batch was written
