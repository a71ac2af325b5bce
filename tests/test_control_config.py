"""Controller configuration from YAML, and several LC workloads judged each by its SLO."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from corral.control.combine import CombinedSource, LcSignal
from corral.control.config import parse_config, runtime_from_config
from corral.control.controller import Controller, ControllerSettings
from corral.control.probe import Prober
from corral.control.scrape import HttpFetch
from corral.control.signals import Observation, SignalStatus
from corral.control.slo import Slo
from corral.control.top import Mode, TopSettings
from corral.errors import InputError
from corral.topology.cpuset import CpuSet

DOC = """
top: {period_s: 5, high_water: 0.9, low_water: 0.7, cooldown_s: 20}
cores: {shrink_step: 1}
weight: {ladder: [idle, 2]}
memory: {enabled: true, max_bytes: 1073741824}
sub_period_s: 1
workloads:
  - name: cache
    slo: {percentile: 99, target_ms: 1.0, window_s: 10}
    peak_rps: 100000
    latency: {kind: probe, protocol: memcached, port: 11211, rate_hz: 10}
  - name: api
    slo: {target_ms: 50}
    latency: {kind: prometheus, url: "http://127.0.0.1:9/metrics", metric: req_seconds}
  - name: web
    slo: {target_ms: 20}
    latency: {kind: file, path: /tmp/none.json, latency_field: tail_ms}
"""


def test_yaml_sets_every_threshold_and_builds_each_kind_of_source() -> None:
    config = parse_config(yaml.safe_load(DOC))
    s = config.settings
    assert s.top.high_water == 0.9 and s.top.cooldown_s == 20.0
    assert s.cores.shrink_step == 1
    assert s.weight.ladder == ("idle", "2")  # YAML's number 2 read as the rung "2"
    assert s.memory.enabled and s.memory.max_bytes == 1 << 30
    signals, services = config.signals()
    assert [x.name for x in signals] == ["cache", "api", "web"]
    probers = [x for x in services if isinstance(x, Prober)]
    assert len(probers) == 1 and probers[0].settings.window_s == 10.0  # the SLO window
    assert probers[0].name == "cache"
    scrapers = [x for x in services if isinstance(x, HttpFetch)]
    assert len(scrapers) == 1 and scrapers[0].timeout_s == 1.0  # the default scrape timeout
    assert signals[0].peak_rps == 100_000.0
    # Each source's read is bounded by its own timeout plus a margin, as a backstop.
    assert [x.timeout_s for x in signals] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"top": {"period": 5}}, "top.period"),
        ({"top": {"period_s": "fast"}}, "top.period_s"),
        ({"evict": {"evict": "yes"}}, "evict.evict"),
        ({"weight": {"ladder": ["idle", "heavy"]}}, "weight.ladder[1]"),
        ({"workloads": []}, "workloads"),
        ({"workloads": [{"name": "x", "latency": {"kind": "smoke"}}]}, "workloads[0].latency.kind"),
        ({"workloads": [{"name": "x", "latency": {"kind": "probe", "protocol": "ftp", "port": 1}}]},
         "workloads[0].latency.protocol"),
        ({"workloads": [{"name": "x", "slo": {"target_ms": -1},
                         "latency": {"kind": "file", "path": "/x"}}]},
         "slo.target_ms"),
        ({"workloads": [{"name": "x", "latency": {"kind": "file", "path": "/x", "wall_clock": 1}}]},
         "workloads[0].latency.wall_clock"),
    ],
)  # fmt: skip
def test_bad_configuration_names_the_field(patch: dict[str, object], field: str) -> None:
    doc = yaml.safe_load(DOC)
    doc.update(patch)
    with pytest.raises(InputError) as err:
        parse_config(doc)
    assert field in str(err.value)


@dataclass
class Fixed:
    obs: Observation

    async def read(self, now: float) -> Observation:
        return self.obs


@dataclass
class Hanging:
    """A source that never answers (a bug, or a library without a timeout)."""

    async def read(self, now: float) -> Observation:
        await asyncio.sleep(3600)
        raise AssertionError("unreachable")


def test_the_lc_workload_with_the_least_slack_and_most_load_rules() -> None:
    source = CombinedSource(
        [
            LcSignal("a", Slo(target_ms=1.0), Fixed(Observation(latency_ms=0.5, load_rps=50)), 100),
            LcSignal(
                "b", Slo(target_ms=50.0), Fixed(Observation(latency_ms=49.0, load_rps=10)), 100
            ),
            LcSignal("c", Slo(target_ms=1.0), Fixed(Observation(latency_ms=9.0, noisy=True))),
        ]
    )
    obs = asyncio.run(source.read(0.0))
    assert obs.slack == pytest.approx(0.02)  # b: 49 of 50 ms; c is noisy, left out
    assert not obs.lost and [x.source for x in obs.signals] == ["a", "b", "c"]
    assert obs.load == pytest.approx(0.5)
    assert not obs.noisy
    controller = Controller(
        ControllerSettings(top=TopSettings(period_s=1.0), sub_period_s=1.0),
        (CpuSet([0]), CpuSet([1])),
    )
    state, _ = controller.step(controller.initial(), obs, 0.0)
    assert state.top.mode is Mode.SHRINK  # 2% slack on b, though a has 50%


def test_any_lc_workload_without_a_signal_holds_be_for_all() -> None:
    """One LC workload's source hangs: its signal is slow after its own timeout, and the
    combined observation is no signal (BE holds), though the other still has slack."""
    source = CombinedSource(
        [
            LcSignal("a", Slo(target_ms=1.0), Fixed(Observation(latency_ms=0.2, load_rps=10))),
            LcSignal("b", Slo(target_ms=1.0), Hanging(), timeout_s=0.05),
        ]
    )
    obs = asyncio.run(source.read(0.0))
    assert obs.slack == pytest.approx(0.8)  # a's slack is still measured and shown...
    assert obs.status is SignalStatus.SLOW  # ...but the observation is no signal
    assert obs.no_signal_reason() == "b: no answer within 0.05 s"
    b = next(x for x in obs.signals if x.source == "b")
    assert b.read_s is not None and b.read_s >= 0.05
    controller = Controller(
        ControllerSettings(top=TopSettings(period_s=1.0), sub_period_s=1.0),
        (CpuSet([0]), CpuSet([1])),
    )
    state, _ = controller.step(controller.initial(), obs, 0.0)
    assert state.top.mode is Mode.HOLD
    assert state.top.reason == "no signal: b: no answer within 0.05 s"
    assert source.status()[1]["signal"] == "slow"


def test_a_workload_whose_source_has_no_latency_is_no_data() -> None:
    source = CombinedSource(
        [
            LcSignal("a", Slo(target_ms=1.0), Fixed(Observation(latency_ms=0.2))),
            LcSignal("idle", Slo(target_ms=1.0), Fixed(Observation())),
        ]
    )
    obs = asyncio.run(source.read(0.0))
    assert obs.status is SignalStatus.NO_DATA
    assert obs.no_signal_reason() == "idle: no latency this period"


def test_a_bad_source_timeout_or_url_names_the_field() -> None:
    doc = yaml.safe_load(DOC)
    doc["workloads"] = [
        {
            "name": "x",
            "latency": {"kind": "prometheus", "url": "localhost:9", "metric": "m"},
        }
    ]
    with pytest.raises(InputError, match=r"workloads\[0\]\.latency\.url"):
        parse_config(doc)
    doc["workloads"][0]["latency"] = {
        "kind": "prometheus",
        "url": "http://127.0.0.1:9/metrics",
        "metric": "m",
        "timeout_s": 0,
    }
    with pytest.raises(InputError, match=r"workloads\[0\]\.latency\.timeout_s"):
        parse_config(doc)
    doc["no_signal_floor_after"] = -1
    doc["workloads"][0]["latency"]["timeout_s"] = 1
    with pytest.raises(InputError, match="no_signal_floor_after"):
        parse_config(doc)


def test_runtime_from_config_starts_and_stops_its_services(tmp_path: Path) -> None:
    latency = tmp_path / "lat.json"
    latency.write_text(json.dumps({"p99_ms": 0.3}))
    doc = yaml.safe_load(DOC)
    doc["workloads"] = [
        {
            "name": "p",
            "slo": {"target_ms": 1},
            "latency": {"kind": "probe", "protocol": "tcp", "port": 9},
        },
        {"name": "f", "slo": {"target_ms": 1}, "latency": {"kind": "file", "path": str(latency)}},
        {
            "name": "m",
            "slo": {"target_ms": 1},
            "latency": {"kind": "prometheus", "url": "http://127.0.0.1:9/m", "metric": "m"},
        },
    ]

    class Null:
        def apply(self, action: object) -> None:
            pass

    runtime = runtime_from_config(
        parse_config(doc), cores=(CpuSet([0]), CpuSet([1])), actuator=Null()
    )

    async def main() -> None:
        await runtime.start()
        await asyncio.sleep(0.05)
        await runtime.stop()

    asyncio.run(main())
    prober, scraper = runtime._services
    assert isinstance(prober, Prober) and prober._task is None
    assert isinstance(scraper, HttpFetch) and scraper._client is None  # closed
    assert runtime.last_observation.slack == pytest.approx(0.7)  # f's, shown...
    status = {x["source"]: x["status"] for x in runtime.status()["signals"]}
    assert status == {"p": "no_data", "f": "ok", "m": "failed"}  # ...but no signal: hold
    assert runtime.state.top.reason.startswith("no signal: p: 0 probes finished")
