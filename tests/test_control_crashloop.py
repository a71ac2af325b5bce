"""The crash-loop rule: a BE workload OOM-killed again and again is held with kubelet's
back-off; the runtime applies it beside the controller (which neither freezes nor thaws a
held workload); and on the real kernel a stress-ng worker looping on OOM kills in a v1
memory box is frozen while its neighbour runs on, then thawed after the hold."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from corral.control.actions import Freeze, Thaw
from corral.control.cgroupv1 import CgroupV1Actuator
from corral.control.config import parse_config, runtime_from_config
from corral.control.crashloop import (
    CrashLoopSettings,
    CrashLoopState,
    crash_loop_step,
)
from corral.control.evict import BeWorkload
from corral.control.metrics import register_metrics
from corral.control.runtime import ColocationRuntime, DryRunActuator
from corral.errors import InputError
from corral.topology.cpuset import CpuSet
from tests.polling import wait_for
from tests.test_control_runtime import Actuator, Clock, Recorded, controller, good

S = CrashLoopSettings(kills=3, window_s=30.0, hold_s=10.0, max_hold_s=40.0, reset_s=100.0)


def run(
    counts: Sequence[tuple[float, dict[str, int | None]]], settings: CrashLoopSettings = S
) -> tuple[CrashLoopState, list[tuple[float, str, bool]]]:
    state = CrashLoopState()
    out: list[tuple[float, str, bool]] = []
    for now, kills in counts:
        state, decisions = crash_loop_step(settings, state, kills, now)
        out.extend((now, d.workload, d.hold) for d in decisions)
    return state, out


def test_kills_before_first_sight_do_not_count_and_three_new_ones_hold() -> None:
    state, decisions = run([(0, {"w": 50}), (1, {"w": 51}), (2, {"w": 52})])
    assert decisions == [] and not state.held()
    state, decisions = run([(0, {"w": 50}), (1, {"w": 51}), (2, {"w": 53})])
    assert decisions == [(2, "w", True)] and state.held() == ("w",)


def test_kills_spread_wider_than_the_window_are_no_loop() -> None:
    _, decisions = run([(0, {"w": 0}), (1, {"w": 1}), (20, {"w": 2}), (40, {"w": 3})])
    assert decisions == []


def test_the_hold_ends_then_doubles_per_loop_up_to_the_cap() -> None:
    counts: list[tuple[float, dict[str, int | None]]] = [(0, {"w": 0})]
    kills, holds = 0, []
    t = 1.0
    for _ in range(4):
        kills += 3
        counts.append((t, {"w": kills}))
        state, decisions = run(counts)
        assert decisions[-1] == (t, "w", True)
        record = state.record("w")
        assert record is not None and record.held_until is not None
        holds.append(record.held_until - t)
        t = record.held_until
        counts.append((t, {"w": kills}))  # the hold is over: thawed
        _, decisions = run(counts)
        assert decisions[-1] == (t, "w", False)
        t += 1
    assert holds == [10, 20, 40, 40]


def test_a_calm_spell_after_the_hold_resets_the_back_off() -> None:
    counts: list[tuple[float, dict[str, int | None]]] = [(0, {"w": 0}), (1, {"w": 3})]
    counts += [(11, {"w": 3}), (12, {"w": 6}), (32, {"w": 6})]  # held 10 s, then 20 s
    counts += [(200, {"w": 6}), (201, {"w": 9})]  # 168 s calm (> reset_s): 10 s again
    state, decisions = run(counts)
    assert [d[2] for d in decisions] == [True, False, True, False, True]
    record = state.record("w")
    assert record is not None and record.held_until == 211 and record.loops == 3


def test_a_new_cgroup_of_the_same_name_counts_all_its_kills() -> None:
    _, decisions = run([(0, {"w": 40}), (1, {"w": 3})])
    assert decisions == [(1, "w", True)]


def test_an_unreadable_count_keeps_the_record_and_a_gone_workload_is_forgotten() -> None:
    state, _ = run([(0, {"w": 0, "v": 0}), (1, {"w": None, "v": 3})])
    assert state.record("w") is not None and state.held() == ("v",)
    state, decisions = crash_loop_step(S, state, {"w": 0}, 2)
    assert state.record("v") is None and decisions == ()


def test_disabled_rule_does_nothing() -> None:
    off = CrashLoopSettings(enabled=False)
    _, decisions = run([(0, {"w": 0}), (1, {"w": 9})], off)
    assert decisions == []


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [
        ({"kills": 0}, "crash_loop.kills"),
        ({"window_s": 0}, "crash_loop.window_s"),
        ({"hold_s": 20, "max_hold_s": 10}, "crash_loop.max_hold_s"),
    ],
)
def test_bad_settings_name_the_field(kwargs: dict[str, float], field_name: str) -> None:
    with pytest.raises(InputError) as err:
        CrashLoopSettings(**kwargs)  # type: ignore[arg-type]
    assert err.value.field == field_name


# -- the runtime ---------------------------------------------------------------------------


@dataclass
class Kills:
    counts: dict[str, int | None] = field(default_factory=dict)
    reads: int = 0

    def be_oom_kills(self, workloads: Sequence[str]) -> dict[str, int | None]:
        self.reads += 1
        return {w: self.counts.get(w) for w in workloads}


def test_the_runtime_holds_a_looping_workload_and_the_controller_leaves_it_alone() -> None:
    """The looping workload is frozen by the rule, not offered to the controller, not
    thawed by it, shown in status and metrics, and thawed when the loop stops."""
    clock = Clock()
    kills = Kills({"loop": 0, "batch": 0})
    actuator = Actuator()
    # Violations all along: Heracles' plain rules freeze the BE workloads they are given.
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.2)] * 2 + [good(5.0)]),
        actuator=actuator,
        workloads=lambda: (BeWorkload("loop"), BeWorkload("batch", 1)),
        clock=clock,
        oom=kills,
    )
    registry = CollectorRegistry()
    register_metrics(registry, runtime.snapshot)

    async def main() -> None:
        await runtime.tick()
        clock.now = 1.0
        kills.counts["loop"] = 4
        await runtime.tick()
        for t in range(2, 6):
            clock.now = float(t)
            await runtime.tick()
        status = runtime.status()
        assert status["crash_loop"]["enabled"]
        assert [h["workload"] for h in status["crash_loop"]["held"]] == ["loop"]
        text = generate_latest(registry).decode()
        assert "corral_control_crash_loop_held_workloads 1.0" in text
        clock.now = 12.0  # past the 10 s hold
        await runtime.tick()
        held_thaws = [a for a in actuator.applied if isinstance(a, Thaw) and a.workload == "loop"]
        assert held_thaws and "hold" in held_thaws[0].reason
        await runtime.thaw_all("stopping")

    asyncio.run(main())
    loop_actions = [a for a in actuator.applied if getattr(a, "workload", None) == "loop"]
    first = loop_actions[0]
    assert isinstance(first, Freeze) and "crash loop: 4 OOM kills" in first.reason
    # Between the hold and its end, nothing else touched "loop".
    assert [type(a) for a in loop_actions[:2]] == [Freeze, Thaw]
    assert any(isinstance(a, Freeze) and a.workload == "batch" for a in actuator.applied)
    assert runtime.crash_loop.held() == ()


def test_without_oom_counts_the_rule_is_off_and_status_says_so() -> None:
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.2)]),
        actuator=Actuator(),
        workloads=lambda: (BeWorkload("w"),),
        clock=Clock(),
    )
    asyncio.run(runtime.tick())
    assert runtime.status()["crash_loop"] == {"enabled": False, "held": []}


# -- the real kernel -----------------------------------------------------------------------

ROOT = Path("/sys/fs/cgroup")
MIB = 1 << 20


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create cgroups"
    for probe in ("memory/memory.limit_in_bytes", "freezer/freezer.state", "cpu/cpu.shares"):
        if not (ROOT / probe).parent.exists():
            return f"needs the v1 {probe.split('/')[0]} hierarchy"
    return None


@pytest.fixture
def box() -> Iterator[str]:
    name = f"corral-test-crashloop-{uuid.uuid4().hex[:8]}"
    made: list[Path] = []
    for controller_name in ("memory", "freezer", "cpu"):
        for sub in ("", "/loop", "/batch"):
            path = ROOT / controller_name / f"{name}{sub}"
            path.mkdir()
            made.append(path)
    (ROOT / "memory" / name / "memory.limit_in_bytes").write_text(str(64 * MIB))
    yield name
    for path in reversed(made):
        for pid in (path / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        if (path / "freezer.state").exists():
            (path / "freezer.state").write_text("THAWED")
        wait_for(
            f"{path} to empty",
            lambda p=path: not (p / "cgroup.procs").read_text().split(),
            timeout_s=10,
        )
        path.rmdir()


def _spawn(box: str, workload: str, argv: list[str]) -> subprocess.Popen[bytes]:
    procs = " ".join(
        str(ROOT / c / box / workload / "cgroup.procs") for c in ("memory", "freezer", "cpu")
    )
    script = 'for f in $PROCS; do echo $$ > "$f"; done; exec "$@"'
    return subprocess.Popen(
        ["sh", "-c", script, "sh", *argv],
        env={**os.environ, "PROCS": procs},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_a_real_oom_loop_is_frozen_and_its_neighbour_is_not(box: str) -> None:
    """stress-ng restarts its vm worker after each OOM kill (it asks 256 MiB in a 64 MiB
    box): the v1 counters show the kills in the worker's own cgroup, the rule freezes it,
    the neighbour keeps running, and the hold's end thaws it."""
    loop = _spawn(box, "loop", ["stress-ng", "--vm", "1", "--vm-bytes", "256M", "--vm-keep"])
    batch = _spawn(box, "batch", ["sleep", "60"])
    actuator = CgroupV1Actuator(cgroup_root=ROOT, be_group=box)
    clock = Clock()
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.2)]),
        actuator=actuator,
        workloads=lambda: tuple(BeWorkload(w) for w in actuator.workloads()),
        clock=clock,
        oom=actuator,
    )
    try:

        async def until_held() -> None:
            deadline = time.monotonic() + 30
            while not runtime.crash_loop.held() and time.monotonic() < deadline:
                clock.now = time.monotonic()
                await runtime.tick()
                await asyncio.sleep(0.2)

        asyncio.run(until_held())
        assert runtime.crash_loop.held() == ("loop",)
        state = (ROOT / "freezer" / box / "loop" / "freezer.state").read_text().strip()
        assert state in ("FROZEN", "FREEZING")
        assert (ROOT / "freezer" / box / "batch" / "freezer.state").read_text().strip() == "THAWED"
        kills = actuator.be_oom_kills(["loop", "batch"])
        assert (kills["loop"] or 0) >= 3 and kills["batch"] == 0
        clock.now += 11  # past the first hold
        asyncio.run(runtime.tick())
        assert runtime.crash_loop.held() == ()
        assert (ROOT / "freezer" / box / "loop" / "freezer.state").read_text().strip() == "THAWED"
    finally:
        asyncio.run(runtime.thaw_all("test over"))
        for proc in (loop, batch):
            proc.kill()
            proc.wait()


def test_a_refused_hold_is_not_reported_as_held_and_is_tried_again() -> None:
    clock = Clock()
    kills = Kills({"loop": 0})
    actuator = Actuator(refuse=Freeze)  # the kernel refuses the first freeze
    runtime = ColocationRuntime(
        controller(),
        source=Recorded([good(0.2)]),
        actuator=actuator,
        workloads=lambda: (BeWorkload("loop"),),
        clock=clock,
        oom=kills,
    )

    async def main() -> None:
        await runtime.tick()
        clock.now, kills.counts["loop"] = 1.0, 3
        await runtime.tick()
        assert runtime.crash_loop.held() == ()
        assert runtime.status()["crash_loop"]["held"] == []
        assert runtime.failures == 1
        clock.now, kills.counts["loop"] = 2.0, 6
        await runtime.tick()
        assert runtime.crash_loop.held() == ("loop",)

    asyncio.run(main())
    assert [a.workload for a in actuator.applied if isinstance(a, Freeze)] == ["loop"]


def test_the_config_block_is_parsed_checked_and_needs_kill_counts_to_run() -> None:
    base = {
        "workloads": [
            {
                "name": "api",
                "slo": {"target_ms": 1.0},
                "latency": {"kind": "file", "path": "/run/lat.json"},
            }
        ]
    }
    config = parse_config({**base, "crash_loop": {"kills": 5, "hold_s": 30, "max_hold_s": 60}})
    assert config.settings.crash_loop == CrashLoopSettings(kills=5, hold_s=30, max_hold_s=60)
    assert parse_config(base).settings.crash_loop.enabled  # on by default
    for bad, where in (
        ({"kills": 0}, "crash_loop.kills"),
        ({"hold": 1}, "crash_loop.hold"),
        ({"enabled": "yes"}, "crash_loop.enabled"),
    ):
        with pytest.raises(InputError) as err:
            parse_config({**base, "crash_loop": bad})
        assert err.value.field == where
    cores = (CpuSet([0]), CpuSet([1]))
    with_counts = runtime_from_config(config, cores=cores, actuator=Actuator(), oom=Kills())
    assert with_counts.status()["crash_loop"]["enabled"] is True
    dry = runtime_from_config(config, cores=cores, actuator=DryRunActuator())
    assert dry.status()["crash_loop"]["enabled"] is False
