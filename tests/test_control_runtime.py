"""The control loop: signals in, pure step, actions out; status, metrics, refusals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from corral.control.actions import Action, Freeze, SetCpus, SetWeight
from corral.control.controller import Controller, ControllerSettings
from corral.control.evict import BeWorkload, EvictSettings
from corral.control.knobs import TrialSettings
from corral.control.metrics import register_metrics
from corral.control.runtime import ColocationRuntime
from corral.control.signals import Observation
from corral.control.top import TopSettings
from corral.errors import EnforcementError
from corral.topology.cpuset import CpuSet

CORES = (CpuSet([0]), CpuSet([1]), CpuSet([2]), CpuSet([3]))


@dataclass
class Recorded:
    """A recorded latency sequence, one observation per read."""

    samples: list[Observation]
    reads: int = 0

    def read(self, now: float) -> Observation:
        obs = self.samples[min(self.reads, len(self.samples) - 1)]
        self.reads += 1
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


def controller() -> Controller:
    return Controller(
        ControllerSettings(
            top=TopSettings(period_s=1.0, cooldown_s=2.0),
            trial=TrialSettings(settle_s=1.0),
            evict=EvictSettings(freeze_after_periods=0),
            sub_period_s=1.0,
            peak_rps=1000.0,
        ),
        CORES,
    )


def test_runtime_applies_actions_and_reports_them_in_status_and_metrics() -> None:
    clock = Clock()
    source = Recorded(
        [Observation(latency_ms=0.2, load_rps=100)] * 3
        + [Observation(latency_ms=5.0, load_rps=100)]
    )
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
    for t in range(5):
        clock.now = float(t)
        runtime.tick()
    assert any(isinstance(a, SetCpus) for a in actuator.applied)
    assert any(isinstance(a, Freeze) for a in actuator.applied)  # slack < 0 at the floor
    status = runtime.status()
    assert status["mode"] == "disable"
    assert status["frozen"] == ["batch"]
    assert status["recent"] and all(r["reason"] for r in status["recent"])
    text = generate_latest(registry).decode()
    assert 'corral_control_mode{mode="disable"} 1.0' in text
    assert "corral_control_slack -4.0" in text
    assert 'corral_control_actions_total{kind="Freeze"} 1.0' in text
    assert "corral_control_be_cores 1.0" in text


def test_a_refused_write_is_logged_counted_and_reapplied_next_tick(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    actuator = Actuator(refuse=SetWeight)
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([Observation(latency_ms=0.9, load_rps=100)]),  # slack 10%: hold
        actuator=actuator,
        clock=clock,
    )
    with caplog.at_level("WARNING", logger="corral.control.runtime"):
        runtime.tick()
    assert runtime.failures == 1
    assert any(r.message == "control.action_failed" for r in caplog.records)
    assert not any(isinstance(a, SetWeight) for a in actuator.applied)
    clock.now = 1.0
    runtime.tick()  # nothing changed, but the whole state is written again
    assert any(isinstance(a, SetWeight) for a in actuator.applied)


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
            source=Recorded([Observation(latency_ms=0.2, load_rps=100)]),
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
