"""dCat inside the control loop: per-workload samples in, `SetWorkloadWays` out in the
tick's one batch, masks in ``corral-w-<id>/schemata`` of a resctrl tree shaped like the
kernel's (this VM has no RDT), and a clear "not running" where the host cannot do it."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client import CollectorRegistry

import corral.enforce.resctrl as resctrl_module
from corral.bench.agent_process import AgentProcess
from corral.control.actions import Action, SetCache, SetCpus, SetWorkloadWays, WayGrant
from corral.control.actuator import ActuatorDescription, ControlActuator
from corral.control.baseline import BaselineSettings
from corral.control.cache import CacheSettings
from corral.control.config import parse_config, runtime_from_config
from corral.control.controller import Controller, ControllerSettings
from corral.control.dcat import Category, DcatSettings, PerfSample
from corral.control.dcatrun import (
    COUNTER_SIGNAL,
    THROUGHPUT_SIGNAL,
    CounterSampler,
    DcatRunner,
    HostSampler,
    SamplerStatus,
    ThroughputSampler,
)
from corral.control.evict import BeWorkload
from corral.control.factory import make_actuator
from corral.control.knobs import Knob, TrialSettings
from corral.control.llc import ResctrlActuator
from corral.control.metrics import register_metrics
from corral.control.runtime import ColocationRuntime, DryRunActuator
from corral.control.signals import Observation, Signal
from corral.control.top import TopSettings
from corral.enforce.cgroupfs import write_file
from corral.enforce.perf import CounterReading, CounterStatus, counters_status
from corral.enforce.resctrl import Resctrl, Schemata
from corral.errors import InputError
from corral.topology.cpuset import CpuSet
from tests.fixtures.cgroup_trees import (
    add_resctrl_group,
    add_v1_cgroup,
    write_resctrl,
    write_v1_root,
)

T = TypeVar("T")
CORES = (CpuSet([0]), CpuSet([1]), CpuSet([2]), CpuSet([3]))
BE_BOX = "corral/be"
PIDS = {"scan": 201, "web": 202}


# --- a resctrl tree that behaves like the kernel's ---------------------------------------


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """mkdir fills a group as the kernel does, a pid written to ``tasks`` leaves every
    other group, ``schemata`` writes merge their line, rmdir removes a group."""
    real_make_dir = resctrl_module.make_dir

    def make_dir(path: Path) -> bool:
        made = real_make_dir(path)
        if made:
            add_resctrl_group(path.parent, path.name)
        return made

    def write(path: Path | str, value: str) -> None:
        file = Path(path)
        if file.name == "tasks":
            pid = value.strip()
            root = file.parent if (file.parent / "info").is_dir() else file.parent.parent
            for tasks in (root / "tasks", *root.glob("*/tasks")):
                kept = [t for t in tasks.read_text().split() if t != pid]
                tasks.write_text("".join(f"{t}\n" for t in kept))
            file.write_text(file.read_text() + pid + "\n")
        elif file.name == "schemata":
            merged = Schemata.parse(file.read_text()).lines()
            merged.update(Schemata.parse(value).lines())
            file.write_text("\n".join(merged[k] for k in sorted(merged)) + "\n")
        else:
            write_file(path, value)

    def remove_dir(path: Path) -> bool:
        shutil.rmtree(path)
        return True

    monkeypatch.setattr(resctrl_module, "make_dir", make_dir)
    monkeypatch.setattr(resctrl_module, "write_file", write)
    monkeypatch.setattr(resctrl_module, "remove_dir", remove_dir)
    yield


def cgroup_tree(root: Path) -> Path:
    """A v1 host with the agent's BE box and two BE workloads, each with one process."""
    write_v1_root(root)
    for cgroup in ("corral", BE_BOX):
        add_v1_cgroup(root, cgroup)
    for wid, pid in PIDS.items():
        add_v1_cgroup(root, f"{BE_BOX}/{wid}", procs=f"{pid}\n")
    return root


def l3_mask(resctrl: Path, group: str) -> int:
    caches = Schemata.parse((resctrl / group / "schemata").read_text()).caches["L3"]
    assert len(set(caches.values())) == 1, caches  # the same mask on every cache id
    return next(iter(caches.values()))


# --- recorded performance, fake clock, a batch-counting executor -----------------------

Curve = Mapping[int, PerfSample]
"""A workload's performance recorded at each number of ways (1..12)."""
SCAN: Curve = {w: PerfSample(perf=1.0, mpki=30.0) for w in range(1, 13)}
"""A scan over memory: the same at any ways, misses stay high."""
WEB: Curve = {w: PerfSample(1.0 + 0.1 * min(w, 6), max(1.0, 2.0 * (6 - w))) for w in range(1, 13)}
"""A working set of six ways: each way up to six gains 10%, then nothing."""


@dataclass
class TreeSampler:
    """Replays the recorded curves at the ways each workload's resctrl group holds now
    (read from the tree the actuator wrote): no group yet, no reading."""

    resctrl: Path
    curves: Mapping[str, Curve]
    calls: int = 0
    closed: bool = False

    def probe(self) -> SamplerStatus:
        return SamplerStatus(True, "recorded curves")

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        self.calls += 1
        out: dict[str, PerfSample | None] = {}
        for wid in workloads:
            group = self.resctrl / f"corral-w-{wid}"
            out[wid] = (
                self.curves[wid][l3_mask(self.resctrl, group.name).bit_count()]
                if (group.is_dir())
                else None
            )
        return out

    def close(self) -> None:
        self.closed = True


@dataclass
class Clock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class BatchExecutor:
    """Runs each function inline, numbering the calls (so a write knows its batch)."""

    calls: int = 0

    async def __call__(self, fn: Callable[[], T]) -> T:
        self.calls += 1
        return fn()


@dataclass
class Recording:
    """The real actuator, with each applied action noted with the executor call it ran in."""

    inner: ControlActuator
    executor: BatchExecutor
    applied: list[tuple[int, Action]] = field(default_factory=list)

    def apply(self, action: Action) -> None:
        self.inner.apply(action)
        self.applied.append((self.executor.calls, action))

    def describe(self) -> ActuatorDescription:
        return self.inner.describe()


def hold(latency_ms: float = 0.93) -> Observation:
    """Slack 0.07: BE may not grow and need not shrink, so the ladder stays put."""
    return Observation(
        latency_ms=latency_ms, load_rps=100, signals=(Signal("api", latency_ms=latency_ms),)
    )


@dataclass
class Source:
    async def read(self, now: float) -> Observation:
        return hold()


def make_runtime(
    tmp_path: Path,
    *,
    resctrl: Path | None,
    sampler: Any,
    workloads: Callable[[], Sequence[BeWorkload]],
    be_ways: int = 9,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> tuple[ColocationRuntime, Recording, Clock]:
    actuator = make_actuator(
        cgroup_root=cgroup_tree(tmp_path / "cgroup"),
        resctrl_root=resctrl,
        be_group=BE_BOX,
        lc_group=None,
    )
    cache = actuator.fit_cache(CacheSettings(total_ways=12, min_ways=1))
    settings = ControllerSettings(
        top=TopSettings(period_s=1.0, cooldown_s=2.0),
        trial=TrialSettings(settle_s=1.0),
        sub_period_s=1.0,
        peak_rps=1000.0,
        cache=cache,
        # BE stands where the test puts it on the ways ladder: no release to the baseline.
        baseline=BaselineSettings(enabled=False),
    )
    executor = BatchExecutor()
    recording = Recording(actuator, executor)
    clock = Clock()
    runtime = ColocationRuntime(
        Controller(settings, CORES),
        source=Source(),
        actuator=recording,
        workloads=workloads,
        clock=clock,
        sleep=sleep,
        execute=executor,
        dcat=DcatRunner(DcatSettings(min_ways=1, settle_periods=1), sampler),
    )
    if cache.total_ways:
        # BE stands at ``be_ways`` on the Heracles ladder (LC has the rest).
        levels = runtime.state.levels.with_level(Knob.WAYS, be_ways)
        runtime.state = replace(runtime.state, levels=levels)
    return runtime, recording, clock


def run_ticks(runtime: ColocationRuntime, clock: Clock, ticks: int, start: int = 0) -> list[Any]:
    """Tick once per (fake) second; each tick's dCat status."""
    seen = []

    async def main() -> None:
        for t in range(start, start + ticks):
            clock.now = float(t)
            await runtime.tick()
            seen.append(runtime.status()["dcat"])

    asyncio.run(main())
    return seen


def both() -> list[BeWorkload]:
    return [BeWorkload("scan"), BeWorkload("web")]


# --- tests -------------------------------------------------------------------------------


@pytest.mark.usefixtures("kernel")
def test_a_streaming_workload_drops_to_min_ways_and_a_receiver_grows_in_the_tree(
    tmp_path: Path,
) -> None:
    resctrl = write_resctrl(tmp_path / "resctrl", cache_ids=(0, 1), cbm_mask="fff", num_closids=8)
    sampler = TreeSampler(resctrl, {"scan": SCAN, "web": WEB})
    runtime, recording, clock = make_runtime(
        tmp_path, resctrl=resctrl, sampler=sampler, workloads=both
    )
    registry = CollectorRegistry()
    register_metrics(registry, runtime.snapshot)
    history = run_ticks(runtime, clock, 30)

    be = l3_mask(resctrl, "corral-be")
    scan, web = l3_mask(resctrl, "corral-w-scan"), l3_mask(resctrl, "corral-w-web")
    assert be == 0x1FF  # BE's 9 ways of the ladder: dCat's budget (baselines 4 + 4, 1 free)
    assert scan == 0x001  # streaming: down to min_ways
    assert web.bit_count() == 6 and web == 0x07E  # grown past its baseline of 4, to 6
    assert scan & web == 0 and (scan | web) & ~be == 0  # disjoint, inside BE's ways
    assert Resctrl(resctrl).tasks("corral-w-scan") == (PIDS["scan"],)
    assert Resctrl(resctrl).tasks("corral-w-web") == (PIDS["web"],)
    assert not set(PIDS.values()) & set(Resctrl(resctrl).tasks("corral-be"))

    dcat = runtime.status()["dcat"]
    assert dcat["running"] is True and dcat["budget_ways"] == 9
    assert dcat["workloads"]["scan"]["category"] == "streaming"
    assert dcat["workloads"]["scan"]["mask"] == "0x1"
    assert dcat["workloads"]["web"]["ways"] == 6
    assert dcat["workloads"]["web"]["reason"]
    assert "receiver" in [h["workloads"]["web"]["category"] for h in history[1:]]
    value = registry.get_sample_value
    assert value("corral_control_dcat_running") == 1.0
    assert value("corral_control_dcat_ways", {"workload": "web"}) == 6.0
    assert value("corral_control_dcat_ways", {"workload": "scan"}) == 1.0
    labels = {"workload": "scan", "category": str(Category.STREAMING)}
    assert value("corral_control_dcat_category", labels) == 1.0

    # dCat's writes ride in the tick's one batch, after the ladder's cache action.
    first = [a for call, a in recording.applied if call == recording.applied[0][0]]
    kinds = [type(a) for a in first]
    assert SetCpus in kinds and SetCache in kinds and SetWorkloadWays in kinds
    assert kinds.index(SetCache) < kinds.index(SetWorkloadWays)
    assert all(
        w.reason.startswith("dcat: ")
        for _, w in recording.applied
        if isinstance(w, SetWorkloadWays)
    )


@pytest.mark.usefixtures("kernel")
def test_a_workload_that_leaves_frees_its_group_and_reapply_restores_the_masks(
    tmp_path: Path,
) -> None:
    resctrl = write_resctrl(tmp_path / "resctrl", num_closids=8)
    present = both()
    sampler = TreeSampler(resctrl, {"scan": SCAN, "web": WEB})
    runtime, _, clock = make_runtime(
        tmp_path, resctrl=resctrl, sampler=sampler, workloads=lambda: present
    )
    run_ticks(runtime, clock, 12)
    web = l3_mask(resctrl, "corral-w-web")

    (resctrl / "corral-w-web" / "schemata").write_text("L3:0=fff;1=fff\n")  # another writer
    asyncio.run(runtime.reapply("BE box touched"))
    assert l3_mask(resctrl, "corral-w-web") == web

    present[:] = [BeWorkload("web")]
    run_ticks(runtime, clock, 1, start=12)
    assert not (resctrl / "corral-w-scan").exists()  # its CLOSID is free again
    assert Resctrl(resctrl).tasks("corral-be") == (PIDS["scan"],)  # back in BE's group
    assert set(runtime.status()["dcat"]["workloads"]) == {"web"}


def test_without_resctrl_dcat_says_why_and_writes_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "resctrl"  # this VM: no RDT, nothing mounted
    sampler = TreeSampler(missing, {"scan": SCAN, "web": WEB})
    runtime, recording, clock = make_runtime(
        tmp_path, resctrl=missing, sampler=sampler, workloads=both
    )
    registry = CollectorRegistry()
    register_metrics(registry, runtime.snapshot)
    with caplog.at_level(logging.INFO, logger="corral.control.runtime"):
        history = run_ticks(runtime, clock, 6)

    dcat = runtime.status()["dcat"]
    assert dcat["running"] is False and "workloads" not in dcat
    assert f"no resctrl at {missing}" in dcat["why"]
    assert "cache.total_ways is 0" in dcat["why"]  # fit_cache turned the ladder off
    assert all(h == dcat for h in history)
    unavailable = [r for r in caplog.records if r.getMessage() == "control.dcat_unavailable"]
    assert len(unavailable) == 1 and "no resctrl" in unavailable[0].why  # type: ignore[attr-defined]
    assert not any(isinstance(a, SetWorkloadWays | SetCache) for _, a in recording.applied)
    assert sampler.calls == 0 and not missing.exists()
    assert registry.get_sample_value("corral_control_dcat_running") == 0.0
    assert registry.get_sample_value("corral_control_dcat_ways", {"workload": "web"}) is None


@pytest.mark.usefixtures("kernel")
def test_a_ladder_step_or_a_sync_leaves_dcat_workloads_in_their_own_groups(
    tmp_path: Path,
) -> None:
    resctrl = write_resctrl(tmp_path / "resctrl", num_closids=8)
    act = ResctrlActuator(
        Resctrl(resctrl),
        be_pids=lambda: (200, *PIDS.values()),  # the box's own process and both workloads
        workload_pids=lambda w: (PIDS[w],),
    )
    act.apply(SetCache(0xE00, 0x1FF, None, "ladder"))
    act.apply(SetWorkloadWays((WayGrant("scan", 0x1), WayGrant("web", 0x7E)), "dcat"))
    act.apply(SetCache(0xF00, 0x0FF, None, "ladder shrinks BE"))
    act.sync()
    assert Resctrl(resctrl).tasks("corral-be") == (200,)
    assert Resctrl(resctrl).tasks("corral-w-scan") == (PIDS["scan"],)
    assert Resctrl(resctrl).tasks("corral-w-web") == (PIDS["web"],)


@pytest.mark.usefixtures("kernel")
def test_a_refused_allocation_is_not_reported_as_ways_and_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Two CLOSIDs: the default group and corral-be; no room for a group per workload.
    resctrl = write_resctrl(tmp_path / "resctrl", num_closids=2)
    runtime, recording, clock = make_runtime(
        tmp_path,
        resctrl=resctrl,
        sampler=TreeSampler(resctrl, {"scan": SCAN, "web": WEB}),
        workloads=both,
    )
    with caplog.at_level(logging.WARNING, logger="corral.control.runtime"):
        run_ticks(runtime, clock, 3)
    dcat = runtime.status()["dcat"]
    assert dcat["running"] is True
    assert dcat["refused"] == 3 and "CLOSID" in dcat["last_error"]
    assert all(w["ways"] is None and w["mask"] is None for w in dcat["workloads"].values())
    failed = [r for r in caplog.records if r.getMessage() == "control.action_failed"]
    assert len(failed) == 3
    assert not list(resctrl.glob("corral-w-*"))
    # dCat retries on its own: the ladder's files are not all rewritten each period.
    assert sum(isinstance(a, SetCpus) for _, a in recording.applied) == 1


@dataclass
class FlakySampler(TreeSampler):
    """Fails its first sample the way a counter read can (EIO)."""

    def sample(self, workloads: Sequence[str]) -> dict[str, PerfSample | None]:
        if self.calls == 0:
            self.calls += 1
            raise OSError(5, "Input/output error")
        return super().sample(workloads)


@pytest.mark.usefixtures("kernel")
def test_the_loop_checks_first_skips_a_failed_sample_and_closes_the_sampler(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    resctrl = write_resctrl(tmp_path / "resctrl", num_closids=8)
    sampler = FlakySampler(resctrl, {"scan": SCAN, "web": WEB})
    ticks: list[float] = []

    async def main() -> ColocationRuntime:
        async def fake_sleep(seconds: float) -> None:
            ticks.append(clock.now)
            clock.now += seconds
            await asyncio.sleep(0)

        runtime, recording, clock = make_runtime(
            tmp_path, resctrl=resctrl, sampler=sampler, workloads=both, sleep=fake_sleep
        )
        await runtime.start()
        while len(ticks) < 3:
            await asyncio.sleep(0)
        await runtime.stop()
        first = [a for call, a in recording.applied if call == recording.applied[0][0]]
        assert any(isinstance(a, SetCpus) for a in first)  # the tick went on without dCat
        assert not any(isinstance(a, SetWorkloadWays) for a in first)
        return runtime

    with caplog.at_level(logging.INFO, logger="corral.control.runtime"):
        runtime = asyncio.run(main())
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index("control.dcat_running") < messages.index("control.action")
    assert messages.count("control.dcat_sample_failed") == 1
    assert runtime.tick_failures == 0 and sampler.closed
    assert (resctrl / "corral-w-web").is_dir()  # the next periods wrote the masks


def test_the_host_sampler_uses_counters_only_where_the_host_has_them(tmp_path: Path) -> None:
    host = counters_status()  # this VM: no PMU, cycles fail with ENOENT
    counters = CounterSampler(lambda w: tmp_path / w, CpuSet([0]))
    alone = HostSampler(counters, None).probe()
    rates = {"web": 120.0, "scan": None}
    fallback = HostSampler(counters, ThroughputSampler(lambda: rates))
    chosen = fallback.probe()
    if host.available:
        assert alone.available and alone.signal == COUNTER_SIGNAL
        assert chosen.signal == COUNTER_SIGNAL
        return
    assert not alone.available
    assert "no hardware counters" in alone.reason and "no BE throughput signal" in alone.reason
    assert chosen.available and chosen.signal == THROUGHPUT_SIGNAL
    assert "fallback: no hardware counters" in chosen.reason
    assert fallback.sample(["web", "scan"]) == {"web": PerfSample(120.0), "scan": None}


@dataclass
class FakeCounters:
    readings: list[CounterReading]
    closed: bool = False

    def read(self) -> CounterReading:
        return self.readings.pop(0)

    def close(self) -> None:
        self.closed = True


def test_counter_samples_are_ipc_and_mpki_over_each_period() -> None:
    opened: dict[str, FakeCounters] = {
        "web": FakeCounters([CounterReading(0, 0, 0), CounterReading(1000, 2000, 10)]),
    }

    def open_counters(directory: Path, cpus: CpuSet) -> FakeCounters | CounterStatus:
        counters = opened.get(directory.name)
        return counters or CounterStatus(False, f"{directory}: No such file or directory")

    sampler = CounterSampler(
        lambda w: Path("/perf/corral/be") / w,
        CpuSet([0, 1]),
        open_counters=open_counters,
        status=lambda: CounterStatus(True, "ok"),
    )
    assert sampler.probe() == SamplerStatus(True, COUNTER_SIGNAL, "ok")
    assert sampler.sample(["web", "gone"]) == {"web": None, "gone": None}  # deltas need two
    assert "No such file" in sampler.errors["gone"]
    assert sampler.sample(["web"]) == {"web": PerfSample(perf=2.0, mpki=5.0)}
    sampler.sample([])
    assert opened["web"].closed  # a workload that left has its counters closed


def test_the_dcat_block_is_off_by_default_and_checked_field_by_field(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "workloads": [
            {"name": "api", "slo": {"target_ms": 1}, "latency": {"kind": "file", "path": "/x"}}
        ]
    }
    assert parse_config(base).dcat.enabled is False
    config = parse_config({**base, "dcat": {"enabled": True, "gain": 0.1, "min_ways": 2}})
    assert config.dcat.enabled and config.dcat.settings.gain == 0.1
    assert config.dcat.settings.min_ways == 2
    for bad, where in (
        ({"gain": 2}, "dcat.gain"),
        ({"sticky": 1}, "dcat.sticky"),
        ({"enabled": "yes"}, "dcat.enabled"),
    ):
        with pytest.raises(InputError) as err:
            parse_config({**base, "dcat": bad})
        assert err.value.field == where
    runtime = runtime_from_config(config, cores=CORES, actuator=DryRunActuator())
    assert runtime.dcat is not None and runtime.dcat.settings.gain == 0.1
    off = runtime_from_config(parse_config(base), cores=CORES, actuator=DryRunActuator())
    assert off.dcat is None and off.status()["dcat"]["running"] is False


def test_a_dry_run_agent_shows_dcat_not_running_with_the_reason(tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"
    latency.write_text('{"p99_ms": 0.2, "rps": 20000}')
    control = {
        "top": {"period_s": 0.2, "cooldown_s": 1.0},
        "sub_period_s": 0.2,
        "dcat": {"enabled": True},
        "workloads": [
            {
                "name": "cache",
                "slo": {"percentile": 99, "target_ms": 1.0, "window_s": 1.0},
                "latency": {"kind": "file", "path": str(latency), "stale_s": 3600},
            }
        ],
    }
    settings = {"topology": "toy-16", "dry_run": True, "control": control}
    with (
        AgentProcess(tmp_path / "agent", settings) as agent,
        httpx.Client(base_url=agent.url, timeout=10) as http,
    ):
        dcat = http.get("/status").json()["control"]["dcat"]
        for _ in range(100):
            if dcat.get("why") != "not checked yet (first period)":
                break
            time.sleep(0.05)
            dcat = http.get("/status").json()["control"]["dcat"]
        assert dcat["running"] is False
        assert "dry run: the agent writes nothing" in dcat["why"]
        assert "cache.total_ways is 0" in dcat["why"]
        metrics = http.get("/metrics").text
        assert "corral_control_dcat_running 0.0" in metrics
        assert agent.log_tail(400).count("control.dcat_unavailable") == 1
